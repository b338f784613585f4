"""Issue 20 item 7: a model states the total charges and spin multiplicities it was trained on
(in its file), and a structure outside them is an error that says so, in ASE, in the ML/MM
free-energy pipeline and for old files (neutral singlet), instead of a silent result."""

import openmm
import pytest
from ase import Atoms
from ase.build import molecule

from mlff.calculators.ase import MLFFCalculator
from mlff.errors import InputError
from mlff.io import load_model, save_model
from mlff.train.trainer import training_domain


def test_ase_refuses_a_charge_or_spin_the_model_was_not_trained_on(small_potential):
    pot = small_potential()
    assert pot.supported_charges == [0] and pot.supported_spins == [1]
    atoms = molecule("CH3OH")
    atoms.calc = MLFFCalculator(pot)
    e0 = atoms.get_potential_energy()
    atoms.info["charge"] = 1
    with pytest.raises(InputError, match=r"total charge 1.*supports total charges \[0\]"):
        atoms.get_potential_energy()  # a changed info key is a new calculation, not the cache
    atoms.info["charge"] = 0
    atoms.info["spin"] = 3
    with pytest.raises(InputError, match=r"spin multiplicity 3.*\[1\]"):
        atoms.get_potential_energy()
    del atoms.info["spin"]
    assert atoms.get_potential_energy() == e0


def test_the_domain_is_saved_and_a_charged_model_accepts_its_charges(small_potential, tmp_path):
    pot = small_potential()
    pot.supported_charges = [-1, 0, 1]
    save_model(pot, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.supported_charges == [-1, 0, 1] and loaded.supported_spins == [1]
    atoms = molecule("CH3OH")
    atoms.info["charge"] = -1
    atoms.calc = MLFFCalculator(loaded)
    assert abs(atoms.get_potential_energy()) > 0


def test_training_data_sets_the_domain():
    frames = [Atoms("H2"), Atoms("H2", info={"charge": 1}), Atoms("H", info={"charge": 0, "spin": 2})]
    charges, spins = training_domain(frames)
    assert charges == {0, 1} and spins == {1, 2}


def test_free_energy_refuses_a_charged_solute_before_sampling(small_potential, saved_model, tmp_path):
    from mlff.md_workflows.free_energy.hydration_config import HydrationConfig
    from mlff.md_workflows.free_energy.ml_hydration import check_model_domain

    model = saved_model(tmp_path)
    system = openmm.System()
    nb = openmm.NonbondedForce()
    for q in (0.6, 0.2, 0.2):  # a cation: +1 in all
        system.addParticle(1.0)
        nb.addParticle(q, 0.3, 0.5)
    system.addForce(nb)
    cfg = HydrationConfig(smiles="[NH4+]", name="ammonium", model=str(model))
    with pytest.raises(InputError, match=r"ammonium .*total charge 1.*supports total charges \[0\]"):
        check_model_domain(cfg, {"vacuum": (system, None, None, [0, 1, 2])})
    nb.setParticleParameters(0, -0.4, 0.3, 0.5)  # neutral now
    check_model_domain(cfg, {"vacuum": (system, None, None, [0, 1, 2])})
