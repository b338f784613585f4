"""MACE-style higher-order equivariant message passing (Batatia et al. 2022, arXiv 2206.07697),
written on e3nn 0.6.

Per interaction layer t (shapes for N atoms, E edges, C channels):

1. edge features: Bessel basis x polynomial envelope ``[E, num_bessel]`` and real spherical
   harmonics up to ``max_ell`` (component normalisation) ``[E, (max_ell+1)^2]``;
2. interaction: ``linear_up`` of node features; channel-wise ("uvu") tensor product of the
   sender's features with the edge harmonics, weighted per edge by a radial MLP; sum over
   neighbours divided by ``avg_num_neighbors``; linear mixing into the atomic basis
   ``A`` with irreps ``C x (0e + 1o + 2e + ... max_ell)`` (species-dependent in the first layer);
3. product: species-dependent symmetric contraction of ``A`` up to ``correlation`` (body order
   correlation + 1), linear, plus a species-dependent skip connection from the layer input;
4. readout: linear on the scalars (inner layers) or a small MLP (last layer).

Atomic energy: ``E_i = E0[Z_i] + scale * sum_t readout_t(i) + shift``.
"""


from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from e3nn import o3
from torch import Tensor, nn

from mlff.defaults import DEFAULT_R_CUT
from mlff.models.base import EnergyModel, ModelConfig
from mlff.neighbors import first_half, mirrored_half, per_pair
from mlff.nn.channelwise_tp import ChannelwiseTensorProduct
from mlff.nn.edge_chunks import chunked_atoms, chunked_edge_sum
from mlff.nn.linear import GroupedLinear, GroupedMLP, IrrepsLinear
from mlff.nn.radial import BesselBasis, PolynomialCutoff
from mlff.nn.symmetric_contraction import SymmetricContraction


@dataclass(frozen=True)
class MACEConfig(ModelConfig):
    """Hyperparameters of :class:`MACE` (validated on creation).

    Attributes:
        elements: atomic numbers the model knows, in species-index order.
        channels: feature channels C.
        max_L: highest l of hidden node features (0 -> 0e; 1 -> 0e + 1o; 2 -> + 2e).
        max_ell: highest l of edge spherical harmonics and of the atomic basis A.
        correlation: body order minus one of the product basis (1..4).
        r_cut: cutoff radius (A).
        num_interactions: message-passing layers (>= 1).
        num_bessel: radial basis functions.
        cutoff_p: exponent of the polynomial envelope.
        radial_mlp: hidden sizes of the radial MLP.
        readout_mlp: hidden size of the last layer's readout MLP.
        avg_num_neighbors: normalisation of neighbour sums (from the training data).
        e0s: isolated-atom energies (eV), one per element.
        scale: energy scale of the readouts (eV); shift: per-atom energy shift (eV).
        dtype: "float32" or "float64" (parameters and internal arithmetic).
        ensemble_size: number of independent members M evaluated together (1: a single model).
        residual_first: the first layer, like the others, adds a species-dependent skip
            connection from its input (the embedding) after the product, instead of mixing its
            messages by species (mace-torch's ``RealAgnosticResidualInteractionBlock`` as the
            first interaction; imported models).
        priors: physical energy terms added to the learned one, e.g. ``{"zbl": {}}``
            (:mod:`mlff.nn.priors`).
        long_range: ``none``, ``charges`` (learned charges and their Ewald / direct
            Coulomb energy), ``ewald_mp`` (Ewald message passing) or ``both``;
            ``long_range_options`` tune it (:mod:`mlff.nn.longrange`).
    """

    elements: Tuple[int, ...]
    channels: int = 64
    max_L: int = 1
    max_ell: int = 3
    correlation: int = 3
    r_cut: float = DEFAULT_R_CUT
    num_interactions: int = 2
    num_bessel: int = 8
    cutoff_p: int = 5
    radial_mlp: Tuple[int, ...] = (64, 64, 64)
    readout_mlp: int = 16
    avg_num_neighbors: float = 1.0
    e0s: Tuple[float, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    dtype: str = "float64"
    ensemble_size: int = 1
    residual_first: bool = False
    priors: Dict[str, Dict[str, float]] = field(default_factory=dict)
    long_range: str = "none"
    long_range_options: Dict[str, float] = field(default_factory=dict)

    model_name = "MACE"
    tuple_fields = ("elements", "radial_mlp", "e0s")

    def __post_init__(self) -> None:
        self._normalise_and_check({
            "channels": self.channels >= 1, "max_L": 0 <= self.max_L <= self.max_ell,
            "max_ell": 0 <= self.max_ell <= 4, "correlation": 1 <= self.correlation <= 4,
            "num_interactions": self.num_interactions >= 1,
            "num_bessel": self.num_bessel >= 1, "cutoff_p": self.cutoff_p >= 2,
            "readout_mlp": self.readout_mlp >= 1, "avg_num_neighbors": self.avg_num_neighbors > 0,
        })


def _hidden_irreps(channels: int, max_L: int) -> List[Tuple[int, int, int]]:
    return [(channels, l, (-1) ** l) for l in range(max_L + 1)]


def _sh_irreps(channels: int, max_ell: int) -> List[Tuple[int, int, int]]:
    return [(channels, l, (-1) ** l) for l in range(max_ell + 1)]


def _e3nn(irreps: List[Tuple[int, int, int]]) -> o3.Irreps:
    return o3.Irreps([(mul, (l, p)) for mul, l, p in irreps])


class InteractionBlock(nn.Module):
    """Node features + edge features -> atomic basis ``A`` ``[N, M * C, (max_ell+1)^2]``.

    Node features are ``[M, N, F]`` (member-major, e3nn layout per member, see
    :mod:`mlff.nn.linear`); edge harmonics ``[M * E, (max_ell+1)^2]`` and radial features
    ``[M, E, num_bessel]`` are per member because every member differentiates with respect to
    its own copy of the positions (per-member forces in one backward pass).
    """

    def __init__(
        self,
        irreps_in: List[Tuple[int, int, int]],
        irreps_sh: o3.Irreps,
        channels: int,
        max_ell: int,
        num_bessel: int,
        radial_hidden: Sequence[int],
        avg_num_neighbors: float,
        num_species: int,
        species_mixing: bool,
        members: int,
    ) -> None:
        super().__init__()
        target = _sh_irreps(channels, max_ell)
        e3nn_target = _e3nn(target)
        self.linear_up = IrrepsLinear(irreps_in, irreps_in, members)
        irreps_mid: List[Tuple[int, o3.Irrep]] = []
        instructions = []
        for i, (mul, ir_in) in enumerate(_e3nn(irreps_in)):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in e3nn_target:
                        k = len(irreps_mid)
                        irreps_mid.append((mul, ir_out))
                        instructions.append((i, j, k, "uvu", True))
        # channel-wise ("uvu") product, one weight per edge, channel and path from the radial MLP
        self.conv_tp = o3.TensorProduct(
            _e3nn(irreps_in), irreps_sh, o3.Irreps(irreps_mid), instructions,
            shared_weights=False, internal_weights=False,
        )
        # the e3nn module defines the product (and stays for its state-dict entries); the
        # forward pass runs the same numbers contracted in a cheaper order
        self.tp = ChannelwiseTensorProduct(self.conv_tp)
        self.radial = GroupedMLP([num_bessel, *radial_hidden, self.conv_tp.weight_numel], members)
        self.radial.set_output_order(self.tp.weight_order())  # the weights in self.tp's order
        # explicit sizes (not -1) so that graphs without edges (isolated atoms) reshape fine
        self.tp_weight_numel: int = int(self.conv_tp.weight_numel)
        self.tp_out_dim: int = int(self.conv_tp.irreps_out.dim)
        mid = [(mul, ir.l, ir.p) for mul, ir in irreps_mid]
        self.linear = IrrepsLinear(mid, target, members)
        # First layer: a species-dependent linear map of A (its input carries no species
        # information beyond the embedding). Zero or one module, TorchScript-friendly.
        self.mixing = nn.ModuleList()
        if species_mixing:
            self.mixing.append(IrrepsLinear(target, target, members, num_species))
        self.inv_avg_neighbors = 1.0 / float(avg_num_neighbors)
        self.channels = channels
        self.dims: List[int] = [2 * l + 1 for l in range(max_ell + 1)]
        # floats per edge and member that autograd keeps for one layer (radial MLP activations,
        # its weights, the gathered sender features, the product's pieces): memory planning
        self.edge_width: float = float(2 * sum(radial_hidden) + self.tp_weight_numel
                                       + _e3nn(irreps_in).dim + 2 * self.tp_out_dim)

    def edge_sums(self, edge_index: Tensor, half: int, offset: int, n: int, attrs: Tensor,
                  edge_radial: Tensor, x: Tensor) -> Tensor:
        """Messages of the edges ``edge_index`` ``[2, E]`` summed on receivers ``offset ..
        offset + n - 1``: ``attrs`` ``[M, E, (max_ell+1)^2]``, ``edge_radial`` ``[M, E,
        num_bessel]``, ``x`` ``[M, N, F]`` -> ``[M, n, mid]`` (e3nn order)."""
        sender = edge_index[0]
        receiver = edge_index[1] - offset if offset > 0 else edge_index[1]
        m = x.shape[0]
        # the radial MLP depends on the distance alone: once per pair in mirror order
        weights = per_pair(self.radial(first_half(edge_radial, half)), half).unbind(0)  # M x [E, W]
        # One member at a time on the edges, so every per-edge tensor is the size of a single
        # model's ([E, W], [E, mid]; an ensemble's [M, E, mid] is over 100 MB on a 192-water box),
        # with the node gathers and scatters along dim 0.
        summed: List[Tensor] = []
        for k in range(m):
            x_edges = x[k].index_select(0, sender)  # [E, F]
            groups = self.tp.forward_groups(x_edges, attrs[k], weights[k])  # [E, mid] in pieces
            # sum over neighbours piece by piece, then e3nn's column order on the (fewer) nodes
            summed.append(self.tp.to_e3nn_order([
                torch.zeros(n, g.shape[1], dtype=g.dtype, device=g.device).index_add_(0, receiver, g)
                for g in groups]))
        return torch.stack(summed)

    @torch.jit.unused
    def _chunked_sums(self, edge_index: Tensor, edge_chunk: int, attrs: Tensor, edge_radial: Tensor,
                      x: Tensor) -> Tensor:
        return chunked_edge_sum(self.edge_sums, edge_index, x.shape[1], edge_chunk, [attrs, edge_radial], [x],
                                sender_axis=1)

    def forward(
        self,
        node_feats: Tensor,
        edge_attrs: Tensor,
        edge_radial: Tensor,
        edge_index: Tensor,
        species_onehot: Tensor,
        half: int = 0,
        edge_chunk: int = 0,
    ) -> Tensor:
        """``half``: > 0 when the edges are in mirror order (:func:`mlff.neighbors.mirrored_half`);
        ``edge_chunk`` > 0: at most that many edges at a time, recomputed in the backward pass
        (:mod:`mlff.nn.edge_chunks`; eager only)."""
        return self.to_basis(self.messages(node_feats, edge_attrs, edge_radial, edge_index, species_onehot,
                                           half, edge_chunk), species_onehot)

    def messages(self, node_feats: Tensor, edge_attrs: Tensor, edge_radial: Tensor, edge_index: Tensor,
                 species_onehot: Tensor, half: int = 0, edge_chunk: int = 0) -> Tensor:
        """The summed messages ``[M, N, mid]`` (arguments as in :meth:`forward`)."""
        m, n = node_feats.shape[0], node_feats.shape[1]
        n_edges = edge_index.shape[1]
        x = self.linear_up(node_feats, species_onehot)  # [M, N, F]
        attrs = edge_attrs.view(m, n_edges, edge_attrs.shape[1])  # [M, E, (max_ell+1)^2]
        if edge_chunk > 0 and n_edges > edge_chunk and not torch.jit.is_scripting():
            return self._chunked_sums(edge_index, edge_chunk, attrs, edge_radial, x)
        return self.edge_sums(edge_index, half, 0, n, attrs, edge_radial, x)

    def to_basis(self, summed: Tensor, species_onehot: Tensor) -> Tensor:
        """Summed messages ``[M, N, mid]`` -> the atomic basis ``A`` ``[N, M * C, D]`` (per atom)."""
        m, n = summed.shape[0], summed.shape[1]
        a = self.linear(summed * self.inv_avg_neighbors, species_onehot)  # [M, N, C * D]
        for mix in self.mixing:
            a = mix(a, species_onehot)
        # per member [C x 1 | C x 3 | C x 5 | ...] -> [M, N, C, D] -> [N, M * C, D]
        blocks: List[Tensor] = []
        start = 0
        for d in self.dims:
            blocks.append(a[:, :, start : start + self.channels * d].reshape(m, n, self.channels, d))
            start += self.channels * d
        return torch.cat(blocks, dim=3).transpose(0, 1).reshape(n, m * self.channels, -1)


class ProductBlock(nn.Module):
    """Symmetric contraction of ``A`` + linear + species-dependent skip from the layer input
    (no skip in the first layer, whose input is only the species embedding).

    ``a``: ``[N, M * C, D]``; ``node_feats``: ``[M, N, F_in]``; returns ``[M, N, F_out]``.
    """

    out_dims: List[int]

    def __init__(
        self,
        irreps_in: List[Tuple[int, int, int]],
        irreps_out: List[Tuple[int, int, int]],
        channels: int,
        max_ell: int,
        correlation: int,
        num_species: int,
        members: int,
        use_skip: bool = True,
    ) -> None:
        super().__init__()
        # the contraction is channel-wise, so the members' channels simply sit side by side
        self.contraction = SymmetricContraction(
            members * channels, max_ell, [(l, p) for _, l, p in irreps_out], correlation, num_species
        )
        self.linear = IrrepsLinear(irreps_out, irreps_out, members)
        # zero or one skip modules (a ModuleList keeps forward TorchScript-able either way)
        self.skips = nn.ModuleList()
        if use_skip:
            # from the embedding (scalars) only the scalar outputs are reached
            self.skips.append(IrrepsLinear(irreps_in, irreps_out, members, num_species,
                                           allow_unreached=True))
        self.members = members
        self.channels = channels
        self.out_dims = [2 * l + 1 for _, l, _ in irreps_out]
        # floats per atom and member that the contraction keeps for the backward pass (both
        # factors of every monomial product, and the coupled features): memory planning
        c = self.contraction
        monomials = sum(int(getattr(c, f"left_{k}").numel()) for k in range(c.num_higher))
        self.atom_width: float = float(channels * (2 * monomials + 2 * c.coupling.shape[0]))

    def forward(self, a: Tensor, node_feats: Tensor, species_onehot: Tensor, species: Tensor) -> Tensor:
        n = a.shape[0]
        b = self.contraction(a, species)  # [N, (M*C) x irreps], irrep-major
        blocks: List[Tensor] = []
        start = 0
        for d in self.out_dims:
            width = self.members * self.channels * d
            blocks.append(b[:, start : start + width].reshape(n, self.members, self.channels * d))
            start += width
        b = torch.cat(blocks, dim=2).transpose(0, 1)  # [M, N, F_out]
        b = self.linear(b, species_onehot)
        for skip in self.skips:
            b = b + skip(node_feats, species_onehot)
        return b


class MACE(EnergyModel):
    """The MACE energy model: graph pieces in, per-atom energies out (no derivatives here; the
    :class:`mlff.models.potential.Potential` wrapper adds forces and stress).

    With ``ensemble_size`` M > 1 the module holds M independent members (own weights, own random
    initialisation) evaluated together as batched matrix products.

    ``forward(species [N], edge_index [2, E], vectors [M, E, 3] (A), context=None) -> energies
    [N, M] (eV, float64)``; ``vectors[m]`` is member m's copy of the edge vectors; ``context``
    the long-range inputs from the Potential (:mod:`mlff.nn.longrange`).
    """

    def _build(self, c: MACEConfig) -> None:
        num_species = len(c.elements)
        members = c.ensemble_size
        self.embedding = nn.Embedding(num_species, members * c.channels)
        irreps_sh = o3.Irreps.spherical_harmonics(c.max_ell)
        self.spherical_harmonics = o3.SphericalHarmonics(
            irreps_sh, normalize=True, normalization="component"
        )
        self.bessel = BesselBasis(c.r_cut, c.num_bessel)
        self.envelope = PolynomialCutoff(c.r_cut, c.cutoff_p)
        hidden = _hidden_irreps(c.channels, c.max_L)
        scalars = [(c.channels, 0, 1)]
        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.readouts = nn.ModuleList()
        irreps_in = scalars
        for t in range(c.num_interactions):
            last = t == c.num_interactions - 1
            irreps_out = scalars if last else hidden
            self.interactions.append(
                InteractionBlock(irreps_in, irreps_sh, c.channels, c.max_ell, c.num_bessel,
                                 list(c.radial_mlp), c.avg_num_neighbors, num_species,
                                 species_mixing=t == 0 and not c.residual_first, members=members)
            )
            self.products.append(
                ProductBlock(irreps_in, irreps_out, c.channels, c.max_ell, c.correlation,
                             num_species, members, use_skip=t > 0 or c.residual_first)
            )
            if last:
                self.readouts.append(GroupedMLP([c.channels, c.readout_mlp, 1], members))
            else:
                self.readouts.append(GroupedLinear(c.channels, 1, members))
            irreps_in = irreps_out
        self.channels = c.channels
        self.feature_dim = c.channels  # the long-range block reads the last layer's scalars

    def _widths(self) -> Dict[str, float]:
        c = self.config
        sh = (c.max_ell + 1) ** 2
        edge = [block.edge_width for block in self.interactions]
        hidden = _e3nn(_hidden_irreps(c.channels, c.max_L)).dim
        # per layer, kept across the atom chunks: the summed messages and the node features
        held = sum(block.tp_out_dim + 2.0 * hidden + 1 for block in self.interactions)
        # per layer, inside an atom chunk: the basis (linear, mixing, A), the contraction's
        # intermediates, the product's linear and skip, the readout
        atom = [p.atom_width + 2.0 * i.tp_out_dim + 3.0 * c.channels * sh + 4.0 * hidden
                for i, p in zip(self.interactions, self.products)]
        return {
            # vectors and their gradient, lengths, harmonics and basis with their intermediates
            "edge_fixed": 8.0 + 3 * sh + 3 * c.num_bessel,
            "atom_fixed": held,
            "edge_layers": float(sum(edge)), "edge_max": max(edge),
            "atom_layers": float(sum(atom)), "atom_max": max(atom),
        }

    def forward(self, species: Tensor, edge_index: Tensor, vectors: Tensor,
                context: Optional[Dict[str, Tensor]] = None) -> Tensor:
        m = vectors.shape[0]
        n = species.shape[0]
        lengths = torch.linalg.norm(vectors, dim=2, keepdim=True)  # [M, E, 1]
        edge_attrs = self.spherical_harmonics(vectors.reshape(-1, 3))  # [M*E, (max_ell+1)^2]
        edge_radial = self.bessel(lengths) * self.envelope(lengths)  # [M, E, num_bessel]
        half = mirrored_half(edge_index, vectors)  # > 0: edges in mirror order
        onehot = torch.nn.functional.one_hot(species, self.num_species).to(vectors.dtype)
        node_feats = self.embedding(species).view(n, m, self.channels).transpose(0, 1)  # [M, N, C]
        readout = torch.zeros(m, n, dtype=vectors.dtype, device=vectors.device)
        chunk_atoms = self.atom_chunk > 0 and n > self.atom_chunk and not torch.jit.is_scripting()
        t = 0
        for interaction, product, head in zip(self.interactions, self.products, self.readouts):
            if chunk_atoms:  # the per-atom part of the layer in atom chunks (eager only)
                summed = interaction.messages(node_feats, edge_attrs, edge_radial, edge_index, onehot, half,
                                              self.edge_chunk)
                node_feats, layer_readout = self._chunked_atom_update(t, summed, node_feats, onehot, species)
            else:
                a = interaction(node_feats, edge_attrs, edge_radial, edge_index, onehot, half,
                                self.edge_chunk)
                node_feats = product(a, node_feats, onehot, species)
                layer_readout = head(node_feats[:, :, : self.channels]).squeeze(-1)
            readout = readout + layer_readout
            t += 1
        return self.atomic_energies(species, readout, edge_index, lengths, node_feats[:, :, : self.channels],
                                    vectors, context)

    @torch.jit.unused
    def _chunked_atom_update(self, t: int, summed: Tensor, node_feats: Tensor, onehot: Tensor,
                             species: Tensor) -> Tuple[Tensor, Tensor]:
        """Everything of layer ``t`` after the message sums, which is independent per atom
        (basis, contraction, linear, skip, readout), on chunks of ``atom_chunk`` atoms under
        checkpoints: ``[M, N, F_out]`` features and ``[M, N]`` readout."""
        interaction, product, head = self.interactions[t], self.products[t], self.readouts[t]

        def update(summed_c: Tensor, feats_c: Tensor, onehot_c: Tensor, species_c: Tensor):
            new = product(interaction.to_basis(summed_c, onehot_c), feats_c, onehot_c, species_c)
            return new, head(new[:, :, : self.channels]).squeeze(-1)

        inputs = [(summed, 1), (node_feats, 1), (onehot, 0), (species, 0)]
        new, readout = chunked_atoms(update, species.shape[0], self.atom_chunk, inputs, out_dims=(1, 1))
        return new, readout
