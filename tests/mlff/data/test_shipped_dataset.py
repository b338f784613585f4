"""The shipped reference dataset data/datasets/organic_gfn2: complete, consistent with its
stats.json and PROVENANCE.md, split as documented, and labelled with real GFN2-xTB numbers."""

import json

import ase.io
import numpy as np
import pytest

from mlff.assets_path import asset
from mlff.data.label import LabelSettings, label_atoms
from mlff.data.organic_gfn2 import FREESOLV, HELDOUT_MOLECULES

SPLITS = ("train", "val", "test", "test_heldout_molecules")


@pytest.fixture(scope="module")
def splits():
    return {name: ase.io.read(asset(f"datasets/organic_gfn2/{name}.extxyz"), ":") for name in SPLITS}


@pytest.fixture(scope="module")
def stats():
    return json.loads(asset("datasets/organic_gfn2/stats.json").read_text())


def test_size_and_elements(splits, stats):
    total = sum(len(v) for v in splits.values())
    assert total >= 5000
    assert total == stats["n_configs"]
    assert {k: len(v) for k, v in splits.items()} == stats["splits"]
    symbols = {s for frames in splits.values() for f in frames for s in f.get_chemical_symbols()}
    assert symbols <= {"H", "C", "N", "O"}
    size = sum(asset(f"datasets/organic_gfn2/{n}.extxyz").stat().st_size for n in SPLITS)
    assert size < 30e6


def test_every_frame_is_labelled_with_gfn2(splits):
    for frames in splits.values():
        for f in frames:
            assert f.info["label_method"] == "GFN2-xTB"
            assert np.isfinite(f.info["energy_xtb"])
            assert f.arrays["forces_xtb"].shape == (len(f), 3)


def test_labels_are_reproducible_with_tblite(splits):
    rng = np.random.default_rng(0)
    frames = splits["test"]
    for k in rng.choice(len(frames), 3, replace=False):
        f = frames[int(k)]
        again = label_atoms(f, LabelSettings())
        assert again.info["energy_xtb"] == pytest.approx(f.info["energy_xtb"], abs=1e-6)
        np.testing.assert_allclose(again.arrays["forces_xtb"], f.arrays["forces_xtb"], atol=1e-5)


def test_heldout_molecules_never_in_training(splits):
    seen = {f.info["molecule"] for n in ("train", "val", "test") for f in splits[n]}
    held = {f.info["molecule"] for f in splits["test_heldout_molecules"]}
    assert held == set(HELDOUT_MOLECULES)
    assert not (seen & held)


def test_required_molecules_and_temperatures(splits):
    train = splits["train"]
    names = {f.info["molecule"] for f in train}
    for name in list(FREESOLV) + ["alanine_dipeptide"]:
        assert name in names, name
    ala = [f for f in train if f.info["molecule"] == "alanine_dipeptide"]
    assert len(ala[0]) == 22
    temps = {f.info.get("temperature_K") for f in train if "temperature_K" in f.info}
    assert min(temps) == 300.0 and max(temps) == 1000.0
    isolated = [f for f in train if f.info.get("config_type") == "IsolatedAtom"]
    assert sorted(f.get_chemical_symbols()[0] for f in isolated) == ["C", "H", "N", "O"]


def test_random_splits_do_not_share_configurations(splits):
    def keys(frames):
        return {np.round(f.positions, 6).tobytes() for f in frames}

    train, val, test = (keys(splits[n]) for n in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)


def test_provenance_states_the_command():
    text = asset("datasets/organic_gfn2/PROVENANCE.md").read_text()
    assert "mlff dataset organic-gfn2 --out data/datasets/organic_gfn2 --seed 0" in text
