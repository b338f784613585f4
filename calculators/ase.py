"""The ASE calculator: :class:`MLFFCalculator`.

Results (ASE units: eV, Angstrom):

==================  ===========  ==========================================================
key                 shape        meaning
==================  ===========  ==========================================================
``energy``          scalar       total energy, eV (``free_energy``: the same value)
``energies``        [N]          per-atom energies, eV (they sum to ``energy``)
``forces``          [N, 3]       eV/A
``stress``          [6]          Voigt (xx, yy, zz, yz, xz, xy), eV/A^3, ASE sign; only for
                                 fully periodic structures
``energy_std``      scalar       ensembles: standard deviation of the members' energies, eV
``forces_std``      [N, 3]       ensembles: per-component std of the members' forces, eV/A
``stress_std``      [6]          ensembles, periodic: per-component std of the stresses, Voigt
==================  ===========  ==========================================================

Standard deviations are over the ensemble members (population std), multiplied by the model's
recalibration factor ``std_scale`` (1 for an uncalibrated model). A single model has no
``*_std`` results.

Every property comes from one model call: asking for the energy, then the forces, then the
stress evaluates the model once (ASE caches the results until the atoms change).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from mlff.io import ModelLike, resolve_model
from mlff.graph import atoms_to_graph
from mlff.models.potential import require_supported
from mlff import graph as G
from mlff.graph import InputError, check_min_distance

#: Two atoms closer than this (A) are an input error.
MIN_DISTANCE = 0.1


def _voigt(t: np.ndarray) -> np.ndarray:
    """[3, 3] -> Voigt [6] (xx, yy, zz, yz, xz, xy)."""
    return np.array([t[0, 0], t[1, 1], t[2, 2], t[1, 2], t[0, 2], t[0, 1]])


class MLFFCalculator(Calculator):
    """ASE calculator for mlff models (single models and ensembles).

    Args:
        model: a model file path, ``"default"`` (the shipped default model) or a
            :class:`~mlff.models.potential.Potential`.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``None`` keeps the model's dtype; ``"float32"`` or ``"float64"`` converts it.
        min_distance: closest allowed interatomic distance (A); closer is an error.
        memory_gb: peak-memory budget of a call (GB); ``None``: ``MLFF_MEMORY_GB``, else half of
            the machine's memory; 0: none. Large structures are then evaluated in chunks of edges
            and atoms recomputed in the backward pass (same results, bounded memory:
            :mod:`mlff.nn.edge_chunks`). Set on the potential, which a given Potential shares.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.

    Raises (on calculation), each as :class:`mlff.graph.InputError` with the fix in the message:
    a structure without atoms, an element the model does not know, NaN/inf positions, two atoms
    closer than ``min_distance``, a periodic structure without a cell, a degenerate cell.
    """

    implemented_properties = [
        "energy", "free_energy", "energies", "forces", "stress",
        "energy_std", "forces_std", "stress_std", "charges", "dipole",
    ]
    #: ``atoms.info`` entries the calculator reads; a change to any of them invalidates the
    #: cached results (see :meth:`check_state`). ``charge`` (total, e) and ``spin``
    #: (multiplicity) are checked against the charges and spins the model supports
    #: (its file states them; a mismatch is an InputError, never a silent result).
    info_keys: Tuple[str, ...] = ("charge", "spin")

    def __init__(
        self,
        model: ModelLike = "default",
        device: str = "cpu",
        dtype: Union[None, str, torch.dtype] = None,
        min_distance: float = MIN_DISTANCE,
        memory_gb: Optional[float] = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.potential = resolve_model(model, device, dtype)
        if memory_gb is not None:
            self.potential.set_memory_budget(memory_gb)
        self.device = torch.device(device)
        self.min_distance = float(min_distance)
        self.elements = list(self.potential.elements)
        self._info: Dict[str, object] = {}

    @property
    def is_ensemble(self) -> bool:
        return int(self.potential.num_members) > 1

    # --- ASE contract -----------------------------------------------------------------------

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> List[str]:
        """ASE's changes (positions, numbers, cell, pbc, ...) plus ``"info"`` when an
        ``atoms.info`` entry listed in :attr:`info_keys` differs from the last calculation."""
        changes = list(super().check_state(atoms, tol))
        if self.info_keys and "info" not in changes:
            current = {k: atoms.info.get(k) for k in self.info_keys}
            if self.atoms is None or current != self._info:
                changes.append("info")
        return changes

    def calculate(
        self,
        atoms: Optional[Atoms] = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        """Fill every result in one model call (stress only for fully periodic atoms)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._info = {k: atoms.info.get(k) for k in self.info_keys}
        periodic = bool(np.all(atoms.pbc))
        graph = self._graph(atoms)
        out = self.potential(graph, compute_forces=True, compute_stress=periodic)
        self.results = self._results(out, periodic, 0, slice(None))

    # --- helpers ----------------------------------------------------------------------------

    def _graph(self, atoms: Atoms) -> Dict[str, torch.Tensor]:
        """Validated graph of ``atoms`` on the model's device (float64 positions); its total
        charge and spin (``atoms.info``) must be ones the model supports."""
        require_supported(self.potential, atoms.info.get("charge", 0), atoms.info.get("spin", 1),
                          where=f"{atoms.get_chemical_formula()} (atoms.info)")
        graph = atoms_to_graph(atoms, self.potential.r_cut, self.elements, torch.float64)
        check_min_distance(graph, self.min_distance)
        return {k: v.to(self.device) for k, v in graph.items()}

    def _results(
        self, out: Dict[str, torch.Tensor], periodic: bool, g: int, atoms: slice
    ) -> Dict[str, object]:
        """ASE results of graph ``g`` (atoms ``atoms``) from a Potential output dict."""

        def np_(key: str) -> np.ndarray:
            return out[key].detach().cpu().to(torch.float64).numpy()

        energy = float(np_("energy")[g])
        res: Dict[str, object] = {
            "energy": energy,
            "free_energy": energy,
            "energies": np_("energies")[atoms],
            "forces": np_("forces")[atoms],
        }
        if periodic:
            res["stress"] = _voigt(np_("stress")[g])
        if "charges" in out:  # models with learned charges (long_range charges or both)
            res["charges"] = np_("charges")[atoms]
            res["dipole"] = np_("dipole")[g]
        if "energy_std" in out:
            res["energy_std"] = float(np_("energy_std")[g])
            res["forces_std"] = np_("forces_std")[atoms]
            if periodic and "stress_std" in out:
                res["stress_std"] = _voigt(np_("stress_std")[g])
        return res

    def evaluate_many(
        self, structures: Sequence[Atoms], batch_size: int = 32
    ) -> List[Dict[str, object]]:
        """Evaluate many structures in batches of ``batch_size`` graphs per model call
        (screening). The calculator's cache is left untouched.

        Returns:
            One dict per structure with the keys of :meth:`calculate` (``stress`` and
            ``stress_std`` only for fully periodic structures).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: List[Dict[str, object]] = []
        for start in range(0, len(structures), batch_size):
            chunk = list(structures[start : start + batch_size])
            graphs = []
            for k, atoms in enumerate(chunk):
                try:
                    graphs.append(self._graph(atoms))
                except InputError as exc:
                    raise InputError(f"structure {start + k}: {exc}") from None
            periodic = [bool(np.all(a.pbc)) for a in chunk]
            batch = G.collate(graphs)
            out = self.potential(batch, compute_forces=True, compute_stress=any(periodic))
            ptr = batch[G.PTR].tolist()
            for k in range(len(chunk)):
                results.append(self._results(out, periodic[k], k, slice(ptr[k], ptr[k + 1])))
        return results
