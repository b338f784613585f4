"""Rank-2 Cartesian tensors stored by their irreducible parts, for TensorNet-style models.

A 3x3 tensor ``X`` is kept as its 9 coefficients in an orthonormal basis (Frobenius inner
product) of the 3x3 matrices, grouped by the O(3) decomposition ``X = I + A + S``:

- index 0: the isotropic part, basis ``1/sqrt(3) * identity`` (1 coefficient);
- indices 1..3: the antisymmetric part, basis ``(e_b e_c^T - e_c e_b^T)/sqrt(2)`` for
  ``(a, b, c)`` cyclic in ``(x, y, z)`` (3 coefficients: an axial vector times sqrt(2));
- indices 4..8: the symmetric traceless part (5 coefficients).

Features are channel-last, ``[..., 9, C]``, so that channel-mixing linears are plain matrix
products on contiguous channels. In this basis the decomposition is slicing, the squared
Frobenius norm is the sum of squared coefficients, and a linear map acting separately on I, A
and S costs 9 (not 27) channel products per atom. Matrix products go through the full 3x3 form
(:func:`to_matrix`, :func:`from_matrix`).

Written by hand (rather than with e3nn irreps) because TensorNet's operations are matrix
products of Cartesian tensors and must be TorchScript-able with explicit shapes.
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor

#: slices of the parts: isotropic, antisymmetric, symmetric traceless
PART_SLICES = ((0, 1), (1, 4), (4, 9))


def basis(dtype: torch.dtype = torch.float64) -> Tensor:
    """``[9, 3, 3]``: the orthonormal basis (rows as in the module docstring)."""
    b = torch.zeros(9, 3, 3, dtype=torch.float64)
    b[0] = torch.eye(3, dtype=torch.float64) / math.sqrt(3.0)
    for k, (i, j) in enumerate([(1, 2), (2, 0), (0, 1)]):  # axial x, y, z
        b[1 + k, i, j] = 1.0 / math.sqrt(2.0)
        b[1 + k, j, i] = -1.0 / math.sqrt(2.0)
    for k, (i, j) in enumerate([(0, 1), (1, 2), (0, 2)]):
        b[4 + k, i, j] = b[4 + k, j, i] = 1.0 / math.sqrt(2.0)
    b[7, 0, 0], b[7, 1, 1] = 1.0 / math.sqrt(2.0), -1.0 / math.sqrt(2.0)
    b[8, 0, 0] = b[8, 1, 1] = 1.0 / math.sqrt(6.0)
    b[8, 2, 2] = -2.0 / math.sqrt(6.0)
    return b.to(dtype)


def edge_coefficients(unit: Tensor) -> Tensor:
    """Coefficients of the three edge tensors of unit vectors ``u`` ``[..., 3]`` -> ``[..., 9]``:
    the identity (index 0: sqrt(3)), the skew matrix of ``u`` (``[[0, -z, y], [z, 0, -x],
    [-y, x, 0]]``; indices 1..3: ``-sqrt(2) u``) and ``u u^T - identity/3`` (indices 4..8).

    Norms: ``|identity|^2 = 3``, ``|skew(u)|^2 = 2``, ``|u u^T - 1/3|^2 = 2/3``.
    """
    x, y, z = unit.unbind(-1)
    s2 = math.sqrt(2.0)
    ones = torch.full_like(x, math.sqrt(3.0))
    return torch.stack([
        ones, -s2 * x, -s2 * y, -s2 * z,
        s2 * x * y, s2 * y * z, s2 * x * z,
        (x * x - y * y) / s2, (x * x + y * y - 2.0 * z * z) / math.sqrt(6.0),
    ], dim=-1)


def to_matrix(coeffs: Tensor, basis_flat: Tensor) -> Tensor:
    """``[R, 9, C]`` coefficients -> ``[R, 3, 3, C]`` matrices (``basis_flat``: ``[9, 9]``,
    :func:`basis` flattened to ``[9, 3*3]``)."""
    r, c = coeffs.shape[0], coeffs.shape[2]
    return torch.matmul(basis_flat.t(), coeffs).view(r, 3, 3, c)


def from_matrix(matrices: Tensor, basis_flat: Tensor) -> Tensor:
    """``[R, 3, 3, C]`` matrices -> ``[R, 9, C]`` coefficients (the inverse of :func:`to_matrix`)."""
    r, c = matrices.shape[0], matrices.shape[3]
    return torch.matmul(basis_flat, matrices.reshape(r, 9, c))


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Per row and channel 3x3 matrix product ``[R, 3, 3, C] x [R, 3, 3, C] -> [R, 3, 3, C]``
    (``sum_j a[i, j] b[j, k]``, on channel-last data as broadcast products, which beats a
    batched 3x3 ``bmm`` over ``R * C`` tiny matrices on CPU)."""
    return (a.unsqueeze(3) * b.unsqueeze(1)).sum(2)


def squared_norms(coeffs: Tensor) -> Tensor:
    """``[..., 9, C]`` -> ``[..., 3, C]``: squared Frobenius norms of the I, A and S parts."""
    sq = coeffs * coeffs
    return torch.stack([sq[..., 0, :], sq[..., 1:4, :].sum(-2), sq[..., 4:9, :].sum(-2)], dim=-2)


def expand_parts(f: Tensor) -> Tensor:
    """Per-part factors ``[M, R, 3, C]`` (I, A, S) -> per-coefficient ``[M, R, 9, C]``.

    One ``index_select`` (its backward is one ``index_add_``), not slices and a ``cat``: every
    slice of a large tensor costs a zero-filled tensor of its full size in the backward pass.
    """
    index = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2], dtype=torch.long, device=f.device)
    return f.index_select(2, index)


def scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """``[M, E, ...] -> [M, size, ...]``: per member, rows of ``values`` summed into ``index``
    (along dim 0 of each member: the contiguous, fast path of ``index_add_``)."""
    if values.shape[0] == 1:  # a single model: no stacking copy
        v = values[0]
        return torch.zeros((size,) + v.shape[1:], dtype=v.dtype, device=v.device).index_add_(0, index, v).unsqueeze(0)
    out: List[Tensor] = []
    for k in range(values.shape[0]):
        v = values[k]
        out.append(torch.zeros((size,) + v.shape[1:], dtype=v.dtype, device=v.device).index_add_(0, index, v))
    return torch.stack(out)


def gather(values: Tensor, index: Tensor) -> Tensor:
    """``[M, N, ...] -> [M, E, ...]``: per member, the rows ``index`` (along dim 0 of each member)."""
    if values.shape[0] == 1:  # a single model: no stacking copy
        return values[0].index_select(0, index).unsqueeze(0)
    return torch.stack([values[k].index_select(0, index) for k in range(values.shape[0])])
