"""Reanalyse the archived FreeSolv samples with today's estimators and compare with the record.

Reads ``results/freesolv_samples/<molecule>/{water,vacuum}/{u_nk,dHdl}.parquet`` (every sample
of every window, alchemlyb layout, archived by freesolv.py), runs
``mlff.md_workflows.free_energy.estimators.analyze`` on each leg and combines the legs exactly
as ``mlff fe hydration`` does (``hydration.combine``). Per molecule and estimator it writes the
recorded and the new dG_hyd with errors (kcal/mol), the change, and the change in units of
the combined error sqrt(old_err^2 + new_err^2), to ``results/freesolv_reanalysis.json``, and
prints the largest change. The same samples go in, so anything beyond round-off is a change of
the analysis (decorrelation, estimators), not of the sampling.

Acetic acid is not reanalysed: its record is a conformer mixture (freesolv.py, CONFORMERS) of
an anti-start and a syn-start hydration run and a gas-phase umbrella calculation, run before
samples were archived (its protocol predates the work-value decorrelation), so no samples of it
are stored. Its record is listed with the reason.

    .venv/bin/python benchmarks/freesolv_reanalysis.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from mlff.atomic import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, benchmark_lock, versions  # noqa: E402

SAMPLES = RESULTS / "freesolv_samples"
LEGS = ("water", "vacuum")


def reanalyse(record: dict) -> dict[str, dict]:
    """dG_hyd per estimator (kcal/mol, with error) from the archived samples of one record."""
    from mlff.md_workflows.free_energy.dataframes import read_alchemlyb
    from mlff.md_workflows.free_energy.estimators import analyze
    from mlff.md_workflows.free_energy.hydration import HydrationConfig, LegResult, combine

    config = HydrationConfig(smiles=record["smiles"], name=record["system"],
                             forcefield=record["forcefield"])
    legs = {}
    for leg in LEGS:
        samples = read_alchemlyb(SAMPLES / record["system"] / leg, config.temperature_K)
        with_ti = bool(samples.ti_parameters)
        analysis = analyze(samples.u_kln, samples.dudl if with_ti else None,
                           samples.lambdas if with_ti else None, with_convergence=False)
        legs[leg] = LegResult(leg, samples, analysis)
    return combine(config, legs["water"], legs["vacuum"])["dG_hyd_kcal_mol"]


def compare(old: dict, new: dict) -> dict:
    """Old and new {value, error} (kcal/mol), the change and the change in combined errors."""
    change = new["value"] - old["value"]
    combined = float(np.hypot(old["error"], new["error"]))
    return {"old": old, "new": new, "change_kcal_mol": change,
            "change_sigma": change / combined if combined > 0 else float("nan")}


def main() -> int:
    records = json.loads((RESULTS / "freesolv.json").read_text())
    out = {"what": __doc__.split("\n\n")[0], "versions": versions("alchemlyb", "pymbar"),
           "molecules": {}, "not_reanalysed": {}}
    t0 = time.time()
    for record in records:
        mol = record["system"]
        if not (SAMPLES / mol / "water" / "u_nk.parquet").exists():
            reason = "no archived samples"
            if "mixture" in record:
                reason += ("; recorded as a conformer mixture of anti- and syn-start runs and a "
                           "gas-phase umbrella calculation, none of whose samples are archived")
            out["not_reanalysed"][mol] = {"reason": reason, "recorded": {
                "value": record["ours"], "error": record["ours_err"]}, "protocol": record["protocol"]}
            print(f"{mol}: not reanalysed ({reason})", flush=True)
            continue
        new = reanalyse(record)
        per = {est: compare(record["estimators"][est], new[est])
               for est in record["estimators"] if est in new}
        # the record's headline ("ours") is MBAR, as in result.json's dG_hyd
        headline = compare({"value": record["ours"], "error": record["ours_err"]}, new["MBAR"])
        out["molecules"][mol] = {"headline_MBAR": headline, "estimators": per}
        print(f"{mol}: MBAR {headline['old']['value']:.3f} +/- {headline['old']['error']:.3f} -> "
              f"{headline['new']['value']:.3f} +/- {headline['new']['error']:.3f} "
              f"({headline['change_kcal_mol']:+.2e} kcal/mol, {headline['change_sigma']:+.2e} sigma)",
              flush=True)
    rows = [(mol, est, c) for mol, m in out["molecules"].items()
            for est, c in [("MBAR (headline)", m["headline_MBAR"]), *m["estimators"].items()]]
    for key in ("change_kcal_mol", "change_sigma"):
        mol, est, c = max(rows, key=lambda r: abs(r[2][key]))
        out[f"largest_{key}"] = {"molecule": mol, "estimator": est, **c}
        print(f"largest |{key}|: {mol} {est}: {c['change_kcal_mol']:+.3e} kcal/mol "
              f"({c['change_sigma']:+.3e} sigma)")
    out["wall_s"] = time.time() - t0
    atomic_write_text(RESULTS / "freesolv_reanalysis.json", json.dumps(out, indent=1))
    print(f"written to {RESULTS / 'freesolv_reanalysis.json'}")
    return 0


if __name__ == "__main__":
    with benchmark_lock(__file__):
        sys.exit(main())
