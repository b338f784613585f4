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


def test_torchrun_path_matches_the_nproc_path(small_data, tmp_path):  # noqa: F811
    """``torchrun -m mlff.md_workflows.cli train`` (the SLURM/cluster route: the process group
    comes from environment variables) trains the same model as ``--nproc 2``."""
    import subprocess
    import sys
    from pathlib import Path

    spawned, out_spawned = _config(tmp_path, small_data, "spawned", max_epochs=1)
    env_run, out_env = _config(tmp_path, small_data, "env", max_epochs=1)
    cli = [sys.executable, "-m", "mlff.md_workflows.cli", "train"]
    done = subprocess.run(cli + [spawned, "--nproc", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
                           "mlff.md_workflows.cli", "train", env_run], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"processes": 2') == 1  # rank 0 alone reports
    a = torch.load(out_spawned / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(out_env / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-12, msg=k)
