"""The Ewald sums of the long-range block with fixed charges: Madelung constants, independence of
the splitting, convergence with the k cutoff, translations and choice of cell, finite
differences, the charged-cell background and the limit of a molecule in a large box."""

import math

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlff.nn import ewald
from mlff.units import COULOMB_EV_A

NACL_MADELUNG = 1.747565
CSCL_MADELUNG = 1.762675


def _energy(atoms, charges, **kw):
    return float(ewald.coulomb_energy(torch.tensor(charges, dtype=torch.float64),
                                      torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), True, **kw))


def _rocksalt(cubic=True, a=5.64):
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=cubic)
    return atoms, [1.0 if z == 11 else -1.0 for z in atoms.numbers]


def test_madelung_constant_of_rocksalt():
    atoms, q = _rocksalt()
    r0 = 5.64 / 2
    madelung = -_energy(atoms, q) * r0 / (COULOMB_EV_A * len(atoms) / 2)
    assert madelung == pytest.approx(NACL_MADELUNG, abs=1e-5)


def test_madelung_constant_of_cesium_chloride():
    a = 4.12
    atoms = bulk("CsCl", "cesiumchloride", a=a)
    r0 = a * math.sqrt(3) / 2
    madelung = -_energy(atoms, [1.0, -1.0]) * r0 / COULOMB_EV_A
    assert madelung == pytest.approx(CSCL_MADELUNG, abs=1e-5)


def test_independent_of_the_splitting_and_converges_with_k_cutoff():
    """Real-space cutoffs 4-9 A (so alpha 0.3-1.0 / A) give one energy; the error of a looser
    accuracy (a smaller k cutoff) shrinks as the accuracy is tightened."""
    atoms, q = _rocksalt(cubic=True)
    atoms.positions += np.random.default_rng(0).normal(0, 0.1, atoms.positions.shape)
    energies = [_energy(atoms, q, r_cut=r) for r in (4.0, 6.0, 9.0)]
    assert max(energies) - min(energies) < 1e-6 * abs(energies[0])
    errors = [abs(_energy(atoms, q, r_cut=6.0, accuracy=acc) - energies[1]) for acc in (1e-2, 1e-4, 1e-6)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5 and errors[0] > 1e-4


def test_invariant_to_translation_and_choice_of_cell():
    """Moving every charge, or describing the crystal by its 2-atom primitive cell, a supercell
    or a cell with wrapped atoms, changes nothing per ion pair."""
    conventional, q = _rocksalt(cubic=True)
    per_pair = _energy(conventional, q) / (len(conventional) / 2)
    primitive, qp = _rocksalt(cubic=False)
    assert _energy(primitive, qp) == pytest.approx(per_pair, rel=1e-9)
    moved = conventional.copy()
    moved.positions += [0.37, -1.2, 2.9]
    assert _energy(moved, q) == pytest.approx(per_pair * 4, rel=1e-9)
    moved.wrap()
    assert _energy(moved, q) == pytest.approx(per_pair * 4, rel=1e-9)
    supercell = primitive.repeat((2, 3, 1))
    assert _energy(supercell, qp * 6) == pytest.approx(per_pair * 6, rel=1e-9)


def _random_cell(seed=1, n=10):
    rng = np.random.default_rng(seed)
    cell = np.diag([7.0, 8.0, 7.5]) + rng.normal(0, 0.4, (3, 3))
    positions = rng.uniform(0, 1, (n, 3)) @ cell
    q = rng.normal(0, 1, n)
    return torch.tensor(positions), torch.tensor(cell), torch.tensor(q - q.mean())


@pytest.mark.parametrize("width", [0.0, 0.5])
def test_forces_and_stress_match_finite_differences(width):
    pos, cell, q = _random_cell()
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    p = pos.clone().requires_grad_(True)
    sym = 0.5 * (strain + strain.T)
    energy = ewald.coulomb_energy(q, p + p @ sym, cell + cell @ sym, True, width=width)
    de_dpos, de_dstrain = torch.autograd.grad(energy, [p, strain])
    h = 1e-5
    for a, d in [(0, 0), (3, 1), (7, 2)]:
        e = []
        for sign in (1, -1):
            shifted = pos.clone()
            shifted[a, d] += sign * h
            e.append(float(ewald.coulomb_energy(q, shifted, cell, True, width=width)))
        assert (e[0] - e[1]) / (2 * h) == pytest.approx(float(de_dpos[a, d]), rel=1e-6, abs=1e-8)
    for i, j in [(0, 0), (1, 2), (2, 2)]:
        e = []
        for sign in (1, -1):
            eps = torch.eye(3, dtype=torch.float64)
            eps[i, j] += sign * h / (2 if i != j else 1)
            eps[j, i] += sign * h / 2 if i != j else 0.0
            e.append(float(ewald.coulomb_energy(q, pos @ eps, cell @ eps, True, width=width)))
        assert (e[0] - e[1]) / (2 * h) == pytest.approx(float(de_dstrain[i, j]), rel=1e-6, abs=1e-8)
    assert float(de_dstrain.abs().max()) > 1e-3


def test_charged_cell_is_independent_of_the_splitting():
    """A net charge is neutralised by a uniform background, whose energy depends on alpha like
    the rest of the sum does, so the total does not."""
    pos, cell, q = _random_cell(2)
    q = q + 0.3
    energies = [float(ewald.coulomb_energy(q, pos, cell, True, r_cut=r)) for r in (4.5, 6.0, 8.0)]
    assert max(energies) - min(energies) < 1e-6 * max(abs(e) for e in energies)


def test_molecule_in_a_large_box_is_the_direct_sum():
    """Tinfoil Ewald plus the surface term ``2 pi |sum q r|^2 / 3V`` of a cubic cell is the
    vacuum energy up to O(L^-5): for a molecule's Gaussian charges the residual against the
    direct pair sum falls 32-fold per doubling of the box, to 2e-5 relative at 80 A."""
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 1.2, (6, 3))
    q = torch.tensor(rng.normal(0, 0.5, 6))
    q = q - q.mean()
    residuals = []
    for box in (40.0, 80.0):
        pos = torch.tensor(offsets + box / 2)
        cell = torch.eye(3, dtype=torch.float64) * box
        direct = float(ewald.coulomb_energy(q, pos, cell, False, width=0.5))
        dipole = (q.unsqueeze(1) * pos).sum(0)
        surface = COULOMB_EV_A * 2 * math.pi / (3 * box ** 3) * float((dipole * dipole).sum())
        periodic = float(ewald.coulomb_energy(q, pos, cell, True, r_cut=8.0, width=0.5))
        residuals.append(periodic + surface - direct)
    assert abs(direct) > 0.1
    assert residuals[0] / residuals[1] == pytest.approx(32.0, rel=0.1)
    assert abs(residuals[1]) < 2e-5 * abs(direct)


def test_switch_is_smooth_and_bounded():
    x = torch.linspace(0, 1.2, 1201, dtype=torch.float64, requires_grad=True)
    s = ewald.switch(x)
    (ds,) = torch.autograd.grad(s.sum(), x)
    assert float(s[x <= ewald.X_ON].min()) == 1.0 and float(s[x >= 1].max()) == 0.0
    assert float(ds.abs()[x >= 1].max()) == 0.0 and float(ds.abs()[x <= ewald.X_ON].max()) == 0.0
