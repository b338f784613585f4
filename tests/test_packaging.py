"""Packaging: every package is declared, and a regular (non-editable) install finds the shipped
assets through the installed package, not through the current directory."""

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def declared_packages():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}


def test_every_package_directory_is_declared():
    found = set()
    for top in ("mlff", "calculators", "md_workflows"):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            found.add(".".join(parts if top == "mlff" else ("mlff",) + parts))
    for folder in (ROOT / "data").rglob("*"):
        if folder.is_dir() and "work" not in folder.parts and "__pycache__" not in folder.parts:
            found.add(".".join(("mlff", "assets") + folder.relative_to(ROOT / "data").parts))
    missing = found - declared_packages()
    assert not missing, f"add {sorted(missing)} to [options] packages in setup.cfg"
    assert "mlff.assets" in declared_packages()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A regular (non-editable) install of the repository, without dependencies: the layout of
    site-packages, where calculators/ and md_workflows/ sit inside mlff/."""
    import shutil

    # from a clean copy: setuptools reuses ROOT/build/lib, where moved modules would linger
    source = tmp_path_factory.mktemp("source") / "mlff"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "benchmarks", "tests", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    return target


def run_in(target: Path, args, cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def test_regular_install_finds_assets(installed, tmp_path):
    target = installed
    assert (target / "mlff" / "assets" / "examples" / "alanine_dipeptide.pdb").exists()
    assert (target / "mlff" / "assets" / "models" / "mace_organic_gfn2_ensemble.pt").exists()
    assert (target / "mlff" / "calculators" / "openmm" / "system.py").exists()
    for generic in ("calculators", "md_workflows"):
        assert not (target / generic).exists(), f"{generic} must install as mlff.{generic}"
    code = (
        "import mlff, mlff.assets_path as a; "
        "print(mlff.__file__); print(a.asset('examples/alanine_dipeptide.pdb')); "
        "print(a.asset('datasets/organic_gfn2/stats.json') if "
        "(a.assets_dir() / 'datasets/organic_gfn2/stats.json').exists() else 'no-dataset')"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_in(target, [sys.executable, "-c", code], elsewhere)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[0].startswith(str(target)), lines
    assert lines[1].startswith(str(target)), lines
    if (ROOT / "data/datasets/organic_gfn2/stats.json").exists():
        assert lines[2].startswith(str(target)), lines


def test_import_contracts(installed):
    """.importlinter: the core imports no adapter or workflow (nor OpenMM); the adapters import
    no workflow. Checked on the installed layout."""
    lint = Path(sys.executable).parent / "lint-imports"
    out = run_in(installed, [str(lint), "--config", str(ROOT / ".importlinter")], installed)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "broken" not in out.stdout.lower() or " 0 broken" in out.stdout, out.stdout


def test_core_contract_lists_every_core_module():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    listed = set(cfg["importlinter:contract:core"]["source_modules"].split())
    children = {f"mlff.{p.stem}" for p in (ROOT / "mlff").glob("*.py") if p.stem != "__init__"}
    children |= {f"mlff.{p.parent.name}" for p in (ROOT / "mlff").glob("*/__init__.py")}
    missing = children - listed
    assert not missing, f"add {sorted(missing)} to the core contract's source_modules in .importlinter"


_PRIVATE = """
import grimp, json
graph = grimp.build_graph("mlff")
bad = []
for importer in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(importer)):
        parts = imported.split(".")
        private = [k for k, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
        if not private:
            continue
        owner = ".".join(parts[: private[0]])  # the package the private module belongs to
        if not (importer == owner or importer.startswith(owner + ".")):
            bad.append(f"{importer} -> {imported}")
print(json.dumps(bad))
"""


def test_no_module_imports_another_packages_private_module(installed):
    import json

    out = run_in(installed, [sys.executable, "-c", _PRIVATE], installed)
    assert out.returncode == 0, out.stderr[-2000:]
    bad = json.loads(out.stdout)
    assert not bad, f"private modules imported from outside their package: {bad}"
