"""e3nn layers' weights (as pickled by mace-torch) -> the weights of mlff's layers, exactly.

Each function folds e3nn's path normalisation into the weights and rewrites them in mlff's
layout (see :mod:`mlff.io_import.mace_torch` for the maps and why each is exact). Channels are
matched by label, ``(block key, channel index)``, so the two codes may order and merge their
irreps blocks differently.
"""

from __future__ import annotations

import itertools
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from mlff.errors import ModelFileError
from mlff.io_import.safe_pickle import Pickled, UnsupportedModelError, instructions, scalar
from mlff.nn.linear import IrrepsLinear, irreps_offsets
from mlff.nn.radial import ScaledSiLU
from mlff.nn.symmetric_contraction import coupling_basis

Irreps = List[Tuple[int, int, int]]  # [(mul, l, parity)]
#: a channel's identity: (block key, channel index)
Label = Tuple[object, int]


# ------------------------------------------------------------------------------------------


def labels(irreps: Irreps, keys: Sequence[object]) -> List[List[Label]]:
    return [[(key, u) for u in range(mul)] for (mul, _, _), key in zip(irreps, keys)]


def linear_rows(node: Pickled, in_labels: List[List[Label]]) -> Dict[int, Dict[Label, Tensor]]:
    """An ``o3.Linear`` -> per output block: input channel label -> weight row ``[mul_out]``
    (path weight folded in)."""
    weight = node.tensor("weight")
    rows: Dict[int, Dict[Label, Tensor]] = {}
    offset = 0
    for i_in, i_out, shape, path_weight in instructions(node):
        mul_in, mul_out = int(shape[0]), int(shape[1])
        block = weight[offset : offset + mul_in * mul_out].view(mul_in, mul_out) * float(path_weight)
        offset += mul_in * mul_out
        for u in range(mul_in):
            rows.setdefault(int(i_out), {})[in_labels[int(i_in)][u]] = block[u]
    return rows


def species_rows(node: Pickled, in_labels: List[List[Label]], irreps_in: Irreps
                  ) -> Dict[int, Dict[Label, Tensor]]:
    """A ``FullyConnectedTensorProduct(x, one-hot species)`` -> per output block: input
    channel label -> ``[S, mul_out]`` (path weight and Clebsch-Gordan factor folded in)."""
    weight = node.tensor("weight")
    rows: Dict[int, Dict[Label, Tensor]] = {}
    offset = 0
    for ins in instructions(node):
        i1, i2, i_out, mode, _, path_weight, shape = ins
        mul_in, n_species, mul_out = (int(s) for s in shape)
        if mode != "uvw" or int(i2) != 0:
            raise UnsupportedModelError(f"{node.qualname}: instruction {ins} is not a one-hot skip connection")
        l = irreps_in[int(i1)][1]
        # l x 0e -> l: e3nn's Wigner 3j is delta / sqrt(2l+1) (component normalisation is in
        # path_weight)
        factor = float(path_weight) / math.sqrt(2 * l + 1)
        block = weight[offset : offset + mul_in * n_species * mul_out].view(mul_in, n_species, mul_out) * factor
        offset += mul_in * n_species * mul_out
        for u in range(mul_in):
            rows.setdefault(int(i_out), {})[in_labels[int(i1)][u]] = block[u]
    return rows


def fill_irreps_linear(lin: IrrepsLinear, rows: Dict[int, Dict[Label, Tensor]],
                        in_labels: List[List[Label]], irreps_in: Irreps, irreps_out: Irreps,
                        what: str) -> Tensor:
    """Write mace rows into mlff's weight ``[1, total]`` of ``lin`` (member 0)."""
    in_offsets = irreps_offsets(irreps_in)
    out_offsets = irreps_offsets(irreps_out)
    weight = torch.zeros_like(lin.weight.data[:1], dtype=torch.float64)
    covered = 0
    for k in range(len(lin.in_starts)):
        src = in_offsets.index(lin.in_starts[k])
        dst = out_offsets.index(lin.out_starts[k])
        block_rows = rows.get(dst, {})
        missing = [lab for lab in in_labels[src] if lab not in block_rows]
        if missing:
            raise ModelFileError(f"{what}: no weights for input {missing[0]} -> output block {dst}")
        block = torch.stack([block_rows[lab] for lab in in_labels[src]])  # [mul_in, (S,) mul_out]
        if lin.num_species > 0:
            block = block.transpose(0, 1)  # [S, mul_in, mul_out]
        block = block.reshape(-1) / lin.norms[k]
        weight[0, lin.w_starts[k] : lin.w_starts[k] + block.numel()] = block.to(torch.float64)
        covered += len(in_labels[src])
    total_rows = sum(len(r) for r in rows.values())
    if covered != total_rows:
        raise ModelFileError(f"{what}: the file has {total_rows} weight rows, mlff's layer uses {covered}")
    return weight


def mlp_layers(node: Pickled, what: str) -> List[Tuple[Tensor, Optional[float]]]:
    """e3nn ``FullyConnectedNet`` -> [(weight [h_in, h_out], activation constant or None)]."""
    layers = []
    for key in sorted(node.children, key=lambda k: int(k.replace("layer", ""))):
        layer = node.child(key)
        if scalar(layer.attrs.get("var_in", 1)) != 1 or scalar(layer.attrs.get("var_out", 1)) != 1:
            raise UnsupportedModelError(f"{what}: {key} has variance_in/out != 1")
        act = layer.children.get("act") or layer.attrs.get("act")
        constant = None
        if act is not None:
            check_silu(act, what)
            constant = scalar(act.attrs["cst"])
        layers.append((layer.tensor("weight").to(torch.float64), constant))
    return layers


def check_silu(act: Pickled, what: str) -> None:
    f = act.attrs.get("f")
    name = getattr(f, "qualname", None) or (f.qualname if isinstance(f, Pickled) else repr(f))
    if not str(name).endswith("silu"):
        raise UnsupportedModelError(f"{what}: activation {name} (mlff's MACE uses SiLU)")


_SILU_CONSTANT = ScaledSiLU().factor


def grouped_mlp(layers: List[Tuple[Tensor, Optional[float]]], prefix: str,
                 state: Dict[str, Tensor], column_order: Optional[Tensor] = None) -> None:
    """Fill a GroupedMLP (``net.0``, ``net.2``, ...; biases zero) from e3nn layers. A
    different activation constant c is exact as the factor c / c_mlff on the next layer."""
    carry = 1.0
    for n, (weight, constant) in enumerate(layers):
        w = weight * carry
        if n == len(layers) - 1 and column_order is not None:
            w = w[:, column_order]
        state[f"{prefix}.net.{2 * n}.weight"] = w.unsqueeze(0)
        bias_key = f"{prefix}.net.{2 * n}.bias"
        if bias_key in state:
            state[bias_key] = torch.zeros_like(state[bias_key])
        carry = (constant / _SILU_CONSTANT) if constant is not None else 1.0




def _symmetrise(t: Tensor, degree: int) -> Tensor:
    """Average over permutations of axes 1..degree of ``[M, D, ..., D, K]``."""
    perms = list(itertools.permutations(range(1, degree + 1)))
    return sum(t.permute([0, *p, degree + 1]) for p in perms) / len(perms)


def contraction_weights(contraction: Pickled, l_max: int, l_out: int, p_out: int,
                        correlation: int) -> Tuple[Tensor, float]:
    """One mace ``Contraction`` (one output irrep) -> mlff weights ``[S, K_mlff, C]`` (degrees
    1..correlation concatenated, as :class:`~mlff.nn.symmetric_contraction.SymmetricContraction`)
    and the largest residual of the projection relative to the largest coupling, in units of
    the machine epsilon of the file's dtype (O(1) when exact: float32 files store ``U`` rounded
    to float32, whose rounding error is not symmetric)."""
    dim = (l_max + 1) ** 2
    ls = list(range(l_max + 1))
    tensors = contraction.tensors()
    # lower degrees: weights[i] belongs to degree correlation - 1 - i
    lower = contraction.child("weights").tensors() if "weights" in contraction.children else {}
    out: List[Tensor] = []
    residual = 0.0
    for degree in range(1, correlation + 1):
        u = tensors[f"U_matrix_{degree}"].to(torch.float64)
        if l_out == 0 and u.dim() == degree + 1:
            u = u.unsqueeze(0)  # [1, D.., K]
        k_mace = u.shape[-1]
        w = tensors["weights_max"] if degree == correlation else lower[str(correlation - degree - 1)]
        w = w.to(torch.float64)  # [S, K, C]
        basis = coupling_basis(ls, degree, l_out, p_out)  # [K', M, D^d]
        if basis.shape[0] == 0:
            if k_mace and w.abs().max() > 0 and u.abs().max() > 0:
                raise ModelFileError(f"degree {degree} -> l={l_out}: mace has couplings, mlff none")
            continue
        if u.shape[1:-1] != (dim,) * degree:
            raise ModelFileError(f"U_matrix_{degree} has shape {tuple(u.shape)}, expected D={dim}")
        sym = _symmetrise(u, degree).reshape(-1, k_mace)  # [M D^d, K]
        b = basis.reshape(basis.shape[0], -1)  # [K', M D^d]
        g = b @ sym  # [K', K]
        scale = float(sym.abs().max()) or 1.0
        eps = torch.finfo(tensors[f"U_matrix_{degree}"].dtype).eps
        residual = max(residual, float((sym - b.t() @ g).abs().max()) / scale / eps)
        out.append(torch.einsum("jk,skc->sjc", g, w))
    return torch.cat(out, dim=1), residual
