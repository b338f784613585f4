"""Physical priors: ZBL against its closed form (written out here independently), through the
Potential (forces, stress, TorchScript) for both model types, and saved in the model file."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from mlff.graph import atoms_to_graph
from mlff.io import load_model, save_model

from model_mixins import periodic_box

#: Bohr radius (A) and the ZBL universal screening function (Ziegler, Biersack, Littmark 1985)
A0 = 0.529177210903
COULOMB = 14.3996454784  # e^2 / (4 pi eps0), eV A
COVALENT = {1: 0.31, 6: 0.76, 8: 0.66}  # ase.data.covalent_radii (Cordero 2008)


def zbl_closed_form(z1, z2, r, p=6):
    a = 0.8854 * A0 / (z1 ** 0.23 + z2 ** 0.23)
    x = r / a
    phi = 0.1818 * math.exp(-3.2 * x) + 0.5099 * math.exp(-0.9423 * x) + \
        0.2802 * math.exp(-0.4029 * x) + 0.02817 * math.exp(-0.2016 * x)
    u = r / (COVALENT[z1] + COVALENT[z2])
    s = 0.0 if u >= 1 else 1 - (p + 1) * (p + 2) / 2 * u ** p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
    return COULOMB * z1 * z2 / r * phi * s


@pytest.mark.parametrize("model_type", ["mace", "tensornet"])
def test_zbl_adds_its_closed_form_to_any_model(small_potential, model_type):
    plain = small_potential(model_type=model_type, elements=(1, 6, 8), seed=2)
    with_zbl = small_potential(model_type=model_type, elements=(1, 6, 8), seed=2, priors={"zbl": {}})
    for z1, z2, r in [(6, 8, 0.45), (1, 1, 0.3), (1, 8, 0.6), (6, 6, 1.2), (1, 6, 1.2)]:
        atoms = Atoms(numbers=[z1, z2], positions=[[0, 0, 0], [r, 0.1 * r, 0]])
        g = atoms_to_graph(atoms, plain.r_cut, plain.elements)
        d = float(np.linalg.norm(atoms.positions[1] - atoms.positions[0]))
        diff = float(with_zbl(g)["energy"] - plain(g)["energy"])
        # 1e-3 relative: the 4-digit coefficients of the original publication vs the 5-digit set
        assert diff == pytest.approx(zbl_closed_form(z1, z2, d), rel=2e-3, abs=1e-12)
    # nothing beyond the sum of covalent radii (C-C: 1.52 A)
    atoms = Atoms("CC", positions=[[0, 0, 0], [1.6, 0, 0]])
    g = atoms_to_graph(atoms, plain.r_cut, plain.elements)
    assert float(with_zbl(g)["energy"] - plain(g)["energy"]) == 0.0


#: the ZBL options mlff's mace-torch import writes (mlff.io_import.mace_torch.zbl_prior) for a
#: ScaleShiftMACE of scale 1.7 with ZBLBasis(p=5): mace-torch 0.3's own constants
MACE_ZBL = {"p": 5, "radii": [0.31, 0.76, 0.66], "coefficients": [0.1818, 0.5099, 0.2802, 0.02817],
            "exponents": [3.2, 0.9423, 0.4028, 0.2016], "screening_length": 0.4543 * 0.529,
            "z_power": 0.3, "coulomb": 14.3996, "weight": 1.7}


def mace_zbl_closed_form(z1, z2, r, p=5, weight=1.7):
    """mace-torch's ZBLBasis pair energy (its code's constants), times the model's scale."""
    a = 0.4543 * 0.529 / (z1 ** 0.3 + z2 ** 0.3)
    x = r / a
    phi = 0.1818 * math.exp(-3.2 * x) + 0.5099 * math.exp(-0.9423 * x) + \
        0.2802 * math.exp(-0.4028 * x) + 0.02817 * math.exp(-0.2016 * x)
    u = r / (COVALENT[z1] + COVALENT[z2])
    s = 0.0 if u >= 1 else 1 - (p + 1) * (p + 2) / 2 * u ** p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
    return weight * 14.3996 * z1 * z2 / r * phi * s


def test_zbl_with_another_codes_constants_is_exact(small_potential):
    """With mace-torch's constants as options the prior equals mace's ZBL to round-off (the
    imported models' references check the same through mace-torch itself)."""
    plain = small_potential(model_type="mace", elements=(1, 6, 8), seed=2, dtype="float64")
    with_zbl = small_potential(model_type="mace", elements=(1, 6, 8), seed=2, dtype="float64",
                               priors={"zbl": MACE_ZBL})
    for z1, z2, r in [(6, 8, 0.45), (1, 1, 0.3), (1, 8, 0.6), (6, 6, 1.2), (1, 6, 0.9)]:
        atoms = Atoms(numbers=[z1, z2], positions=[[0, 0, 0], [r, 0.1 * r, 0]])
        g = atoms_to_graph(atoms, plain.r_cut, plain.elements, dtype=torch.float64)
        d = float(np.linalg.norm(atoms.positions[1] - atoms.positions[0]))
        diff = float(with_zbl(g)["energy"] - plain(g)["energy"])
        assert diff == pytest.approx(mace_zbl_closed_form(z1, z2, d), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("options, message", [
    ({"coefficients": [0.1, 0.2], "exponents": [1.0]}, "as many coefficients as exponents"),
    ({"radii": [0.3, 0.7]}, "2 values for 3 elements"),
    ({"screening_length": 0.0}, "screening_length > 0"),
    ({"charge": 1}, "unknown options"),
])
def test_zbl_option_errors(small_potential, options, message):
    with pytest.raises(ValueError, match=message):
        small_potential(model_type="mace", elements=(1, 6, 8), priors={"zbl": options})

def test_zbl_forces_stress_torchscript_and_model_file(small_potential, tmp_path):
    pot = small_potential(model_type="tensornet", elements=(1, 6, 8), priors={"zbl": {"radius_scale": 1.5}})
    atoms = periodic_box(3)
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.2, 0.0]  # a close contact
    g = atoms_to_graph(atoms, pot.r_cut, pot.elements)
    out = pot.train()(g, compute_stress=True)
    pot.eval()
    h = 1e-5
    e = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[1, 0] += sign * h
        e.append(float(pot(atoms_to_graph(moved, pot.r_cut, pot.elements))["energy"]))
    assert -(e[0] - e[1]) / (2 * h) == pytest.approx(float(out["forces"][1, 0]), rel=1e-6)
    scripted = torch.jit.script(pot)
    torch.testing.assert_close(scripted(g, True, True)["stress"], pot(g, compute_stress=True)["stress"])
    save_model(pot, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.model.config.priors == {"zbl": {"radius_scale": 1.5}}
    torch.testing.assert_close(loaded(g)["energy"], pot(g)["energy"], rtol=0, atol=0)


def test_unknown_prior_names_the_valid_ones(small_potential):
    with pytest.raises(ValueError, match="valid priors"):
        small_potential(model_type="tensornet", priors={"d4": {}})
    with pytest.raises(ValueError, match="radius_scale"):
        small_potential(priors={"zbl": {"cutoff": 2.0}})
