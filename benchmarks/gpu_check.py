"""GPU check (issue 21 item 4): CPU/CUDA parity of every model, the OpenMM adapter on the CUDA
platform, and energy + forces time from 192 to 98,304 water atoms against mace-torch; one script
meant to finish in under 8 minutes on one CUDA GPU (planned for an NVIDIA H200, 16 CPU cores).

NOT RUN ON A GPU YET: written on a CPU-only machine and smoke-tested there with ``--device cpu
--quick`` only; no CUDA path of it has executed.

Phases, each a function with a time budget (it starts nothing new once that is spent, and says so):

1. parity (in process): every registered model type (``mlff.models.registry.MODELS``: mace,
   tensornet), single and 2-member ensemble, float32 and float64, seeded random weights: the
   ASE calculator's energy, forces, stress (and ensemble stds) of a periodic 96-atom water box
   and of ethanol, CUDA against CPU. Per quantity max |cuda - cpu| and that over max |cpu|
   (floor 1 meV/atom for energies, 1e-6 otherwise); pass: <= 1e-10 (float64), <= 1e-4 (float32).
2. openmm (a process per system and route): mlff's MACE with mace_vs_peer.py's hyperparameters
   (float32, random weights) through ``build_ml_system`` on the CUDA platform, model on cuda:
   TorchForce, TorchForce with ``useCUDAGraphs`` (openmm-torch 1.5 ``setProperty``), PythonForce.
   The first State's energy and forces against the ASE calculator on CPU (pass: relative
   differences <= 1e-3: float32 model, single-precision positions), then steps/s and ns/day of
   0.5 fs LangevinMiddle steps on alanine dipeptide (vacuum, data/examples/alanine_dipeptide.pdb)
   and a 1,536-atom water box (openmm_md.py's systems, model file and topology).
3. scale (a process per size and side, each with a time limit): energy + forces on a prebuilt
   graph, float32, water boxes of 192, 1,536, 12,288, 49,152 and 98,304 atoms, identical
   hyperparameters (_mace_side.py): mlff's MACE (edge chunks from the budget ``--memory-gb``,
   else ``MLFF_MEMORY_GB``, else half the GPU's memory), mace-torch from benchmarks/.peer-venv
   (mace_vs_peer.ensure_peer) and mace-torch converted to cuEquivariance as ``enable_cueq=True``
   does (``mace.cli.convert_e3nn_cueq.run``; cuequivariance-torch and
   cuequivariance-ops-torch-cu12 are pip-installed into the peer venv on first use). Out of
   memory, a timeout or a failure is recorded with the size and reason, and that side is not
   tried at larger sizes.
4. results: benchmarks/results/gpu_check.json (``_common.write_results``; device "cuda", the GPU
   name, versions) and a markdown summary on stdout with the time each phase took.

Usage::

    .venv/bin/python benchmarks/gpu_check.py                  # everything, on CUDA
    .venv/bin/python benchmarks/gpu_check.py --quick          # smallest sizes only
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick

Without CUDA it stops with a message unless ``--device cpu`` is given: the same code paths then
run on CPU at the smallest sizes (192 atoms, 2 MD steps, a smaller MACE) as a smoke test of the
script: parity compares CPU with CPU and says so, CUDA graphs and cuEquivariance are skipped, the
peer venv is used only if it exists, and results go to results/gpu_check_cpu_smoke.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import record, versions, write_results  # noqa: E402 - standard library only (peer-safe)

SIZES = (192, 1536, 12288, 49152, 98304)
#: seconds per phase (about 7.5 minutes in all, start-up included)
BUDGET_S = {"parity": 70, "openmm": 150, "scale": 230}
PARITY_TOL = {"float64": 1e-10, "float32": 1e-4}
OPENMM_TOL = 1e-3
QUANTITIES = ("energy", "forces", "stress", "energy_std", "forces_std", "stress_std")
ELEMENTS = (1, 6, 7, 8)
#: parity models (beyond each config's defaults); a registered type not named here uses defaults
PARITY_MODELS = {
    "mace": dict(channels=16, max_L=1, max_ell=3, correlation=3, r_cut=5.0, radial_mlp=(32, 32),
                 avg_num_neighbors=20.0),
    "tensornet": dict(channels=32, num_layers=2, num_rbf=16, r_cut=5.0),
}
#: --device cpu shrinks _mace_side.HYPER on both sides (the peer's hidden irreps are fixed)
TINY_HYPER = dict(max_ell=2, correlation=2, radial_mlp=[32, 32])
SIDES = ("mlff", "mace-torch", "mace-torch-cueq")
CUEQ_PACKAGES = ("cuequivariance-torch", "cuequivariance-ops-torch-cu12")
CUEQ_PROBE = "import cuequivariance_torch, cuequivariance_ops_torch; from mace.cli.convert_e3nn_cueq import run"
FS_PER_STEP = 0.5
#: OpenMM (timed, warm-up) steps on CUDA by (alanine dipeptide?, --quick); on CPU 2 and 1
MD_STEPS = {(True, False): (200, 20), (True, True): (50, 10), (False, False): (50, 5), (False, True): (10, 3)}


class Phase:
    """A phase's time budget (s): ``left()`` of it remains."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.t0 = budget_s, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def _quiet(python, args, timeout: float, env_extra=None):
    """``python args`` with a time limit (pip retrying once): ``(stdout, None)``, or ``(None,
    why)`` after a timeout (its whole process group is killed) or a failure (last stderr line)."""
    env = dict(os.environ, PIP_RETRIES="1", PIP_DEFAULT_TIMEOUT="15", **(env_extra or {}))
    proc = subprocess.Popen([str(python), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"timed out after {max(timeout, 1):.0f} s"
    except BaseException:  # interrupted (SIGTERM is turned into SystemExit): no orphaned worker
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    if proc.returncode == 0:
        return out, None
    return None, f"failed (exit {proc.returncode}): {(err.strip().splitlines() or [''])[-1][:300]}"


def run_worker(python, args, timeout: float, threads: int, env_extra=None) -> dict:
    """``python gpu_check.py --worker ARGS`` in its own process: its JSON line, or a dict whose
    ``status`` says why there is none."""
    if timeout < 5:
        return {"status": "skipped: phase time budget spent"}
    env = dict(OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
               **(env_extra or {}))
    out, why = _quiet(python, [Path(__file__).resolve(), "--worker", *args], timeout, env)
    lines = (out or "").strip().splitlines()
    return json.loads(lines[-1]) if why is None and lines else {"status": why or "failed: no output"}


# --- workers (run in their own process; the peer's in benchmarks/.peer-venv, without mlff) ----


def _on_device(call, model, device: str, replace=None) -> None:
    """Move what a _mace_side ``call`` closure holds (the model and its input dict, built on
    CPU) to ``device``; ``replace`` takes the closure's model's place (cuEquivariance)."""
    import torch

    for cell in call.__closure__ or ():
        value = cell.cell_contents
        if value is model and replace is not None:
            cell.cell_contents = value = replace
        if isinstance(value, torch.nn.Module):
            value.to(device)
        elif isinstance(value, dict):
            cell.cell_contents = {k: v.to(device) if torch.is_tensor(v) else v for k, v in value.items()}


def scale_worker(side: str, path: str, dtype_name: str, repeats: str, device: str) -> dict:
    import resource

    import ase.io
    import torch

    import _mace_side

    atoms = ase.io.read(path)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, call = (_mace_side.build_mlff if side == "mlff" else _mace_side.build_peer)(
        atoms, getattr(torch, dtype_name))
    replace = None
    if side == "mace-torch-cueq":
        from mace.cli.convert_e3nn_cueq import run as e3nn_to_cueq

        replace = e3nn_to_cueq(model, device=device)
    _on_device(call, model, device, replace)
    setup_s = time.perf_counter() - t0
    cuda = device == "cuda"

    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed() -> float:
        sync()
        start = time.perf_counter()
        call()
        sync()
        return time.perf_counter() - start

    timed()  # warm-up: allocator, kernels, first-call set-up
    times = [timed() for _ in range(int(repeats))]
    peak = (torch.cuda.max_memory_allocated() / 1e9 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
    out = {"status": "ok", "n_atoms": len(atoms), "s_per_call": statistics.median(times),
           "setup_s": setup_s, "peak_memory_GB": peak}
    if side == "mlff":
        out.update(edge_chunk=int(model.model.edge_chunk), memory_gb=float(model.memory_gb))
    return out


def openmm_worker(route: str, system_file: str, model: str, steps: str, warmup: str, device: str,
                  graphs: str, threads: str) -> dict:
    import numpy as np
    import openmm
    import openmm.unit as u
    import torch
    from ase import Atoms

    from mlff.calculators.ase import MLFFCalculator
    from mlff.calculators.openmm import build_ml_system
    from mlff.units import EV_PER_A_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM
    from openmm_md import topology_of

    torch.set_num_threads(int(threads))
    data = np.load(system_file)
    box = data["box_nm"] if data["box_nm"].any() else None
    ml = build_ml_system(model, topology_of(data["numbers"], box), route=route, device=device,
                         use_cuda_graphs=graphs == "1")
    cuda = device == "cuda"
    properties = {"Precision": "mixed"} if cuda else {"Threads": threads}
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, FS_PER_STEP * u.femtosecond)
    context = openmm.Context(ml.system, integrator, openmm.Platform.getPlatformByName("CUDA" if cuda else "CPU"),
                             properties)
    context.setPositions(data["positions_nm"])
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    atoms = Atoms(numbers=data["numbers"], positions=data["positions_nm"] * NM_TO_ANGSTROM,
                  cell=None if box is None else box * NM_TO_ANGSTROM, pbc=box is not None)
    atoms.calc = MLFFCalculator(model, device="cpu")
    ref_e = atoms.get_potential_energy() * EV_TO_KJ_PER_MOL
    ref_f = atoms.get_forces() * EV_PER_A_TO_KJ_PER_MOL_PER_NM
    e_rel = abs(energy - ref_e) / max(abs(ref_e), 1e-3 * EV_TO_KJ_PER_MOL * len(atoms))
    f_abs = float(np.abs(np.asarray(forces) - ref_f).max())
    f_rel = f_abs / max(float(np.abs(ref_f).max()), 1e-3)
    context.setVelocitiesToTemperature(300 * u.kelvin, 1)
    integrator.step(int(warmup))
    context.getState(getEnergy=True)  # steps run asynchronously on a GPU: wait for them
    t0 = time.perf_counter()
    integrator.step(int(steps))
    context.getState(getEnergy=True)
    elapsed = time.perf_counter() - t0
    return {"status": "ok", "steps_per_s": int(steps) / elapsed,
            "ns_per_day": int(steps) / elapsed * FS_PER_STEP * 1e-6 * 86400, "timed_steps": int(steps),
            "energy_kJ_per_mol": energy, "energy_abs_diff": abs(energy - ref_e), "energy_rel_diff": e_rel,
            "forces_max_abs_diff": f_abs, "forces_rel_diff": f_rel,
            "passed": bool(e_rel <= OPENMM_TOL and f_rel <= OPENMM_TOL), "platform_properties": properties}


def worker(kind: str, argv) -> None:
    if os.environ.get("GPU_CHECK_TINY"):
        import _mace_side

        _mace_side.HYPER.update(TINY_HYPER)
    try:
        out = (openmm_worker if kind == "openmm" else scale_worker)(*argv)
    except Exception as exc:  # noqa: BLE001 - an OOM is a result; anything else fails the worker
        if "out of memory" not in str(exc).lower():
            raise
        out = {"status": "out of memory", "error": str(exc).splitlines()[0][:300]}
    print(json.dumps(out))


# --- phases (the project's virtual environment) ------------------------------------------------


def phase_parity(args, phase: Phase, common: dict, tmp: Path):
    import numpy as np
    import torch
    from ase import Atoms
    from ase.build import molecule

    from mlff.calculators.ase import MLFFCalculator
    from mlff.io import clone_potential
    from mlff.models.potential import Potential
    from mlff.models.registry import MODELS
    from neighbors import water_box

    pos, cell = water_box(96, seed=2)
    ethanol = molecule("CH3CH2OH")
    ethanol.positions += np.random.default_rng(0).normal(0, 0.05, ethanol.positions.shape)
    systems = {"water_box_96": Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True),
               "ethanol": ethanol}

    def results(potential, device, atoms) -> dict:
        atoms = atoms.copy()
        atoms.calc = MLFFCalculator(potential, device=device)
        atoms.get_forces()
        return {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in atoms.calc.results.items()
                if k in QUANTITIES}

    note = "" if args.device == "cuda" else " (CPU vs CPU: a smoke test of the script, not a parity check)"
    records, lines = [], [f"### Parity: {args.device} against cpu{note}", "",
                          "| model | members | dtype | system | worst quantity | max abs | max rel | tol | pass |",
                          "|---|---:|---|---|---|---:|---:|---:|---|"]
    for model_type, (config_cls, model_cls) in MODELS.items():
        for members in (1, 2):
            for dtype in ("float32", "float64"):
                label = f"| {model_type} | {members} | {dtype} |"
                if phase.left() <= 0:
                    lines.append(f"{label} - | skipped: phase time budget spent | | | | |")
                    continue
                torch.manual_seed(0)
                config = config_cls(elements=ELEMENTS, dtype=dtype, ensemble_size=members,
                                    **PARITY_MODELS.get(model_type, {}))
                potential = Potential(model_cls(config)).eval()
                on_device = clone_potential(potential)  # same weights; the calculator moves it
                for name, atoms in systems.items():
                    ref, got = results(potential, "cpu", atoms), results(on_device, args.device, atoms)
                    abs_d, rel_d = {}, {}
                    for key in ref:
                        floor = 1e-3 * len(atoms) if key.startswith("energy") else 1e-6
                        abs_d[key] = float(np.abs(got[key] - ref[key]).max())
                        rel_d[key] = abs_d[key] / max(float(np.abs(ref[key]).max()), floor)
                    worst = max(rel_d, key=rel_d.get)
                    passed = rel_d[worst] <= PARITY_TOL[dtype]
                    records.append(record(
                        "gpu_check", name, len(atoms), "max_rel_diff", rel_d[worst], None, None, dtype=dtype,
                        check="parity", model_type=model_type, ensemble_size=members,
                        model_config=PARITY_MODELS.get(model_type, {}), reference_device="cpu",
                        compared_device=args.device, max_abs_diff=abs_d, max_rel_diff=rel_d,
                        tolerance=PARITY_TOL[dtype], passed=bool(passed), **common))
                    lines.append(f"{label} {name} | {worst} | {abs_d[worst]:.2e} | {rel_d[worst]:.2e} | "
                                 f"{PARITY_TOL[dtype]:.0e} | {'yes' if passed else '**NO**'} |")
    return records, lines


def phase_openmm(args, phase: Phase, common: dict, tmp: Path):
    import openmm
    import openmmtorch

    import openmm_md

    cuda = args.device == "cuda"
    platform = "CUDA" if cuda else "CPU"
    lines = [f"### OpenMM on the {platform} platform against the ASE calculator on CPU", ""]
    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    if platform not in names:
        why = [f for f in openmm.Platform.getPluginLoadFailures() if platform in f] or ["no plugin installed"]
        return [], lines + [f"skipped: OpenMM has no {platform} platform ({why[0][:300]})"]
    if not openmm_md.PDB.exists():
        return [], lines + [f"skipped: {openmm_md.PDB} is missing"]
    water = 1536 if cuda and not args.quick else 192
    systems = openmm_md.write_systems(tmp, water)
    model = openmm_md.write_models(tmp, None)["ours"]
    routes = [("torch", False), ("torch", True), ("python", False)]
    lines += ["| system | atoms | route | steps/s | ns/day | energy rel diff | forces rel diff | pass |",
              "|---|---:|---|---:|---:|---:|---:|---|"]
    records = []
    for name, (path, n_atoms) in systems.items():
        steps, warmup = MD_STEPS[(n_atoms < 100, args.quick)] if cuda else (2, 1)
        for route, graphs in routes:
            label = f"{route}{' + CUDA graphs' if graphs else ''}"
            if graphs and not cuda:
                res = {"status": "skipped: CUDA graphs need the CUDA platform"}
            elif graphs and not hasattr(openmmtorch.TorchForce, "setProperty"):
                res = {"status": "skipped: this openmm-torch has no TorchForce.setProperty (useCUDAGraphs)"}
            else:
                res = run_worker(sys.executable, ["openmm", route, path, model, steps, warmup, args.device,
                                                  int(graphs), args.threads], min(phase.left(), 90), args.threads)
            records.append(record(
                "gpu_check", name, n_atoms, "steps_per_s", res.get("steps_per_s"), None, None, dtype="float32",
                lower_is_better=False, check="openmm", route=label, platform=platform, timestep_fs=FS_PER_STEP,
                tolerance=OPENMM_TOL, reference="ASE calculator on CPU", mace_hyper=args.hyper, **res,
                **common))
            if res["status"] == "ok":
                lines.append(f"| {name} | {n_atoms} | {label} | {res['steps_per_s']:.1f} | {res['ns_per_day']:.3f} | "
                             f"{res['energy_rel_diff']:.1e} | {res['forces_rel_diff']:.1e} | "
                             f"{'yes' if res['passed'] else '**NO**'} |")
            else:
                lines.append(f"| {name} | {n_atoms} | {label} | {res['status']} | | | | |")
    return records, lines


def peer_sides(args, phase: Phase):
    """``({side: python, or why it does not run}, mace-torch version or None)``."""
    from mace_vs_peer import PEER_VENV

    python = PEER_VENV / "bin" / "python"
    sides = {"mlff": Path(sys.executable)}
    why = "skipped: --no-peer" if args.no_peer else None
    if why is None and args.device == "cpu" and not python.exists():
        why = "skipped: benchmarks/.peer-venv does not exist and --device cpu does not create it"
    if why is None:
        _, why = _quiet(sys.executable, ["-c", "import sys; sys.path.insert(0, sys.argv[1]); from mace_vs_peer "
                                         "import ensure_peer; ensure_peer()", HERE], 0.4 * phase.left())
        why = why and f"skipped: peer venv not ready ({why}); make it with benchmarks/mace_vs_peer.py"
    if why is not None:
        return {**sides, "mace-torch": why, "mace-torch-cueq": why}, None
    version, _ = _quiet(python, ["-c", "import importlib.metadata as m; print(m.version('mace-torch'))"], 60)
    sides["mace-torch"] = python
    if args.device != "cuda":
        return {**sides, "mace-torch-cueq": "skipped: cuEquivariance needs CUDA"}, (version or "").strip()
    _, why = _quiet(python, ["-c", CUEQ_PROBE], 60)
    if why is not None:  # not installed yet (or broken): install, then probe again
        _, why = _quiet(python, ["-m", "pip", "install", "--quiet", *CUEQ_PACKAGES], 0.3 * phase.left())
        _, why = (None, why) if why else _quiet(python, ["-c", CUEQ_PROBE], 60)
    sides["mace-torch-cueq"] = python if why is None else f"skipped: cuEquivariance not usable ({why})"
    return sides, (version or "").strip()


def phase_scale(args, phase: Phase, common: dict, tmp: Path):
    import ase.io
    import torch
    from ase import Atoms

    from neighbors import water_box

    cuda = args.device == "cuda"
    sizes = SIZES[:1] if args.quick else SIZES
    env = {"GPU_CHECK_TINY": "1"} if not cuda else {}
    if args.memory_gb is not None:
        env["MLFF_MEMORY_GB"] = str(args.memory_gb)
    elif cuda and not os.environ.get("MLFF_MEMORY_GB"):
        env["MLFF_MEMORY_GB"] = f"{0.5 * torch.cuda.get_device_properties(0).total_memory / 1e9:.1f}"
    sides, peer_version = peer_sides(args, phase)
    stopped = {side: why for side, why in sides.items() if isinstance(why, str)}
    lines = [f"### Energy + forces, water boxes, float32, {args.device} (MLFF_MEMORY_GB "
             f"{env.get('MLFF_MEMORY_GB', os.environ.get('MLFF_MEMORY_GB', 'default'))})", "",
             "| atoms | mlff | edges per chunk | mace-torch | mace-torch + cuEquivariance | speedup | vs cueq |",
             "|---:|---|---:|---|---|---:|---:|"]
    records = []

    def cell(r: dict) -> str:
        return f"{r['s_per_call']:.3f} s, {r['peak_memory_GB']:.1f} GB" if r["status"] == "ok" else r["status"]

    paths = {}
    for n in sizes:
        pos, box = water_box(n, seed=1)
        paths[n] = tmp / f"water_box_{n}.xyz"
        ase.io.write(paths[n], Atoms("OH2" * (len(pos) // 3), positions=pos, cell=box, pbc=True), format="extxyz")
    # mlff at every size first (what this check is for), then the peers; a side that fails, runs
    # out of memory or time at one size is not tried at larger ones
    results = {n: {} for n in sizes}
    for side in SIDES:
        for n in sizes:
            if side in stopped:
                results[n][side] = {"status": stopped[side]}
                continue
            repeats = 1 if n > 12288 or not cuda else 3
            r = run_worker(sides[side], ["scale", side, paths[n], "float32", repeats, args.device],
                           min(phase.left(), 150), args.threads, env)
            results[n][side] = r
            if r["status"] != "ok":
                stopped[side] = r["status"] if r["status"].startswith("skipped") else (
                    f"skipped: {r['status'][:120]} at {n:,} atoms")
    for n in sizes:
        res = results[n]
        ours, peer, cueq = (res[s].get("s_per_call") for s in SIDES)
        extra = {f"{prefix}{k}": v for side, prefix in zip(SIDES, ("", "peer_", "cueq_"))
                 for k, v in res[side].items() if k != "n_atoms"}
        records.append(record(
            "gpu_check", f"water_box_{n}", res["mlff"].get("n_atoms", n), "s_per_call", ours,
            f"mace-torch {peer_version}" if peer else None, peer, dtype="float32", check="scale",
            speedup_vs_cueq=cueq / ours if cueq and ours else None, mace_hyper=args.hyper, **extra, **common))
        lines.append(f"| {n:,} | {cell(res['mlff'])} | {res['mlff'].get('edge_chunk', '-')} | "
                     f"{cell(res['mace-torch'])} | {cell(res['mace-torch-cueq'])} | "
                     f"{f'{peer / ours:.2f}x' if peer and ours else '-'} | "
                     f"{f'{cueq / ours:.2f}x' if cueq and ours else '-'} |")
    return records, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See the module docstring for what each phase checks.")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda (default); cpu: a smoke test of the script at the smallest sizes")
    parser.add_argument("--quick", action="store_true", help="smallest sizes only (a smoke test)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: up to 16 with cuda; 1 with cpu, so that a shared "
                        "machine is not oversubscribed)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="mlff's memory budget in the scale phase (default: MLFF_MEMORY_GB, else "
                        "half the GPU's memory)")
    parser.add_argument("--no-peer", action="store_true", help="skip mace-torch (and its venv set-up)")
    parser.add_argument("--phases", nargs="*", choices=list(BUDGET_S), default=list(BUDGET_S))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_check: CUDA is not available to torch {torch.__version__} (CUDA build: "
                 f"{torch.version.cuda or 'none, a CPU-only build'}). Run it on a CUDA machine, or pass "
                 "--device cpu for a smoke test of the script on CPU.")
    cuda = args.device == "cuda"
    args.threads = args.threads or (min(16, os.cpu_count() or 1) if cuda else 1)
    if not cuda:
        import _mace_side

        args.quick = True
        _mace_side.HYPER.update(TINY_HYPER)
    torch.set_num_threads(args.threads)
    vers = versions("e3nn", "ase", "vesin", "openmm", "openmmtorch")
    vers["torch_cuda"] = torch.version.cuda or "none"
    gpu = torch.cuda.get_device_name(0) if cuda else "none (CPU smoke test)"
    args.hyper = "mace_vs_peer.py's" if cuda else f"mace_vs_peer.py's with {TINY_HYPER}"
    common = dict(threads=args.threads, device=args.device, vers=vers, gpu=gpu, smoke_test=not cuda,
                  quick=args.quick)
    print(f"gpu_check on {gpu}, {args.threads} threads{' (quick)' if args.quick else ''}", file=sys.stderr)
    records, report, spent = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.phases:
            phase = Phase(BUDGET_S[name])
            fn = {"parity": phase_parity, "openmm": phase_openmm, "scale": phase_scale}[name]
            try:
                recs, lines = fn(args, phase, common, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - one phase failing must not lose the others
                traceback.print_exc()
                recs, lines = [], [f"### {name}", "", f"phase failed: {type(exc).__name__}: {exc}"]
            spent[name] = phase.elapsed()
            records += recs
            report += lines + ["", f"({name}: {spent[name]:.0f} s of its {BUDGET_S[name]} s budget)", ""]
            print(f"{name} done in {spent[name]:.0f} s", file=sys.stderr, flush=True)
    path = write_results("gpu_check" if cuda else "gpu_check_cpu_smoke", records,
                         keep_previous_by=("check", "system", "dtype", "model_type", "ensemble_size", "route"))
    failed = sum(r.get("passed") is False for r in records)
    not_run = sum(str(r.get("status", "ok")) != "ok" for r in records)
    print("\n".join([f"## GPU check: {gpu}", ""] + report))
    print(f"results: {path}\n{failed} check(s) failed, {not_run} measurement(s) did not run (see status); "
          f"total {sum(spent.values()):.0f} s of a {sum(BUDGET_S[p] for p in args.phases)} s budget")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":  # a child of main(): no lock of its own
        worker(sys.argv[2], sys.argv[3:])
    else:
        from _common import benchmark_lock

        with benchmark_lock(__file__):
            main()
