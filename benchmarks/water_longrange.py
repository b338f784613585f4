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

The training of models with and without the long-range block on these labels, their MD and the
O-O RDF against GFN2-xTB's own are later stages (issue 18). ``--frames`` frames per system and
temperature; run ``python benchmarks/water_longrange.py sample label``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neighbors import water_box  # noqa: E402 - the benchmarks' water-box builder

OUT = Path(__file__).resolve().parent / "results" / "water_longrange"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", choices=["sample", "label"])
    parser.add_argument("--frames", type=int, default=48, help="frames per system and temperature")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if "sample" in args.stages:
        sample(args.frames)
    if "label" in args.stages:
        label(args.workers)


if __name__ == "__main__":
    main()
