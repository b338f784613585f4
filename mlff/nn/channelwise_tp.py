"""Channel-wise ("uvu") tensor product of node features with edge harmonics, contracted in the
order that is cheap on a CPU.

For one edge, input block ``i`` (multiplicity U, degree l1) and its paths p (harmonic degree
l2 -> output degree l3, weight ``w[u, p]``), e3nn's ``o3.TensorProduct`` forms the outer
product ``x[u, m1] * y[m2]`` (``[E, U, 2l1+1, 2l2+1]`` per path) and contracts it with the
Wigner 3j symbol. Here the harmonics are contracted first, once per edge for all channels,
and the paths of a block with the same output degree l3 (a group g) go together:

    Y_g[e, m1, (p, m3)] = sum_m2 y[e, m2] C_g[m1, m2, (p, m3)]     (one [E, S] @ [S, ...] for all g)
    out_g[e, u, p, m3] = w[e, u, p] * sum_m1 x[e, u, m1] Y_g[e, m1, (p, m3)]   (one bmm per group)

so the largest tensor is the output itself, and the weights never need an output-sized gather
(they come from the radial MLP already in this order, see ``weight_order``). ``C_i`` (Clebsch-Gordan coefficients times e3nn's path
normalisation) is read off the e3nn module it replaces, so the numbers, the weight layout and
the normalisation are e3nn's by construction (tests/mlff/test_channelwise_tp.py compares them).

Written by hand because e3nn has no such contraction order and the hot path must stay
TorchScript-able.
"""


import copy
from typing import List

import torch
from e3nn import o3
from torch import Tensor, nn


class ChannelwiseTensorProduct(nn.Module):
    """Drop-in for an e3nn ``o3.TensorProduct`` whose instructions are all ``"uvu"`` with
    weights, ``shared_weights=False``, and whose second input has multiplicity 1 per irrep
    (spherical harmonics).

    ``forward(x, y, w)`` gives e3nn's output ``[E, dim_out]``. ``forward_groups`` gives the same
    numbers as a list of pieces, one per (input block, output degree), whose columns are e3nn's
    in another order, from weights in the order of ``weight_order()``; a sum over edges (the
    scatter to nodes) commutes with the column order, so the hot path scatters the pieces and
    restores e3nn's order on the nodes with ``to_e3nn_order``.

    Shapes: ``x`` ``[E, dim_in1]``, ``y`` ``[E, dim_in2]``, ``w`` ``[E, weight_numel]`` (e3nn's
    weight layout). Buffers are not saved in a state dict: they are rebuilt from the e3nn module.
    """

    x_starts: List[int]
    muls: List[int]
    l1_dims: List[int]
    group_blocks: List[int]
    group_paths: List[int]
    group_dims: List[int]
    coeff_starts: List[int]
    w_starts: List[int]
    coeff_sizes: List[int]
    w_sizes: List[int]
    x_sizes: List[int]
    x_part_of_block: List[int]
    path_order: List[int]

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        irreps_in1, irreps_in2, irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        if tp.internal_weights or tp.shared_weights:
            raise ValueError("ChannelwiseTensorProduct needs per-edge weights (shared_weights=False)")
        if any(mul != 1 for mul, _ in irreps_in2):
            raise ValueError(f"the second input must have multiplicity 1 per irrep, got {irreps_in2}")
        for ins in tp.instructions:
            if ins.connection_mode != "uvu" or not ins.has_weight:
                raise ValueError(f"only weighted 'uvu' instructions are supported, got {ins}")
        self.dim_in2 = irreps_in2.dim
        self.dim_out = irreps_out.dim
        self.weight_numel = tp.weight_numel
        w_offsets, off = [], 0  # e3nn's flat weight vector: [U] per instruction, in order
        for ins in tp.instructions:
            w_offsets.append(off)
            off += irreps_in1[ins.i_in1].mul
        # Groups: the paths of one input block with the same output degree, so that a group's
        # output is [E, U, P_g, 2l3+1] and its weights [E, U, P_g, 1] broadcast (no gather of
        # output-sized weights).
        self.x_starts, self.muls, self.l1_dims = [], [], []
        self.group_blocks, self.group_paths, self.group_dims = [], [], []
        self.coeff_starts, self.w_starts = [], []
        x_slices = irreps_in1.slices()
        out_slices = irreps_out.slices()
        coeffs: List[Tensor] = []     # per group [S, d1 * P_g * d3]
        w_index: List[Tensor] = []    # per group [U * P_g], (u, p) order
        order: List[Tensor] = []      # per group: e3nn columns of the group's columns (u, p, m3)
        ref = copy.deepcopy(tp).to(torch.float64)
        c_start = w_start = 0
        for i, (mul, ir) in enumerate(irreps_in1):
            paths = [k for k, ins in enumerate(tp.instructions) if ins.i_in1 == i]
            if not paths:
                continue
            block = len(self.muls)
            self.x_starts.append(x_slices[i].start)
            self.muls.append(mul)
            self.l1_dims.append(ir.dim)
            for l3 in sorted({irreps_out[tp.instructions[k].i_out].ir.l for k in paths}):
                group = [k for k in paths if irreps_out[tp.instructions[k].i_out].ir.l == l3]
                d3 = 2 * l3 + 1
                coeff = self._coefficients(ref, i, group)  # [d1, S, P_g * d3]
                # Y_g columns (m1, p, m3); weights and output (u, p) / (u, p, m3) for d1 > 1,
                # (p, u) / (p, u, m3) (e3nn's [U, 2l3+1] block per path) for d1 = 1: the faster
                # of the two products on this CPU in each case (see forward_groups)
                coeffs.append(coeff.permute(1, 0, 2).reshape(self.dim_in2, -1))
                starts = [out_slices[tp.instructions[k].i_out].start for k in group]
                if ir.dim > 1:
                    w_index.append(torch.stack([torch.arange(mul) + w_offsets[k] for k in group], 1).reshape(-1))
                    order.append(torch.cat([torch.arange(st + u * d3, st + (u + 1) * d3)
                                            for u in range(mul) for st in starts]))
                else:
                    w_index.append(torch.cat([torch.arange(mul) + w_offsets[k] for k in group]))
                    order.append(torch.cat([torch.arange(st, st + mul * d3) for st in starts]))
                self.group_blocks.append(block)
                self.group_paths.append(len(group))
                self.group_dims.append(d3)
                self.coeff_starts.append(c_start)
                self.w_starts.append(w_start)
                c_start += coeffs[-1].shape[1]
                w_start += mul * len(group)
        self.coeff_sizes = [int(c.shape[1]) for c in coeffs]
        self.w_sizes = [int(w.shape[0]) for w in w_index]
        # x split into consecutive pieces: the blocks used, and the gaps between them
        self.x_sizes, self.x_part_of_block = [], []
        pos = 0
        for start, mul, d1 in zip(self.x_starts, self.muls, self.l1_dims):
            if start > pos:
                self.x_sizes.append(start - pos)
            self.x_part_of_block.append(len(self.x_sizes))
            self.x_sizes.append(mul * d1)
            pos = start + mul * d1
        if pos < irreps_in1.dim:
            self.x_sizes.append(irreps_in1.dim - pos)
        # instruction index of each path in group order -> where each instruction's block is
        group_instr = [k for i, (mul, ir) in enumerate(irreps_in1)
                       for l3 in sorted({irreps_out[tp.instructions[k].i_out].ir.l
                                         for k, ins in enumerate(tp.instructions) if ins.i_in1 == i})
                       for k, ins in enumerate(tp.instructions)
                       if ins.i_in1 == i and irreps_out[ins.i_out].ir.l == l3]
        if sorted(tp.instructions[k].i_out for k in group_instr) != list(range(len(irreps_out))):
            raise ValueError("every output irrep must come from exactly one instruction")
        by_out = {tp.instructions[k].i_out: n for n, k in enumerate(group_instr)}
        self.path_order = [by_out[o] for o in range(len(irreps_out))]
        grouped_to_e3nn = torch.cat(order)
        if sorted(grouped_to_e3nn.tolist()) != list(range(self.dim_out)):
            raise ValueError("the instructions do not cover every output column exactly once")
        dtype = torch.get_default_dtype()  # the model is built under its dtype (mace._default_dtype)
        self.register_buffer("coeff", torch.cat(coeffs, dim=1).to(dtype), persistent=False)
        self.register_buffer("w_index", torch.cat(w_index), persistent=False)

    @staticmethod
    def _coefficients(tp: o3.TensorProduct, i: int, paths: List[int]) -> Tensor:
        """``[d1, S, D_i]``: e3nn's output of channel 0 of the paths of block ``i`` for unit
        inputs and unit weights (bilinear, so this is the whole map), in float64."""
        irreps_in1, irreps_out = tp.irreps_in1, tp.irreps_out
        d1 = irreps_in1[i].ir.dim
        s = tp.irreps_in2.dim
        start = irreps_in1.slices()[i].start
        x = torch.zeros(d1 * s, irreps_in1.dim, dtype=torch.float64)
        y = torch.zeros(d1 * s, s, dtype=torch.float64)
        for m1 in range(d1):
            for m2 in range(s):
                x[m1 * s + m2, start + m1] = 1.0  # channel u = 0
                y[m1 * s + m2, m2] = 1.0
        w = torch.ones(d1 * s, tp.weight_numel, dtype=torch.float64)
        ref = tp.to(torch.float64)
        with torch.no_grad():
            out = ref(x, y, w)
        cols = []
        out_slices = irreps_out.slices()
        for k in paths:
            ins = tp.instructions[k]
            d3 = irreps_out[ins.i_out].ir.dim
            st = out_slices[ins.i_out].start
            cols.append(out[:, st : st + d3])  # channel 0 of path k
        return torch.cat(cols, dim=1).reshape(d1, s, -1)

    def forward_groups(self, x: Tensor, y: Tensor, w: Tensor) -> List[Tensor]:
        """The output as one ``[E, U * P_g * (2l3+1)]`` tensor per group (see the class
        docstring), e3nn's columns in another order. ``w`` ``[E, weight_numel]`` is in the
        order of :meth:`weight_order` (the producing layer permutes its own weights for it)."""
        n_edges = x.shape[0]
        # split, not narrow: their backward is one concatenation instead of a zero-filled
        # full-size gradient per group
        y_parts = torch.mm(y, self.coeff).split(self.coeff_sizes, dim=1)  # harmonics contracted once
        w_parts = w.split(self.w_sizes, dim=1)  # [E, U * P_g] each, (u, p) order
        x_parts = x.split(self.x_sizes, dim=1)
        outs: List[Tensor] = []
        for g in range(len(self.group_dims)):
            b = self.group_blocks[g]
            mul, d1 = self.muls[b], self.l1_dims[b]
            p, d3 = self.group_paths[g], self.group_dims[g]
            if d1 == 1:
                # (x w)[E * P, U, 1] @ Y[E * P, 1, d3]: a batched outer product, output (p, u, m3)
                xw = x_parts[self.x_part_of_block[b]].view(n_edges, 1, mul) * w_parts[g].view(n_edges, p, mul)
                o = torch.bmm(xw.view(n_edges * p, mul, 1), y_parts[g].reshape(n_edges * p, 1, d3))
            else:
                # x[E, U, d1] @ Y[E, d1, P * d3], then the weights broadcast over m3: output
                # (u, p, m3); batching the product over (e, p) with the weights folded into x
                # instead was 1.4-1.8x slower (many tiny matrices)
                x_b = x_parts[self.x_part_of_block[b]].view(n_edges, mul, d1)
                o = torch.bmm(x_b, y_parts[g].reshape(n_edges, d1, p * d3)).view(n_edges, mul, p, d3)
                o = o * w_parts[g].view(n_edges, mul, p, 1)
            outs.append(o.reshape(n_edges, p * mul * d3))
        return outs

    def to_e3nn_order(self, groups: List[Tensor]) -> Tensor:
        """Per-group tensors ``[R, cols_g]`` (edges, or their sums on nodes) -> ``[R, dim_out]``
        in e3nn's order: each path's ``[U, 2l3+1]`` block, paths in instruction order. Only
        contiguous copies (a column gather along dim 1 is slow on CPU)."""
        paths: List[Tensor] = []
        for g in range(len(groups)):
            t = groups[g]
            mul, p, d3 = self.muls[self.group_blocks[g]], self.group_paths[g], self.group_dims[g]
            if self.l1_dims[self.group_blocks[g]] > 1:  # (u, p, m3) -> (p, u, m3)
                t = t.view(t.shape[0], mul, p, d3).transpose(1, 2).reshape(t.shape[0], p * mul * d3)
            paths.extend(t.view(t.shape[0], p, mul * d3).unbind(1))  # P x [R, U * d3]
        return torch.cat([paths[j] for j in self.path_order], dim=1)

    def weight_order(self) -> Tensor:
        """``[weight_numel]``: e3nn weight index of each weight column ``forward_groups`` expects;
        give it to the layer that makes the weights (``GroupedMLP.set_output_order``)."""
        return self.w_index

    def forward(self, x: Tensor, y: Tensor, w: Tensor) -> Tensor:
        """e3nn's output ``[E, dim_out]`` from e3nn's inputs (weights in e3nn's layout)."""
        return self.to_e3nn_order(self.forward_groups(x, y, w.index_select(1, self.w_index)))
