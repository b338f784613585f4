"""ML/MM hydration free energies of the ten FreeSolv molecules of benchmarks/freesolv.py:
MM (GAFF/AM1-BCC/TIP3P, taken from results/freesolv.json), ML/MM-corrected with a model, and
experiment side by side (results/freesolv_ml.json, results/freesolv_ml.png).

For each molecule: the MM -> ML end-state corrections of the solute's intramolecular energy in
water and in vacuum (md_workflows/free_energy/ml_correction.py; the mlff fe hydration --model
protocol), dG_hyd(ML/MM) = dG_hyd(MM) + dG_corr(water) - dG_corr(vacuum), statistical errors
in quadrature and the model error from the ensemble members (each member's correction by
reweighting the same samples). The MM legs are not rerun: their value and error are the
records of results/freesolv.json, computed with the same parameters (GAFF 1.x, RDKit conformer
seed 0, 2.5 nm box). Acetic acid's MM record is the anti/syn conformer mixture; its correction
starts from the RDKit (syn) conformer.

Resumable per molecule: each runs in OUT/<model>/<name> (every window checkpoints); finished
molecules with the same protocol are skipped; the JSON is rewritten after each molecule.
In the background:

    setsid nohup .venv/bin/python benchmarks/freesolv_ml.py > runs/freesolv_ml.log 2>&1 &

Any model file works (``--model PATH``); the records name the model file, the summary
(results/freesolv_ml_summary.json) has one entry per model file and the parity plot one series
per model. A second model, e.g. the ANI-1x MACE of ../shared/pretrained (third-party: import it
into runs/, never commit it):

    .venv/bin/mlff import mace ../shared/pretrained/mace_ani1x_small/ani500k_small_CC.model \
        --dtype float32 -o runs/models/mace_ani1x_small_f32.pt
    .venv/bin/python benchmarks/freesolv_ml.py --model runs/models/mace_ani1x_small_f32.pt
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "freesolv_ml"
#: FreeSolv molecules held out of the default model's training set (its held-out split), for
#: the check that the ensemble spread of the correction grows off the training set; only the
#: corrections run for them (no MM legs): name -> (FreeSolv id, SMILES, experiment)
HELD_OUT = {"ethylamine": ("mobley_2410897", "CCN", -4.5),
            "pyrrole": ("mobley_2837389", "c1cc[nH]c1", -4.78),
            "dimethyl_ether": ("mobley_7015518", "COC", -1.91),
            "acetaldehyde": ("mobley_1967551", "CC=O", -3.5)}
#: the molecules in the default model's training set (data/datasets/organic_gfn2/PROVENANCE.md)
IN_TRAINING_SET = {"methane", "methanol", "ethanol", "acetic_acid", "acetamide", "benzene",
                   "toluene", "phenol", "pyridine", "acetone"}


def protocol(args) -> str:
    return (f"ML/MM correction: {len(args.windows)} lambda_ml windows "
            f"({', '.join(f'{x:g}' for x in args.windows)}), {args.ml_equilibration_ps:g}+"
            f"{args.ml_production_ps:g} ps each, energies every {args.ml_sample_every_ps:g} ps, "
            "4 fs LangevinMiddle with HMR (3 amu), X-H constraints kept, mechanical embedding, "
            f"model route {args.route}; MM legs from results/freesolv.json")


def stats(pred: np.ndarray, ref: np.ndarray) -> dict:
    d = pred - ref
    return {"mue": float(np.mean(np.abs(d))), "rmse": float(np.sqrt(np.mean(d ** 2)))}


def summary(records: list[dict]) -> dict:
    """MUE/RMSE of MM and ML/MM against experiment, mean |correction|, mean errors."""
    spread = {flag: [r["model_error"] for r in records if r["in_training_set"] is flag
                     and r["model_error"] is not None] for flag in (True, False)}
    spread_check = {"mean_model_error_in_training_set": float(np.mean(spread[True])) if spread[True] else None,
                    "mean_model_error_held_out": float(np.mean(spread[False])) if spread[False] else None,
                    "n_in_training_set": len(spread[True]), "n_held_out": len(spread[False])}
    records = [r for r in records if r["dG_mm"] is not None]
    if not records:
        return {"n": 0, "spread_check": spread_check}
    expt = np.array([r["experiment"] for r in records])
    mm = np.array([r["dG_mm"] for r in records])
    ml = np.array([r["dG_ml_mm"] for r in records])
    return {"n": len(records), "spread_check": spread_check,
            "model": records[0]["model_file"] if records else None,
            "mm_vs_expt": stats(mm, expt), "ml_mm_vs_expt": stats(ml, expt),
            "mean_abs_correction": float(np.mean(np.abs(ml - mm))),
            "mean_statistical_error": float(np.mean([r["dG_ml_mm_err"] for r in records])),
            "mean_model_error": float(np.mean([r["model_error"] or 0.0 for r in records]))}


def plot(records: list[dict], path: Path) -> None:
    """Parity plot: MM once, then ML/MM for every model in ``records`` (stat. and model error
    together as the bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r["dG_mm"] is not None]
    if not records:
        return
    models = list(dict.fromkeys(r["model_file"] for r in records))
    mm = {r["system"]: r for r in records}  # the MM value is the same for every model
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    series = [("MM (GAFF)", list(mm.values()), "dG_mm", "dG_mm_err", "s")]
    series += [(f"ML/MM {m}", [r for r in records if r["model_file"] == m], "dG_ml_mm",
                "dG_ml_mm_err", "o^vD"[i % 4]) for i, m in enumerate(models)]
    for label, recs, key, err, style in series:
        expt = np.array([r["experiment"] for r in recs])
        y = np.array([r[key] for r in recs])
        yerr = np.array([r[err] for r in recs])
        if key == "dG_ml_mm":  # statistical and model error together
            yerr = np.hypot(yerr, [r["model_error"] or 0.0 for r in recs])
        rmse = float(np.sqrt(np.mean((y - expt) ** 2)))
        ax.errorbar(expt, y, yerr=yerr, fmt=style, mfc="none" if style == "s" else None,
                    capsize=2, label=f"{label}: RMSE {rmse:.2f} (n={len(recs)})")
    for r in mm.values():
        ax.annotate(r["system"], (r["experiment"], r["dG_mm"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    expt = np.array([r["experiment"] for r in mm.values()])
    lo, hi = expt.min() - 2, expt.max() + 2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("experiment (kcal/mol)")
    ax.set_ylabel("calculated dG_hyd (kcal/mol)")
    ax.set_title("FreeSolv hydration free energies, MM and ML/MM (mechanical embedding)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_molecule(mm: dict, args, out: Path) -> dict:
    from mlff.md_workflows.free_energy.hydration import HydrationConfig, prepare_systems
    from mlff.md_workflows.free_energy.ml_hydration import run_ml_corrections

    cfg = HydrationConfig(smiles=mm["smiles"], name=mm["system"], forcefield=mm["forcefield"],
                          model=args.model, ml_route=args.route, ml_windows=tuple(args.windows),
                          ml_equilibration_ps=args.ml_equilibration_ps,
                          ml_production_ps=args.ml_production_ps,
                          ml_sample_every_ps=args.ml_sample_every_ps, workers=args.workers,
                          ml_timestep_fs=args.ml_timestep_fs,
                          threads=args.threads)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    _, _, plain = prepare_systems(cfg, out)
    has_mm = mm.get("ours") is not None
    mm_result = ({"dG_hyd": mm["ours"], "dG_hyd_err": mm["ours_err"]} if has_mm
                 else {"dG_hyd": float("nan"), "dG_hyd_err": 0.0})  # held out: corrections only
    ml = run_ml_corrections(cfg, out, mm_result, None, plain, progress=not args.no_progress)
    wall = time.time() - start
    water, vacuum = ml["legs"]["water"], ml["legs"]["vacuum"]
    rec = record(
        NAME, mm["system"], len(plain["numbers"]), "dG_hyd_kcal_per_mol",
        ml["dG_hyd_ml_mm"] if has_mm else None,
        "experiment (FreeSolv 0.52)", mm["expt"], dtype="float32 model, mixed OpenMM",
        threads=args.threads, lower_is_better=True,
        vers=versions("openmm", "openmmtorch", "pymbar", "alchemlyb", "e3nn"),
        smiles=mm["smiles"], freesolv_id=mm.get("freesolv_id"), model_file=ml["model"],
        model_sha256=ml["model_sha256"], dG_mm=mm.get("ours"), dG_mm_err=mm.get("ours_err"),
        dG_ml_mm=ml["dG_hyd_ml_mm"] if has_mm else None,
        dG_ml_mm_err=ml["dG_hyd_ml_mm_err"] if has_mm else None,
        dG_corr_water=ml["dG_corr_water"], dG_corr_water_err=ml["dG_corr_water_err"],
        dG_corr_vacuum=ml["dG_corr_vacuum"], dG_corr_vacuum_err=ml["dG_corr_vacuum_err"],
        model_error=ml["model_error"], members_dG_corr=ml.get("members_dG_corr"),
        experiment=mm["expt"], experiment_err=mm.get("expt_err"),
        # the training-set split is the default model's; another model's records carry None
        in_training_set=(mm["system"] in IN_TRAINING_SET) if args.model == "default" else None,
        estimators={leg: ml["legs"][leg]["estimates"] for leg in ("water", "vacuum")},
        fep={leg: {k: {"value": v["value"], "error": v["error"], "warning": v["warning"],
                       "work_std_kT": v["work_std_kT"]}
                   for k, v in ml["legs"][leg]["fep"].items()} for leg in ("water", "vacuum")},
        min_neighbour_overlap={"water": water["min_neighbour_overlap"],
                               "vacuum": vacuum["min_neighbour_overlap"]},
        ti_vs_mbar_sigma={"water": water["ti_vs_mbar_sigma"], "vacuum": vacuum["ti_vs_mbar_sigma"]},
        ml_timestep_fs=cfg.ml_sampling("water").timestep_fs,
        warnings=ml["warnings"], wall_s=wall,
        sampling_wall_s=ml["sampling_wall_s_this_run"], workers=args.workers,
        protocol=protocol(args))
    rec["speedup"] = None  # a free energy, not a speed: no ratio against experiment
    return rec


def main(argv=None) -> int:
    mm_records = {r["system"]: r for r in json.loads((RESULTS / "freesolv.json").read_text())}
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (fid, smiles, expt) in HELD_OUT.items():
        mm_records[name] = {"system": name, "smiles": smiles, "forcefield": "gaff",
                            "freesolv_id": fid, "expt": expt}
    p.add_argument("--molecules", nargs="*", default=[m for m in mm_records if m not in HELD_OUT],
                   choices=list(mm_records),
                   help=f"default: the ten of results/freesolv.json; held-out molecules "
                   f"({', '.join(HELD_OUT)}) run the corrections only")
    p.add_argument("--model", default="default", help="'default' or a model file")
    p.add_argument("--route", default="torch", choices=["torch", "python"])
    p.add_argument("--windows", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--ml-equilibration-ps", type=float, default=5.0)
    p.add_argument("--ml-production-ps", type=float, default=15.0)
    p.add_argument("--ml-sample-every-ps", type=float, default=0.5)
    p.add_argument("--ml-timestep-fs", type=float, default=None,
                   help="timestep of the ML/MM correction legs (default: the MM legs' 4 fs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "runs" / NAME))
    p.add_argument("--summary-only", action="store_true", help="rewrite summary and plot")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from mlff.io import model_path

    model_name = Path(model_path(args.model)).name
    path = RESULTS / f"{NAME}.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    done = {(r["system"], r["model_file"]): r for r in previous if r.get("protocol") == protocol(args)}
    if not args.summary_only:
        for name in args.molecules:
            if (name, model_name) in done:
                print(f"{name}: done ({done[(name, model_name)]['dG_ml_mm']:.2f})", flush=True)
                continue
            rec = run_molecule(mm_records[name], args, Path(args.out) / Path(model_name).stem / name)
            print(f"{name}: MM {rec['dG_mm']}, ML/MM {rec['dG_ml_mm']} +/- {rec['dG_ml_mm_err']} "
                  f"(model {rec['model_error']}), corrections water {rec['dG_corr_water']:.2f} "
                  f"vacuum {rec['dG_corr_vacuum']:.2f}, expt {rec['experiment']:.2f}; "
                  f"{rec['wall_s']:.0f} s", flush=True)
            write_results(NAME, [rec], keep_previous_by=("system", "model_file"))
    records = json.loads(path.read_text()) if path.exists() else []
    if records:
        from mlff.atomic import atomic_write_text

        models = dict.fromkeys(r["model_file"] for r in records)
        summaries = {m: summary([r for r in records if r["model_file"] == m]) for m in models}
        atomic_write_text(RESULTS / f"{NAME}_summary.json", json.dumps(summaries, indent=1))
        plot(records, RESULTS / f"{NAME}.png")
        print(json.dumps(summaries[model_name] if model_name in summaries else summaries, indent=1))
    return 0


if __name__ == "__main__":
    with benchmark_lock(__file__):
        raise SystemExit(main())
