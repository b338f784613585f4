"""Deep ensembles: M independent members held by one model and evaluated together.

An ensemble is an ordinary model whose config has ``ensemble_size`` M > 1 (see
:class:`mlff.models.mace.MACE`): every layer keeps the members' weights side by side and the
:class:`~mlff.models.potential.Potential` returns member means and standard deviations. This
module converts between an ensemble and its members:

- :func:`extract_member` gives member k as a single model (for example for the fastest MD);
- :func:`stack_members` builds an ensemble from separately trained single models of the same
  architecture (their E0s, scale and shift must agree).

Where each parameter keeps its members: ``IrrepsLinear``/``GroupedLinear``/``GroupedLayerNorm``
weights and biases on
axis 0; the species embedding ``[S, M*C]`` and the symmetric contraction weights ``[S, K, M*C]``
as M consecutive blocks of C channels.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from mlff.models.potential import Potential
from mlff.models.registry import MODELS, model_type_of
from mlff.nn.linear import GroupedLayerNorm, GroupedLinear, IrrepsLinear
from mlff.nn.symmetric_contraction import SymmetricContraction


def _member_layout(model: nn.Module) -> Dict[str, Tuple[int, bool]]:
    """Parameter name -> (member axis, stored as M blocks of channels on that axis)."""
    layout: Dict[str, Tuple[int, bool]] = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, (IrrepsLinear, GroupedLinear, GroupedLayerNorm)):
            for name, _ in module.named_parameters(recurse=False):
                layout[dot + name] = (0, False)
        elif isinstance(module, nn.Embedding):
            layout[dot + "weight"] = (1, True)
        elif isinstance(module, SymmetricContraction):
            layout[dot + "weights"] = (2, True)
    missing = [n for n, _ in model.named_parameters() if n not in layout]
    if missing:
        raise NotImplementedError(f"no member layout known for parameters {missing}")
    return layout


def _with_members(model: nn.Module, members: int) -> nn.Module:
    config = dataclasses.replace(model.config, ensemble_size=members)
    return MODELS[model_type_of(model)][1](config)


def _take(t: Tensor, axis: int, blocked: bool, members: int, k: int) -> Tensor:
    if not blocked:
        return t.select(axis, k).unsqueeze(axis)
    size = t.shape[axis] // members
    return t.narrow(axis, k * size, size)


def extract_member(potential: Potential, k: int) -> Potential:
    """Member ``k`` of an ensemble as a single-model :class:`Potential` (same device/dtype)."""
    model = potential.model
    m = potential.num_members
    if not 0 <= k < m:
        raise IndexError(f"member {k} out of range: the ensemble has {m} members")
    layout = _member_layout(model)
    single = _with_members(model, 1)
    state = {}
    for name, value in model.state_dict().items():
        if name in layout:
            axis, blocked = layout[name]
            value = _take(value, axis, blocked, m, k)
        state[name] = value.clone()
    single.load_state_dict(state, strict=True)
    out = Potential(single).to(next(model.parameters()).device)
    out.train(potential.training)
    return out


def stack_members(potentials: Sequence[Potential]) -> Potential:
    """An ensemble whose members are the given single models (same architecture and config)."""
    if len(potentials) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(potentials)}")
    models = [p.model for p in potentials]
    first = models[0].config
    for p, model in zip(potentials, models):
        if p.num_members != 1:
            raise ValueError("stack_members takes single models; extract ensemble members first")
        if model.config != first:
            diff = [f.name for f in dataclasses.fields(first)
                    if getattr(first, f.name) != getattr(model.config, f.name)]
            raise ValueError(f"members must share one config; they differ in {diff}")
    ensemble = _with_members(models[0], len(models))
    layout = _member_layout(ensemble)
    states: List[Dict[str, Tensor]] = [m.state_dict() for m in models]
    stacked = {}
    for name, value in states[0].items():
        if name in layout:
            axis, _ = layout[name]
            stacked[name] = torch.cat([s[name] for s in states], dim=axis)
        else:
            stacked[name] = value.clone()
    ensemble.load_state_dict(stacked, strict=True)
    return Potential(ensemble).to(next(models[0].parameters()).device)
