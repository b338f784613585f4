"""One edge A -> B of an RBFE network by ATM: parametrise, build the complex, restrain, add
the ATMForce (and the ML ligands), sample the 21 states on the engine's resumable sampler,
analyse and report.

Output (``DIR/edges/A~B/``)::

    ff/            the per-molecule prefixed ForceField XML of the complex
    leg/           the ATM windows (system.xml, leg.json, window_*/: checkpoints, samples)
    setup.json     atom indices of receptor and ligands, site atoms, reference atoms, d (nm)
    result.json    ddG(A -> B) by every estimator, both legs, overlap (kcal/mol)
    overlap.png, convergence.png, dudl.png
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from mlff.atomic import atomic_write_text

from .config import RBFEConfig

#: the displaced ligand clears the receptor by the cutoff plus this much (nm)
DISPLACEMENT_MARGIN_NM = 0.4


def parametrize(config: RBFEConfig, cache_dir: Path) -> Dict[str, object]:
    """LigandParameters of every ligand (by name) and of the receptor (key ``receptor``), or
    for a pdb receptor its :class:`.receptor.ProteinReceptor` (the force field's templates)."""
    from ..parametrize.pipeline import parametrize_ligand
    from .receptor import protein_receptor

    def one(name, spec):
        return parametrize_ligand(spec.get("smiles"), name=name, forcefield=config.forcefield,
                                  charge_method=spec.get("charge_method", "bcc"), cache_dir=cache_dir,
                                  seed=config.seed, molecule_file=spec.get("molecule_file"))

    out = {"receptor": protein_receptor(config.receptor) if "pdb" in config.receptor
           else one("receptor", config.receptor)}
    for name, spec in config.ligands.items():
        out[name] = one(name, spec)
    return out


def _coordinates(params) -> tuple[np.ndarray, List[int]]:
    """(positions nm [A, 3], atomic numbers [A]) of a parametrised molecule's own conformer
    (or of a pdb receptor)."""
    import openmm.app as app
    from openmm import unit

    from .receptor import ProteinReceptor

    if isinstance(params, ProteinReceptor):
        return params.coordinates()
    topology = app.AmberPrmtopFile(str(params.prmtop)).topology
    xyz = np.array(app.AmberInpcrdFile(str(params.inpcrd)).getPositions().value_in_unit(unit.nanometer))
    return xyz, [a.element.atomic_number for a in topology.atoms()]


def default_displacement(receptor_nm: np.ndarray, ligands_nm: List[np.ndarray], cutoff_nm: float) -> np.ndarray:
    """d along the box diagonal (1, 1, 1)/sqrt(3), long enough that a ligand centred in the
    site and moved by d stays the cutoff + :data:`DISPLACEMENT_MARGIN_NM` from every receptor atom."""
    centre = receptor_nm.mean(axis=0)
    radius = float(np.max(np.linalg.norm(receptor_nm - centre, axis=1)))
    ligand_radius = max(float(np.max(np.linalg.norm(x - x.mean(axis=0), axis=1))) for x in ligands_nm)
    length = radius + ligand_radius + cutoff_nm + DISPLACEMENT_MARGIN_NM
    return np.full(3, length / np.sqrt(3.0))


def minimized(system, positions_nm: np.ndarray, platform: str = "CPU", threads: int = 1) -> np.ndarray:
    """The complex's start structure (nm), minimised once in MM before the ATMForce and the ML
    ligands exist. Each window then minimises again at its own state (the sampler's
    minimisation; at s near 1 the displaced ligand B meets the waters that were placed around
    A, and only a minimisation in that state removes the clash), which from this structure
    takes few steps near s = 0: with ML ligands every step is a model call."""
    import openmm
    from openmm import unit

    from ...openmm_platform import platform_and_properties

    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), *platform_and_properties(platform, threads))
    context.setPositions(positions_nm)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
    return np.array(context.getState(getPositions=True).getPositions().value_in_unit(unit.nanometer))


def build_edge(config: RBFEConfig, params: Dict[str, object], a: str, b: str, work_dir: Path):
    """The complex of edge a -> b with its restraints and ATMForce, ready for the sampler.

    Returns (system, positions nm, box nm [3, 3], setup dict, ml recipe or None)."""
    from openmm import unit

    from .atm_system import add_atm_force
    from .complex import build_complex, displacement_map, site_atoms
    from .ml_ligands import use_ml_ligands
    from .placement import place_in_site, reference_atoms, site_axis
    from .restraints import add_alignment_restraint, add_centroid_restraint

    receptor_nm, _ = _coordinates(params["receptor"])
    center = receptor_nm.mean(axis=0) if config.site_center_nm is None else np.array(config.site_center_nm)
    axis = site_axis(receptor_nm)
    poses, numbers = {}, {}
    for name in (a, b):
        xyz, z = _coordinates(params[name])
        # a molecule file is the ligand's pose in the site; a SMILES conformer is placed there
        poses[name] = xyz if config.ligands[name].get("molecule_file") else place_in_site(xyz, receptor_nm, center)
        numbers[name] = z
    d = (np.array(config.displacement_nm) if config.displacement_nm is not None
         else default_displacement(receptor_nm, [poses[a], poses[b]], config.nonbonded_cutoff_nm))
    complex_ = build_complex(params["receptor"], params[a], params[b], d, work_dir / "ff", receptor_nm=receptor_nm,
                             pose_a_nm=poses[a], pose_b_nm=poses[b], padding_nm=config.padding_nm,
                             nonbonded_cutoff_nm=config.nonbonded_cutoff_nm,
                             hydrogen_mass_amu=config.hydrogen_mass_amu, constraints="HBonds")
    system, atoms = complex_.system, complex_.atoms
    pos = minimized(system, complex_.positions_nm, config.platform, config.threads)
    lig_a, lig_b = atoms["ligand_a"], atoms["ligand_b"]
    ml = None
    if config.model is not None:  # before the ATMForce: the ML forces stay outside it
        ml = use_ml_ligands(system, [lig_a, lig_b], [numbers[a], numbers[b]], config.model,
                            config.ml_route, config.ml_device)
    add_atm_force(system, displacement_map(atoms, d))
    site = site_atoms(pos, atoms["receptor"], lig_a, config.site_radius_nm)
    add_centroid_restraint(system, site, lig_a)
    add_centroid_restraint(system, site, lig_b, offset_nm=d)
    refs = {}
    for name, offset in ((a, lig_a[0]), (b, lig_b[0])):
        given = config.ligands[name].get("reference_atoms")
        local = given if given is not None else reference_atoms(poses[name], numbers[name], axis, center)
        if max(local) >= len(numbers[name]):
            raise ValueError(f"ligand {name}: reference_atoms {local} beyond its {len(numbers[name])} atoms")
        refs[name] = [offset + i for i in local]
    add_alignment_restraint(system, refs[a], refs[b], d)
    box = np.array([[v.x, v.y, v.z] for v in
                    (x.value_in_unit(unit.nanometer) for x in complex_.topology.getPeriodicBoxVectors())])
    setup = {"edge": f"{a}~{b}", "atoms": atoms, "site_atoms": site, "reference_atoms": refs,
             "displacement_nm": d.tolist(), "n_atoms": int(system.getNumParticles()),
             "box_nm": box.tolist(), "ml_ligands": config.model is not None}
    return system, pos, box, setup, ml


def run_edge(config: RBFEConfig, params: Dict[str, object], edge_index: int, out_dir: Path,
             progress: bool = True) -> dict:
    """Sample (or resume) and analyse edge ``config.edges[edge_index]``; returns its record
    (also written to ``out_dir/result.json``)."""
    import time

    from ..sampling import run_leg
    from .leg import analyze_atm_leg, prepare_atm_leg, write_atm_report
    from .schedule import linear_schedule

    a, b = config.edges[edge_index]
    out_dir = Path(out_dir)
    start = time.time()
    system, pos, box, setup, ml = build_edge(config, params, a, b, out_dir)
    ligands = setup["atoms"]["ligand_a"] + setup["atoms"]["ligand_b"]
    prepare_atm_leg(out_dir / "leg", system, pos, linear_schedule(config.states_per_leg),
                    config.sampling(edge_index), box_vectors_nm=box,
                    save_atoms=ligands if ml is not None else None, ml=ml)
    atomic_write_text(out_dir / "setup.json", json.dumps(setup, indent=1))
    run_leg(out_dir / "leg", workers=config.workers, scheduler=config.scheduler, progress=progress,
            label=f"{a}~{b}")
    result = analyze_atm_leg(out_dir / "leg")
    files = write_atm_report(out_dir, result, config.kT_kcal_mol, title=f"ATM {a} -> {b}")
    record = {"system": f"{a}~{b}", "ligand_a": a, "ligand_b": b,
              **result.to_dict(config.kT_kcal_mol), "model": config.model,
              "n_atoms": setup["n_atoms"], "files": {k: str(v) for k, v in files.items()},
              "wall_s_this_run": time.time() - start}
    if ml is not None:
        from .ml_uncertainty import member_ddG

        record.update(member_ddG(out_dir / "leg", ml, [setup["atoms"]["ligand_a"], setup["atoms"]["ligand_b"]],
                                 config.kT_kcal_mol))
    atomic_write_text(out_dir / "result.json", json.dumps(record, indent=1))
    return record
