"""Fine-tuning pieces: adding elements keeps every known prediction, the E0 refit recovers a
known per-element offset, replay labels are the model's own predictions, frozen parameters
stay put through training."""

import json

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule

from mlff.calculators.ase import MLFFCalculator
from mlff.io import load_model, save_model
from mlff.train.config import TrainConfig
from mlff.train.finetune import extend_elements, freeze, refit_e0s, teacher_frames
from mlff.train.trainer import Trainer

from test_trainer import small_data, write_config  # noqa: F401  (the module's data fixture)


def _energy(potential, atoms):
    a = atoms.copy()
    a.calc = MLFFCalculator(potential)
    return a.get_potential_energy(), a.get_forces()


def test_extend_elements_keeps_known_predictions(small_potential):
    pot = small_potential(elements=(1, 6, 8), e0s=(-10.7, -48.8, -102.5), seed=3)
    bigger = extend_elements(pot, [7, 16], seed=1)
    assert bigger.model.config.elements == (1, 6, 8, 7, 16)
    for name in ("CH3OH", "H2O", "CO2"):
        mol = molecule(name)
        mol.rattle(0.05, seed=2)
        e0, f0 = _energy(pot, mol)
        e1, f1 = _energy(bigger, mol)
        assert abs(e1 - e0) < 1e-10
        np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-10)
    energy, forces = _energy(bigger, molecule("CH3CH2NH2"))  # the new element is usable
    assert np.isfinite(energy) and np.isfinite(forces).all()


def test_refit_e0s_recovers_a_known_offset(small_potential):
    pot = small_potential(elements=(1, 6, 8), e0s=(-10.7, -48.8, -102.5), seed=4)
    shift = {1: 0.31, 6: -1.7, 8: 2.2}
    frames = []
    for name, seed in (("CH3OH", 1), ("H2O", 2), ("CH3CH2OH", 3), ("HCOOH", 4), ("CH4", 5), ("CO2", 6)):
        mol = molecule(name)
        mol.rattle(0.05, seed=seed)
        energy, _ = _energy(pot, mol)
        mol.info["energy"] = energy + sum(shift[int(z)] for z in mol.numbers)
        frames.append(mol)
    refit, shifts = refit_e0s(pot, frames, "energy")
    for z, s in shift.items():
        assert abs(shifts[z] - s) < 1e-8
    for mol in frames:
        assert abs(_energy(refit, mol)[0] - mol.info["energy"]) < 1e-8
    assert refit.model.config.e0s == pytest.approx(tuple(e + shift[z] for z, e in zip((1, 6, 8), pot.model.config.e0s)))


def test_teacher_frames_carry_the_model_predictions(small_potential):
    pot = small_potential(elements=(1, 6, 8), seed=5)
    frames = [molecule("CH3OH"), molecule("CH3CH2NH2"), molecule("H2O")]  # N is unknown: skipped
    labelled = teacher_frames(pot, frames, "e", "f")
    assert len(labelled) == 2
    for a in labelled:
        energy, forces = _energy(pot, a)
        assert a.info["e"] == pytest.approx(energy, abs=1e-12)
        np.testing.assert_allclose(a.arrays["f"], forces, rtol=0, atol=1e-12)


def test_freeze_names_bad_prefixes(small_potential):
    pot = small_potential(seed=6)
    n = freeze(pot, ["embedding", "interactions.0"])
    assert n == sum(p.numel() for k, p in pot.model.named_parameters()
                    if k.startswith(("embedding", "interactions.0.")))
    assert not pot.model.embedding.weight.requires_grad
    assert pot.model.products[0].linear.weight.requires_grad
    with pytest.raises(ValueError, match="matches no parameter.*interactions.1"):
        freeze(pot, ["interaction.1"])


def test_finetune_run_adds_elements_replays_and_freezes(small_data, small_potential, tmp_path):  # noqa: F811
    """A model of H C O fine-tuned on data with N: N is added, E0s refit, replay frames join the
    training set, the frozen embedding is unchanged after training."""
    base = small_potential(elements=(1, 6, 8), e0s=(-10.7, -48.8, -102.5), seed=7, r_cut=4.0)
    save_model(base, tmp_path / "base.pt")
    frames = ase.io.read(small_data / "train.extxyz", ":")
    amine = molecule("CH3CH2NH2")
    amine.info["energy_xtb"] = -200.0  # any label: the run only has to fit it
    amine.arrays["forces_xtb"] = np.zeros((len(amine), 3))
    ase.io.write(tmp_path / "train.extxyz", frames + [amine])
    replay = [molecule(n) for n in ("CH3OH", "H2O", "CH3CH2OH", "HCOOH")]
    ase.io.write(tmp_path / "replay.extxyz", replay)
    cfg = yaml.safe_load(write_config(tmp_path / "ft.yaml", small_data, tmp_path / "ft",
                                      max_epochs=2).read_text())
    cfg["init_from"] = str(tmp_path / "base.pt")
    cfg["data"]["train"] = str(tmp_path / "train.extxyz")
    cfg["finetune"] = {"e0s": "refit", "replay": str(tmp_path / "replay.extxyz"), "replay_count": 3,
                       "freeze": ["embedding"]}
    trainer = Trainer(TrainConfig.from_dict(cfg), progress=False)
    report = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert report["added_elements"] == [7] and report["replay_frames"] == 3
    assert set(report["e0_shifts_eV"]) == {"1", "6", "8", "7"}
    assert len(trainer.train_graphs) == len(frames) + 1 + 3
    embedding = trainer.potential.model.embedding.weight.detach().clone()
    trainer.train()
    tuned = load_model(tmp_path / "ft" / "best_model.pt")
    assert tuned.model.config.elements == (1, 6, 8, 7)
    torch.testing.assert_close(tuned.model.embedding.weight, embedding, rtol=0, atol=0)
    assert not torch.equal(tuned.model.products[0].linear.weight, base.model.products[0].linear.weight)
