"""Physical priors: energy terms with a known form that any model adds to its learned energy.

A prior is a config entry of the model (``priors: {"zbl": {...}}``), built here, evaluated on
the model's own edges inside its forward pass, so it reaches energies, forces and stress
through the same :class:`~mlff.models.potential.Potential`, is saved with the model file and
runs in TorchScript.

- ``zbl``: the Ziegler-Biersack-Littmark universal screened nuclear repulsion (J. F. Ziegler,
  J. P. Biersack, U. Littmark, *The Stopping and Range of Ions in Solids*, 1985), switched off
  smoothly at the sum of the two covalent radii (``ase.data.covalent_radii``) times
  ``radius_scale``, so that it only acts where atoms are closer than a bond: it keeps MD and
  sampling of close contacts physical where training data has none. Its constants are
  options, so that a model written by another code with its own rounding of them is
  reproduced exactly (mace-torch's ``ZBLBasis``: 4-digit coefficients, ``0.4543 * 0.529 / (Z^0.3
  + Z^0.3)``, ``k = 14.3996``, inside its scale; see :mod:`mlff.io_import.mace_torch`).
- ``d3``: Grimme's D3 dispersion with Becke-Johnson damping, two-body (:mod:`mlff.nn.dispersion`):
  ``{"d3": {"functional": "pbe"}}``, or explicit ``s6``, ``s8``, ``a1``, ``a2`` (Bohr); for a
  model trained on data without dispersion (a DFT functional without a correction). It reads
  the Potential's context (positions and cells) and builds its own neighbour list at its
  cutoff (``cutoff``, ``cn_cutoff``, A; default the ``dftd3`` library's 60 and 40 Bohr).

Every prior is called as ``prior(species [N], edge_index [2, E], lengths [M, E, 1], context)``
and returns ``[M, N]`` (eV); ``context`` is None unless the model reads it
(:attr:`~mlff.models.base.EnergyModel.needs_context`, true with a ``d3`` prior).

Priors are written by hand (a few lines) because they run inside the TorchScript-able model.
"""

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from mlff.nn.dispersion import D3Dispersion
from mlff.nn.radial import PolynomialCutoff
from mlff.units import COULOMB_EV_A

#: ZBL universal screening function: coefficients and exponents
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
#: ZBL universal screening length 0.8854 a0 (A), with a0 the Bohr radius
ZBL_LENGTH_A = 0.46850
#: the exponent of Z in the screening length
ZBL_Z_POWER = 0.23

PRIOR_OPTIONS: Dict[str, Sequence[str]] = {
    "zbl": ("radius_scale", "p", "radii", "coefficients", "exponents", "screening_length",
            "z_power", "coulomb", "weight"),
    "d3": ("functional", "s6", "s8", "a1", "a2", "cutoff", "cn_cutoff")}
#: the priors that read the Potential's context (positions and cells)
CONTEXT_PRIORS = ("d3",)


def validate_priors(priors: Dict[str, Dict[str, float]]) -> None:
    """Raise ValueError naming an unknown prior or option (and the valid ones)."""
    for name, options in priors.items():
        if name not in PRIOR_OPTIONS:
            raise ValueError(f"unknown prior {name!r}; valid priors: {sorted(PRIOR_OPTIONS)}")
        unknown = sorted(set(options) - set(PRIOR_OPTIONS[name]))
        if unknown:
            raise ValueError(f"unknown options {unknown} of prior {name!r}; valid: {list(PRIOR_OPTIONS[name])}")


class ZBLRepulsion(nn.Module):
    """ZBL pair repulsion per atom, ``[M, E, 1]`` edge lengths -> ``[M, N]`` (eV).

    ``E_ij = w k Z_i Z_j / r phi(r / a_ij) s(r / r_ij)``, ``a_ij = 0.4685 / (Z_i^0.23 +
    Z_j^0.23)`` A, ``phi(x) = sum_k c_k exp(-d_k x)``, ``s`` the polynomial envelope of order
    ``p`` (1 at 0; value, slope and curvature 0 at 1) and ``r_ij = radius_scale (R_cov(Z_i) +
    R_cov(Z_j))``. Half of each pair's energy goes to each atom (the edge list holds both
    directions).

    Args:
        elements: atomic numbers in the model's species order.
        radius_scale: multiplies the covalent radii (``ase.data.covalent_radii``).
        p: envelope order (>= 2).
        radii: per-element radii (A, species order) used instead of ``ase``'s (then
            ``radius_scale`` still multiplies them).
        coefficients, exponents: ``c_k`` and ``d_k`` of ``phi`` (equal lengths).
        screening_length: the numerator of ``a_ij`` (A); z_power: the exponent of ``Z`` in it.
        coulomb: ``k`` (eV A / e^2); weight: ``w``, a factor on the whole term.
    """

    def __init__(self, elements: Sequence[int], radius_scale: float = 1.0, p: int = 6,
                 radii: Optional[Sequence[float]] = None,
                 coefficients: Sequence[float] = ZBL_COEFFICIENTS,
                 exponents: Sequence[float] = ZBL_EXPONENTS,
                 screening_length: float = ZBL_LENGTH_A, z_power: float = ZBL_Z_POWER,
                 coulomb: float = COULOMB_EV_A, weight: float = 1.0) -> None:
        super().__init__()
        from ase.data import covalent_radii

        if not radius_scale > 0 or p < 2:
            raise ValueError(f"zbl needs radius_scale > 0 and p >= 2, got {radius_scale}, {p}")
        if len(coefficients) != len(exponents) or not len(coefficients):
            raise ValueError(f"zbl needs as many coefficients as exponents (>= 1), got "
                             f"{len(coefficients)} and {len(exponents)}")
        if radii is not None and len(radii) != len(elements):
            raise ValueError(f"zbl radii: {len(radii)} values for {len(elements)} elements")
        if not screening_length > 0:
            raise ValueError(f"zbl needs screening_length > 0, got {screening_length}")
        z = torch.tensor([float(e) for e in elements], dtype=torch.get_default_dtype())
        self.register_buffer("z", z, persistent=False)
        self.register_buffer("z_power", z ** float(z_power), persistent=False)
        base = [float(r) for r in radii] if radii is not None else [
            float(covalent_radii[int(e)]) for e in elements]
        self.register_buffer("radius", torch.tensor([r * radius_scale for r in base],
                                                    dtype=torch.get_default_dtype()), persistent=False)
        self.envelope = PolynomialCutoff(1.0, p)  # applied to r / r_ij
        self.coefficients: List[float] = [float(c) for c in coefficients]
        self.exponents: List[float] = [float(d) for d in exponents]
        self.screening_length = float(screening_length)  # attributes, not globals, for TorchScript
        self.coulomb = float(coulomb) * float(weight)

    def forward(self, species: Tensor, edge_index: Tensor, lengths: Tensor,
                context: Optional[Dict[str, Tensor]] = None) -> Tensor:
        send = species.index_select(0, edge_index[0])
        recv = species.index_select(0, edge_index[1])
        r = lengths.squeeze(-1)  # [M, E]
        zz = self.z.index_select(0, send) * self.z.index_select(0, recv)
        a = self.screening_length / (self.z_power.index_select(0, send) + self.z_power.index_select(0, recv))
        x = r / a
        phi = torch.zeros_like(x)
        for k in range(len(self.coefficients)):
            phi = phi + self.coefficients[k] * torch.exp(-self.exponents[k] * x)
        r_max = self.radius.index_select(0, send) + self.radius.index_select(0, recv)
        pair = self.coulomb * zz / r * phi * self.envelope(r / r_max)  # [M, E]
        out = torch.zeros(r.shape[0], species.shape[0], dtype=r.dtype, device=r.device)
        return out.index_add_(1, edge_index[1], 0.5 * pair)


def build_priors(priors: Dict[str, Dict[str, float]], elements: Sequence[int]) -> List[nn.Module]:
    """The prior modules of a config's ``priors`` entry (validated)."""
    validate_priors(priors)
    modules: List[nn.Module] = []
    for name, options in sorted(priors.items()):
        if name == "zbl":
            kwargs = dict(options)
            for key in ("radius_scale", "screening_length", "z_power", "coulomb", "weight"):
                if key in kwargs:
                    kwargs[key] = float(kwargs[key])
            if "p" in kwargs:
                kwargs["p"] = int(kwargs["p"])
            modules.append(ZBLRepulsion(elements, **kwargs))
        elif name == "d3":
            kwargs = {k: float(v) for k, v in options.items() if k != "functional"}
            modules.append(D3Dispersion(elements, functional=options.get("functional"), **kwargs))
    return modules

