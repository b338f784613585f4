"""Excess chemical potential of a Lennard-Jones particle by alchemical insertion + MBAR, against
the Johnson-Zollweg-Gubbins (1993) equation of state and Widom insertion on the same fluid.

The same sampler and estimators as `mlff fe hydration` (md_workflows/free_energy), on N = 500
LJ particles (cutoff 3 sigma, analytic tail for the inserted particle, Beutler softcore alpha
0.5), Langevin NVT (0.005 tau, friction 1/tau), 12 windows of 25 tau equilibration + 370 tau
production, energies at all windows every 0.5 tau. Bar (issue 7): within 0.1 kT of the EOS.
Widom values come from benchmarks/results/lj_widom.json (benchmarks/lj_widom.py) when present.
Resumable (windows checkpoint under runs/lj_insertion). Writes benchmarks/results/lj_insertion.json.

Usage: python benchmarks/lj_insertion.py [--states 0.8,2.0 0.8,1.2] [--workers 1] [--production-tau 370]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402

from mlff.md_workflows.free_energy import lj_eos  # noqa: E402  (JZG 1993 and Kolafa-Nezbeda 1994)
from mlff.md_workflows.free_energy.lj_fluid import LJFluid, alchemical_insertion  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--states", nargs="*", default=["0.8,2.0", "0.8,1.2"])
    p.add_argument("--n-particles", type=int, default=500)
    p.add_argument("--production-tau", type=float, default=370.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE.parent / "runs" / "lj_insertion"))
    args = p.parse_args(argv)
    widom = {}
    if (RESULTS / "lj_widom.json").exists():
        for r in json.loads((RESULTS / "lj_widom.json").read_text()):
            widom[r["system"]] = r
    records = []
    for text in args.states:
        rho, t = (float(x) for x in text.split(","))
        fluid = LJFluid(args.n_particles, rho, t)
        system = f"LJ N={args.n_particles} rho*={rho} T*={t} rc=3"
        t0 = time.time()
        res = alchemical_insertion(fluid, Path(args.out) / f"rho{rho}_T{t}", production_tau=args.production_tau,
                                   workers=args.workers, threads=args.threads, progress=True)
        eos = lj_eos.excess_chemical_potential(rho, t)
        mbar = res["MBAR"]
        w = widom.get(system, {})
        records.append(record(
            "lj_insertion", system, args.n_particles + 1, "mu_ex_epsilon", mbar["mu_ex"],
            "JZG EOS (Johnson, Zollweg & Gubbins, Mol. Phys. 78, 591, 1993)", eos,
            dtype="mixed (OpenMM CPU)", threads=args.threads, vers=versions("openmm", "pymbar"),
            err=mbar["err"], deviation_from_eos_kT=(mbar["mu_ex"] - eos) / t,
            within_0_1_kT=abs(mbar["mu_ex"] - eos) / t <= 0.1,
            kn_mu_ex=lj_eos.kn_excess_chemical_potential(rho, t),
            widom_mu_ex=w.get("ours"), widom_err=w.get("err"),
            estimators={k: v for k, v in res.items() if isinstance(v, dict)},
            min_neighbour_overlap=res["min_neighbour_overlap"], wall_s=time.time() - t0,
            protocol=f"12 windows, 25 + {args.production_tau} tau per window, MBAR"))
        records[-1].pop("speedup", None)
        print(json.dumps({k: records[-1][k] for k in ("system", "ours", "err", "peer_value", "kn_mu_ex",
                                                       "widom_mu_ex", "deviation_from_eos_kT")}), flush=True)
        # records of states not rerun now are kept (one record per state)
        write_results("lj_insertion", records, keep_previous_by=("system",))
    return 0


if __name__ == "__main__":
    with benchmark_lock(__file__):
        sys.exit(main())
