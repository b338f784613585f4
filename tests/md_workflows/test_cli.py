"""The `mlff` command line: help, subcommands end to end on small inputs, clear errors."""

import subprocess
import sys

import ase.io
from ase.build import molecule

from md_workflows.cli import COMMANDS, main
from mlff.data.sampling import random_displacement_frames


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "md_workflows.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("mlff") or str(__import__("pathlib").Path(sys.executable).parent / "mlff")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("mlff ")


def test_sample_label_stats_chain(tmp_path, capsys):
    sampled = tmp_path / "s.extxyz"
    assert main(["sample", "CH3OH", "-o", str(sampled), "--md-temperatures", "400",
                 "--md-frames", "3", "--stride", "5", "--nm-temperatures", "300",
                 "--nm-frames", "2", "--rattle", "0.03", "--rattle-frames", "2"]) == 0
    frames = ase.io.read(sampled, ":")
    assert len(frames) == 7
    labelled = tmp_path / "l.extxyz"
    assert main(["label", str(sampled), "-o", str(labelled), "--workers", "1"]) == 0
    assert main(["stats", str(labelled), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "configurations      7" in out and "E0s (eV)" in out
    assert (tmp_path / "s.json").exists()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["label", str(tmp_path / "missing.xyz"), "-o", str(tmp_path / "o.xyz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sample", "no-such-molecule", "-o", str(tmp_path / "x.xyz")]) == 2
    assert "neither a file nor a molecule name" in capsys.readouterr().err


def test_stats_on_custom_keys(tmp_path, capsys):
    frames = random_displacement_frames(molecule("H2O"), 0.02, 3)
    for k, f in enumerate(frames):
        f.info["E"] = -10.0 - k
        f.arrays["F"] = f.positions * 0.0
    path = tmp_path / "w.extxyz"
    ase.io.write(path, frames)
    assert main(["stats", str(path), "--energy-key", "E", "--forces-key", "F"]) == 0
    assert "force RMS           0.0000" in capsys.readouterr().out


def test_label_demo_runs_at_reduced_length(tmp_path, capsys):
    assert main(["label-demo", "--out", str(tmp_path / "demo"), "--frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "alanine dipeptide, GFN2-xTB" in out
    assert "(isolated atom)" in out  # E0s from the labelled isolated atoms
    assert "shipped dataset organic_gfn2" in out and "configurations      10844" in out
    frames = ase.io.read(tmp_path / "demo" / "alanine_dipeptide_gfn2.extxyz", ":")
    assert len(frames) == 4 + 3  # isolated atoms + 1 frame per MD temperature and normal modes
