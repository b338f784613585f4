"""Lattice sums for the long-range block: Coulomb energies of (Gaussian) charges by Ewald
summation (periodic) or a direct pair sum (aperiodic), and the k-space machinery the Ewald
message passing shares (:mod:`mlff.nn.longrange`).

Written by hand, not taken from torch-pme, because the sums run inside the TorchScript-able
model for every member at once (``[M, ...]`` copies of positions and strained cells, so that
forces and stress come from one backward pass of the Potential), take the real-space pairs
from the model's own edge list, and are a few dozen lines each.

Conventions: energies in eV, lengths in A, charges in e, cells as rows. ``k`` vectors are
``2 pi n @ inv(cell)^T``; only half of reciprocal space is enumerated (``n`` with its first
non-zero component positive), each ``k`` standing for itself and ``-k``.

Smoothness: the real-space kernel is switched off between ``X_ON * r_cut`` and ``r_cut`` and
the k-space one between ``X_ON * k_cut`` and ``k_cut`` (:func:`switch`), and the splitting is
chosen (:func:`ewald_splitting`) so that both kernels are below ``accuracy`` where the switches
begin. Energies are then continuous and smooth in positions and cell (MD, stress, cells whose
k-vectors cross the cutoff sphere) and exact to ``accuracy``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

#: where the switches of the real-space and k-space kernels begin, as a fraction of the cutoff
X_ON = 0.85


def switch(x: Tensor, x_on: float = 0.85) -> Tensor:
    """1 for ``x <= x_on`` (:data:`X_ON`; a literal default, which TorchScript needs), 0 for
    ``x >= 1``, a quintic smoothstep between (value, slope and curvature continuous)."""
    t = ((x - x_on) / (1.0 - x_on)).clamp(0.0, 1.0)
    return 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)


def ewald_splitting(r_cut: float, accuracy: float) -> Tuple[float, float]:
    """The Ewald splitting parameter ``alpha`` (1/A) and k-space cutoff ``k_cut`` (1/A) for
    real-space pairs within ``r_cut`` (A): ``erfc(alpha X_ON r_cut) ~ accuracy`` and
    ``exp(-(X_ON k_cut)^2 / (4 alpha^2)) = accuracy``."""
    if not 0.0 < accuracy < 1.0 or not r_cut > 0.0:
        raise ValueError(f"Ewald needs 0 < accuracy < 1 and r_cut > 0, got {accuracy}, {r_cut}")
    s = math.sqrt(-math.log(accuracy))
    alpha = s / (X_ON * r_cut)
    return alpha, 2.0 * alpha * s / X_ON


def half_space_vectors(cell: Tensor, k_cut: float) -> Tensor:
    """Integer reciprocal-lattice indices ``n`` ``[K, 3]`` (float, ``cell``'s dtype) of the
    half space with ``0 < |2 pi n @ inv(cell)^T| < k_cut``; ``cell`` ``[3, 3]`` (A, rows)."""
    cell = cell.detach()
    lengths = torch.linalg.norm(cell, dim=1)  # |a_j|: n_j = k . a_j / 2 pi <= k_cut |a_j| / 2 pi
    n_max = torch.floor(lengths * k_cut / (2.0 * math.pi)).to(torch.long)
    axes = [torch.arange(-int(n_max[j]), int(n_max[j]) + 1, device=cell.device) for j in range(3)]
    n0 = axes[0].view(-1, 1, 1).expand(axes[0].shape[0], axes[1].shape[0], axes[2].shape[0])
    n1 = axes[1].view(1, -1, 1).expand_as(n0)
    n2 = axes[2].view(1, 1, -1).expand_as(n0)
    n = torch.stack([n0.reshape(-1), n1.reshape(-1), n2.reshape(-1)], dim=1)
    half = (n[:, 0] > 0) | ((n[:, 0] == 0) & (n[:, 1] > 0)) | ((n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] > 0))
    n = n[half].to(cell.dtype)
    k = 2.0 * math.pi * n @ torch.linalg.inv(cell).transpose(0, 1)
    return n[torch.linalg.norm(k, dim=1) < k_cut]


def k_vectors(n: Tensor, cell: Tensor) -> Tensor:
    """``k = 2 pi n @ inv(cell)^T``: ``n`` ``[K, 3]``, ``cell`` ``[M, 3, 3]`` -> ``[M, K, 3]``
    (1/A), differentiable in the (strained) cell."""
    return 2.0 * math.pi * torch.matmul(n.unsqueeze(0), torch.linalg.inv(cell).transpose(1, 2))


def structure_factors(phase: Tensor, values: Tensor) -> Tuple[Tensor, Tensor]:
    """``sum_j v_j cos(k r_j)`` and ``sum_j v_j sin(k r_j)``: ``phase`` ``k . r`` ``[M, n, K]``,
    ``values`` ``[M, n, C]`` -> two ``[M, K, C]``."""
    return (torch.matmul(torch.cos(phase).transpose(1, 2), values),
            torch.matmul(torch.sin(phase).transpose(1, 2), values))


def back_to_atoms(phase: Tensor, filtered_cos: Tensor, filtered_sin: Tensor) -> Tensor:
    """``sum_k [cos(k r_i) C_k + sin(k r_i) S_k]`` ``[M, n, C]`` from filtered structure factors
    ``[M, K, C]`` (``Re[exp(-i k r_i) S(k)]`` summed over the half space)."""
    return torch.matmul(torch.cos(phase), filtered_cos) + torch.matmul(torch.sin(phase), filtered_sin)


def ewald_kspace_potential(charges: Tensor, positions: Tensor, cell: Tensor, n: Tensor, alpha: float,
                           k_cut: float) -> Tensor:
    """Reciprocal-space Ewald potential ``phi_i`` (e/A; times the Coulomb constant gives V) of
    one periodic cell: ``charges`` ``[M, n]``, ``positions`` ``[M, n, 3]``, ``cell`` ``[M, 3, 3]``,
    ``n`` from :func:`half_space_vectors`. ``phi_i = (8 pi / V) sum_half G(k) Re[e^{-ikr_i} S(k)]``
    with ``G = exp(-k^2 / 4 alpha^2) / k^2`` (switched off towards ``k_cut``); the energy is
    ``sum_i q_i phi_i / 2``."""
    k = k_vectors(n, cell)  # [M, K, 3]
    k2 = (k * k).sum(2)  # [M, K]
    green = torch.exp(-k2 / (4.0 * alpha * alpha)) / k2 * switch(torch.sqrt(k2) / k_cut)
    volume = torch.abs(torch.linalg.det(cell))  # [M]
    phase = torch.matmul(positions, k.transpose(1, 2))  # [M, n, K]
    s_cos, s_sin = structure_factors(phase, charges.unsqueeze(2))
    g = (8.0 * math.pi / volume).view(-1, 1, 1) * green.unsqueeze(2)
    return back_to_atoms(phase, g * s_cos, g * s_sin).squeeze(2)


def real_space_kernel(r: Tensor, alpha: float, width: float, r_cut: float) -> Tensor:
    """Ewald real-space pair kernel (1/A) of Gaussian charges of standard deviation ``width``
    (0: point charges): ``[erf(r / 2 width) - erf(alpha r)] / r``, switched off towards
    ``r_cut``."""
    kernel = torch.special.erfc(alpha * r)
    if width > 0.0:
        kernel = kernel - torch.special.erfc(r / (2.0 * width))
    return kernel / r * switch(r / r_cut)


def ewald_self_potential(charges: Tensor, alpha: float) -> Tensor:
    """``-2 alpha / sqrt(pi) q_i``: the potential that removes each charge's interaction with
    its own screening Gaussian (energy ``sum_i q_i phi_i / 2``)."""
    return -2.0 * alpha / math.sqrt(math.pi) * charges


def background_energy(total_charge: Tensor, volume: Tensor, alpha: float) -> Tensor:
    """Energy (e^2/A) of a uniform neutralising background for a charged cell:
    ``-pi Q^2 / (2 V alpha^2)``."""
    return -math.pi * total_charge * total_charge / (2.0 * volume * alpha * alpha)


def direct_potential(charges: Tensor, positions: Tensor, width: float) -> Tensor:
    """Coulomb potential ``phi_i = sum_{j != i} q_j erf(r_ij / 2 width) / r_ij`` (e/A; ``width``
    0: ``1 / r``) of one aperiodic structure, every pair: ``[M, n]``, ``[M, n, 3]`` -> ``[M, n]``."""
    n = positions.shape[1]
    d = positions.unsqueeze(2) - positions.unsqueeze(1)  # [M, n, n, 3]
    eye = torch.eye(n, dtype=positions.dtype, device=positions.device)
    r = torch.sqrt((d * d).sum(3) + eye)  # the diagonal at 1, not 0: finite gradients
    kernel = 1.0 / r if width <= 0.0 else torch.special.erf(r / (2.0 * width)) / r
    kernel = kernel * (1.0 - eye)
    return torch.matmul(kernel, charges.unsqueeze(2)).squeeze(2)


def coulomb_energy(charges: Tensor, positions: Tensor, cell: Tensor, periodic: bool, r_cut: float = 6.0,
                   accuracy: float = 1e-8, width: float = 0.0) -> Tensor:
    """Coulomb energy (eV) of fixed charges ``[n]`` (e) at ``positions`` ``[n, 3]`` (A) in
    ``cell`` ``[3, 3]``: Ewald summation with real-space pairs within ``r_cut`` when
    ``periodic`` (tinfoil boundary, a neutralising background for a charged cell), else the
    direct sum; Gaussian charges of standard deviation ``width`` (0: point charges).
    Differentiable in ``positions`` and ``cell`` (forces, stress). The same sums as the model's
    long-range block, for references and tests (labels of synthetic long-range data)."""
    from mlff.neighbors import neighbor_list
    from mlff.units import COULOMB_EV_A

    q, pos = charges.unsqueeze(0), positions.unsqueeze(0)
    if not periodic:
        return COULOMB_EV_A * 0.5 * (q * direct_potential(q, pos, width)).sum()
    alpha, k_cut = ewald_splitting(r_cut, accuracy)
    pbc = torch.ones(3, dtype=torch.bool)
    edge_index, unit_shifts = neighbor_list(positions.detach(), r_cut, cell.detach(), pbc)
    vectors = positions[edge_index[0]] - positions[edge_index[1]] + unit_shifts.to(cell.dtype) @ cell
    pair = real_space_kernel(torch.linalg.norm(vectors, dim=1), alpha, width, r_cut) * charges[edge_index[0]]
    phi = torch.zeros_like(charges).index_add(0, edge_index[1], pair).unsqueeze(0)
    n = half_space_vectors(cell, k_cut)
    phi = phi + ewald_kspace_potential(q, pos, cell.unsqueeze(0), n, alpha, k_cut)
    phi = phi + ewald_self_potential(q, alpha)
    volume = torch.abs(torch.linalg.det(cell))
    return COULOMB_EV_A * (0.5 * (q * phi).sum() + background_energy(charges.sum(), volume, alpha))
