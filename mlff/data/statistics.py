"""Dataset statistics used to initialise models and to describe data.

- E0s: isolated-atom energies per element (eV), from isolated-atom frames when present
  (``config_type == "IsolatedAtom"`` or one-atom frames), else by least squares of total energy
  against composition;
- average number of neighbours within the model cutoff (normalises message sums);
- force RMS (eV/A; a natural energy scale for the readout) and the mean interaction energy per
  atom after E0 subtraction (a natural shift).
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from mlff.data.dataset import get_energy, get_forces
from mlff.defaults import DEFAULT_R_CUT


def is_isolated_atom(atoms: Atoms) -> bool:
    return atoms.info.get("config_type") == "IsolatedAtom" or len(atoms) == 1


def compute_e0s(
    frames: Sequence[Atoms],
    energy_key: str,
    elements: Optional[Sequence[int]] = None,
    use_isolated: bool = True,
) -> Dict[int, float]:
    """Per-element reference energies E0 (eV), keyed by atomic number.

    Isolated-atom frames give E0 directly (``use_isolated``); elements without one (all of them
    when ``use_isolated`` is False) get least-squares values fitted to the other frames' total
    energies (E ~ sum_Z n_Z E0_Z), which leaves the model only the composition-free remainder.
    """
    zs = sorted({int(z) for f in frames for z in f.numbers}) if elements is None else list(elements)
    e0: Dict[int, float] = {}
    for f in frames:
        if use_isolated and is_isolated_atom(f):
            e = get_energy(f, energy_key)
            if e is not None:
                e0[int(f.numbers[0])] = e
    missing = [z for z in zs if z not in e0]
    if missing:
        rows, targets = [], []
        for f in frames:
            e = get_energy(f, energy_key)
            if e is None or is_isolated_atom(f):
                continue
            counts = Counter(int(z) for z in f.numbers)
            rows.append([counts.get(z, 0) for z in missing])
            targets.append(e - sum(e0.get(z, 0.0) * c for z, c in counts.items() if z in e0))
        if not rows:
            raise ValueError(
                f"cannot compute E0s: no frames with key {energy_key!r} contain "
                f"{[chemical_symbols[z] for z in missing]}"
            )
        matrix = np.array(rows, float)
        if np.linalg.matrix_rank(matrix) < len(missing):
            raise ValueError(
                f"cannot compute E0s for {[chemical_symbols[z] for z in missing]} by least "
                "squares: the compositions in the data do not determine them (for example every "
                "frame is the same molecule); add isolated-atom frames (config_type=IsolatedAtom) "
                "or give E0s explicitly"
            )
        sol, *_ = np.linalg.lstsq(matrix, np.array(targets), rcond=None)
        for z, v in zip(missing, sol):
            e0[z] = float(v)
    return {z: e0[z] for z in zs}


def interaction_energies_per_atom(
    frames: Sequence[Atoms], energy_key: str, e0s: Dict[int, float]
) -> List[float]:
    """``(E - sum_i E0[Z_i]) / N`` (eV/atom) for every frame of ``frames`` with an energy."""
    out: List[float] = []
    for f in frames:
        e = get_energy(f, energy_key)
        if e is not None:
            out.append((e - sum(e0s[int(z)] for z in f.numbers)) / len(f))
    return out


def force_components_squared(frames: Sequence[Atoms], forces_key: str) -> np.ndarray:
    """Squares of every force component (eV^2/A^2) of ``frames`` that carry forces."""
    parts = [(fr**2).reshape(-1) for fr in (get_forces(f, forces_key) for f in frames)
             if fr is not None]
    return np.concatenate(parts) if parts else np.zeros(1)


def average_num_neighbors(frames: Sequence[Atoms], r_cut: float) -> float:
    """Mean number of neighbours within ``r_cut`` (A) per atom, over all atoms of ``frames``."""
    import torch

    from mlff.neighbors import vesin_neighbor_list

    n_edges = 0
    n_atoms = 0
    for f in frames:
        ei, _ = vesin_neighbor_list(
            torch.from_numpy(np.asarray(f.positions, dtype=np.float64)),
            r_cut,
            torch.from_numpy(np.asarray(f.cell.array, dtype=np.float64)),
            torch.from_numpy(np.asarray(f.pbc)),
        )
        n_edges += ei.shape[1]
        n_atoms += len(f)
    return n_edges / max(n_atoms, 1)


def dataset_statistics(
    frames: Sequence[Atoms],
    energy_key: str = "energy",
    forces_key: str = "forces",
    r_cut: float = DEFAULT_R_CUT,
) -> Dict[str, object]:
    """Summary of a labelled dataset (JSON-serialisable).

    Returns keys: n_configs, n_atoms_total, n_atoms (min/mean/max), elements (symbol -> atom
    count), e0s_eV (symbol -> E0; empty with the reason in e0_note when the data do not
    determine them), e0_source, interaction_energy_per_atom_eV (mean/std after E0
    subtraction, molecules only), force_rms_eV_per_A, force_max_eV_per_A, avg_num_neighbors and
    avg_num_neighbors_cutoff_A (``r_cut``, the cutoff it was computed at), config sources
    (sample_method x temperature counts).
    """
    frames = list(frames)
    sizes = np.array([len(f) for f in frames])
    element_counts = Counter(chemical_symbols[int(z)] for f in frames for z in f.numbers)
    has_isolated = {int(f.numbers[0]) for f in frames if is_isolated_atom(f)}
    try:
        e0 = compute_e0s(frames, energy_key)
        e0_note = None
    except ValueError as exc:
        e0, e0_note = {}, str(exc)
    molecules = [f for f in frames if not is_isolated_atom(f)]
    per_atom = interaction_energies_per_atom(molecules, energy_key, e0) if e0 else []
    all_f2 = force_components_squared(molecules, forces_key)
    sources = Counter(
        f"{f.info.get('sample_method', f.info.get('config_type', 'unknown'))}"
        + (f"@{f.info['temperature_K']:.0f}K" if "temperature_K" in f.info else "")
        for f in frames
    )
    return {
        "n_configs": len(frames),
        "n_atoms_total": int(sizes.sum()),
        "n_atoms": {"min": int(sizes.min()), "mean": float(sizes.mean()), "max": int(sizes.max())},
        "elements": dict(sorted(element_counts.items(), key=lambda kv: atomic_numbers[kv[0]])),
        "e0s_eV": {chemical_symbols[z]: v for z, v in e0.items()},
        "e0_source": {
            chemical_symbols[z]: ("isolated atom" if z in has_isolated else "least squares")
            for z in e0
        },
        "e0_note": e0_note,
        "interaction_energy_per_atom_eV": {
            "mean": float(np.mean(per_atom)) if per_atom else None,
            "std": float(np.std(per_atom)) if per_atom else None,
        },
        "force_rms_eV_per_A": float(np.sqrt(all_f2.mean())),
        "force_max_eV_per_A": float(np.sqrt(all_f2.max())),
        "avg_num_neighbors": average_num_neighbors(molecules, r_cut),
        "avg_num_neighbors_cutoff_A": r_cut,
        "sources": dict(sorted(sources.items())),
    }
