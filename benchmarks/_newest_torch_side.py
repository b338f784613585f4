"""One side of benchmarks/newest_torch.py: what mlff does under the torch it runs in.

Run by the driver twice: in the project venv (torch 2.9.1, the reference; it also writes the
model files and the .pt2 package the other side loads) and in benchmarks/.torch-newest-venv.
Every check is tried on its own and recorded as ``{"check", "ok", "detail", "error"}``; the
numbers (energies, forces, stress) go to ``OUT/outputs_<torch>.npz`` for the driver to compare.

Usage: python _newest_torch_side.py OUTDIR
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, versions  # noqa: E402  (standard library only: runs in both venvs)

#: small models: weights random (seeded), saved once by the reference side so both sides load
#: the same files
SMALL = {
    "mace_small": dict(model_type="mace", config=dict(
        elements=(1, 6, 8), channels=8, max_L=1, max_ell=2, correlation=2, r_cut=4.0,
        num_interactions=2, num_bessel=6, radial_mlp=(16, 16), readout_mlp=8, avg_num_neighbors=6.0,
        dtype="float64")),
    # ZBL and D3 priors: the D3 prior reads the context (cell, periodicity)
    "tensornet_priors": dict(model_type="tensornet", config=dict(
        elements=(1, 6, 8), channels=16, num_layers=2, num_rbf=8, r_cut=4.0, dtype="float64",
        priors={"zbl": {}, "d3": {"functional": "pbe"}})),
    # exportable (no context prior): the .pt2 check
    "tensornet_small": dict(model_type="tensornet", config=dict(
        elements=(1, 6, 8), channels=16, num_layers=2, num_rbf=8, r_cut=4.0, dtype="float64")),
}

CHECKS: list = []
OUTPUTS: dict = {}


def check(name: str):
    """Decorator: run the check, record ok/detail or the error's last lines and any
    deprecation warnings torch raised."""
    def wrap(fn):
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                detail = fn()
                rec = {"check": name, "ok": True, "detail": detail}
            except Exception as exc:  # noqa: BLE001 - the point is to record what fails
                where = traceback.format_tb(exc.__traceback__)[-3:]  # the innermost frames
                lines = traceback.format_exception_only(type(exc), exc)
                rec = {"check": name, "ok": False, "error": "".join(lines).strip()[-800:],
                       "where": "".join(where)[-1500:]}
        deprecations = sorted({str(w.message).splitlines()[0][:200] for w in caught
                               if issubclass(w.category, (DeprecationWarning, FutureWarning))
                               and ("/torch/" in (w.filename or "") or "TorchScript" in str(w.message)
                                    or "torch.jit" in str(w.message))})
        if deprecations:
            rec["deprecations"] = deprecations
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        CHECKS.append(rec)
        print(f"{name}: {'ok' if rec['ok'] else 'FAILED ' + rec['error'][-300:]}", file=sys.stderr)
        return fn
    return wrap


def structures():
    from ase import Atoms
    from ase.build import molecule

    from neighbors import water_box

    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    pos, cell = water_box(192, seed=1)
    water = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
    return {"ethanol": ethanol, "water192": water}


def main() -> None:
    out = Path(sys.argv[1])
    tag = torch.__version__.split("+")[0]
    models = out / "models"
    torch.set_num_threads(2)

    from mlff.graph import atoms_to_graph
    from mlff.io import default_model_path, load_model, save_model
    from mlff.models.potential import Potential
    from mlff.models.registry import build_model

    paths = {name: models / f"{name}.pt" for name in SMALL}
    paths["default"] = default_model_path()
    if not all(p.exists() for p in paths.values()):  # the reference side writes them once
        models.mkdir(parents=True, exist_ok=True)
        for name, spec in SMALL.items():
            torch.manual_seed(0)
            save_model(Potential(build_model(spec["model_type"], spec["config"])).eval(), paths[name])
    atoms = structures()

    def outputs(pot, key):
        for sname, at in atoms.items():
            g = atoms_to_graph(at, pot.r_cut, pot.elements, pot.model_dtype)
            res = pot(g, compute_forces=True, compute_stress=bool(at.pbc.all()))
            for k in ("energy", "forces", "stress"):
                if k in res:
                    OUTPUTS[f"{key}/{sname}/{k}"] = res[k].detach().double().numpy()

    @check("load model files saved under torch 2.9.1; eager energy, forces, stress")
    def _eager():
        for name, path in paths.items():
            outputs(load_model(path), f"eager/{name}")
        return f"{len(paths)} models x {len(atoms)} structures"

    @check("eager speed: default model (4-member MACE ensemble, float32), water box 192, ms per call")
    def _speed():
        pot = load_model(paths["default"])
        g = atoms_to_graph(atoms["water192"], pot.r_cut, pot.elements, pot.model_dtype)
        return round(1e3 * median_time(lambda: pot(g, compute_forces=True), 5, warmup=2), 1)

    @check("ASE calculator (default model): energy, forces, 50 steps of NVE MD")
    def _ase():
        from ase import units
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
        from ase.md.verlet import VelocityVerlet

        from mlff.calculators.ase import MLFFCalculator

        at = atoms["ethanol"].copy()
        at.calc = MLFFCalculator("default")
        OUTPUTS["ase/default/ethanol/energy"] = np.array([at.get_potential_energy()])
        OUTPUTS["ase/default/ethanol/forces"] = at.get_forces()
        MaxwellBoltzmannDistribution(at, temperature_K=300, rng=np.random.default_rng(0))
        e0 = at.get_total_energy()
        VelocityVerlet(at, 0.5 * units.fs).run(50)
        return f"NVE drift over 50 x 0.5 fs: {abs(at.get_total_energy() - e0) * 1e3:.3f} meV"

    @check("TorchScript (e3nn_jit.script of the OpenMM module; deprecated upstream from torch 2.11)")
    def _script():
        from mlff.calculators.openmm.torch_force import make_torch_module

        for name in ("mace_small", "tensornet_small"):
            at = atoms["ethanol"]
            module = make_torch_module(str(paths[name]), at)
            pos = torch.tensor(at.positions * 0.1, dtype=torch.float64)  # nm, as OpenMM passes them
            energy = module(pos)
            energy = energy[0] if isinstance(energy, tuple) else energy
            OUTPUTS[f"script/{name}/ethanol/energy_kj"] = energy.detach().double().numpy().reshape(-1)
        return "scripted MACE and TensorNet, energies recorded"

    def openmm_energy(route: str) -> float:
        """The small MACE's energy (kJ/mol) of ethanol through an OpenMM Context (Reference)."""
        import openmm
        import openmm.unit as u

        from mlff.calculators.openmm import build_ml_system

        at = atoms["ethanol"]
        ml = build_ml_system(str(paths["mace_small"]), at, route=route)
        ctx = openmm.Context(ml.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(at.positions * 0.1)
        return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)

    @check("OpenMM PythonForce route (openmm.PythonForce; no openmm-torch needed)")
    def _python_force():
        e = openmm_energy("python")
        OUTPUTS["openmm_python/mace_small/ethanol/energy_kj"] = np.array([e])
        return f"{e:.6f} kJ/mol"

    @check("OpenMM TorchForce route (openmm-torch)")
    def _torch_force():
        e = openmm_energy("torch")
        OUTPUTS["openmm_torch/mace_small/ethanol/energy_kj"] = np.array([e])
        return f"{e:.6f} kJ/mol"

    @check("training: 2 epochs of a small MACE on a slice of data/datasets/organic_gfn2")
    def _train():
        import ase.io
        import yaml

        from mlff.assets_path import asset
        from mlff.train.config import TrainConfig
        from mlff.train.trainer import Trainer

        d = out / f"train_{tag}"
        d.mkdir(parents=True, exist_ok=True)
        frames = ase.io.read(asset("datasets/organic_gfn2/train.extxyz"), ":")
        keep = [f for f in frames if f.info.get("molecule") in ("CH3OH", "methanol", "H2O")][:24]
        isolated = [f for f in frames if f.info.get("config_type") == "IsolatedAtom"
                    and f.get_chemical_symbols()[0] in ("H", "C", "O")]  # the E0s
        ase.io.write(d / "train.extxyz", isolated + keep[:16])
        ase.io.write(d / "valid.extxyz", keep[16:])
        cfg = {"model": {"type": "mace", "channels": 8, "max_L": 1, "max_ell": 2, "correlation": 2,
                         "r_cut": 4.0, "num_interactions": 2, "num_bessel": 6, "radial_mlp": [16],
                         "readout_mlp": 8},
               "out": str(d / "run"), "seed": 0,
               "data": {"train": str(d / "train.extxyz"), "valid": str(d / "valid.extxyz"),
                        "energy_key": "energy_xtb", "forces_key": "forces_xtb"},
               "loss": {"energy": 1.0, "forces": 10.0},
               "optim": {"lr": 0.01, "batch_size": 4, "max_epochs": 2}}
        (d / "train.yaml").write_text(yaml.safe_dump(cfg))
        trainer = Trainer(TrainConfig.from_yaml(str(d / "train.yaml")), progress=False)
        before, _ = trainer.validate()
        summary = trainer.train()
        load_model(d / "run" / "best_model.pt")
        if not summary["best_valid_loss"] < before:
            raise AssertionError(f"validation loss did not fall: {before} -> {summary['best_valid_loss']}")
        return f"valid loss {before:.4g} -> {summary['best_valid_loss']:.4g}"

    from mlff.export import ExportedPotential, export_aot

    own = out / "pt2" / f"tensornet_small_{tag}.pt2"

    @check("mlff export --aot under this torch (torch.export + AOTInductor), then run the .pt2")
    def _export():
        t0 = time.perf_counter()
        if not own.exists():
            export_aot(load_model(paths["tensornet_small"]), own)
        compile_s = time.perf_counter() - t0
        outputs(ExportedPotential(own), "pt2_own/tensornet_small")
        return f"compile {compile_s:.0f} s (0: cached)"

    others = sorted(p for p in (out / "pt2").glob("tensornet_small_*.pt2") if p != own)

    @check("run a .pt2 package compiled under the other torch")
    def _cross():
        if not others:
            raise FileNotFoundError("no package from another torch yet (the reference side writes one)")
        for p in others:
            outputs(ExportedPotential(p), "pt2_cross/tensornet_small")
        return ", ".join(p.name for p in others)

    np.savez(out / f"outputs_{tag}.npz", **OUTPUTS)
    vers = versions("e3nn", "ase", "openmm", "openmmtorch", "vesin", "vesin-torch", "tad-dftd3", "numpy")
    (out / f"checks_{tag}.json").write_text(json.dumps({"versions": vers, "checks": CHECKS}, indent=1))
    print(json.dumps({"tag": tag, "n_checks": len(CHECKS), "failed": [c["check"] for c in CHECKS if not c["ok"]]}))


if __name__ == "__main__":
    main()
