"""Relative binding free energies of beta-cyclodextrin guests by ATM (`mlff fe rbfe`), with MM
ligands (GAFF2/AM1-BCC) and with ML ligands (the shipped default model, mechanical embedding),
against experiment.

Host: beta-cyclodextrin (GAFF2; AM1-BCC at the built geometry, ``bcc-fixed``: sqm's own AM1
optimisation of 147 atoms takes hours here). Guests and experiment: CD Set 2 of the host-guest
benchmark sets (Henriksen, Fenley & Gilson, J. Chem. Theory Comput. 11, 4377 (2015);
MobleyLab/benchmarksets), ITC at 298 K by Rekharsky et al., J. Phys. Chem. B 101, 87 (1997):
dG_bind cyclopentanol -3.05, cycloheptanol -4.56, trans-4-methylcyclohexanol -4.54 kcal/mol.
The three edges close one cycle.

Stages (each resumable; every window checkpoints):

    host      the host's 3D structure, data/examples/bcd.mol (RDKit ETKDG + MMFF with the seven
              glycosidic oxygens held on a regular heptagon of radius 5.0 A, the seed chosen so
              that all seven primary CH2OH groups are on one rim, as in the crystal)
    mm, ml    the network with MM or ML ligands (runs/rbfe_hostguest/<stage>; `mlff fe rbfe`)
    report    results/rbfe_hostguest.json (one record per edge with ddG_mm, ddG_ml, errors,
              model error, experiment; one per cycle with its cycle_closure), a PNG, a table

    setsid nohup .venv/bin/python benchmarks/rbfe_hostguest.py mm > runs/rbfe_hostguest_mm.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_lock, record, versions, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "rbfe_hostguest"
HOST_FILE = ROOT / "data" / "examples" / "bcd.mol"
#: guest -> (SMILES, experimental dG_bind kcal/mol; Rekharsky et al. 1997 via CD Set 2)
GUESTS = {"cyclopentanol": ("OC1CCCC1", -3.050),
          "cycloheptanol": ("OC1CCCCCC1", -4.560),
          "trans-4-methylcyclohexanol": ("C[C@H]1CC[C@H](O)CC1", -4.541)}
EDGES = [["cyclopentanol", "cycloheptanol"], ["cycloheptanol", "trans-4-methylcyclohexanol"],
         ["trans-4-methylcyclohexanol", "cyclopentanol"]]


def beta_cyclodextrin_smiles() -> str:
    """Seven alpha-D-glucopyranose units joined 1 -> 4 in a ring, written unit by unit so that
    every stereocentre keeps the neighbour order (hence the parity) of alpha-D-glucose
    ``OC[C@H]1O[C@H](O)[C@H](O)[C@@H](O)[C@@H]1O``: unit i's anomeric O closes ring bond
    %(11+i) with unit i+1's C4."""
    return ".".join(f"OC[C@H]1O[C@H](O%{11 + i})[C@H](O)[C@@H](O)[C@@H]1%{11 + (i - 1) % 7}" for i in range(7))


def build_host(path: Path = HOST_FILE, radius: float = 5.0, max_seed: int = 50) -> Path:
    """The host's conformer (see the module docstring) as a mol file; returns its path."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(beta_cyclodextrin_smiles()))
    rings = mol.GetRingInfo()
    glycosidic = [a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "O" and not rings.IsAtomInRingOfSize(a.GetIdx(), 6)
                  and [n.GetSymbol() for n in a.GetNeighbors()] == ["C", "C"]]
    primary = [a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "C"
               and sum(n.GetSymbol() == "H" for n in a.GetNeighbors()) == 2]
    assert len(glycosidic) == 7 and len(primary) == 7
    for seed in range(max_seed):
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        params.useMacrocycleTorsions = True
        if AllChem.EmbedMolecule(mol, params) < 0:
            continue
        ff = AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
        for a in range(7):
            for k in (1, 2, 3):
                d = 2 * radius * np.sin(k * np.pi / 7)
                ff.MMFFAddDistanceConstraint(glycosidic[a], glycosidic[(a + k) % 7], False, d - 0.05, d + 0.05, 200.0)
        ff.Minimize(maxIts=20000)
        x = mol.GetConformer().GetPositions()
        centre = x[glycosidic].mean(axis=0)
        normal = np.linalg.svd(x[glycosidic] - centre)[2][-1]
        heights = (x[primary] - centre) @ normal
        if np.all(heights > 1.0) or np.all(heights < -1.0):
            path.parent.mkdir(parents=True, exist_ok=True)
            Chem.MolToMolFile(mol, str(path))
            print(f"host: seed {seed}, glycosidic O radius {np.linalg.norm(x[glycosidic] - centre, axis=1).round(2)} A, "
                  f"primary rim heights {heights.round(1)} A -> {path}")
            return path
    raise RuntimeError(f"no conformer with all primary groups on one rim in {max_seed} seeds")


def network_config(args, ml: bool) -> dict:
    return {"name": f"beta-CD guests ({'ML' if ml else 'MM'} ligands)",
            "receptor": {"molecule_file": str(HOST_FILE), "charge_method": "bcc-fixed"},
            "ligands": {name: {"smiles": smi, "experiment": expt} for name, (smi, expt) in GUESTS.items()},
            "edges": EDGES, "states_per_leg": args.states_per_leg, "equilibration_ps": args.equilibration_ps,
            "production_ps": args.production_ps, "sample_every_ps": args.sample_every_ps,
            "workers": args.workers, "padding_nm": args.padding_nm,
            "cache_dir": str(Path(args.out) / "parameters"),  # host and guests parametrised once for both
            **({"model": args.model, "ml_timestep_fs": args.ml_timestep_fs} if ml else {})}


def run_network(args, ml: bool) -> dict:
    from mlff.md_workflows.free_energy.rbfe.config import RBFEConfig
    from mlff.md_workflows.free_energy.rbfe.run import run_rbfe

    if not HOST_FILE.exists():
        build_host()
    cfg = RBFEConfig.from_dict(network_config(args, ml), "benchmarks/rbfe_hostguest.py")
    return run_rbfe(cfg, Path(args.out) / ("ml" if ml else "mm"), progress=not args.no_progress)


def report(args) -> None:
    """Combine the finished MM and ML networks into results/rbfe_hostguest.json."""
    results = {}
    for kind in ("mm", "ml"):
        path = Path(args.out) / kind / "result.json"
        if path.exists():
            results[kind] = json.loads(path.read_text())
    if "mm" not in results:
        raise SystemExit(f"no finished MM network in {args.out}/mm: run the mm stage first")
    vers = versions("openmm", "openmmtorch", "pymbar", "e3nn")
    ml_edges = {e["system"]: e for e in results.get("ml", {}).get("edges", [])}
    records = []
    for e in results["mm"]["edges"]:
        m = ml_edges.get(e["system"], {})
        rec = record(NAME, e["system"], None, "ddG_bind_kcal_per_mol", e["ddG"], "experiment (Rekharsky 1997)",
                     e["experiment"], dtype="float64 MM, float32 model", threads=1, lower_is_better=True, vers=vers,
                     ddG_mm=e["ddG"], ddG_mm_err=e["ddG_err"], ddG_ml=m.get("ddG"), ddG_ml_err=m.get("ddG_err"),
                     model_error=m.get("model_error"), experiment=e["experiment"],
                     min_neighbour_overlap_mm=e["min_neighbour_overlap"],
                     min_neighbour_overlap_ml=m.get("min_neighbour_overlap"))
        rec["speedup"] = None
        records.append(rec)
    ml_cycles = {c["system"]: c for c in results.get("ml", {}).get("cycles", [])}
    for c in results["mm"]["cycles"]:
        m = ml_cycles.get(c["system"], {})
        rec = record(NAME, c["system"], None, "cycle_closure_kcal_per_mol", c["cycle_closure"], None, None,
                     dtype="float64 MM, float32 model", threads=1, lower_is_better=True, vers=vers,
                     cycle_closure=c["cycle_closure"], cycle_closure_err=c["cycle_closure_err"],
                     within_2_sigma=c["within_2_sigma"], cycle_closure_ml=m.get("cycle_closure"),
                     cycle_closure_ml_err=m.get("cycle_closure_err"))
        rec["speedup"] = None
        records.append(rec)
    write_results(NAME, records, keep_previous_by=("system",))
    print(json.dumps(records, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["host", "mm", "ml", "report"])
    p.add_argument("--states-per-leg", type=int, default=11)
    p.add_argument("--equilibration-ps", type=float, default=20.0)
    p.add_argument("--production-ps", type=float, default=100.0)
    p.add_argument("--sample-every-ps", type=float, default=1.0)
    p.add_argument("--padding-nm", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default="default")
    p.add_argument("--ml-timestep-fs", type=float, default=2.0)
    p.add_argument("--out", default=str(ROOT / "runs" / NAME))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.stage == "host":
        build_host()
    elif args.stage in ("mm", "ml"):
        run_network(args, ml=args.stage == "ml")
    else:
        report(args)
    return 0


if __name__ == "__main__":
    with benchmark_lock(__file__):
        raise SystemExit(main())
