"""MLFFCalculator: derivatives against ASE's finite differences, the caching contract, errors,
ensembles and batched evaluation."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from mlff.calculators.ase import MLFFCalculator
from mlff.graph import InputError

from calc_helpers import rattled, water_box


@pytest.fixture(scope="module")
def calc(small_potential):
    return MLFFCalculator(small_potential())


@pytest.fixture(scope="module")
def ensemble_calc(small_potential):
    return MLFFCalculator(small_potential(ensemble_size=3))


class CountingPotential:
    """Wraps a Potential and counts its calls."""

    def __init__(self, potential):
        self.potential = potential
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.potential(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.potential, name)


def slab() -> Atoms:
    atoms = water_box(3)
    atoms.pbc = [True, True, False]
    return atoms


@pytest.mark.parametrize("make", [rattled, water_box, slab], ids=["molecule", "periodic", "slab"])
def test_forces_match_numerical_derivatives(calc, make):
    atoms = make()
    atoms.calc = calc
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    np.testing.assert_allclose(forces, numerical, rtol=1e-5, atol=2e-7)
    assert np.abs(forces).max() > 1e-2  # not trivially zero


def test_stress_matches_numerical_derivative(calc):
    atoms = water_box(1)
    atoms.calc = calc
    stress = atoms.get_stress(voigt=True)
    numerical = calculate_numerical_stress(atoms, eps=1e-6, voigt=True)
    np.testing.assert_allclose(stress, numerical, rtol=1e-5, atol=1e-8)
    assert stress.shape == (6,) and np.abs(stress).max() > 1e-4


def test_energies_and_free_energy(calc):
    atoms = water_box(2)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == energy
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), energy, rtol=1e-12)


def test_no_stress_without_full_periodicity(calc):
    for atoms in (rattled(), slab()):
        atoms.calc = calc
        with pytest.raises(PropertyNotImplementedError):
            atoms.get_stress()


def test_one_model_call_for_all_properties(small_potential):
    calc = MLFFCalculator(small_potential())
    counter = CountingPotential(calc.potential)
    calc.potential = counter
    atoms = water_box(4)
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    atoms.get_potential_energies()
    assert counter.calls == 1
    atoms.get_forces()
    assert counter.calls == 1
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert counter.calls == 2
    atoms.info["unrelated"] = 1  # not read by the model: no recalculation
    atoms.get_potential_energy()
    assert counter.calls == 2


def test_info_keys_the_model_reads_invalidate_the_cache(small_potential):
    class ChargeAware(MLFFCalculator):
        info_keys = ("charge",)

    potential = small_potential()
    potential.supported_charges = [0, 1]  # a model trained on neutral and cationic structures
    calc = ChargeAware(potential)
    counter = CountingPotential(calc.potential)
    calc.potential = counter
    atoms = rattled()
    atoms.info["charge"] = 0
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.get_potential_energy()
    assert counter.calls == 1
    atoms.info["charge"] = 1
    atoms.get_potential_energy()
    assert counter.calls == 2
    atoms.info["other"] = 1
    atoms.get_potential_energy()
    assert counter.calls == 2


def test_implemented_properties_is_a_class_attribute_not_the_base_list():
    from ase.calculators.calculator import Calculator

    assert "implemented_properties" in MLFFCalculator.__dict__
    assert MLFFCalculator.implemented_properties is not Calculator.implemented_properties
    assert "energy_std" not in Calculator.implemented_properties


def test_ensemble_std_results(ensemble_calc, small_potential):
    atoms = water_box(5)
    atoms.calc = ensemble_calc
    atoms.get_potential_energy()
    r = ensemble_calc.results
    pot = ensemble_calc.potential
    g = ensemble_calc._graph(atoms)
    out = pot(g, compute_forces=True, compute_stress=True)
    scale = float(pot.std_scale)
    members = out["member_energy"][:, 0].numpy()
    np.testing.assert_allclose(r["energy"], members.mean(), rtol=1e-12)
    np.testing.assert_allclose(r["energy_std"], members.std() * scale, rtol=1e-10)
    np.testing.assert_allclose(
        r["forces_std"], out["member_forces"].numpy().std(0) * scale, rtol=1e-10, atol=1e-14
    )
    assert r["energy_std"] > 0 and r["forces_std"].shape == (len(atoms), 3)
    assert r["stress_std"].shape == (6,)
    # single models have no *_std results
    single = MLFFCalculator(small_potential())
    atoms.calc = single
    atoms.get_potential_energy()
    assert "energy_std" not in single.results


def test_evaluate_many_matches_single_calls(calc):
    structures = [rattled("CH3CH2OH", 1), water_box(6), rattled("CH4", 2), slab(), water_box(7)]
    many = calc.evaluate_many(structures, batch_size=2)
    assert len(many) == len(structures)
    for atoms, res in zip(structures, many):
        atoms.calc = calc
        atoms.get_potential_energy()
        for key, value in calc.results.items():
            np.testing.assert_allclose(res[key], value, rtol=1e-10, atol=1e-10, err_msg=key)
        assert set(res) == set(calc.results)


def test_model_from_file_and_dtype_conversion(tmp_path, saved_model):
    path = saved_model(tmp_path)
    atoms = rattled()
    atoms.calc = MLFFCalculator(str(path))
    e64 = atoms.get_potential_energy()
    atoms.calc = MLFFCalculator(path, dtype="float32")
    assert atoms.calc.potential.model_dtype == torch.float32
    e32 = atoms.get_potential_energy()
    np.testing.assert_allclose(e32, e64, rtol=1e-6)


def test_default_model_missing_is_a_clear_error():
    from mlff.assets_path import assets_dir

    if (assets_dir() / "models" / "mace_organic_gfn2_ensemble.pt").exists():
        pytest.skip("the default model is shipped in this checkout")
    with pytest.raises(FileNotFoundError, match="pass the path of a model file"):
        MLFFCalculator("default")


# --- errors ---------------------------------------------------------------------------------


def _energy(calc, atoms):
    atoms.calc = calc
    return atoms.get_potential_energy()


def test_unknown_element_is_named_with_the_model_elements(calc):
    atoms = rattled()
    atoms.symbols[0] = "Si"
    with pytest.raises(InputError, match=r"Si.*\['H', 'C', 'N', 'O'\]"):
        _energy(calc, atoms)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(calc, bad):
    atoms = rattled()
    atoms.positions[2, 1] = bad
    with pytest.raises(InputError, match="atoms \\[2\\] are NaN or infinite"):
        _energy(calc, atoms)


def test_atoms_too_close(calc):
    atoms = rattled()
    atoms.positions[1] = atoms.positions[0] + [0.05, 0, 0]
    with pytest.raises(InputError, match="0.05 A apart"):
        _energy(calc, atoms)


def test_periodic_without_cell(calc):
    atoms = rattled()
    atoms.pbc = True
    with pytest.raises(InputError, match="set the cell"):
        _energy(calc, atoms)


def test_degenerate_cell(calc):
    atoms = water_box(8)
    atoms.cell = [[5, 0, 0], [0, 5, 0], [5, 5, 0]]
    with pytest.raises(InputError, match="degenerate"):
        _energy(calc, atoms)


def test_evaluate_many_names_the_bad_structure(calc):
    bad = rattled()
    bad.positions[0] = np.nan
    with pytest.raises(InputError, match="structure 1"):
        calc.evaluate_many([rattled(), bad])
