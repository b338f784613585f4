"""Data-parallel training (torch.distributed, gloo, 2 processes on this machine): the same loss
curve and weights as one process with the same global batch, and a bit-identical resume."""

import json

import pytest
import torch
import yaml

from mlff.io import load_model
from mlff.train.distributed import run_training_parallel
from mlff.train.trainer import run_training

from test_trainer import small_data, write_config  # noqa: F401  (the module's data fixture)


def _config(tmp_path, data, name, **optim):
    cfg = yaml.safe_load(write_config(tmp_path / f"{name}.yaml", data, tmp_path / name,
                                      **{"batch_size": 4, "max_epochs": 2, **optim}).read_text())
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / f"{name}.yaml"), tmp_path / name


def _history(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_follow_the_one_process_loss_curve(small_data, tmp_path):  # noqa: F811
    one, out_one = _config(tmp_path, small_data, "one")
    two, out_two = _config(tmp_path, small_data, "two")
    run_training(one, progress=False)
    run_training_parallel(two, 2, progress=False)
    h1, h2 = _history(out_one), _history(out_two)
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-9)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-9)
    m1, m2 = load_model(out_one / "best_model.pt"), load_model(out_two / "best_model.pt")
    for (k, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        torch.testing.assert_close(p2, p1, rtol=1e-9, atol=1e-11, msg=k)


def test_distributed_resume_is_bit_identical(small_data, tmp_path):  # noqa: F811
    straight, out_straight = _config(tmp_path, small_data, "straight")
    run_training_parallel(straight, 2, progress=False)
    first, out_split = _config(tmp_path, small_data, "split", max_epochs=1)
    run_training_parallel(first, 2, progress=False)
    cfg = yaml.safe_load(open(first))
    cfg["optim"]["max_epochs"] = 2  # budgets may change on resume
    open(first, "w").write(yaml.safe_dump(cfg))
    run_training_parallel(first, 2, resume=True, progress=False)
    a = torch.load(out_straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(out_split / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
