"""Fine-tuning a trained (or imported) model on new data without destroying what it knew.

The pieces :class:`mlff.train.trainer.Trainer` applies, in this order, when ``init_from`` is set:

1. :func:`extend_elements`: elements in the new data that the model lacks get new species rows
   (freshly initialised, seeded); every weight of the known species is kept;
2. :func:`refit_e0s`: the isolated-atom energies are shifted by least squares so that the
   model's mean energy error per element on the training data is zero (``finetune.e0s:
   refit``, needed when the new labels come from another level of theory; new elements always
   get theirs this way);
3. :func:`teacher_frames`: replay frames from the original model's domain, labelled by the model
   itself (before any gradient step), mixed into every epoch, so that fitting a small new set
   does not move the model where it was good;
4. :func:`freeze`: parameters whose names start with given prefixes stay fixed.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms

from mlff.models.potential import Potential
from mlff.models.registry import build_model, model_type_of
from mlff.nn.linear import IrrepsLinear

if TYPE_CHECKING:
    from mlff.data.dataset import DataKeys
    from mlff.train.config import FinetuneConfig


def _rebuild(potential: Potential, **changes: object) -> Potential:
    config = dataclasses.replace(potential.model.config, **changes)
    return Potential(build_model(model_type_of(potential.model), config.to_dict()),
                     std_scale=float(potential.std_scale))


def extend_elements(potential: Potential, new_elements: Sequence[int], seed: int = 0) -> Potential:
    """A copy of ``potential`` that also knows ``new_elements`` (appended in the given order, so
    the known species keep their indices). Known species keep every weight; the new species'
    rows come from a fresh seeded initialisation and their E0s are 0 until
    :func:`refit_e0s` sets them."""
    old = potential.model
    known = list(old.config.elements)
    added = [int(z) for z in new_elements if int(z) not in known]
    if not added:
        return potential
    n_old = len(known)
    torch.manual_seed(seed)
    e0s = list(old.config.e0s or [0.0] * n_old) + [0.0] * len(added)
    new = _rebuild(potential, elements=tuple(known + added), e0s=tuple(e0s))
    new_state = new.model.state_dict()
    old_state = old.state_dict()
    species_linears = {name for name, m in new.model.named_modules()
                       if isinstance(m, IrrepsLinear) and m.num_species > 0}
    modules = dict(new.model.named_modules())
    for key, value in old_state.items():
        target = new_state[key]
        owner = key.rsplit(".", 1)[0]
        if target.shape == value.shape:
            new_state[key] = value.clone()
        elif owner in species_linears:  # blocks [S, mul_in, mul_out] per path
            lin = modules[owner]
            out = target.clone()
            for k in range(len(lin.in_starts)):
                size = lin.in_muls[k] * lin.out_muls[k]
                new_start, old_start = lin.w_starts[k], _old_start(lin, k, n_old)
                out[:, new_start : new_start + n_old * size] = value[:, old_start : old_start + n_old * size]
            new_state[key] = out
        elif target.dim() >= 1 and target.shape[0] == n_old + len(added) and value.shape[0] == n_old:
            out = target.clone()  # species first: embedding, contraction weights, E0s
            out[:n_old] = value
            new_state[key] = out
        else:
            raise ValueError(f"cannot extend {key}: {tuple(value.shape)} -> {tuple(target.shape)}")
    new.model.load_state_dict(new_state, strict=True)
    return new


def _old_start(lin: IrrepsLinear, k: int, n_old: int) -> int:
    """Where block k of a species linear started in the model with ``n_old`` species."""
    return sum(n_old * lin.in_muls[j] * lin.out_muls[j] for j in range(k))


def _predict(potential: Potential, frames: Sequence[Atoms], forces: bool) -> List[Dict[str, object]]:
    """Energies (eV) and, with ``forces``, forces (eV/A) of ``potential`` on ``frames``."""
    from mlff.graph import atoms_to_graph

    out: List[Dict[str, object]] = []
    for atoms in frames:
        graph = atoms_to_graph(atoms, potential.r_cut, potential.elements, dtype=torch.float64)
        res = potential(graph, compute_forces=forces)
        out.append({"energy": float(res["energy"][0]),
                    "forces": res["forces"].detach().cpu().numpy() if forces else None})
    return out


def refit_e0s(potential: Potential, frames: Sequence[Atoms], energy_key: str,
              elements: Optional[Sequence[int]] = None) -> Tuple[Potential, Dict[int, float]]:
    """Shift the E0s of ``elements`` (default: all) so that the least-squares fit of the
    model's energy errors on ``frames`` by composition is zero; the network is unchanged.

    Returns the rebuilt potential and the shifts (eV per atom of each element).
    """
    config = potential.model.config
    known = list(config.elements)
    fit = [int(z) for z in (elements if elements is not None else known)]
    if not fit:
        return potential, {}
    was_training = potential.training
    potential.eval()
    predictions = _predict(potential, frames, forces=False)
    counts = np.array([[int(np.sum(a.numbers == z)) for z in fit] for a in frames], dtype=float)
    residual = np.array([float(a.info[energy_key]) - p["energy"] for a, p in zip(frames, predictions)])
    present = counts.sum(axis=0) > 0
    shifts = np.zeros(len(fit))
    if present.any():
        shifts[present] = np.linalg.lstsq(counts[:, present], residual, rcond=None)[0]
    e0s = list(config.e0s or [0.0] * len(known))
    for z, s in zip(fit, shifts):
        e0s[known.index(z)] += float(s)
    new = _rebuild(potential, e0s=tuple(e0s))
    state = potential.model.state_dict()
    state["e0s"] = torch.tensor(e0s, dtype=state["e0s"].dtype)
    new.model.load_state_dict(state, strict=True)
    new.to(next(potential.parameters()).device)
    if was_training:
        new.train()
    return new, {z: float(s) for z, s in zip(fit, shifts)}


def teacher_frames(potential: Potential, frames: Sequence[Atoms], energy_key: str,
                   forces_key: str) -> List[Atoms]:
    """Copies of ``frames`` (those with only known elements) labelled with ``potential``'s
    own energy (``info[energy_key]``, eV) and forces (``arrays[forces_key]``, eV/A)."""
    known = set(potential.elements)
    usable = [a for a in frames if set(int(z) for z in a.numbers) <= known]
    was_training = potential.training
    potential.eval()
    predictions = _predict(potential, usable, forces=True)
    if was_training:
        potential.train()
    out = []
    for atoms, pred in zip(usable, predictions):
        a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        a.info[energy_key] = pred["energy"]
        a.info["config_type"] = "replay"
        a.arrays[forces_key] = pred["forces"]
        out.append(a)
    return out


def freeze(potential: Potential, prefixes: Sequence[str]) -> int:
    """Fix every parameter whose name (in ``potential.model``) starts with one of ``prefixes``;
    returns how many parameters (numbers) were frozen.

    Raises:
        ValueError: a prefix matches no parameter (the message lists the top-level names).
    """
    names = dict(potential.model.named_parameters())
    frozen = 0
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            tops = sorted({n.split(".")[0] + ("." + n.split(".")[1] if n.split(".")[1].isdigit() else "")
                           for n in names if "." in n})
            raise ValueError(f"finetune.freeze: {prefix!r} matches no parameter; prefixes look like {tops}")
        for n in hits:
            if names[n].requires_grad:
                names[n].requires_grad_(False)
                frozen += names[n].numel()
    return frozen


def elements_with(model: Potential, data: str) -> List[int]:
    """``model``'s elements, then (sorted) those of the frames in ``data`` that it lacks."""
    from mlff.data.dataset import read_frames

    known = list(model.model.config.elements)
    found = {int(z) for a in read_frames(data) for z in a.numbers}
    return known + sorted(found - set(known))


def prepare_finetune(model: Potential, original_elements: Sequence[int], config: "FinetuneConfig",
                     train_frames: Sequence[Atoms], keys: "DataKeys", dtype: torch.dtype
                     ) -> Tuple[Potential, List[Dict[str, torch.Tensor]], Dict[str, object]]:
    """Steps 2-4 of the module docstring on an (already extended) ``model``: E0 refit on
    ``train_frames`` (all E0s, or only those of elements not in ``original_elements``), replay
    graphs labelled by the model, frozen parameters.

    Returns the model, the replay graphs (to append to the training graphs) and a report (E0
    shifts, added elements, replay count, frozen parameter count) for ``OUT/finetune.json``.
    """
    from mlff.data.dataset import labelled_graph, read_frames

    new_elements = [z for z in model.elements if z not in original_elements]
    model, shifts = refit_e0s(model, train_frames, keys.energy,
                              None if config.e0s == "refit" else new_elements)
    report: Dict[str, object] = {"added_elements": new_elements, "e0s": config.e0s,
                                 "e0_shifts_eV": {str(z): s for z, s in shifts.items()}}
    replay: List[Dict[str, torch.Tensor]] = []
    if config.replay:
        pool = read_frames(config.replay)
        rng = np.random.default_rng(config.seed)
        chosen = sorted(rng.choice(len(pool), min(config.replay_count, len(pool)), replace=False))
        labelled = teacher_frames(model, [pool[i] for i in chosen], keys.energy, keys.forces)
        replay = [labelled_graph(a, model.r_cut, keys, model.elements, dtype) for a in labelled]
        report["replay_frames"] = len(replay)
    if config.freeze:
        report["frozen_parameters"] = freeze(model, config.freeze)
    return model, replay, report
