"""Packaging: every package is declared, and a regular (non-editable) install finds the shipped
assets through the installed package, not through the current directory."""

import configparser
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def declared_packages():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}


def test_every_package_directory_is_declared():
    found = set()
    for top in ("mlff", "calculators", "md_workflows"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    for folder in (ROOT / "data").rglob("*"):
        if folder.is_dir() and "work" not in folder.parts and "__pycache__" not in folder.parts:
            found.add(".".join(("mlff", "assets") + folder.relative_to(ROOT / "data").parts))
    missing = found - declared_packages()
    assert not missing, f"add {sorted(missing)} to [options] packages in setup.cfg"
    assert "mlff.assets" in declared_packages()


def test_regular_install_finds_assets(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "mlff" / "assets" / "examples" / "alanine_dipeptide.pdb").exists()
    assert (target / "mlff" / "assets" / "models" / "mace_organic_gfn2_ensemble.pt").exists()
    code = (
        "import mlff, mlff.assets_path as a; "
        "print(mlff.__file__); print(a.asset('examples/alanine_dipeptide.pdb')); "
        "print(a.asset('datasets/organic_gfn2/stats.json') if "
        "(a.assets_dir() / 'datasets/organic_gfn2/stats.json').exists() else 'no-dataset')"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[0].startswith(str(target)), lines
    assert lines[1].startswith(str(target)), lines
    if (ROOT / "data/datasets/organic_gfn2/stats.json").exists():
        assert lines[2].startswith(str(target)), lines
