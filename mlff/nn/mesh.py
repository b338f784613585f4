"""Smooth particle-mesh Ewald (Essmann et al., J. Chem. Phys. 103, 8577, 1995) for any radial
filter in k: the reciprocal-space sums of :mod:`mlff.nn.ewald` at O(N log N) instead of
O(N K), for large periodic cells.

Values ``[M, n, C]`` are spread onto a regular grid of the cell with cardinal B-splines of order
:data:`ORDER`, Fourier transformed, multiplied by the filter ``g(k)`` and the B-spline
correction ``|b(m)|^2``, transformed back and interpolated to the atoms with the same splines:
``phi_i = (1/V) sum_k g(k) Re[exp(-i k r_i) S(k)]``, every grid ``k`` included (``g`` must
vanish beyond the k cutoff and, for Coulomb, at k = 0). Everything is differentiable in
positions and (strained) cell; the grid size is fixed per call from the detached cell.

Written by hand for the same reasons as :mod:`mlff.nn.ewald` (members, strained cells,
TorchScript; a few dozen lines).
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor

from mlff.nn.ewald import switch

#: B-spline order (even: the correction has no zero at the Nyquist frequency)
ORDER = 6
#: grid points per Nyquist-limited point. The spline (aliasing) error falls steeply with it: on
#: a box of 30 atoms with charges up to 1.6 e the largest force error against the Ewald sum is
#: 1.7e-4 eV/A at 1.5, 5e-5 at 2 and 4e-6 at 3 (OpenMM's default PME tolerance is 5e-4)
OVERSAMPLE = 2.0


def spline_weights(t: Tensor, order: int) -> Tensor:
    """Cardinal B-spline values ``M_order(t + j)``, ``j = 0..order-1`` ``[..., order]`` for
    fractional offsets ``t`` in [0, 1) ``[...]`` (differentiable in ``t``)."""
    x = t.unsqueeze(-1) + torch.arange(order, dtype=t.dtype, device=t.device)
    w = torch.zeros_like(x)
    w[..., 0] = 1.0  # M_1: the indicator of [0, 1)
    for n in range(2, order + 1):
        shifted = torch.cat([torch.zeros_like(w[..., :1]), w[..., :-1]], dim=-1)  # M_{n-1}(x - 1)
        w = (x * w + (float(n) - x) * shifted) / float(n - 1)
    return w


def grid_shape(cell: Tensor, k_cut: float, order: int, oversample: float) -> List[int]:
    """Grid points per lattice direction that resolve every ``|k| < k_cut`` (``K_d >= k_cut
    |a_d| / pi``) times ``oversample`` (:data:`OVERSAMPLE`), at least ``2 order``, rounded up
    to a product of 2, 3 and 5 (fast FFTs). (Constants are arguments: TorchScript reads no
    module globals.)"""
    lengths = torch.linalg.norm(cell.detach(), dim=1)
    shape: List[int] = []
    for d in range(3):
        k = max(2 * order, int(math.ceil(float(lengths[d]) * k_cut / math.pi * oversample)))
        while True:
            m = k
            for p in [2, 3, 5]:
                while m % p == 0:
                    m = m // p
            if m == 1:
                break
            k += 1
        shape.append(k)
    return shape


def grid_k_squared(cell: Tensor, shape: List[int]) -> Tensor:
    """``|k|^2`` (1/A^2) of the grid's half-spectrum ``[M, K0, K1, K2 // 2 + 1]`` for cells
    ``[M, 3, 3]``, differentiable in the cell."""
    dtype, device = cell.dtype, cell.device
    m0 = torch.fft.fftfreq(shape[0], 1.0 / shape[0], dtype=dtype, device=device)
    m1 = torch.fft.fftfreq(shape[1], 1.0 / shape[1], dtype=dtype, device=device)
    m2 = torch.fft.rfftfreq(shape[2], 1.0 / shape[2], dtype=dtype, device=device)
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(1, 2)  # rows b_d: [M, 3, 3]
    k = (m0.view(1, -1, 1, 1, 1) * recip[:, 0].view(-1, 1, 1, 1, 3)
         + m1.view(1, 1, -1, 1, 1) * recip[:, 1].view(-1, 1, 1, 1, 3)
         + m2.view(1, 1, 1, -1, 1) * recip[:, 2].view(-1, 1, 1, 1, 3))
    return (k * k).sum(4)


def _bspline_correction(shape: List[int], order: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``|b_0(m_0)|^2 |b_1(m_1)|^2 |b_2(m_2)|^2`` on the half-spectrum grid."""
    knots = spline_weights(torch.zeros(1, dtype=dtype, device=device), order)[0, 1:]  # M(1..order-1)
    factors: List[Tensor] = []
    for d in range(3):
        size = shape[d]
        m = torch.arange(size if d < 2 else size // 2 + 1, dtype=dtype, device=device)
        phase = 2.0 * math.pi * m.unsqueeze(1) * torch.arange(order - 1, dtype=dtype, device=device) / size
        re, im = (knots * torch.cos(phase)).sum(1), (knots * torch.sin(phase)).sum(1)
        factors.append(1.0 / (re * re + im * im))
    return factors[0].view(-1, 1, 1) * factors[1].view(1, -1, 1) * factors[2].view(1, 1, -1)


def mesh_potential(values: Tensor, positions: Tensor, cell: Tensor, shape: List[int], g_k: Tensor,
                   order: int) -> Tensor:
    """``phi_i = (1/V) sum_k g(k) Re[exp(-i k r_i) S(k)]`` ``[M, n, C]`` with
    ``S(k) = sum_j v_j exp(i k r_j)``: ``values`` ``[M, n, C]``, ``positions`` ``[M, n, 3]``,
    ``cell`` ``[M, 3, 3]``, ``shape`` from :func:`grid_shape`, ``g_k`` the filter on the
    half-spectrum grid ``[M, C or 1, K0, K1, K2 // 2 + 1]`` (from :func:`grid_k_squared`),
    ``order`` the B-splines' (:data:`ORDER`)."""
    m, n, c = values.shape[0], values.shape[1], values.shape[2]
    p = order
    sizes = torch.tensor(shape, dtype=positions.dtype, device=positions.device)
    u = torch.matmul(positions, torch.linalg.inv(cell)) * sizes  # grid coordinates [M, n, 3]
    base = torch.floor(u.detach())
    w = spline_weights(u - base, p)  # [M, n, 3, p]
    offsets = torch.arange(p, device=positions.device)
    idx = [torch.remainder(base[:, :, d].to(torch.long).unsqueeze(2) - offsets, shape[d]) for d in range(3)]
    flat = ((idx[0].view(m, n, p, 1, 1) * shape[1] + idx[1].view(m, n, 1, p, 1)) * shape[2]
            + idx[2].view(m, n, 1, 1, p)).reshape(m, n * p * p * p)
    weight = (w[:, :, 0].view(m, n, p, 1, 1) * w[:, :, 1].view(m, n, 1, p, 1)
              * w[:, :, 2].view(m, n, 1, 1, p)).reshape(m, n * p * p * p, 1)
    n_grid = shape[0] * shape[1] * shape[2]
    spread = (weight * values.repeat_interleave(p * p * p, dim=1))  # [M, n p^3, C]
    grid = torch.zeros(m, n_grid, c, dtype=values.dtype, device=values.device)
    grid = grid.scatter_add(1, flat.unsqueeze(2).expand(-1, -1, c), spread)
    grid = grid.transpose(1, 2).reshape(m, c, shape[0], shape[1], shape[2])
    volume = torch.abs(torch.linalg.det(cell)).view(-1, 1, 1, 1, 1)
    correction = _bspline_correction(shape, p, values.dtype, values.device)
    spectrum = torch.fft.rfftn(grid, dim=(2, 3, 4)) * (g_k * correction * float(n_grid) / volume)
    potential = torch.fft.irfftn(spectrum, s=shape, dim=(2, 3, 4)).reshape(m, c, n_grid).transpose(1, 2)
    gathered = potential.gather(1, flat.unsqueeze(2).expand(-1, -1, c))  # [M, n p^3, C]
    return (gathered * weight).view(m, n, p * p * p, c).sum(2)


def coulomb_mesh_potential(charges: Tensor, positions: Tensor, cell: Tensor, alpha: float, k_cut: float,
                           order: int, oversample: float) -> Tensor:
    """The reciprocal-space Ewald potential of :func:`mlff.nn.ewald.ewald_kspace_potential`
    ``[M, n]`` by PME: Green function ``4 pi exp(-k^2 / 4 alpha^2) / k^2`` (switched off towards
    ``k_cut``, 0 at k = 0) on the grid of ``cell`` ``[M, 3, 3]``."""
    shape = grid_shape(cell[0], k_cut, order, oversample)
    k2 = grid_k_squared(cell, shape)
    zero = k2 == 0.0
    k2 = torch.where(zero, torch.ones_like(k2), k2)
    g = 4.0 * math.pi * torch.exp(-k2 / (4.0 * alpha * alpha)) / k2
    g = torch.where(zero, torch.zeros_like(g), g * switch(torch.sqrt(k2) / k_cut))
    return mesh_potential(charges.unsqueeze(2), positions, cell, shape, g.unsqueeze(1), order).squeeze(2)
