"""TensorNet: O(3)-equivariant message passing on rank-2 Cartesian tensors (Simeon & De
Fabritiis 2023, arXiv 2306.06482), written for mlff's member-batched layout.

Every atom carries C channels of a 3x3 tensor ``X = I + A + S`` (isotropic, antisymmetric,
symmetric traceless), stored by its 9 coefficients in an orthonormal basis
(:mod:`mlff.nn.cartesian`). Shapes: M members, N atoms, E edges, K radial functions.

1. embedding: per edge, radial weights ``[E, 3, C]`` (a linear map of the exp-normal basis, times
   the cosine cutoff and a species-pair embedding) scale the identity, the skew matrix of the
   unit edge vector and its traceless outer product; the sum over neighbours is ``X``. Its
   Frobenius norm, layer-normalised, gates the I, A and S parts after a channel-mixing linear.
2. interaction (``num_layers`` times): ``X / (|X|^2 + 1)``; channel linears on I, A, S give
   ``Y``; messages ``sum_j f_I(r_ij) I_j + f_A A_j + f_S S_j`` (radial MLP ``[E, 3, C]``) give
   ``M``; ``Y M + M Y`` (O(3): unchanged under inversion), re-decomposed, normalised and mixed
   again gives ``dX``; ``X <- X + dX + dX dX``.
3. readout: squared norms of I, A and S ``[N, 3C]`` -> layer norm -> linear + activation -> MLP.

Atomic energy: ``E_i = E0[Z_i] + scale * readout(i) + shift``.

Cost notes (why this is not a transcription of the paper's equations): the species-pair
embedding is a linear map of two species embeddings, so it is evaluated on the S x S species
pairs and gathered per edge instead of per edge on 2C inputs; the parts are kept as 9
coefficients, so channel linears cost 9 C^2 per atom rather than 27 C^2 on full matrices, and
each message pass is one gather and one scatter of ``[E, 9, C]``; the radial networks, which
depend on the distance alone, run once per pair when the edges are in mirror order
(:func:`mlff.neighbors.mirror_order`, what both neighbour lists return), halving the largest
per-edge cost.
"""


import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mlff.defaults import DEFAULT_R_CUT
from mlff.models.base import EnergyModel, ModelConfig
from mlff.nn import cartesian
from mlff.nn.edge_chunks import chunked_atoms, chunked_edge_sum
from mlff.nn.linear import GroupedLayerNorm, GroupedLinear
from mlff.neighbors import first_half, mirrored_half, per_pair
from mlff.nn.radial import BesselBasis, CosineCutoff, ExpNormalBasis

ACTIVATIONS = ("silu", "tanh")
RADIAL_BASES = ("expnorm", "bessel")


@dataclass(frozen=True)
class TensorNetConfig(ModelConfig):
    """Hyperparameters of :class:`TensorNet` (validated on creation).

    Attributes:
        elements: atomic numbers the model knows, in species-index order.
        channels: tensor channels C (hidden size).
        num_layers: interaction layers (0: the embedding alone).
        num_rbf: radial basis functions K.
        radial_basis: ``expnorm`` (exp-normal, TensorNet's) or ``bessel``; either times the
            cosine cutoff.
        r_cut: cutoff radius (A).
        activation: ``silu`` or ``tanh``.
        e0s: isolated-atom energies (eV), one per element.
        scale: energy scale of the readout (eV); shift: per-atom energy shift (eV).
        dtype: "float32" or "float64".
        ensemble_size: number of independent members M evaluated together (1: a single model).
        priors: physical energy terms added to the learned one, e.g. ``{"zbl": {}}``
            (:mod:`mlff.nn.priors`).
        long_range: ``none``, ``charges`` (learned charges and their Ewald / direct
            Coulomb energy), ``ewald_mp`` (Ewald message passing) or ``both``;
            ``long_range_options`` tune it (:mod:`mlff.nn.longrange`).
        self_loops: every atom is also its own neighbour at r = 0 (torchmd-net's graph,
            ``loop=True``): the embedding gains the pair term of (Z_i, Z_i) in its isotropic
            part and every layer the message ``f(0) Y_i``. Needs the ``expnorm`` basis.
        charge_input: the structure's total charge Q (e; graph key ``total_charge``, 0 when
            absent) scales each layer's products by ``1 + 0.1 Q``, as torchmd-net's TensorNet
            does with its ``q`` input.
        stored_rbf_widths: the exp-normal widths are saved with the model
            (:class:`~mlff.nn.radial.ExpNormalBasis`); set by imports.
    """

    elements: Tuple[int, ...]
    channels: int = 128
    num_layers: int = 2
    num_rbf: int = 32
    radial_basis: str = "expnorm"
    r_cut: float = DEFAULT_R_CUT
    activation: str = "silu"
    e0s: Tuple[float, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    dtype: str = "float64"
    ensemble_size: int = 1
    priors: Dict[str, Dict[str, float]] = field(default_factory=dict)
    long_range: str = "none"
    long_range_options: Dict[str, float] = field(default_factory=dict)
    self_loops: bool = False
    charge_input: bool = False
    stored_rbf_widths: bool = False

    model_name = "TensorNet"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if self.radial_basis not in RADIAL_BASES:
            raise ValueError(f"radial_basis must be one of {list(RADIAL_BASES)}, got {self.radial_basis!r}")
        if self.self_loops and self.radial_basis != "expnorm":
            raise ValueError("self_loops needs radial_basis 'expnorm' (the Bessel basis is singular at r = 0)")
        self._normalise_and_check({"channels": self.channels >= 2, "num_layers": self.num_layers >= 0,
                                   "num_rbf": self.num_rbf >= 1})


class Activation(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.tanh = name == "tanh"

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x) if self.tanh else torch.nn.functional.silu(x)


class PartLinears(nn.Module):
    """Channel mixing of the I, A and S parts by three separate (bias-free) per-member linears,
    ``[M, N, 9, C] -> [M, N, 9, C]`` (equivariant: each acts on channels only)."""

    starts: List[int]
    widths: List[int]

    def __init__(self, channels: int, members: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList([GroupedLinear(channels, channels, members) for _ in range(3)])
        self.starts = [a for a, _ in cartesian.PART_SLICES]
        self.widths = [b - a for a, b in cartesian.PART_SLICES]

    def forward(self, x: Tensor) -> Tensor:
        m, n, c = x.shape[0], x.shape[1], x.shape[3]
        parts: List[Tensor] = []
        for k, linear in enumerate(self.linears):
            w = self.widths[k]
            part = x.narrow(2, self.starts[k], w).reshape(m, n * w, c)
            parts.append(linear(part).view(m, n, w, c))
        return torch.cat(parts, dim=2)


class TensorEmbedding(nn.Module):
    """Species + edges -> initial node tensors ``X`` ``[M, N, 9, C]``."""

    def __init__(self, channels: int, num_rbf: int, num_species: int, members: int, act: str) -> None:
        super().__init__()
        self.species = nn.Embedding(num_species, members * channels)
        self.pair = GroupedLinear(2 * channels, channels, members, bias=True)
        self.distance = GroupedLinear(num_rbf, 3 * channels, members, bias=True)
        self.norm = GroupedLayerNorm(channels, members)
        self.parts = PartLinears(channels, members)
        self.gate = nn.ModuleList([GroupedLinear(channels, 2 * channels, members, bias=True),
                                   GroupedLinear(2 * channels, 3 * channels, members, bias=True)])
        self.act = Activation(act)
        self.num_species = num_species
        self.members = members
        self.channels = channels

    def pair_table(self) -> Tensor:
        """``[M, S*S, C]``: the pair embedding of (sender species, receiver species)."""
        s, m, c = self.num_species, self.members, self.channels
        emb = self.species.weight.view(s, m, c).transpose(0, 1)  # [M, S, C]
        send = emb.unsqueeze(2).expand(m, s, s, c)
        recv = emb.unsqueeze(1).expand(m, s, s, c)
        return self.pair(torch.cat([send, recv], dim=3).reshape(m, s * s, 2 * c))

    def edge_sums(self, edge_index: Tensor, half: int, offset: int, n: int, rbf: Tensor, cut: Tensor,
                  edge_coeffs: Tensor, species: Tensor, table: Tensor) -> Tensor:
        """The edges' tensors summed on receivers ``offset .. offset + n - 1`` ``[M, n, 9, C]``:
        ``rbf`` ``[M, E, K]``, ``cut`` ``[M, E, 1]``, ``edge_coeffs`` ``[M, E, 9]``, ``table``:
        :meth:`pair_table`."""
        sender, receiver = edge_index[0], edge_index[1]
        m, n_edges, c = rbf.shape[0], rbf.shape[1], self.channels
        pair_id = species.index_select(0, sender) * self.num_species + species.index_select(0, receiver)
        z = table.index_select(1, pair_id)  # [M, E, C]
        radial = per_pair(self.distance(first_half(rbf, half)) * first_half(cut, half), half)  # [M, E, 3C]
        w = radial.view(m, n_edges, 3, c) * z.unsqueeze(2)  # [M, E, 3, C]
        t = cartesian.expand_parts(w) * edge_coeffs.unsqueeze(3)  # [M, E, 9, C]
        return cartesian.scatter_sum(t, receiver - offset if offset > 0 else receiver, n)  # [M, n, 9, C]

    @torch.jit.unused
    def _chunked_sums(self, edge_index: Tensor, edge_chunk: int, rbf: Tensor, cut: Tensor,
                      edge_coeffs: Tensor, species: Tensor, table: Tensor) -> Tensor:
        return chunked_edge_sum(self.edge_sums, edge_index, species.shape[0], edge_chunk,
                                [rbf, cut, edge_coeffs], [species, table])

    def self_term(self, species: Tensor, table: Tensor, rbf0: Tensor) -> Tensor:
        """The self-loop edges' sum ``[M, N, 1, C]`` (isotropic coefficient only: the edge vector
        is zero): ``rbf0`` ``[M, 1, K]`` is the basis at r = 0, where the cutoff is 1."""
        m, c = rbf0.shape[0], self.channels
        radial = self.distance(rbf0).view(m, 1, 3, c).narrow(2, 0, 1).squeeze(2)  # [M, 1, C]
        z = table.index_select(1, species * (self.num_species + 1))  # (Z_i, Z_i): [M, N, C]
        return (math.sqrt(3.0) * radial * z).unsqueeze(2)

    def forward(self, species: Tensor, edge_index: Tensor, rbf: Tensor, cut: Tensor,
                edge_coeffs: Tensor, half: int, edge_chunk: int = 0,
                rbf0: Optional[Tensor] = None) -> Tensor:
        """``rbf`` ``[M, E, K]``, ``cut`` ``[M, E, 1]``, ``edge_coeffs`` ``[M, E, 9]``; ``half``:
        see :func:`per_pair`; ``edge_chunk``: see :mod:`mlff.nn.edge_chunks`; ``rbf0``
        ``[M, 1, K]``: the basis at r = 0 when every atom is its own neighbour (self loops)."""
        m, c, n = rbf.shape[0], self.channels, species.shape[0]
        table = self.pair_table()
        if edge_chunk > 0 and edge_index.shape[1] > edge_chunk and not torch.jit.is_scripting():
            x = self._chunked_sums(edge_index, edge_chunk, rbf, cut, edge_coeffs, species, table)
        else:
            x = self.edge_sums(edge_index, half, 0, n, rbf, cut, edge_coeffs, species, table)
        if rbf0 is not None:
            x = torch.cat([x.narrow(2, 0, 1) + self.self_term(species, table, rbf0), x.narrow(2, 1, 8)], dim=2)
        norm = self.norm((x * x).sum(2))  # [M, N, C]
        for linear in self.gate:
            norm = self.act(linear(norm))
        gate = cartesian.expand_parts(norm.view(m, n, 3, c))  # [M, N, 9, C]
        return self.parts(x) * gate


class Interaction(nn.Module):
    """One TensorNet layer, ``X [M, N, 9, C] -> X [M, N, 9, C]``."""

    def __init__(self, channels: int, num_rbf: int, members: int, act: str) -> None:
        super().__init__()
        self.radial = nn.ModuleList([
            GroupedLinear(num_rbf, channels, members, bias=True),
            GroupedLinear(channels, 2 * channels, members, bias=True),
            GroupedLinear(2 * channels, 3 * channels, members, bias=True)])
        self.before = PartLinears(channels, members)
        self.after = PartLinears(channels, members)
        self.act = Activation(act)
        self.channels = channels
        self.register_buffer("basis", cartesian.basis(torch.get_default_dtype()).reshape(9, 9),
                             persistent=False)

    def edge_sums(self, edge_index: Tensor, half: int, offset: int, n: int, rbf: Tensor, cut: Tensor,
                  y: Tensor) -> Tensor:
        """Messages ``y[sender] * f(r)`` summed on receivers ``offset .. offset + n - 1``
        ``[M, n, 9, C]``: ``rbf`` ``[M, E, K]``, ``cut`` ``[M, E, 1]``, ``y`` ``[M, N, 9, C]``."""
        sender, receiver = edge_index[0], edge_index[1]
        m, c = y.shape[0], self.channels
        n_edges = rbf.shape[1]
        f = first_half(rbf, half)
        for linear in self.radial:
            f = self.act(linear(f))
        f = per_pair(f * first_half(cut, half), half)
        f = cartesian.expand_parts(f.view(m, n_edges, 3, c))  # [M, E, 9, C]
        return cartesian.scatter_sum(cartesian.gather(y, sender) * f,
                                     receiver - offset if offset > 0 else receiver, n)

    @torch.jit.unused
    def _chunked_sums(self, edge_index: Tensor, edge_chunk: int, rbf: Tensor, cut: Tensor, y: Tensor) -> Tensor:
        return chunked_edge_sum(self.edge_sums, edge_index, y.shape[1], edge_chunk, [rbf, cut], [y], sender_axis=1)

    def self_messages(self, y: Tensor, rbf0: Tensor) -> Tensor:
        """The self-loop messages ``f(0) Y_i`` ``[M, N, 9, C]`` (``rbf0`` ``[M, 1, K]``: the basis
        at r = 0, where the cutoff is 1)."""
        m, c = y.shape[0], self.channels
        f = rbf0
        for linear in self.radial:
            f = self.act(linear(f))
        return y * cartesian.expand_parts(f.view(m, 1, 3, c))

    def forward(self, x: Tensor, edge_index: Tensor, rbf: Tensor, cut: Tensor, half: int,
                edge_chunk: int = 0, atom_chunk: int = 0, rbf0: Optional[Tensor] = None,
                charge_factor: Optional[Tensor] = None) -> Tensor:
        """``edge_chunk``, ``atom_chunk``: see :mod:`mlff.nn.edge_chunks` (eager only);
        ``rbf0`` ``[M, 1, K]``: the basis at r = 0 for self loops; ``charge_factor``
        ``[1, N, 1, 1]``: ``1 + 0.1 Q`` per atom (charge input)."""
        n = x.shape[1]
        x = x / ((x * x).sum(2, keepdim=True) + 1.0)
        y = self.before(x)
        if edge_chunk > 0 and edge_index.shape[1] > edge_chunk and not torch.jit.is_scripting():
            messages = self._chunked_sums(edge_index, edge_chunk, rbf, cut, y)
        else:
            messages = self.edge_sums(edge_index, half, 0, n, rbf, cut, y)
        if rbf0 is not None:
            messages = messages + self.self_messages(y, rbf0)
        if charge_factor is None:
            charge_factor = torch.ones(1, n, 1, 1, dtype=x.dtype, device=x.device)
        if atom_chunk > 0 and n > atom_chunk and not torch.jit.is_scripting():
            return self._chunked_update(x, y, messages, charge_factor, atom_chunk)
        return self.update(x, y, messages, charge_factor)

    def update(self, x: Tensor, y: Tensor, messages: Tensor, charge_factor: Tensor) -> Tensor:
        """The per-atom part of the layer: ``x``, ``y``, ``messages`` ``[M, n, 9, C]`` -> the new
        ``x`` (matrix products with the messages, normalisation, part linears, square);
        ``charge_factor`` ``[1, n, 1, 1]`` scales both products."""
        m, n, c = x.shape[0], x.shape[1], self.channels
        basis = self.basis.to(x.dtype)
        y_mat = cartesian.to_matrix(y.reshape(m * n, 9, c), basis)
        msg_mat = cartesian.to_matrix(messages.reshape(m * n, 9, c), basis)
        p = cartesian.from_matrix(cartesian.matmul(y_mat, msg_mat) + cartesian.matmul(msg_mat, y_mat),
                                  basis).view(m, n, 9, c) * charge_factor
        p = p / ((p * p).sum(2, keepdim=True) + 1.0)
        dx = self.after(p)
        dx_mat = cartesian.to_matrix(dx.reshape(m * n, 9, c), basis)
        square = cartesian.from_matrix(cartesian.matmul(dx_mat, dx_mat), basis).view(m, n, 9, c)
        return x + dx + square * charge_factor

    @torch.jit.unused
    def _chunked_update(self, x: Tensor, y: Tensor, messages: Tensor, charge_factor: Tensor,
                        atom_chunk: int) -> Tensor:
        def one(x_c: Tensor, y_c: Tensor, msg_c: Tensor, q_c: Tensor):
            return (self.update(x_c, y_c, msg_c, q_c),)

        return chunked_atoms(one, x.shape[1], atom_chunk,
                             [(x, 1), (y, 1), (messages, 1), (charge_factor, 1)], out_dims=(1,))[0]


class TensorNet(EnergyModel):
    """The TensorNet energy model (derivatives in :class:`mlff.models.potential.Potential`).

    ``forward(species [N], edge_index [2, E], vectors [M, E, 3] (A), context=None) -> energies
    [N, M] (eV, float64)``; ``vectors[m]`` is member m's copy of the edge vectors; ``context``
    the long-range inputs from the Potential (:mod:`mlff.nn.longrange`).
    """

    def _build(self, c: TensorNetConfig) -> None:
        s = len(c.elements)
        m = c.ensemble_size
        self.channels = c.channels
        self.feature_dim = c.channels  # the long-range block reads the head's input
        # exp-normal carries its cosine cutoff; the Bessel basis gets it in forward
        self.radial_basis = (ExpNormalBasis(c.r_cut, c.num_rbf, c.stored_rbf_widths)
                             if c.radial_basis == "expnorm" else BesselBasis(c.r_cut, c.num_rbf))
        self.bessel = c.radial_basis == "bessel"
        self.cutoff = CosineCutoff(c.r_cut)
        self.embedding = TensorEmbedding(c.channels, c.num_rbf, s, m, c.activation)
        self.layers = nn.ModuleList([Interaction(c.channels, c.num_rbf, m, c.activation)
                                     for _ in range(c.num_layers)])
        self.out_norm = GroupedLayerNorm(3 * c.channels, m)
        self.out_linear = GroupedLinear(3 * c.channels, c.channels, m, bias=True)
        self.head_hidden = GroupedLinear(c.channels, c.channels // 2, m, bias=True)
        self.head_out = GroupedLinear(c.channels // 2, 1, m, bias=True)
        self.act = Activation(c.activation)
        self.self_loops = c.self_loops
        self.charge_input = c.charge_input

    def _widths(self) -> Dict[str, float]:
        c, k, layers = self.config.channels, self.config.num_rbf, self.config.num_layers
        # radial chain (pre- and post-activation), its 9-part expansion, the gathered sender
        # tensors and their product; the embedding's edges are narrower
        edge = 12.0 * c + 3 * 9 * c
        return {
            # vectors and their gradient, lengths, basis, cutoff and the 9 edge coefficients
            "edge_fixed": 8.0 + 3 * k + 2 + 18,
            # per layer, kept across the atom chunks: x, its normalisation, y and the messages;
            # the embedding's and the head's per-atom tensors
            "atom_fixed": 4.0 * 9 * c * layers + 8.0 * 9 * c + 6.0 * c,
            "edge_layers": edge * (layers + 1), "edge_max": edge,
            # per layer, inside an atom chunk: the matrices, their products, p, dx and dx^2
            "atom_layers": 10.0 * 9 * c * layers, "atom_max": 10.0 * 9 * c,
        }

    def forward(self, species: Tensor, edge_index: Tensor, vectors: Tensor,
                context: Optional[Dict[str, Tensor]] = None) -> Tensor:
        m, n = vectors.shape[0], species.shape[0]
        lengths = torch.linalg.norm(vectors, dim=2, keepdim=True)  # [M, E, 1]
        cut = self.cutoff(lengths)
        rbf = self.radial_basis(lengths)
        if self.bessel:
            rbf = rbf * cut
        edge_coeffs = cartesian.edge_coefficients(vectors / lengths)  # [M, E, 9]
        half = mirrored_half(edge_index, vectors)
        rbf0: Optional[Tensor] = None
        if self.self_loops:  # the basis at r = 0 (the cutoff there is 1)
            rbf0 = self.radial_basis(torch.zeros(m, 1, 1, dtype=vectors.dtype, device=vectors.device))
        charge_factor: Optional[Tensor] = None
        if self.charge_input:
            if context is None:
                raise RuntimeError("this TensorNet reads the total charge: call it with the Potential's context")
            q = context["total_charge"].index_select(0, context["batch"]).to(vectors.dtype)
            charge_factor = (1.0 + 0.1 * q).view(1, n, 1, 1)
        x = self.embedding(species, edge_index, rbf, cut, edge_coeffs, half, self.edge_chunk, rbf0)
        for layer in self.layers:
            x = layer(x, edge_index, rbf, cut, half, self.edge_chunk, self.atom_chunk, rbf0, charge_factor)
        h = cartesian.squared_norms(x).reshape(m, n, 3 * self.channels)
        h = self.act(self.out_linear(self.out_norm(h)))
        out = self.head_out(self.act(self.head_hidden(h))).squeeze(-1)  # [M, N]
        return self.atomic_energies(species, out, edge_index, lengths, h, vectors, context)
