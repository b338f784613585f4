"""Liquid water MD and the NaCl ion-pair curve with the water_longrange models against GFN2-xTB
(issue 18's real system, part 2; part 1, the data and the training, is ``water_longrange.py``).

Stages (each resumable; rerun the same command after a kill):

1. ``md``: NVT MD at 300 K of the 64-water box with each trained model (``long_range`` none and
   both) through ``mlff md`` (OpenMM engine, Langevin 1/ps), from the same 300 K TIP3P frame.
   Hydrogens carry 2 amu taken from their oxygen and the step is 1 fs: the configurational
   distribution, and so the RDF, does not depend on the masses in classical MD, and the heavier
   hydrogens let every run (GFN2-xTB's too) take twice the step. Run folders ``OUT/md/<kind>``.
2. ``xtb``: the same MD with GFN2-xTB itself (tblite's ASE calculator, ASE's Langevin, the same
   masses, step, friction and start), a frame every 10 steps appended to
   ``OUT/md/xtb/trajectory.extxyz`` with velocities; a rerun continues from the last frame with
   new thermostat noise (statistically, not bitwise, the same run). ``--xtb-steps`` total.
3. ``rdf``: the O-O g(r) of each run (mdtraj, after ``--equilibration-ps`` and, for GFN2-xTB,
   ``--xtb-equilibration-ps``), the first peak's
   position and height, the first minimum, the coordination number within 3.3 A and the integrated
   |g - g_xtb| over 2-6 A, into ``results/water_longrange_md.json`` and ``OUT/rdf_OO.png/.csv``.
4. ``ion_pair``: a test NaCl-water frame with Na+ and Cl- placed along their axis about their
   midpoint at 2-6 A and the waters relaxed around the fixed ions by the sampling force field
   (an energy scan on sensible geometries, not a potential of mean force), energy from GFN2-xTB
   and from each model, relative to the largest separation; ``OUT/ion_pair.png`` and ``.json``
   (GFN2-xTB points cached, resumable).

Run ``python benchmarks/water_longrange_md.py md xtb rdf ion_pair`` (after water_longrange.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from water_longrange import KINDS, OUT, RUNS, _topology  # noqa: E402

MD = OUT / "md"
TIMESTEP_FS = 1.0
HYDROGEN_MASS_AMU = 2.0
TEMPERATURE_K = 300.0
FRICTION_PER_PS = 1.0
REPORT_EVERY = 10
DISTANCES_A = np.round(np.arange(2.0, 6.01, 0.25), 3)
#: O-O coordination number up to this distance (A; liquid water's first minimum is near it)
COORDINATION_RADIUS_A = 3.3


def start_frame() -> Path:
    """The last 300 K, unscaled water frame of the TIP3P sampling, as ``OUT/md/start.extxyz``."""
    from ase.io import read

    from mlff.atomic import atomic_write_extxyz

    path = MD / "start.extxyz"
    if not path.exists():
        frames = [a for a in read(OUT / "frames.extxyz", ":") if a.info["system"] == "water"
                  and float(a.info["temperature_K"]) == TEMPERATURE_K and float(a.info["cell_scale"]) == 1.0]
        MD.mkdir(parents=True, exist_ok=True)
        atomic_write_extxyz(path, [frames[-1]])
    return path


def run_models(steps: int, threads: int, kinds=KINDS) -> None:
    from mlff.md_workflows.md import run_md
    from mlff.md_workflows.md_config import MDConfig

    for kind in kinds:
        out = MD / kind
        cfg = MDConfig(structure=str(start_frame()), out=str(out), model=str(RUNS / kind / "best_model.pt"),
                       engine="openmm", ensemble="nvt", temperature_K=TEMPERATURE_K, timestep_fs=TIMESTEP_FS,
                       steps=steps, report_every=REPORT_EVERY, friction_per_ps=FRICTION_PER_PS, seed=0, hmr=True,
                       hydrogen_mass_amu=HYDROGEN_MASS_AMU, threads=threads)
        result = run_md(cfg, resume=(out / "checkpoint.npz").exists())
        print(kind, result, flush=True)


def _heavy_hydrogen_masses(atoms) -> np.ndarray:
    """Masses with each H at HYDROGEN_MASS_AMU, the difference taken from its water's O (the
    atoms come as O, H, H per molecule)."""
    masses = atoms.get_masses().copy()
    extra = HYDROGEN_MASS_AMU - masses[1]
    masses[1::3] += extra
    masses[2::3] += extra
    masses[0::3] -= 2 * extra
    return masses


def run_xtb(steps: int) -> None:
    """GFN2-xTB Langevin MD, appended to ``OUT/md/xtb/trajectory.extxyz`` every REPORT_EVERY steps."""
    from ase import units
    from ase.constraints import FixCom
    from ase.io import read, write
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tqdm import tqdm

    from mlff.data.label import LabelSettings, make_calculator

    out = MD / "xtb"
    out.mkdir(parents=True, exist_ok=True)
    traj = out / "trajectory.extxyz"
    frames = read(traj, ":") if traj.exists() else []
    if frames:
        atoms = frames[-1]
        done = int(atoms.info["step"])
    else:
        atoms = read(start_frame())
        atoms.set_masses(_heavy_hydrogen_masses(atoms))
        MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(0))
        done = 0
    atoms.calc = make_calculator(LabelSettings())
    atoms.set_constraint(FixCom())  # ASE's recommended way to hold the centre of mass (fixcm is deprecated)
    dyn = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K, fixcm=False,
                   friction=FRICTION_PER_PS / (1000 * units.fs), rng=np.random.default_rng(done + 1))
    bar = tqdm(total=steps, initial=done, desc="GFN2-xTB MD", unit="step")
    while done < steps:
        dyn.run(REPORT_EVERY)
        done += REPORT_EVERY
        frame = atoms.copy()
        frame.info.update(step=done, time_ps=done * TIMESTEP_FS / 1000, energy_xtb=atoms.get_potential_energy(),
                          temperature_K=atoms.get_temperature())
        with open(traj, "a") as handle:  # one frame per append: a kill loses at most the frame being written
            write(handle, frame, format="extxyz")
            handle.flush()
        bar.update(REPORT_EVERY)
    bar.close()


def _positions(kind: str):
    """``(positions [F, N, 3] A, cell [3, 3] A, dt_ps)`` of a run."""
    from ase.io import read

    if kind == "xtb":
        frames = read(MD / "xtb" / "trajectory.extxyz", ":")
        # the last line of a killed append may be partial: ase reads whole frames only
        return np.stack([f.positions for f in frames]), frames[0].cell.array, REPORT_EVERY * TIMESTEP_FS / 1000
    from mlff.md_workflows.run_folder import read_frames

    start = read(start_frame())
    return read_frames(MD / kind, len(start)), start.cell.array, REPORT_EVERY * TIMESTEP_FS / 1000


def rdf(equilibration_ps: float, kinds=KINDS, xtb_equilibration_ps: float | None = None) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mdtraj

    from _common import record, versions, write_results
    from mlff.atomic import atomic_write_text

    top = mdtraj.Topology.from_openmm(_topology(64, False))
    oxygens = top.select("element O")
    curves, records = {}, []
    for kind in ("xtb",) + tuple(kinds):
        pos, cell, dt = _positions(kind)
        cut = xtb_equilibration_ps if kind == "xtb" and xtb_equilibration_ps is not None else equilibration_ps
        skip = int(round(cut / dt))
        pos = pos[skip:]
        if len(pos) < 10:
            print(f"{kind}: {len(pos)} frames after equilibration, skipped", flush=True)
            continue
        lengths = np.tile(np.diag(cell) / 10.0, (len(pos), 1))
        traj = mdtraj.Trajectory(pos / 10.0, top, unitcell_lengths=lengths, unitcell_angles=np.full((len(pos), 3), 90.0))
        r, g = mdtraj.compute_rdf(traj, top.select_pairs(oxygens, oxygens), r_range=(0.0, 0.6), n_bins=120)
        curves[kind] = (10 * r, g, len(pos) * dt)
        volume = float(np.prod(np.diag(cell)))
    if "xtb" not in curves:
        raise RuntimeError("no GFN2-xTB trajectory yet: run the xtb stage first")
    r, g_ref, _ = curves["xtb"]
    dr = r[1] - r[0]
    density = 64 / volume  # NVT: every run has the start frame's cell
    window = (r > 2.0) & (r < 6.0)
    table = ["r_A," + ",".join(curves)]
    table += [f"{r[k]:.4f}," + ",".join(f"{curves[c][1][k]:.5f}" for c in curves) for k in range(len(r))]
    MD.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "rdf_OO.csv", "\n".join(table) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, (rk, gk, ps) in curves.items():
        peak = int(np.argmax(gk))
        after = peak + int(np.argmin(gk[peak:peak + int(1.5 / dr)]))
        inner = rk <= COORDINATION_RADIUS_A
        n_oo = float(4 * np.pi * density * np.sum(gk[inner] * rk[inner] ** 2) * dr)
        diff = float(np.sum(np.abs(gk - g_ref)[window]) * dr)
        label = {"xtb": "GFN2-xTB", "none": "MACE short-range", "both": "MACE long_range both"}[kind]
        ax.plot(rk, gk, label=f"{label} ({ps:.1f} ps)")
        for metric, value in (("first_peak_A", rk[peak]), ("first_peak_g", gk[peak]), ("first_min_A", rk[after]),
                              ("coordination_OO", n_oo), ("integrated_abs_diff_vs_xtb_A", diff),
                              ("sampled_ps", ps)):
            records.append(record("water_longrange_md", "water", 192, metric, float(value), None, None,
                                  dtype="float32", threads=1, vers=versions("e3nn", "tblite"), model=kind,
                                  equilibration_ps=equilibration_ps if kind != "xtb" or xtb_equilibration_ps is None
                                  else xtb_equilibration_ps))
        print(f"{kind:5s} peak {rk[peak]:.2f} A g={gk[peak]:.2f}, min {rk[after]:.2f} A, n_OO(3.3 A) {n_oo:.2f}, "
              f"|g-g_xtb| {diff:.3f} A, {ps:.1f} ps", flush=True)
    ax.set(xlabel="r O-O (A)", ylabel="g(r)", xlim=(2.0, 6.0), title="liquid water, 64 molecules, 300 K")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "rdf_OO.png", dpi=120)
    plt.close(fig)
    write_results("water_longrange_md", records, keep_previous_by=("metric", "model", "system"))
    return records


def _relaxed_waters(frame, ions):
    """``frame`` with its waters relaxed around fixed ions by the sampling force field (flexible
    TIP3P and Joung-Cheatham ions, OpenMM minimiser): the ions stay where the scan put them
    and no water overlaps them (a rigid scan through the liquid would push ions into waters)."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    top = _topology(62, True)
    top.setPeriodicBoxVectors(frame.cell.array * 0.1 * unit.nanometer)
    system = app.ForceField("amber14/tip3p.xml").createSystem(
        top, nonbondedMethod=app.PME, nonbondedCutoff=0.6 * unit.nanometer, constraints=None, rigidWater=False)
    for i in ions:
        system.setParticleMass(int(i), 0.0)  # fixed
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(frame.positions * 0.1)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)
    relaxed = frame.copy()
    relaxed.positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    return relaxed


def _scan_frames():
    """The ion-pair scan geometries: the first unscaled 300 K NaCl test frame with Na+ and Cl-
    placed symmetrically about their midpoint at each distance and the waters relaxed around
    them (:func:`_relaxed_waters`)."""
    from ase.io import read

    frame = next(f for f in read(RUNS / "splits" / "test.extxyz", ":") if f.info.get("system") == "nacl"
                 and float(f.info["cell_scale"]) == 1.0 and float(f.info["temperature_K"]) == TEMPERATURE_K)
    na, cl = len(frame) - 2, len(frame) - 1
    vector = frame.get_distance(na, cl, mic=True, vector=True)
    middle = frame.positions[na] + vector / 2
    axis = vector / np.linalg.norm(vector)
    frames = []
    for d in DISTANCES_A:
        a = frame.copy()
        a.positions[na], a.positions[cl] = middle - d / 2 * axis, middle + d / 2 * axis
        frames.append(_relaxed_waters(a, (na, cl)))
    return frames


#: what the cached GFN2-xTB energies of ion_pair.json were computed on
SCAN_PROTOCOL = "symmetric about the midpoint, waters relaxed by TIP3P/JC around fixed ions"


def ion_pair(kinds=KINDS) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlff.atomic import atomic_write_text
    from mlff.calculators.ase import MLFFCalculator
    from mlff.data.label import LabelSettings, label_atoms

    path = OUT / "ion_pair.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    if result.get("protocol") != SCAN_PROTOCOL or result.get("distance_A") != DISTANCES_A.tolist():
        result = {"protocol": SCAN_PROTOCOL, "distance_A": DISTANCES_A.tolist(), "xtb": []}
    frames = _scan_frames()
    result["min_ion_water_A"] = [float(min(f.get_distances(i, range(len(f) - 2), mic=True).min()
                                         for i in (len(f) - 2, len(f) - 1))) for f in frames]
    for frame in frames[len(result["xtb"]):]:
        result["xtb"].append(float(label_atoms(frame, LabelSettings()).info["energy_xtb"]))
        atomic_write_text(path, json.dumps(result, indent=1))
    for kind in kinds:
        calc = MLFFCalculator(str(RUNS / kind / "best_model.pt"))
        result[kind] = [float(p["energy"]) for p in calc.evaluate_many(frames, batch_size=4)]
    fig, ax = plt.subplots(figsize=(6, 4))
    summary = {}
    for kind, label in (("xtb", "GFN2-xTB"), ("none", "MACE short-range"), ("both", "MACE long_range both")):
        if kind not in result:
            continue
        e = np.asarray(result[kind]) - result[kind][-1]
        ax.plot(DISTANCES_A, e, "o-" if kind == "xtb" else ".-", label=label)
        if kind != "xtb":
            ref = np.asarray(result["xtb"]) - result["xtb"][-1]
            summary[kind] = {"mae_eV": float(np.mean(np.abs(e - ref))), "max_abs_eV": float(np.max(np.abs(e - ref)))}
    result["relative_to_xtb"] = summary
    atomic_write_text(path, json.dumps(result, indent=1))
    ax.set(xlabel="Na-Cl distance (A)", ylabel=f"E - E({DISTANCES_A[-1]:.1f} A) (eV)",
           title="Na+ Cl- in 62 waters, waters relaxed around the ions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "ion_pair.png", dpi=120)
    plt.close(fig)
    print(json.dumps(summary, indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", choices=["md", "xtb", "rdf", "ion_pair"])
    parser.add_argument("--steps", type=int, default=20000, help="MD steps per model (1 fs each)")
    parser.add_argument("--xtb-steps", type=int, default=2000, help="GFN2-xTB MD steps in total (1 fs each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS))
    parser.add_argument("--equilibration-ps", type=float, default=1.0, help="dropped from each model run (ps)")
    parser.add_argument("--xtb-equilibration-ps", type=float, default=0.5, help="dropped from the GFN2-xTB run (ps)")
    args = parser.parse_args()
    if "md" in args.stages:
        run_models(args.steps, args.threads, args.kinds)
    if "xtb" in args.stages:
        run_xtb(args.xtb_steps)
    if "rdf" in args.stages:
        rdf(args.equilibration_ps, args.kinds, args.xtb_equilibration_ps)
    if "ion_pair" in args.stages:
        ion_pair(args.kinds)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import benchmark_lock  # noqa: E402

    with benchmark_lock(__file__):
        main()
