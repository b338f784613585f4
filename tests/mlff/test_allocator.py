"""mlff.allocator: ``import mlff`` leaves malloc alone; building a model raises glibc's
thresholds once, so a repeated large allocation stops page-faulting; ``MLFF_MALLOC_TUNING=0``
switches that off. Measured in child processes with page-fault counts, not with timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlff.allocator import tune_glibc_malloc

CHILD = r"""
import json, resource, sys
import mlff
light = not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
from mlff.allocator import malloc_tuned
import torch
if sys.argv[1] == "build":  # the smallest model there is
    from mlff.models.potential import Potential
    from mlff.models.registry import build_model
    Potential(build_model("mace", dict(elements=[1], channels=2, max_L=0, max_ell=1,
                                       correlation=1, radial_mlp=[4], readout_mlp=2)))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):  # warm-up: glibc settles on reusing the block after a few rounds
    torch.ones(64 * 2**20 // 4)  # 64 MiB, filled (touched), then freed
before = faults()
for _ in range(10):
    torch.ones(64 * 2**20 // 4)
print(json.dumps({"light": light, "tuned": malloc_tuned(), "faults": faults() - before}))
"""

#: what ten fresh 64 MiB blocks fault in (4 KiB pages)
PAGES = 10 * 64 * 2**20 // 4096


def run_child(what: str, env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFF_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", CHILD, what], env={**env, **env_extra},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or not tune_glibc_malloc(),
                                reason="needs Linux with glibc")


def test_import_mlff_is_light_and_leaves_malloc_alone():
    plain = run_child("import", {})
    assert plain["light"] and not plain["tuned"]
    if sys.platform.startswith("linux"):
        assert plain["faults"] > 0.5 * PAGES


@glibc_only
def test_building_a_model_tunes_and_large_blocks_are_reused():
    tuned = run_child("build", {})
    assert tuned["tuned"]
    assert tuned["faults"] < 0.25 * PAGES  # glibc may still fault one block in while settling


@glibc_only
def test_the_environment_variable_switches_it_off():
    plain = run_child("build", {"MLFF_MALLOC_TUNING": "0"})
    assert not plain["tuned"]
    assert plain["faults"] > 0.5 * PAGES


def test_opt_out_and_bad_threshold(monkeypatch):
    monkeypatch.setenv("MLFF_MALLOC_TUNING", "0")
    assert tune_glibc_malloc() is False
    monkeypatch.setenv("MLFF_MALLOC_TUNING", "1")
    if sys.platform.startswith("linux"):
        with pytest.raises(ValueError, match="threshold_bytes"):
            tune_glibc_malloc(0)


def test_chunked_calls_lower_the_thresholds_by_float_size(monkeypatch):
    """64 MiB for float32 chunks, 128 MiB for float64; a smaller type never lowers them again."""
    from mlff import allocator

    applied = []
    monkeypatch.setattr(allocator, "_applied", True)
    monkeypatch.setattr(allocator, "_bounded", 0)
    monkeypatch.setattr(allocator, "tune_glibc_malloc", lambda t: applied.append(t) or True)
    assert allocator.bound_for_chunks(4) and applied == [64 << 20]
    assert allocator.bound_for_chunks(8) and applied == [64 << 20, 128 << 20]
    assert allocator.bound_for_chunks(4) and applied == [64 << 20, 128 << 20]
    monkeypatch.setattr(allocator, "_applied", False)  # thresholds never raised: left alone
    monkeypatch.setattr(allocator, "_bounded", 0)
    assert not allocator.bound_for_chunks(8) and len(applied) == 2
