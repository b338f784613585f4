"""The `mlff` command line: help, subcommands end to end on small inputs, clear errors."""

import dataclasses
import json
import subprocess
import sys

import ase.io
import pytest
from ase.build import molecule

from mlff.md_workflows.cli import COMMANDS, main
from mlff.data.sampling import random_displacement_frames


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "mlff.md_workflows.cli", "--help"],
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


def test_building_the_parser_imports_no_heavy_module():
    """`mlff --help` and `mlff <command> --help` stay fast: building the parser of every
    subcommand imports no torch, numpy, OpenMM, ASE, e3nn or model code."""
    script = (
        "import contextlib, io, json, sys\n"
        "from mlff.md_workflows.cli import COMMANDS, build_parser\n"
        "parser = build_parser()\n"
        "for argv in [[c] for c in COMMANDS] + [['fe', 'hydration'], ['fe', 'run']]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            parser.parse_args(argv + ['--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = ('torch', 'numpy', 'openmm', 'ase', 'e3nn', 'mlff.models', 'mlff.md_workflows.md')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in heavy or m.startswith(\n"
        "    tuple(h + '.' for h in heavy)))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["md", str(tmp_path / "w.xyz"), "--timestep", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlff md: error: timestep_fs must be positive") and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("smiles: CCO\nproduction_ns: 1\n")
    assert main(["fe", "run", str(bad), "--out", str(tmp_path / "fe")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlff fe: error: unknown keys ['production_ns']") and err.count("\n") == 1
    assert "valid keys" in err  # the fix


def test_user_error_message_names_file_and_fix():
    from mlff.md_workflows.cli import user_error_message

    assert user_error_message(FileNotFoundError(2, "No such file or directory", "x.xyz")) == (
        "x.xyz: no such file or directory; check the path")
    assert user_error_message(IsADirectoryError(21, "Is a directory", "d")).endswith("not a directory")
    assert user_error_message(ValueError("first line\n  second line")) == "first line second line"


def test_debug_shows_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "mlff.md_workflows.cli", "relax", str(tmp_path / "x.xyz"),
            "--fmax", "0"]
    plain = subprocess.run(argv, capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    assert plain.stderr.startswith("mlff relax: error: fmax_eV_per_A must be > 0")
    debug = subprocess.run(argv[:3] + ["--debug"] + argv[3:], capture_output=True, text=True)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "ValueError" in debug.stderr


def _labelled_water(tmp_path, energy_key: str, forces_key: str):
    """Two displaced water molecules with made-up labels, as an extxyz file."""
    frames = random_displacement_frames(molecule("H2O"), 0.02, 2)
    for f in frames:
        f.info[energy_key] = -10.0
        f.arrays[forces_key] = f.positions * 0.0
    path = tmp_path / "w.extxyz"
    ase.io.write(path, frames)
    return path


def test_stats_r_cut_flag(tmp_path, capsys):
    path = _labelled_water(tmp_path, "energy_xtb", "forces_xtb")
    assert main(["stats", str(path), "--r-cut", "1.2"]) == 0
    assert "within 1.2 A" in capsys.readouterr().out


def test_fe_help_states_the_config_defaults(capsys):
    from mlff.md_workflows.free_energy.hydration_config import HydrationConfig

    with pytest.raises(SystemExit):
        main(["fe", "hydration", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    d = {f.name: f.default for f in dataclasses.fields(HydrationConfig)}
    assert f"per window (default {d['production_ps']:g})" in out
    assert f"per window (default {d['equilibration_ps']:g})" in out
    assert f"K (default {d['temperature_K']:g})" in out


def test_eval_accepts_default_as_the_model(tmp_path, capsys):
    path = _labelled_water(tmp_path, "E", "F")
    assert main(["eval", "default", str(path), "--out", str(tmp_path / "ev"), "--energy-key", "E",
                 "--forces-key", "F"]) == 0
    assert "energy MAE" in capsys.readouterr().out
    assert (tmp_path / "ev" / "eval.json").exists()
