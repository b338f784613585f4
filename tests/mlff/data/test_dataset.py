"""Reading labelled frames into graphs, with errors that name file and frame."""

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from mlff import graph as G
from mlff.data.dataset import (
    DataKeys,
    GraphDataset,
    batches,
    get_stress,
    labelled_graph,
    random_split,
)
from mlff.graph import InputError


def labelled(name="CH3CH2OH", seed=0, energy_key="energy_xtb", forces_key="forces_xtb"):
    rng = np.random.default_rng(seed)
    atoms = molecule(name)
    atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
    atoms.info[energy_key] = float(rng.normal())
    atoms.arrays[forces_key] = rng.normal(size=(len(atoms), 3))
    return atoms


def test_custom_keys_roundtrip_through_extxyz(tmp_path):
    frames = [labelled(seed=k) for k in range(3)]
    path = tmp_path / "d.extxyz"
    ase.io.write(path, frames)
    ds = GraphDataset(path, r_cut=4.0, keys=DataKeys.xtb())
    assert len(ds) == 3
    assert ds.elements == [1, 6, 8]
    g = ds[1]
    assert float(g[G.ENERGY]) == pytest.approx(frames[1].info["energy_xtb"])
    np.testing.assert_allclose(g[G.FORCES].numpy(), frames[1].arrays["forces_xtb"])
    assert g[G.SPECIES].tolist() == [[1, 6, 8].index(z) for z in frames[1].numbers]
    assert float(g[G.STRESS_WEIGHT]) == 0.0 and float(g[G.FORCES_WEIGHT]) == 1.0


def test_standard_keys_from_the_calculator_ase_attaches(tmp_path):
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, forces=np.ones((3, 3)))
    path = tmp_path / "std.extxyz"
    ase.io.write(path, atoms)
    g = GraphDataset(path, r_cut=3.0)[0]
    assert float(g[G.ENERGY]) == -1.5
    assert float(g[G.FORCES].sum()) == 9.0


def test_stress_from_voigt_and_from_virial():
    atoms = bulk("Cu", cubic=True)
    voigt = np.array([1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
    atoms.info["stress"] = voigt
    s = get_stress(atoms, DataKeys())
    assert s[0, 0] == 1.0 and s[1, 2] == 0.1 and s[0, 1] == 0.3
    del atoms.info["stress"]
    atoms.info["virial"] = -voigt * atoms.get_volume()
    np.testing.assert_allclose(get_stress(atoms, DataKeys()), s)
    g = labelled_graph(atoms, 3.0, DataKeys())
    assert g[G.STRESS].shape == (1, 3, 3) and float(g[G.STRESS_WEIGHT]) == 1.0


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda a: a.info.pop("energy_xtb"), r"frame 1: target 'energy' not found under key 'energy_xtb'"),
        (lambda a: a.arrays.__setitem__("forces_xtb", np.full((len(a), 3), np.nan)), "frame 1: forces .* NaN"),
        (lambda a: a.info.__setitem__("energy_xtb", float("inf")), "frame 1: energy .* inf"),
        (lambda a: a.positions.__setitem__((0, 0), np.nan), r"frame 1: positions of atoms \[0\]"),
    ],
)
def test_errors_name_file_and_frame(tmp_path, break_it, message):
    frames = [labelled(seed=k) for k in range(3)]
    break_it(frames[1])
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, frames)
    with pytest.raises(InputError, match=message) as info:
        GraphDataset(path, r_cut=4.0, keys=DataKeys.xtb())
    assert "bad.extxyz" in str(info.value)


def test_wrong_force_shape_is_named(monkeypatch):
    from mlff.data import dataset as D

    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    atoms.info["energy_xtb"] = 0.0
    atoms.arrays["forces_xtb"] = np.zeros((2, 3))
    D.validate_frame(atoms, DataKeys.xtb(), "f.xyz, frame 0", require=("energy", "forces"))
    monkeypatch.setattr(D, "get_forces", lambda atoms, key: np.zeros((3, 3)))
    with pytest.raises(InputError, match=r"f.xyz, frame 0: forces .* shape \[3, 3\], expected \[2, 3\]"):
        D.validate_frame(atoms, DataKeys.xtb(), "f.xyz, frame 0")


def test_unknown_element_lists_known_ones(tmp_path):
    path = tmp_path / "d.extxyz"
    ase.io.write(path, [labelled("CH3CH2OH"), labelled("CH3CONH2")])
    with pytest.raises(InputError, match=r"\['N'\] are not in the model, which knows \['H', 'C', 'O'\]"):
        GraphDataset(path, r_cut=4.0, keys=DataKeys.xtb(), elements=[1, 6, 8])


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GraphDataset(tmp_path / "nope.extxyz", r_cut=4.0)


def test_random_split_is_seeded_disjoint_and_complete():
    a = random_split(103, [0.8, 0.1, 0.1], seed=3)
    b = random_split(103, [0.8, 0.1, 0.1], seed=3)
    c = random_split(103, [0.8, 0.1, 0.1], seed=4)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c))
    joined = np.concatenate(a)
    assert sorted(joined.tolist()) == list(range(103))
    assert sorted(len(x) for x in a) == [10, 11, 82]
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(10, [0.5, 0.4], seed=0)


def test_batches_cover_the_dataset():
    graphs = [labelled_graph(labelled(seed=k), 4.0, DataKeys.xtb(), [1, 6, 8]) for k in range(5)]
    out = list(batches(graphs, 2, shuffle=True, seed=1))
    assert [G.num_graphs(b) for b in out] == [2, 2, 1]
    energies = sorted(torch.cat([b[G.ENERGY] for b in out]).tolist())
    assert energies == sorted(float(g[G.ENERGY]) for g in graphs)
