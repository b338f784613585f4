"""mlff.allocator: glibc keeps freed large blocks, so a repeated large allocation stops
page-faulting. Measured with page-fault counts of a child process, not with timings."""

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
from mlff.allocator import malloc_tuned
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):  # warm-up: glibc settles on reusing the block after a few rounds
    torch.ones(64 * 2**20 // 4)  # 64 MiB, filled (touched), then freed
before = faults()
for _ in range(10):
    torch.ones(64 * 2**20 // 4)
print(json.dumps({"tuned": malloc_tuned(), "faults": faults() - before}))
"""


def run_child(env_extra):
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not tune_glibc_malloc(),
                    reason="needs Linux with glibc")
def test_large_blocks_are_reused_instead_of_faulted_in_again():
    pages = 10 * 64 * 2**20 // 4096  # what ten fresh 64 MiB blocks fault in
    tuned = run_child({})
    plain = run_child({"MLFF_MALLOC_TUNING": "0"})
    assert tuned["tuned"] and not plain["tuned"]
    assert plain["faults"] > 0.5 * pages
    assert tuned["faults"] < 0.25 * pages  # glibc may still fault one block in while settling


def test_opt_out_and_bad_threshold(monkeypatch):
    monkeypatch.setenv("MLFF_MALLOC_TUNING", "0")
    assert tune_glibc_malloc() is False
    monkeypatch.setenv("MLFF_MALLOC_TUNING", "1")
    if sys.platform.startswith("linux"):
        with pytest.raises(ValueError, match="threshold_bytes"):
            tune_glibc_malloc(0)
