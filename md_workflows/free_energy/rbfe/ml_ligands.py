"""ML ligands in an ATM leg (mechanical embedding, as QuantumBind-RBFE): each ligand's
intramolecular energy from an mlff model, its interactions with everything else from MM.

:func:`use_ml_ligands` takes each ligand's intramolecular MM terms out of the System (bonded
terms and intramolecular nonbonded pairs, one ligand at a time so that the pairs between the
two ligands stay MM) and returns the recipe that adds one ML force per ligand in every
sampling process (a System holding a TorchForce cannot be read back from XML with the
openmm-torch 1.5 wheels). Call it before :func:`.atm_system.add_atm_force`: the ML forces
stay outside the ATMForce, because a rigid displacement of a whole ligand does not change
its intramolecular energy.
"""
from __future__ import annotations

from typing import Sequence

from ..ml_interpolation import fixed_ml_spec, split_solute_intramolecular


def use_ml_ligands(system, ligands: Sequence[Sequence[int]], numbers: Sequence[Sequence[int]], model: str = "default",
                   route: str = "torch", device: str = "cpu", dtype: str | None = None) -> dict:
    """Remove the ligands' intramolecular MM energy from ``system`` (in place) and return the
    ML recipe for :func:`.leg.prepare_atm_leg` (``ml=``). ``ligands``: atom indices per
    ligand; ``numbers``: their atomic numbers; ``model``: ``"default"`` or a model file."""
    if len(ligands) != len(numbers) or any(len(a) != len(z) for a, z in zip(ligands, numbers)):
        raise ValueError("use_ml_ligands: one atomic number per ligand atom")
    for atoms in ligands:
        split_solute_intramolecular(system, atoms)  # the returned MM terms are dropped: ML replaces them
    return fixed_ml_spec(model, ligands, numbers, route, device, dtype)
