"""Periodic liquid water and NaCl in water labelled with GFN2-xTB (issue 18's real system).

Stages (each resumable; rerun the same command after a kill):

1. ``sample``: 192-atom water boxes (64 molecules) and 190-atom NaCl boxes (one ion pair in 62
   waters) from flexible TIP3P MD in OpenMM at 300 and 400 K (0.5 fs steps, a frame every 1 ps
   after 2 ps of equilibration), plus copies of some frames with the cell and positions scaled
   to 0.95 and 1.05 (compressed and expanded cells, for stress). Frames go to
   ``OUT/frames.extxyz`` with ``info["system"]``, ``info["temperature_K"]``,
   ``info["cell_scale"]``.
2. ``label``: GFN2-xTB energies, forces, stress and Mulliken charges through
   :func:`mlff.data.label.label_file` (chunked, resumable) into ``OUT/labelled.extxyz``.

3. ``train``: splits the labelled frames (seeded: 15 % test, 10 % validation) and trains MACE
   (32 channels, L=1, r_cut 5 A) with ``long_range`` none and both on energies, forces and
   stress at equal budget (the same epochs, data and seed), in ``OUT/runs/<kind>`` (resumable:
   rerun continues each run from its checkpoint; ``--kinds`` runs a subset, e.g. one per core).
4. ``evaluate``: energy, force and stress errors of each model on the test frames, per system,
   into ``results/water_longrange.json``.

MD with each model, the O-O RDF against GFN2-xTB's own and the NaCl scan are
``water_longrange_md.py``. ``--frames`` frames per system and temperature; run
``python benchmarks/water_longrange.py sample label train evaluate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neighbors import water_box  # noqa: E402 - the benchmarks' water-box builder

OUT = Path(__file__).resolve().parent / "results" / "water_longrange"
#: training runs, checkpoints included, kept with the results so that a later session (or
#: machine) resumes them from git
RUNS = OUT / "runs"
KINDS = ("none", "both")
MODEL = {"type": "mace", "channels": 32, "max_L": 1, "max_ell": 3, "correlation": 3, "r_cut": 5.0,
         "num_interactions": 2, "num_bessel": 8, "radial_mlp": [64, 64], "readout_mlp": 16,
         "dtype": "float32"}
TEMPERATURES_K = (300.0, 400.0)
SCALES = (0.95, 1.05)


def _topology(n_waters: int, ions: bool):
    import openmm.app as app

    top = app.Topology()
    chain = top.addChain()
    elements = app.Element.getBySymbol
    for _ in range(n_waters):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", elements("O"), res)
        h1, h2 = top.addAtom("H1", elements("H"), res), top.addAtom("H2", elements("H"), res)
        top.addBond(o, h1)
        top.addBond(o, h2)
    if ions:
        top.addAtom("NA", elements("Na"), top.addResidue("NA", chain))
        top.addAtom("CL", elements("Cl"), top.addResidue("CL", chain))
    return top


def _initial(system: str, seed: int):
    """Positions (A), cell (A) and symbols: 64 waters, or 62 waters whose last two molecules'
    oxygens become Na+ and Cl-."""
    pos, cell = water_box(192, seed)
    symbols = ["O", "H", "H"] * 64
    if system == "nacl":
        ions = pos[[186, 189]]  # the oxygens of waters 62 and 63
        pos = np.concatenate([pos[:186], ions])
        symbols = symbols[:186] + ["Na", "Cl"]
    return pos, cell, symbols


def sample(frames_per_run: int, seed: int = 0) -> Path:
    """Run the MD and write every frame (resumable: finished runs are kept)."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit
    from ase import Atoms
    from ase.io import read

    from mlff.atomic import atomic_write_extxyz

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "frames.extxyz"
    frames = read(path, ":") if path.exists() else []
    done = {(a.info["system"], float(a.info["temperature_K"])) for a in frames}
    ff = app.ForceField("amber14/tip3p.xml")
    for system in ("water", "nacl"):
        for temperature in TEMPERATURES_K:
            if (system, temperature) in done:
                continue
            pos, cell, symbols = _initial(system, seed + int(temperature))
            top = _topology(62 if system == "nacl" else 64, system == "nacl")
            top.setPeriodicBoxVectors(cell * 0.1 * unit.nanometer)
            omm = ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.6 * unit.nanometer,
                                  constraints=None, rigidWater=False)
            integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1.0 / unit.picosecond,
                                                         0.5 * unit.femtosecond)
            integrator.setRandomNumberSeed(seed + 7)
            sim = app.Simulation(top, omm, integrator, openmm.Platform.getPlatformByName("CPU"))
            sim.context.setPositions(pos * 0.1)
            sim.minimizeEnergy(maxIterations=200)
            sim.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
            sim.step(4000)  # 2 ps
            run = []
            for k in range(frames_per_run):
                sim.step(2000)  # 1 ps between frames
                state = sim.context.getState(getPositions=True)
                xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
                atoms = Atoms(symbols, positions=xyz, cell=cell, pbc=True)
                atoms.wrap()
                atoms.info.update(system=system, temperature_K=temperature, cell_scale=1.0, frame=k)
                run.append(atoms)
                if k % 4 == 0:
                    for scale in SCALES:
                        scaled = atoms.copy()
                        scaled.set_cell(cell * scale, scale_atoms=True)
                        scaled.info["cell_scale"] = scale
                        run.append(scaled)
            frames.extend(run)
            atomic_write_extxyz(path, frames)
            print(f"{system} {temperature:.0f} K: {len(run)} frames", flush=True)
    return path


def label(workers: int) -> Path:
    from mlff.data.label import LabelSettings, label_file

    out = OUT / "labelled.extxyz"
    report = label_file(OUT / "frames.extxyz", out, LabelSettings(), n_workers=workers, chunk_size=8)
    print(report, flush=True)
    return out


def isolated_atoms() -> list:
    """GFN2-xTB isolated atoms of H, O (the shipped dataset's) and Na, Cl (labelled here, doublets),
    so that the E0s are determined (water alone fixes only the H2O composition)."""
    from ase import Atoms
    from ase.io import read

    from mlff.assets_path import asset
    from mlff.data.label import LabelSettings, label_atoms

    shipped = [f for f in read(asset("datasets/organic_gfn2/train.extxyz"), ":")
               if f.info.get("config_type") == "IsolatedAtom" and f.get_chemical_symbols()[0] in ("H", "O")]
    atoms = []
    for symbol in ("Na", "Cl"):
        a = Atoms(symbol)
        a.info.update(config_type="IsolatedAtom", multiplicity=2)
        atoms.append(label_atoms(a, LabelSettings()))
    for a in shipped + atoms:
        a.arrays.pop("charges_xtb", None)  # the shipped frames predate charges; keep keys uniform
    return shipped + atoms


def split(seed: int = 0) -> dict:
    """train / valid / test extxyz files of the labelled frames (seeded, 10 % / 15 % held out);
    the training split starts with the isolated atoms."""
    from ase.io import read

    from mlff.atomic import atomic_write_extxyz

    frames = read(OUT / "labelled.extxyz", ":")
    order = np.random.default_rng(seed).permutation(len(frames))
    n_test, n_valid = int(0.15 * len(frames)), int(0.10 * len(frames))
    parts = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid], "train": order[n_test + n_valid:]}
    paths = {}
    for name, idx in parts.items():
        paths[name] = RUNS / "splits" / f"{name}.extxyz"
        if not paths[name].exists():
            paths[name].parent.mkdir(parents=True, exist_ok=True)
            chosen = [frames[i] for i in sorted(idx)]
            atomic_write_extxyz(paths[name], (isolated_atoms() if name == "train" else []) + chosen)
    return paths


def train(epochs: int, threads: int, kinds=KINDS) -> None:
    import torch

    from mlff.train.config import TrainConfig
    from mlff.train.trainer import Trainer

    torch.set_num_threads(threads)
    paths = split()
    for kind in kinds:
        out = RUNS / kind
        config = TrainConfig.from_dict({
            "model": {**MODEL, "long_range": kind}, "out": str(out), "seed": 0,
            "data": {"train": str(paths["train"]), "valid": str(paths["valid"]), "energy_key": "energy_xtb",
                     "forces_key": "forces_xtb", "stress_key": "stress_xtb"},
            "loss": {"energy": 1.0, "forces": 10.0, "stress": 1000.0},
            "optim": {"lr": 0.005, "batch_size": 4, "max_epochs": epochs, "checkpoint_every_steps": 20},
        })
        trainer = Trainer(config, progress=True)
        if (out / "checkpoint.pt").exists():
            trainer.resume()
        summary = trainer.train()
        print(kind, summary.get("best_valid_loss"), flush=True)


def evaluate_models(kinds=KINDS) -> list:
    """Test-set errors of each kind's best model so far, per system (water, nacl)."""
    import json

    from ase.io import read

    from _common import record, versions, write_results
    from mlff.calculators.ase import MLFFCalculator

    test = [f for f in read(RUNS / "splits" / "test.extxyz", ":") if "system" in f.info]
    records = []
    for kind in kinds:
        model = RUNS / kind / "best_model.pt"
        if not model.exists():
            continue
        history = [json.loads(line) for line in (RUNS / kind / "metrics.jsonl").read_text().splitlines()]
        calc = MLFFCalculator(str(model))
        predictions = calc.evaluate_many(test, batch_size=4)
        for system in ("water", "nacl"):
            idx = [k for k, f in enumerate(test) if f.info["system"] == system]
            if not idx:
                continue
            de = [abs(predictions[k]["energy"] - test[k].info["energy_xtb"]) / len(test[k]) for k in idx]
            df = np.concatenate([np.abs(predictions[k]["forces"] - test[k].arrays["forces_xtb"]).ravel() for k in idx])
            ds = np.concatenate([np.abs(predictions[k]["stress"] - test[k].info["stress_xtb"]) for k in idx])
            extra = dict(long_range=kind, epochs=len(history), n_test=len(idx))
            for metric, value in (("energy_mae_meV_per_atom", 1e3 * float(np.mean(de))),
                                  ("force_mae_meV_per_A", 1e3 * float(np.mean(df))),
                                  ("stress_mae_meV_per_A3", 1e3 * float(np.mean(ds)))):
                records.append(record("water_longrange", system, len(test[idx[0]]), metric, value, None, None,
                                      dtype="float32", threads=1, vers=versions("e3nn"), **extra))
                print(f"{kind:5s} {system:5s} {metric:26s} {value:9.3f} ({len(history)} epochs)", flush=True)
    write_results("water_longrange", records)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", choices=["sample", "label", "train", "evaluate"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS))
    parser.add_argument("--frames", type=int, default=48, help="frames per system and temperature")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if "sample" in args.stages:
        sample(args.frames)
    if "label" in args.stages:
        label(args.workers)
    if "train" in args.stages:
        train(args.epochs, args.threads, args.kinds)
    if "evaluate" in args.stages:
        evaluate_models(args.kinds)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import benchmark_lock  # noqa: E402

    with benchmark_lock(__file__):
        main()
