"""Placing a ligand in a host's site and choosing its alignment reference atoms (nm).

For a host-guest system given as SMILES there is no docked pose: :func:`place_in_site` puts
the ligand's centroid on the site centre (default: the host's centroid, which for a
cyclodextrin or cucurbituril is the cavity) with its longest principal axis along the host's
thinnest one (a ring's symmetry axis), and picks, among rotations about that axis and the
flip, the orientation that keeps the ligand farthest from the host's atoms. The sampler then
minimises and equilibrates from there.

:func:`reference_atoms` chooses the three atoms of the alignment restraint from the pose in a
way that gives corresponding atoms for similar ligands placed the same way: the heavy atom
nearest the site centre, the one farthest along the site axis, and the one farthest from
that line.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np


def principal_axes(xyz: np.ndarray) -> np.ndarray:
    """[3, 3] unit principal axes of a point set as rows, largest spread first."""
    centred = np.asarray(xyz, dtype=float) - np.mean(xyz, axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=True)
    return vt


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about the unit ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def site_axis(receptor_nm: np.ndarray) -> np.ndarray:
    """The receptor's thinnest principal axis (unit vector): a ring host's symmetry axis."""
    return principal_axes(receptor_nm)[-1]


def place_in_site(ligand_nm: np.ndarray, receptor_nm: np.ndarray, center_nm: Sequence[float] | None = None,
                  n_angles: int = 24) -> np.ndarray:
    """The ligand's coordinates [A, 3] (nm) moved into the site (see the module docstring)."""
    ligand = np.asarray(ligand_nm, dtype=float)
    receptor = np.asarray(receptor_nm, dtype=float)
    center = receptor.mean(axis=0) if center_nm is None else np.asarray(center_nm, dtype=float)
    local = ligand - ligand.mean(axis=0)
    axis = site_axis(receptor)
    if len(ligand) > 1:
        long_axis = principal_axes(local)[0]
        # rotate the ligand's long axis onto the site axis
        cross = np.cross(long_axis, axis)
        sin, cos = np.linalg.norm(cross), float(np.dot(long_axis, axis))
        if sin > 1e-9:
            local = local @ _rotation(cross / sin, np.arctan2(sin, cos)).T
        elif cos < 0:
            local = -local
    best, best_clearance = local, -np.inf
    perpendicular = principal_axes(receptor)[0]
    for flip in (False, True):
        start = local @ _rotation(perpendicular, np.pi).T if flip else local
        for angle in np.linspace(0, 2 * np.pi, n_angles, endpoint=False):
            trial = start @ _rotation(axis, angle).T + center
            clearance = float(np.min(np.linalg.norm(trial[:, None] - receptor[None], axis=-1)))
            if clearance > best_clearance + 1e-9:
                best, best_clearance = trial, clearance
    return best


def reference_atoms(pose_nm: np.ndarray, numbers: Sequence[int], axis: np.ndarray,
                    center_nm: Sequence[float]) -> List[int]:
    """Three atom indices of the ligand for the alignment restraint (see the module docstring);
    hydrogens only when the ligand has fewer than three heavy atoms."""
    pose = np.asarray(pose_nm, dtype=float)
    heavy = [i for i, z in enumerate(numbers) if z > 1]
    pool = heavy if len(heavy) >= 3 else heavy + [i for i, z in enumerate(numbers) if z == 1]
    if len(pool) < 3:
        raise ValueError("the alignment restraint needs a ligand of at least three atoms")
    center = np.asarray(center_nm, dtype=float)
    first = min(pool, key=lambda i: np.linalg.norm(pose[i] - center))
    rest = [i for i in pool if i != first]
    second = max(rest, key=lambda i: float(np.dot(pose[i] - pose[first], axis)) + 1e-3 * np.linalg.norm(pose[i] - pose[first]))
    line = pose[second] - pose[first]
    line /= np.linalg.norm(line)

    def off_line(i: int) -> float:
        v = pose[i] - pose[first]
        return float(np.linalg.norm(v - np.dot(v, line) * line))

    third = max((i for i in rest if i != second), key=off_line)
    if off_line(third) < 1e-3:
        raise ValueError("the ligand's atoms are collinear: give reference_atoms for the alignment restraint")
    return [int(first), int(second), int(third)]
