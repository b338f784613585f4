"""Restraints of relative ATM (Azimi et al., J. Chem. Inf. Model. 62, 309 (2022)).

- :func:`add_centroid_restraint`: a flat-bottom harmonic restraint that keeps a ligand's
  centroid within ``tolerance`` of a reference group's centroid plus an offset (the bound
  ligand: the site, offset 0; the solvent ligand: the site + d). It keeps the bound ligand in
  the site and the other one where its displaced copy lands in the site.
- :func:`add_alignment_restraint`: keeps ligand B (in the solvent) aligned with ligand A (in
  the site) on three reference atoms each, so that the displacement puts each ligand where the
  other was, in a similar pose: a harmonic distance between B's first atom and A's first atom
  + d, and ``k (1 - cos)`` terms on the angle between the first-to-second atom axes and on
  the angle between the planes of the two reference triples (their normals).

Both act on the real coordinates (they are outside the ATMForce), and both are the same in
every ATM state, so they cancel from the relative binding free energy as long as they hold
ligands in poses they visit anyway. Units: nm, kJ/mol.
"""
from __future__ import annotations

from typing import Sequence

from mlff.units import KJ_PER_KCAL

#: AToM-OpenMM's RBFE defaults: 25 kcal/mol/A^2 beyond 1.5 A (centroid), 2.5 kcal/mol/A^2
#: and 10 + 10 kcal/mol (alignment); here in kJ/mol and nm
CENTROID_K = 25.0 * KJ_PER_KCAL * 100.0
CENTROID_TOLERANCE_NM = 0.15
ALIGN_K_DISTANCE = 2.5 * KJ_PER_KCAL * 100.0
ALIGN_K_THETA = 10.0 * KJ_PER_KCAL
ALIGN_K_PSI = 10.0 * KJ_PER_KCAL


def add_centroid_restraint(system, reference_atoms: Sequence[int], ligand_atoms: Sequence[int],
                           offset_nm: Sequence[float] = (0.0, 0.0, 0.0), k: float = CENTROID_K,
                           tolerance_nm: float = CENTROID_TOLERANCE_NM) -> int:
    """Flat-bottom restraint 0.5 k (r - tol)^2 for r > tol, r = |c_lig - c_ref - offset|
    (centroids mass-weighted, nm); returns the force's index."""
    import openmm

    if not reference_atoms or not ligand_atoms:
        raise ValueError("centroid restraint: both atom groups must be non-empty")
    force = openmm.CustomCentroidBondForce(
        2, "0.5*k_centroid*step(r-tol_centroid)*(r-tol_centroid)^2;"
           "r=sqrt((x2-x1-ox)^2+(y2-y1-oy)^2+(z2-z1-oz)^2)")
    for name, value in (("k_centroid", k), ("tol_centroid", tolerance_nm)):
        force.addGlobalParameter(name, value)
    for name in ("ox", "oy", "oz"):
        force.addPerBondParameter(name)
    g_ref = force.addGroup([int(i) for i in reference_atoms])
    g_lig = force.addGroup([int(i) for i in ligand_atoms])
    force.addBond([g_ref, g_lig], [float(x) for x in offset_nm])
    return system.addForce(force)


#: x1..z3: ligand A's reference atoms, x4..z6: ligand B's; d: B's offset from A (nm). The psi
#: term compares the normals of the two reference planes (a x c and b x f: each ligand's own
#: first-to-second and first-to-third atom vectors), which vanish only for collinear reference
#: atoms. (Projecting both third atoms on A's axis instead, as this once did, divides by zero
#: whenever B's third-atom vector lines up with A's axis: a minimised toy edge put 2e7
#: kJ/mol/nm on one atom there and the window blew up.)
_ALIGNMENT = (
    "0.5*kd*((x4-x1-dx)^2+(y4-y1-dy)^2+(z4-z1-dz)^2) + 0.5*kt*(1-cost) + 0.5*kp*(1-cosp);"
    "cost=(ax*bx+ay*by+az*bz)/(la*lb);"
    "cosp=(nax*nbx+nay*nby+naz*nbz)/sqrt((nax^2+nay^2+naz^2)*(nbx^2+nby^2+nbz^2));"
    "nax=ay*cz-az*cy; nay=az*cx-ax*cz; naz=ax*cy-ay*cx;"
    "nbx=by*fz-bz*fy; nby=bz*fx-bx*fz; nbz=bx*fy-by*fx;"
    "la=sqrt(ax^2+ay^2+az^2); lb=sqrt(bx^2+by^2+bz^2);"
    "ax=x2-x1; ay=y2-y1; az=z2-z1; bx=x5-x4; by=y5-y4; bz=z5-z4;"
    "cx=x3-x1; cy=y3-y1; cz=z3-z1; fx=x6-x4; fy=y6-y4; fz=z6-z4"
)


def add_alignment_restraint(system, reference_a: Sequence[int], reference_b: Sequence[int],
                            displacement_nm: Sequence[float], k_distance: float = ALIGN_K_DISTANCE,
                            k_theta: float = ALIGN_K_THETA, k_psi: float = ALIGN_K_PSI) -> int:
    """Alignment of ligand B (reference atoms ``reference_b``, in the solvent at A + d) with
    ligand A (``reference_a``, in the site); returns the force's index. Zero when B's reference
    atoms are A's translated by ``displacement_nm``; the angle terms see only directions (B's
    axis against A's, and B's reference plane against A's)."""
    import openmm

    if len(reference_a) != 3 or len(reference_b) != 3:
        raise ValueError(f"alignment restraint: three reference atoms per ligand, got "
                         f"{len(reference_a)} and {len(reference_b)}")
    force = openmm.CustomCompoundBondForce(6, _ALIGNMENT)
    for name, value in (("kd", k_distance), ("kt", k_theta), ("kp", k_psi)):
        force.addGlobalParameter(name, value)
    for name in ("dx", "dy", "dz"):
        force.addPerBondParameter(name)
    force.addBond([int(i) for i in reference_a] + [int(i) for i in reference_b], [float(x) for x in displacement_nm])
    return system.addForce(force)
