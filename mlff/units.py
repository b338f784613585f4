"""Unit constants: the only place in mlff where conversion factors live.

Internal units are eV (energy), Angstrom (length), amu (mass) and fs (time). OpenMM works in
kJ/mol, nm and ps; convert at the boundary with the named constants below, never with literals.
The values come from ``ase.units`` (CODATA 2014, the set ASE uses), so ASE and mlff agree exactly.
"""

from __future__ import annotations

import math

from ase import units as _ase_units

#: 1 eV expressed in kJ/mol (multiply an energy in eV to get kJ/mol).
EV_TO_KJ_PER_MOL: float = float(_ase_units.eV / (_ase_units.kJ / _ase_units.mol))
#: 1 kJ/mol expressed in eV.
KJ_PER_MOL_TO_EV: float = 1.0 / EV_TO_KJ_PER_MOL
#: 1 eV expressed in kcal/mol.
EV_TO_KCAL_PER_MOL: float = float(_ase_units.eV / (_ase_units.kcal / _ase_units.mol))
#: 1 kcal/mol expressed in eV.
KCAL_PER_MOL_TO_EV: float = 1.0 / EV_TO_KCAL_PER_MOL

#: 1 kcal expressed in kJ (thermochemical calorie, as ASE and OpenMM use).
KJ_PER_KCAL: float = float(_ase_units.kcal / _ase_units.kJ)

#: 1 Angstrom expressed in nm.
ANGSTROM_TO_NM: float = float(_ase_units.Angstrom / _ase_units.nm)
#: 1 nm expressed in Angstrom.
NM_TO_ANGSTROM: float = 1.0 / ANGSTROM_TO_NM

#: the Bohr radius in Angstrom and the Hartree in eV (atomic units of dispersion tables)
BOHR_TO_ANGSTROM: float = float(_ase_units.Bohr / _ase_units.Angstrom)
HARTREE_TO_EV: float = float(_ase_units.Hartree / _ase_units.eV)

#: 1 / (4 pi eps0) in kJ nm / (mol e^2): OpenMM's own value (ONE_4PI_EPS0 of its platforms), so
#: a custom force reproduces NonbondedForce's Coulomb energy to round-off.
COULOMB_KJ_NM_PER_MOL_E2: float = 138.935456

#: 1 fs expressed in ps.
FS_TO_PS: float = 1.0e-3
#: 1 ps expressed in fs.
PS_TO_FS: float = 1.0e3
#: 1 fs expressed in ns.
FS_TO_NS: float = 1.0e-6
#: seconds in a day (for ns/day).
SECONDS_PER_DAY: float = 86400.0
#: 1 fs in ASE's internal time unit (pass to ase.md integrators).
FS_ASE: float = float(_ase_units.fs)

#: Forces: 1 eV/A expressed in kJ/mol/nm.
EV_PER_A_TO_KJ_PER_MOL_PER_NM: float = EV_TO_KJ_PER_MOL / ANGSTROM_TO_NM
#: Forces: 1 kJ/mol/nm expressed in eV/A.
KJ_PER_MOL_PER_NM_TO_EV_PER_A: float = 1.0 / EV_PER_A_TO_KJ_PER_MOL_PER_NM

#: Pressure: 1 eV/A^3 expressed in GPa.
EV_PER_A3_TO_GPA: float = float(1.0 / _ase_units.GPa)
#: Pressure: 1 bar expressed in eV/A^3.
BAR_TO_EV_PER_A3: float = float(_ase_units.bar)

#: Density: 1 amu/A^3 expressed in g/cm^3 (ASE's amu in kg; 1 kg = 1e3 g, 1 A^3 = 1e-24 cm^3).
AMU_PER_A3_TO_G_PER_CM3: float = float(_ase_units._amu) * 1.0e3 / 1.0e-24

#: Boltzmann constant in eV/K.
KB_EV_PER_K: float = float(_ase_units.kB)
#: Boltzmann constant in kJ/mol/K.
KB_KJ_PER_MOL_PER_K: float = float(_ase_units.kB) * EV_TO_KJ_PER_MOL
#: Hartree in eV.
HARTREE_TO_EV: float = float(_ase_units.Hartree)

#: Coulomb constant e^2 / (4 pi eps0) in eV A (from ASE's CODATA constants).
COULOMB_EV_A: float = float(_ase_units._e / (4.0 * math.pi * _ase_units._eps0) * 1.0e10)
