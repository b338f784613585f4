"""Benchmarks hold a run lock per command (script + arguments): the same command cannot run
twice at once, different stages of one benchmark can (issue 20)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TRY = """
import sys
sys.path.insert(0, {benchmarks!r})
sys.argv = ["water_longrange.py"] + {args!r}
import _common
from mlff.errors import RunLockedError
try:
    with _common.benchmark_lock("water_longrange.py"):
        print("acquired")
except RunLockedError as exc:
    print("locked:", exc)
"""


def _try(args):
    code = TRY.format(benchmarks=str(BENCHMARKS), args=args)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout


def test_same_benchmark_command_is_locked_and_other_stages_are_not(monkeypatch):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCHMARKS))
    locks = BENCHMARKS / "results" / ".locks"
    before = set(locks.glob("*.lock"))  # a benchmark running on this machine holds its own
    monkeypatch.setattr(sys, "argv", ["water_longrange.py", "train", "--kinds", "none", "--test-lock"])
    with _common.benchmark_lock("water_longrange.py"):
        out = _try(["train", "--kinds", "none", "--test-lock"])
        assert out.startswith("locked:") and "benchmarks/water_longrange.py train --kinds none" in out
        assert f"(pid {os.getpid()} on" in out  # the holder is named
        assert _try(["train", "--kinds", "both", "--test-lock"]).strip() == "acquired"
    assert _try(["train", "--kinds", "none", "--test-lock"]).strip() == "acquired"  # released
    assert set(locks.glob("*.lock")) <= before  # nothing left behind by this test


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
