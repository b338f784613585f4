"""Recipe for the project's reference dataset ``data/datasets/organic_gfn2``.

Molecules: the closed-shell G2 molecules of ``ase.build.molecule`` made only of H, C, N, O, the
FreeSolv molecules the free-energy work uses (methane, methanol, ethanol, acetic acid,
acetamide, benzene, toluene, phenol, pyridine, acetone; toluene and phenol from data/examples),
and capped alanine dipeptide (five backbone conformers from data/examples). Each is relaxed with
GFN2-xTB, sampled by Langevin MD at 300/500/750/1000 K and by normal-mode sampling at
300/600/1000 K (:mod:`mlff.data.sampling`), then labelled with GFN2-xTB (:mod:`mlff.data.label`).
Isolated H, C, N, O atoms (ground-state multiplicity) are labelled for E0s.

Splits: six molecules are held out entirely (``test_heldout_molecules.extxyz``); every other
configuration goes at random (seeded) to train / val / test = 80 / 10 / 10 %.

Every stage is resumable: per-molecule sample files and labelled chunks are written atomically
under ``OUT/work/``, and a rerun skips what is there.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from ase import Atoms

from mlff.defaults import DEFAULT_R_CUT

logger = logging.getLogger(__name__)

#: FreeSolv molecules used by the free-energy work: name -> ase.build.molecule name or asset file.
FREESOLV = {
    "methane": "CH4",
    "methanol": "CH3OH",
    "ethanol": "CH3CH2OH",
    "acetic_acid": "CH3COOH",
    "acetamide": "CH3CONH2",
    "benzene": "C6H6",
    "pyridine": "C5H5N",
    "acetone": "CH3COCH3",
    "toluene": "examples/toluene.xyz",
    "phenol": "examples/phenol.xyz",
}
ALANINE_DIPEPTIDE = "examples/alanine_dipeptide_conformers.xyz"

#: Held out of training entirely; each has close relatives in training (named in PROVENANCE.md).
HELDOUT_MOLECULES = ("CH3CH2OCH3", "C4H4NH", "CH3CH2NH2", "HCOOCH3", "isobutane", "CH3CHO")

ELEMENTS = ("H", "C", "N", "O")
ISOLATED_MULTIPLICITY = {"H": 2, "C": 3, "N": 4, "O": 3}


@dataclass(frozen=True)
class MoleculeSpec:
    """One molecule of the recipe and its sampling budget (frames per temperature)."""

    name: str
    source: str
    md_per_temperature: int
    nm_per_temperature: int


def g2_closed_shell_hcno() -> List[str]:
    """Names of G2 molecules with only H, C, N, O, more than one atom and zero magnetic moment."""
    from ase.build import molecule
    from ase.collections import g2

    names = []
    for name in g2.names:
        atoms = molecule(name)
        if (
            set(atoms.get_chemical_symbols()) <= set(ELEMENTS)
            and len(atoms) > 1
            and abs(atoms.get_initial_magnetic_moments().sum()) < 1e-8
        ):
            names.append(name)
    return names


def recipe(scale: float = 1.0) -> List[MoleculeSpec]:
    """The molecules and budgets. ``scale`` multiplies every budget (tests use a small scale)."""

    def n(x: int) -> int:
        return max(1, int(round(x * scale)))

    freesolv_g2 = set(FREESOLV.values())
    specs = [MoleculeSpec("alanine_dipeptide", ALANINE_DIPEPTIDE, n(300), n(50))]
    for name, source in FREESOLV.items():
        specs.append(MoleculeSpec(name, source, n(50), n(20)))
    for name in g2_closed_shell_hcno():
        if name not in freesolv_g2:
            specs.append(MoleculeSpec(name, name, n(25), n(10)))
    return specs


def _resolve(source: str, assets: Path) -> str:
    return str(assets / source) if source.startswith("examples/") else source


MD_TEMPERATURES = (300.0, 500.0, 750.0, 1000.0)
NM_TEMPERATURES = (300.0, 600.0, 1000.0)


def _sample_task(args: Tuple[MoleculeSpec, str, str, int]) -> Tuple[str, int, float]:
    os.environ["OMP_NUM_THREADS"] = "1"
    spec, assets, out_path, seed = args
    from mlff.atomic import atomic_write_extxyz
    from mlff.data.label import LabelSettings, make_calculator
    from mlff.data.sampling import INFO_MOLECULE, load_molecule, sample_molecule

    t0 = time.time()
    conformers = load_molecule(_resolve(spec.source, Path(assets)))
    settings = LabelSettings()
    frames: List[Atoms] = []
    per_conf = max(1, spec.md_per_temperature // len(conformers))
    for c, atoms in enumerate(conformers):
        atoms.info[INFO_MOLECULE] = spec.name
        frames += sample_molecule(
            atoms,
            lambda: make_calculator(settings),
            md_temperatures=MD_TEMPERATURES,
            md_frames_per_temperature=per_conf,
            nm_temperatures=NM_TEMPERATURES,
            nm_frames_per_temperature=spec.nm_per_temperature if c == 0 else 0,
            seed=seed * 100_000 + abs(hash_name(spec.name)) % 10_000 * 10 + c,
        )
    atomic_write_extxyz(Path(out_path), frames)
    return spec.name, len(frames), time.time() - t0


def hash_name(name: str) -> int:
    """A stable (process-independent) integer from a name, for seeds."""
    import zlib

    return zlib.crc32(name.encode())


def sample_all(
    specs: Sequence[MoleculeSpec], work: Path, assets: Path, seed: int, n_workers: int
) -> List[Path]:
    """Sample every molecule into ``work/samples/<name>.extxyz``; skip files already there."""
    import multiprocessing as mp

    from tqdm.auto import tqdm

    sample_dir = work / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    paths = [sample_dir / f"{s.name}.extxyz" for s in specs]
    todo = [(s, str(assets), str(p), seed) for s, p in zip(specs, paths) if not p.exists()]
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="sampling", unit="molecule")
    if todo:
        with mp.get_context("spawn").Pool(max(1, n_workers)) as pool:
            for name, count, seconds in pool.imap_unordered(_sample_task, todo):
                logger.info("sampled %s: %d frames in %.1f s", name, count, seconds)
                bar.update(1)
    bar.close()
    return paths


def isolated_atoms() -> List[Atoms]:
    """Single H, C, N, O atoms in their ground-state multiplicity, tagged IsolatedAtom."""
    frames = []
    for el in ELEMENTS:
        a = Atoms(el, positions=[[0.0, 0.0, 0.0]])
        a.info["config_type"] = "IsolatedAtom"
        a.info["molecule"] = el
        a.info["multiplicity"] = ISOLATED_MULTIPLICITY[el]
        frames.append(a)
    return frames


def split(
    frames: Sequence[Atoms], seed: int, fractions: Tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Dict[str, List[Atoms]]:
    """Held-out molecules to their own split; the rest random train/val/test by configuration.
    Isolated atoms always go to train."""
    rng = np.random.default_rng(seed)
    out: Dict[str, List[Atoms]] = {"train": [], "val": [], "test": [], "test_heldout_molecules": []}
    pool: List[Atoms] = []
    for f in frames:
        if f.info.get("config_type") == "IsolatedAtom":
            out["train"].append(f)
        elif f.info.get("molecule") in HELDOUT_MOLECULES:
            out["test_heldout_molecules"].append(f)
        else:
            pool.append(f)
    order = rng.permutation(len(pool))
    n_train = int(round(fractions[0] * len(pool)))
    n_val = int(round(fractions[1] * len(pool)))
    for rank, k in enumerate(order):
        name = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        out[name].append(pool[k])
    for name, fs in out.items():
        for f in fs:
            f.info["split"] = name
    return out


def build(
    out: str | os.PathLike,
    seed: int = 0,
    n_workers: int = 2,
    scale: float = 1.0,
    assets: str | os.PathLike | None = None,
) -> Dict[str, object]:
    """Build (or resume building) the dataset in ``out``. Returns the statistics dict."""
    import ase.io

    from mlff.assets_path import assets_dir
    from mlff.atomic import atomic_write_extxyz
    from mlff.data.label import LabelSettings, label_file
    from mlff.data.statistics import dataset_statistics

    t0 = time.time()
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    assets_p = Path(assets) if assets is not None else assets_dir()
    specs = recipe(scale)
    paths = sample_all(specs, work, assets_p, seed, n_workers)
    t_sample = time.time() - t0

    sampled = work / "sampled.extxyz"
    if not sampled.exists():
        frames: List[Atoms] = isolated_atoms()
        for p in paths:
            frames += ase.io.read(p, index=":")
        atomic_write_extxyz(sampled, frames)
    labelled = work / "labelled.extxyz"
    settings = LabelSettings()
    report = label_file(sampled, labelled, settings, n_workers=n_workers, chunk_size=128)
    t_label = time.time() - t0 - t_sample

    frames = ase.io.read(labelled, index=":")
    for f in frames:
        for key in ("label_input_sha256", "label_index"):
            f.info.pop(key, None)
    parts = split(frames, seed)
    for name, fs in parts.items():
        atomic_write_extxyz(out / f"{name}.extxyz", fs)

    stats = dataset_statistics(
        [f for fs in parts.values() for f in fs],
        energy_key=settings.energy_key,
        forces_key=settings.forces_key,
        r_cut=DEFAULT_R_CUT,
    )
    stats["splits"] = {name: len(fs) for name, fs in parts.items()}
    stats["molecules"] = {
        s.name: sum(1 for f in frames if f.info.get("molecule") == s.name) for s in specs
    }
    stats["heldout_molecules"] = list(HELDOUT_MOLECULES)
    stats["failed_frames"] = len(report.failed)
    stats["seconds"] = {
        "sampling": round(t_sample, 1),
        "labelling": round(t_label, 1),
        "total": round(time.time() - t0, 1),
    }
    stats["seed"] = seed
    stats["scale"] = scale
    stats["settings"] = {
        "method": settings.method,
        "md_temperatures_K": list(MD_TEMPERATURES),
        "normal_mode_temperatures_K": list(NM_TEMPERATURES),
        "md_timestep_fs": 0.5,
        "md_stride_steps": 40,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    return stats
