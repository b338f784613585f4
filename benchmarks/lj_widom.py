"""Lennard-Jones excess chemical potential by Widom insertion against equations of state.

The reference the alchemical sampler (md_workflows/free_energy/sampling.py) is validated with:
N = 500 LJ particles (argon-like units, cutoff 3 sigma, truncated, analytic tail for the test
particle), Langevin NVT on OpenMM's CPU platform (LangevinMiddle, 0.005 tau, friction 1/tau),
then Widom test-particle insertion on the frames. Each state point's record holds the Widom
mu_ex (epsilon) with its block-averaged standard error as ``ours``/``err`` and the Johnson,
Zollweg & Gubbins (1993) value as ``peer_value`` (Kolafa & Nezbeda 1994 in ``kn_mu_ex``). This
is an accuracy benchmark, so ``speedup`` is null; ``steps_per_s`` and ``wall_s`` are recorded.

Default states: rho* 0.8 at T* 2.0 (dense supercritical) and T* 1.2 (liquid; the state of the
alchemical check in shared/notes/free_energy_stack.md). About 3 minutes on one core.

Usage: python benchmarks/lj_widom.py [--threads 1] [--frames 400] [--steps-per-frame 50]
       [--equilibration 10000] [--insertions 4000] [--states 0.8,2.0 0.8,1.2]
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import benchmark_lock, record, versions, write_results  # noqa: E402

from mlff.md_workflows.free_energy import lj_eos  # noqa: E402  (JZG 1993 and Kolafa-Nezbeda 1994)
from mlff.md_workflows.free_energy.lj_fluid import LJFluid, simulate_fluid, widom_insertion  # noqa: E402


def run_state(rho: float, t: float, args: argparse.Namespace) -> dict:
    fluid = LJFluid(args.n_particles, rho, t)
    n_steps = args.equilibration + args.frames * args.steps_per_frame
    t0 = time.perf_counter()
    frames = simulate_fluid(fluid, n_frames=args.frames, steps_per_frame=args.steps_per_frame,
                            equilibration_steps=args.equilibration, platform="CPU",
                            threads=args.threads, seed=args.seed)
    t_md = time.perf_counter() - t0
    mu, err = widom_insertion(frames, fluid.box_edge_nm, fluid, n_insertions=args.insertions,
                              rng=args.seed, n_blocks=args.blocks)
    wall = time.perf_counter() - t0
    jzg = lj_eos.excess_chemical_potential(rho, t)
    kn = lj_eos.kn_excess_chemical_potential(rho, t)
    try:
        omm = version("openmm")
    except PackageNotFoundError:  # pragma: no cover
        omm = "unknown"
    rec = record("lj_widom", f"LJ N={args.n_particles} rho*={rho} T*={t} rc=3", args.n_particles,
                 "mu_ex_epsilon", mu, "JZG EOS (Johnson, Zollweg & Gubbins, Mol. Phys. 78, 591, 1993)",
                 jzg, dtype="float32 (OpenMM CPU, mixed)", threads=args.threads,
                 vers=versions("openmm", "numpy"),
                 err=err, kn_mu_ex=kn, jzg_mu_ex=jzg, deviation_from_jzg=mu - jzg,
                 deviation_from_kn=mu - kn, tail_correction=fluid.tail_correction_insert,
                 frames=args.frames, steps_per_frame=args.steps_per_frame,
                 equilibration_steps=args.equilibration, insertions_per_frame=args.insertions,
                 timestep_tau=0.005, tau_ps=fluid.tau, steps_per_s=n_steps / t_md, wall_s=wall,
                 openmm=omm)
    rec["speedup"] = None  # an accuracy benchmark: no speed ratio
    print(f"rho*={rho} T*={t}: Widom mu_ex = {mu:.3f} +/- {err:.3f}  JZG {jzg:.3f}  KN {kn:.3f}  "
          f"({n_steps / t_md:.0f} steps/s, {wall:.0f} s)", flush=True)
    return rec


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-particles", type=int, default=500)
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--steps-per-frame", type=int, default=50)
    p.add_argument("--equilibration", type=int, default=10000)
    p.add_argument("--insertions", type=int, default=4000)
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--states", nargs="+", default=["0.8,2.0", "0.8,1.2"],
                   help="rho*,T* pairs")
    args = p.parse_args(argv)
    records = []
    for s in args.states:
        rho, t = (float(v) for v in s.split(","))
        records.append(run_state(rho, t, args))
    print(write_results("lj_widom", records))


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
