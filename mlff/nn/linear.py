"""Equivariant linear maps for a stack of independent models ("members") evaluated together.

Features are laid out member-major, ``[M, N, F]``: M members (an ensemble; M = 1 for a single
model), N atoms, and per member the e3nn ``mul x irrep`` layout ``[mul_1 x (2l_1+1) | mul_2 x
(2l_2+1) | ...]``. Every map here is block-diagonal in the members: member m only ever sees its
own weights, so an ensemble of M models is one set of batched matrix products instead of M
separate calls.

Written by hand rather than with ``e3nn.o3.Linear`` because e3nn's linear has no notion of
independent groups of channels; initialisation and normalisation follow e3nn's conventions
(weights N(0, 1), outputs divided by sqrt(fan-in)).
"""


import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from mlff.nn.radial import ScaledSiLU

#: an irreps list: ``[(multiplicity, l, parity), ...]``
Irreps = Sequence[Tuple[int, int, int]]


def irreps_dim(irreps: Irreps) -> int:
    """Total dimension ``sum mul * (2l + 1)``."""
    return sum(mul * (2 * l + 1) for mul, l, _ in irreps)


class IrrepsLinear(nn.Module):
    """Per-member equivariant linear map ``[M, N, F_in] -> [M, N, F_out]``.

    Every output block ``(mul_out, l, p)`` is the sum over the input blocks with the same
    ``(l, p)`` of ``x_block @ W`` (``W``: ``[M, mul_in, mul_out]``), divided by the square root of
    the total ``mul_in`` feeding it. With ``num_species > 0`` the weights also depend on the
    species of the atom (``W``: ``[M, S * mul_in, mul_out]``), which is how an atom-type-dependent
    skip connection or mixing is expressed; ``onehot`` ``[N, S]`` then selects them.

    Args:
        irreps_in, irreps_out: ``[(mul, l, parity), ...]`` per member.
        members: number of independent members M.
        num_species: 0 for species-independent weights, else the number of species S.
        allow_unreached: output blocks with no input of their type stay zero (a skip connection
            from scalar-only features into l > 0 outputs) instead of being an error.
    """

    in_starts: List[int]
    in_muls: List[int]
    out_starts: List[int]
    out_muls: List[int]
    dims: List[int]
    w_starts: List[int]
    norms: List[float]

    def __init__(self, irreps_in: Irreps, irreps_out: Irreps, members: int = 1, num_species: int = 0,
                 allow_unreached: bool = False) -> None:
        super().__init__()
        self.members = int(members)
        self.num_species = int(num_species)
        self.dim_out = irreps_dim(irreps_out)
        # weight rows per input channel: one set per species, or one
        self.species_factor = max(1, self.num_species)
        in_offsets = irreps_offsets(irreps_in)
        out_offsets = irreps_offsets(irreps_out)
        self.in_starts, self.in_muls, self.out_starts, self.out_muls = [], [], [], []
        self.dims, self.w_starts, self.norms = [], [], []
        total = 0
        for j, (mul_out, l_out, p_out) in enumerate(irreps_out):
            sources = [i for i, (_, l, p) in enumerate(irreps_in) if (l, p) == (l_out, p_out)]
            if not sources and allow_unreached:
                continue
            if not sources:
                raise ValueError(f"output irrep {mul_out}x(l={l_out}, p={p_out}) has no input of "
                                 f"the same type in {list(irreps_in)}")
            fan_in = sum(irreps_in[i][0] for i in sources)
            for i in sources:
                mul_in = irreps_in[i][0]
                self.in_starts.append(in_offsets[i])
                self.in_muls.append(mul_in)
                self.out_starts.append(out_offsets[j])
                self.out_muls.append(mul_out)
                self.dims.append(2 * l_out + 1)
                self.w_starts.append(total)
                # one species active per atom: the fan-in does not grow with S
                self.norms.append(1.0 / math.sqrt(fan_in))
                total += self.species_factor * mul_in * mul_out
        self.weight = nn.Parameter(torch.randn(self.members, total))

    def forward(self, x: Tensor, onehot: Tensor) -> Tensor:
        """``x``: ``[M, N, F_in]``; ``onehot``: ``[N, S]`` (ignored without species weights)."""
        m, n = x.shape[0], x.shape[1]
        out = torch.zeros(m, n, self.dim_out, dtype=x.dtype, device=x.device)
        s = self.species_factor
        for k in range(len(self.in_starts)):
            mul_in, mul_out, d = self.in_muls[k], self.out_muls[k], self.dims[k]
            start = self.in_starts[k]
            xb = x[:, :, start : start + mul_in * d].reshape(m, n, mul_in, d)
            if self.num_species > 0:
                # [M, N, S, mul_in, d]: the atom's features in its own species' slot
                xb = (xb.unsqueeze(2) * onehot.view(1, n, s, 1, 1)).reshape(m, n, s * mul_in, d)
            w = self.weight[:, self.w_starts[k] : self.w_starts[k] + s * mul_in * mul_out]
            w = w.view(m, s * mul_in, mul_out) * self.norms[k]
            # [M, N*d, S*mul_in] @ [M, S*mul_in, mul_out] -> [M, N, mul_out, d]
            y = torch.bmm(xb.transpose(2, 3).reshape(m, n * d, s * mul_in), w)
            y = y.view(m, n, d, mul_out).transpose(2, 3).reshape(m, n, mul_out * d)
            o = self.out_starts[k]
            out[:, :, o : o + mul_out * d] += y
        return out


class GroupedLinear(nn.Module):
    """Per-member dense layer ``[M, R, in] -> [M, R, out]``: ``x @ W / sqrt(in) (+ b)``, with
    ``W`` ``[M, in, out]`` ~ N(0, 1) (variance-preserving initialisation).

    :meth:`set_output_order` makes it emit its output columns in another order: the
    permutation is applied to ``W`` (``in x out`` numbers) rather than to the output
    (``R x out``), which for per-edge outputs is the difference between free and a large
    strided gather.
    """

    def __init__(self, size_in: int, size_out: int, members: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(members, size_in, size_out))
        if bias:
            self.bias = nn.Parameter(torch.zeros(members, 1, size_out))
        else:
            self.register_parameter("bias", None)
        self.norm = 1.0 / math.sqrt(size_in)
        self.reordered = False
        self.register_buffer("out_order", torch.arange(size_out), persistent=False)

    def set_output_order(self, order: Tensor) -> None:
        """Output column ``j`` becomes column ``order[j]`` of the plain layer (a permutation)."""
        if sorted(order.tolist()) != list(range(self.weight.shape[2])):
            raise ValueError("order must be a permutation of the output columns")
        self.out_order = order.to(torch.long).clone()
        self.reordered = True

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.index_select(2, self.out_order) if self.reordered else self.weight
        y = torch.bmm(x, weight * self.norm)
        bias = self.bias
        if bias is not None and self.reordered:
            bias = bias.index_select(2, self.out_order)
        if bias is not None:
            y = y + bias
        return y


class GroupedMLP(nn.Module):
    """Per-member MLP ``[M, R, in] -> [M, R, out]``: :class:`GroupedLinear` layers with
    normalised SiLU between them (:class:`~mlff.nn.radial.ScaledSiLU`), optional biases on the
    hidden layers, no bias and no activation after the last layer, so outputs are O(1) at
    initialisation whatever the widths."""

    def __init__(self, sizes: Sequence[int], members: int = 1, hidden_bias: bool = True) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
        layers: List[nn.Module] = []
        for k in range(len(sizes) - 1):
            last = k == len(sizes) - 2
            layers.append(GroupedLinear(sizes[k], sizes[k + 1], members, bias=hidden_bias and not last))
            if not last:
                layers.append(ScaledSiLU())
        self.net = nn.Sequential(*layers)

    def set_output_order(self, order: Tensor) -> None:
        """Emit the output columns in ``order`` (see :meth:`GroupedLinear.set_output_order`)."""
        self.net[len(self.net) - 1].set_output_order(order)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def irreps_offsets(irreps: Irreps) -> List[int]:
    """Start of each block in the flat ``mul x irrep`` layout."""
    offsets, total = [], 0
    for mul, l, _ in irreps:
        offsets.append(total)
        total += mul * (2 * l + 1)
    return offsets


class GroupedLayerNorm(nn.Module):
    """Per-member layer normalisation over the last axis, ``[M, R, F] -> [M, R, F]``, with
    per-member affine weight and bias ``[M, 1, F]`` (initialised to 1 and 0)."""

    def __init__(self, size: int, members: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, size))
        self.bias = nn.Parameter(torch.zeros(members, 1, size))
        self.size = int(size)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.layer_norm(x, [self.size], None, None, self.eps) * self.weight + self.bias
