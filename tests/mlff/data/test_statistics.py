"""E0s, neighbour counts and force scale against values known by construction."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

from mlff.data.statistics import average_num_neighbors, compute_e0s, dataset_statistics

TRUE_E0 = {1: -13.6, 6: -1030.0, 8: -2040.0}


def synthetic(names, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    frames = []
    for name in names:
        a = molecule(name)
        a.info["energy"] = sum(TRUE_E0[int(z)] for z in a.numbers) + rng.normal(0, noise)
        a.arrays["forces"] = rng.normal(0, 0.5, (len(a), 3))
        frames.append(a)
    return frames


def test_least_squares_e0s_recover_the_generating_values():
    frames = synthetic(["CH4", "H2O", "CH3OH", "CO2", "C2H6", "CH3CH2OH"])
    e0 = compute_e0s(frames, "energy")
    assert e0.keys() == TRUE_E0.keys()
    for z, v in TRUE_E0.items():
        assert e0[z] == pytest.approx(v, abs=1e-8)


def test_isolated_atoms_take_precedence():
    frames = synthetic(["CH4", "H2O", "CH3OH"])
    h = Atoms("H")
    h.info["energy"] = -12.0
    h.info["config_type"] = "IsolatedAtom"
    e0 = compute_e0s(frames + [h], "energy")
    assert e0[1] == -12.0  # taken from the isolated atom, not fitted
    fitted = compute_e0s(frames + [h], "energy", use_isolated=False)
    assert fitted[1] == pytest.approx(TRUE_E0[1], abs=1e-8)  # isolated atom ignored: all fitted


def test_missing_energy_key_is_clear():
    with pytest.raises(ValueError, match="no frames with key 'nope'"):
        compute_e0s(synthetic(["CH4"]), "nope")


def test_average_neighbours_against_ase():
    frames = synthetic(["CH3CH2OH", "C6H6"])
    expected = sum(len(neighbor_list("i", a, 2.5)) for a in frames) / sum(len(a) for a in frames)
    assert average_num_neighbors(frames, 2.5) == pytest.approx(expected)


def test_dataset_statistics_summary():
    frames = synthetic(["CH4", "H2O", "CH3OH", "CO2", "C2H6"], noise=0.0)
    s = dataset_statistics(frames, "energy", "forces", r_cut=3.0)
    assert s["n_configs"] == 5
    assert s["elements"] == {"H": 16, "C": 5, "O": 4}
    assert s["interaction_energy_per_atom_eV"]["mean"] == pytest.approx(0.0, abs=1e-8)
    f = np.concatenate([a.arrays["forces"].ravel() for a in frames])
    assert s["force_rms_eV_per_A"] == pytest.approx(np.sqrt(np.mean(f**2)))
    assert set(s["e0_source"].values()) == {"least squares"}


def test_least_squares_refuses_undetermined_e0s():
    frames = synthetic(["CH3OH"] * 4, noise=0.1)
    with pytest.raises(ValueError, match="do not determine them"):
        compute_e0s(frames, "energy")
    s = dataset_statistics(frames, "energy", "forces", r_cut=3.0)
    assert s["e0s_eV"] == {} and "isolated-atom" in s["e0_note"]
