"""Physical priors: energy terms with a known form that any model adds to its learned energy.

A prior is a config entry of the model (``priors: {"zbl": {...}}``), built here, evaluated on
the model's own edges inside its forward pass, so it reaches energies, forces and stress
through the same :class:`~mlff.models.potential.Potential`, is saved with the model file and
runs in TorchScript.

- ``zbl``: the Ziegler-Biersack-Littmark universal screened nuclear repulsion (J. F. Ziegler,
  J. P. Biersack, U. Littmark, *The Stopping and Range of Ions in Solids*, 1985), switched off
  smoothly at the sum of the two covalent radii (``ase.data.covalent_radii``) times
  ``radius_scale``, so that it only acts where atoms are closer than a bond: it keeps MD and
  sampling of close contacts physical where training data has none.

Priors are written by hand (a few lines) because they run inside the TorchScript-able model.
"""

from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn

from mlff.nn.radial import PolynomialCutoff
from mlff.units import COULOMB_EV_A

#: ZBL universal screening function: coefficients and exponents
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
#: ZBL universal screening length 0.8854 a0 (A), with a0 the Bohr radius
ZBL_LENGTH_A = 0.46850
#: the exponent of Z in the screening length
ZBL_Z_POWER = 0.23

PRIOR_OPTIONS: Dict[str, Sequence[str]] = {"zbl": ("radius_scale", "p")}


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

    ``E_ij = k Z_i Z_j / r phi(r / a_ij) s(r / r_ij)``, ``a_ij = 0.4685 / (Z_i^0.23 + Z_j^0.23)``
    A, ``phi(x) = sum_k c_k exp(-d_k x)``, ``s`` the polynomial envelope of order ``p`` (1 at 0;
    value, slope and curvature 0 at 1) and ``r_ij = radius_scale (R_cov(Z_i) + R_cov(Z_j))``.
    Half of each pair's energy goes to each atom (the edge list holds both directions).
    """

    def __init__(self, elements: Sequence[int], radius_scale: float = 1.0, p: int = 6) -> None:
        super().__init__()
        from ase.data import covalent_radii

        if not radius_scale > 0 or p < 2:
            raise ValueError(f"zbl needs radius_scale > 0 and p >= 2, got {radius_scale}, {p}")
        z = torch.tensor([float(e) for e in elements], dtype=torch.get_default_dtype())
        self.register_buffer("z", z, persistent=False)
        self.register_buffer("z_power", z ** ZBL_Z_POWER, persistent=False)
        radii = [float(covalent_radii[int(e)]) * radius_scale for e in elements]
        self.register_buffer("radius", torch.tensor(radii, dtype=torch.get_default_dtype()), persistent=False)
        self.envelope = PolynomialCutoff(1.0, p)  # applied to r / r_ij
        self.coefficients: List[float] = list(ZBL_COEFFICIENTS)
        self.exponents: List[float] = list(ZBL_EXPONENTS)
        self.screening_length = ZBL_LENGTH_A  # attributes, not globals, for TorchScript
        self.coulomb = COULOMB_EV_A

    def forward(self, species: Tensor, edge_index: Tensor, lengths: Tensor) -> Tensor:
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
            modules.append(ZBLRepulsion(elements, float(options.get("radius_scale", 1.0)),
                                        int(options.get("p", 6))))
    return modules

