"""Radial features of edges: Bessel basis, smooth polynomial cutoff envelope, normalised SiLU.

Written by hand (a few lines each) because they sit on the hot path and must be TorchScript-able
with explicit shapes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class BesselBasis(nn.Module):
    """``sqrt(2 / r_cut) * sin(n pi r / r_cut) / r`` for n = 1..num_basis.

    Args:
        r_cut: cutoff radius (A). num_basis: number of functions.

    Shapes: ``r`` ``[E, 1]`` (A) -> ``[E, num_basis]``.
    """

    def __init__(self, r_cut: float, num_basis: int = 8) -> None:
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.r_cut = float(r_cut)
        self.num_basis = int(num_basis)
        self.register_buffer(
            "frequencies",
            math.pi / r_cut * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()),
        )
        self.prefactor = math.sqrt(2.0 / r_cut)

    def forward(self, r: Tensor) -> Tensor:
        return self.prefactor * torch.sin(self.frequencies.to(r.dtype) * r) / r


class PolynomialCutoff(nn.Module):
    """Smooth envelope ``f(x)``, ``x = r / r_cut``, with f(0)=1 and f, f', f'' zero at x=1:

    ``f = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` for x < 1, else 0.

    Shapes: ``r`` ``[E, 1]`` -> ``[E, 1]``.
    """

    def __init__(self, r_cut: float, p: int = 5) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"cutoff exponent p must be >= 2, got {p}")
        self.r_cut = float(r_cut)
        self.p = float(p)

    def forward(self, r: Tensor) -> Tensor:
        p = self.p
        x = r / self.r_cut
        env = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1.0)
            - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2.0)
        )
        return env * (x < 1.0).to(r.dtype)


class ScaledSiLU(nn.Module):
    """SiLU scaled to unit second moment for unit-normal inputs (variance-preserving)."""

    def __init__(self) -> None:
        super().__init__()
        z = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.factor = float(1.0 / torch.sqrt(torch.mean(torch.nn.functional.silu(z) ** 2)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x) * self.factor


class CosineCutoff(nn.Module):
    """``0.5 (cos(pi r / r_cut) + 1)`` for r < r_cut, else 0 (value and slope vanish at r_cut).

    Shapes: ``r`` ``[..., 1]`` (A) -> ``[..., 1]``.
    """

    def __init__(self, r_cut: float) -> None:
        super().__init__()
        self.r_cut = float(r_cut)

    def forward(self, r: Tensor) -> Tensor:
        return 0.5 * (torch.cos(r * (math.pi / self.r_cut)) + 1.0) * (r < self.r_cut).to(r.dtype)


class ExpNormalBasis(nn.Module):
    """Exponential-normal radial functions (PhysNet; TensorNet's default), times the cosine
    cutoff: ``f_k(r) = c(r) exp(-beta_k (exp(-alpha r) - mu_k)^2)`` with ``alpha = 5 / r_cut``,
    centres ``mu_k`` evenly spaced over the range of ``exp(-alpha r)``, ``[exp(-5), 1]``, and
    ``beta_k = (2 (1 - exp(-5)) / num_basis)^-2``.

    ``stored_widths``: the widths ``beta_k`` are saved with the model (state ``betas``), so a
    model imported from another code keeps its own values (trained ones, or the float32-rounded
    initial ones torchmd-net computes); otherwise they are recomputed from ``r_cut`` and
    ``num_basis`` and not saved, as in model files written before this option.

    Shapes: ``r`` ``[..., 1]`` (A) -> ``[..., num_basis]``.
    """

    def __init__(self, r_cut: float, num_basis: int = 32, stored_widths: bool = False) -> None:
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.alpha = 5.0 / float(r_cut)
        low = math.exp(-5.0)
        dtype = torch.get_default_dtype()
        self.register_buffer("centres", torch.linspace(low, 1.0, num_basis, dtype=dtype))
        beta = (2.0 * (1.0 - low) / num_basis) ** -2
        self.register_buffer("betas", torch.full((num_basis,), beta, dtype=dtype),
                             persistent=bool(stored_widths))
        self.cutoff = CosineCutoff(r_cut)

    def forward(self, r: Tensor) -> Tensor:
        x = torch.exp(-self.alpha * r) - self.centres.to(r.dtype)
        return self.cutoff(r) * torch.exp(-self.betas.to(r.dtype) * x * x)
