"""Model files of older versions load through their migrations and give the numbers the mlff that
wrote them computed; files that are not models, cannot be upgraded or are too new are refused
with a :class:`~mlff.errors.ModelFileError` that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase import Atoms

from mlff.errors import ModelFileError, ModelFileWarning
from mlff.graph import atoms_to_graph
from mlff.io import CHECKSUM, VERSION, checksum_status, load_model, load_model_with_metadata, save_model

#: the version-1 files here predate checksums: their warning is expected (and tested below)
pytestmark = pytest.mark.filterwarnings("ignore::mlff.errors.ModelFileWarning")

#: written by mlff at commit d27a446 (version 1) with fixtures/make_model_file_v1.py
V1_FILE = Path(__file__).resolve().parent / "fixtures" / "model_file_v1.pt"


def v1_dict() -> dict:
    data = torch.load(V1_FILE, weights_only=True)
    assert data["version"] == 1 and "std_scale" not in data
    return data


def write(tmp_path: Path, data: dict, name: str = "model.pt") -> Path:
    path = tmp_path / name
    torch.save(data, path)
    return path


def test_version_1_file_gives_the_numbers_its_mlff_computed(tmp_path):
    path = write(tmp_path, v1_dict())  # a version-1 dict, written here
    potential, metadata = load_model_with_metadata(path)
    assert potential.num_members == 1 and float(potential.std_scale) == 1.0
    assert metadata["written_by"] == "mlff d27a446"
    for name, ref in metadata["reference"].items():
        atoms = Atoms(ref["numbers"], positions=ref["positions_A"], cell=ref["cell_A"], pbc=ref["pbc"])
        periodic = bool(atoms.pbc.all())
        out = potential(atoms_to_graph(atoms, potential.r_cut, potential.elements),
                        compute_stress=periodic)
        f64 = dict(dtype=torch.float64)
        assert float(out["energy"][0]) == pytest.approx(ref["energy_eV"], rel=1e-12, abs=1e-10), name
        torch.testing.assert_close(out["forces"], torch.tensor(ref["forces_eV_per_A"], **f64),
                                   rtol=1e-10, atol=1e-12)
        if periodic:
            torch.testing.assert_close(out["stress"][0], torch.tensor(ref["stress_eV_per_A3"], **f64),
                                       rtol=1e-10, atol=1e-13)
    # saved again, it is a current file with the same model
    save_model(potential, tmp_path / "upgraded.pt")
    assert torch.load(tmp_path / "upgraded.pt", weights_only=True)["version"] == VERSION
    assert load_model(tmp_path / "upgraded.pt").model.config == potential.model.config


def test_version_1_before_species_mixing_is_refused_with_the_fix(tmp_path):
    data = v1_dict()
    data["state_dict"]["products.0.skip.weight"] = torch.zeros(3)
    with pytest.raises(ModelFileError, match=r"1119b62.*retrain it with `mlff train`"):
        load_model(write(tmp_path, data))


def test_unknown_old_version_says_how_to_re_export(tmp_path):
    data = dict(v1_dict(), version=0)
    with pytest.raises(ModelFileError, match=r"version 0.*save it again, or retrain"):
        load_model(write(tmp_path, data))


def test_newer_version_is_refused(tmp_path):
    data = dict(v1_dict(), version=VERSION + 1)
    with pytest.raises(ModelFileError, match="newer than this mlff.*upgrade mlff"):
        load_model(write(tmp_path, data))


def test_files_that_are_not_models(tmp_path):
    with pytest.raises(ModelFileError, match="not an mlff model file"):
        load_model(write(tmp_path, {"weights": torch.zeros(2)}))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelFileError, match="not an mlff model file: it is not a torch.save"):
        load_model(garbage)
    with pytest.raises(ModelFileError, match="not a trusted mlff model") as info:  # never run
        load_model(write(tmp_path, {"format": "mlff-model", "module": torch.nn.Linear(2, 2)}))
    assert "weights_only" not in str(info.value)
    assert issubclass(ModelFileError, ValueError)  # callers catching ValueError still do


def test_checksum_catches_a_changed_weight_or_config_and_old_files_warn(tmp_path, small_potential):
    path = tmp_path / "m.pt"
    save_model(small_potential(), path)
    data = torch.load(path, weights_only=True)
    assert checksum_status(data) == "ok" and len(data[CHECKSUM]) == 64
    load_model(path)  # no warning, no error
    name = sorted(data["state_dict"])[3]
    flipped = dict(data, state_dict=dict(data["state_dict"]))
    flipped["state_dict"][name] = flipped["state_dict"][name].clone()
    flipped["state_dict"][name].view(-1)[0] += 1e-6
    with pytest.raises(ModelFileError, match="is corrupted: its weights or config do not match"):
        load_model(write(tmp_path, flipped, "flipped.pt"))
    edited = dict(data, config=dict(data["config"], r_cut=4.5))
    with pytest.raises(ModelFileError, match="is corrupted"):
        load_model(write(tmp_path, edited, "edited.pt"))
    old = {k: v for k, v in data.items() if k != CHECKSUM}  # a file from before checksums
    with pytest.warns(ModelFileWarning, match="has no checksum"):
        load_model(write(tmp_path, old, "old.pt"))


def test_the_shipped_model_carries_its_checksum():
    from mlff.io import default_model_path

    assert checksum_status(torch.load(default_model_path(), weights_only=True)) == "ok"
