"""Upgrades of older model files, one version at a time (:data:`MIGRATIONS`, used by
:func:`mlff.io.load_model`).

Version 1 -> 2
    Version 1 (mlff before ensembles, up to commit d27a446) held a single MACE built from e3nn's
    ``o3.Linear`` and ``FullyConnectedTensorProduct`` layers, ``nn.Linear`` radial MLPs and
    readouts with biases. Version 2 holds M members side by side in hand-written layers
    (:mod:`mlff.nn.linear`) and saves the recalibration factor ``std_scale``. The same function
    has another parameter layout, so the weights are rewritten (nothing is refitted):

    - equivariant linears: e3nn orders the weight blocks by (input, output) irrep, version 2 by
      (output, input); both normalise by 1/sqrt(fan-in), so the blocks are reordered;
    - species-dependent linears (skip connections, first-layer mixing): e3nn's tensor product
      with the species one-hot has blocks ``[mul_in, S, mul_out]`` normalised by
      1/sqrt(S mul_in), version 2 ``[S, mul_in, mul_out]`` by 1/sqrt(mul_in);
    - dense layers: ``nn.Linear`` computes ``x W^T + b``, version 2 ``x W / sqrt(in) + b``;
      the readout MLP's plain SiLU became :class:`~mlff.nn.radial.ScaledSiLU`, whose factor
      goes into the next layer;
    - the readouts' output biases (a constant energy per atom) become part of ``shift``.

    Version-1 files written before the first-layer species mixing (commit 1119b62, with a skip
    connection in the first layer) have no version-2 equivalent and are refused.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List

import torch
from torch import Tensor, nn

from mlff.errors import ModelFileError


def _e3nn_linear(lin: nn.Module, old: Tensor) -> Tensor:
    """A version-1 e3nn weight (flat) -> the weight ``[1, total]`` of the version-2
    :class:`~mlff.nn.linear.IrrepsLinear` ``lin`` (species-dependent when ``lin.num_species``)."""
    species = int(lin.num_species)
    new = torch.zeros(1, lin.weight.shape[1], dtype=old.dtype)
    offset = 0
    # e3nn's order: by input block, then output block (blocks start at increasing offsets)
    blocks: List[int] = sorted(range(len(lin.in_starts)),
                               key=lambda k: (lin.in_starts[k], lin.out_starts[k]))
    for k in blocks:
        mul_in, mul_out = lin.in_muls[k], lin.out_muls[k]
        size = max(1, species) * mul_in * mul_out
        block = old[offset : offset + size]
        offset += size
        if species > 0:  # [mul_in, S, mul_out]/sqrt(S mul_in) -> [S, mul_in, mul_out]/sqrt(mul_in)
            block = block.view(mul_in, species, mul_out).transpose(0, 1).reshape(-1)
            block = block / math.sqrt(species)
        new[0, lin.w_starts[k] : lin.w_starts[k] + size] = block
    if offset != old.numel():
        raise ModelFileError(f"a version-1 linear has {old.numel()} weights, expected {offset}")
    return new


def _dense(weight: Tensor, factor: float = 1.0) -> Tensor:
    """``nn.Linear`` weight ``[out, in]`` -> GroupedLinear weight ``[1, in, out]`` (times
    ``factor``)."""
    return (weight.t() * math.sqrt(weight.shape[1]) * factor).unsqueeze(0)


def _v1_to_v2(data: dict) -> dict:
    """Rewrite a version-1 file dict as version 2 (see the module docstring)."""
    from mlff.models.registry import build_model
    from mlff.nn.radial import ScaledSiLU

    old: Dict[str, Tensor] = dict(data["state_dict"])
    if data.get("model_type") != "mace":
        raise ModelFileError(
            f"version-1 model files hold MACE models, not {data.get('model_type')!r}")
    if any(k.startswith("products.") and ".skip." in k for k in old):
        raise ModelFileError(
            "this version-1 model file predates the first-layer species mixing (mlff before commit "
            "1119b62); its architecture has no version-2 equivalent: retrain it with `mlff train` "
            "(its hyperparameters are the file's 'config' entry)")
    config = dict(data["config"], ensemble_size=1)
    target = build_model("mace", config)
    modules = dict(target.named_modules())
    new: Dict[str, Tensor] = {}
    for key, value in target.state_dict().items():
        module_name, _, leaf = key.rpartition(".")
        kind = type(modules[module_name]).__name__
        if key.startswith("readouts."):
            continue  # below, with the readout biases
        if kind == "IrrepsLinear":
            new[key] = _e3nn_linear(modules[module_name], old[key].reshape(-1))
        elif kind == "GroupedLinear":  # radial MLP (interactions.t.radial.net.k), same names
            new[key] = _dense(old[key]) if leaf == "weight" else old[key].view(1, 1, -1)
        elif key.endswith("contraction.coupling") and old[key].shape != value.shape:
            new[key] = old[key].t().contiguous()  # stored transposed before commit 8e697b9
        else:
            new[key] = old[key]  # embedding, e0s, Bessel frequencies, e3nn products, contraction
    # readouts: inner layers nn.Linear(C, 1), the last one nn.Sequential(Linear, SiLU, Linear)
    n_layers = int(config.get("num_interactions", 2))
    silu_factor = ScaledSiLU().factor
    shift = float(config.get("shift", 0.0))
    scale = float(config.get("scale", 1.0))
    for t in range(n_layers):
        if t < n_layers - 1:
            new[f"readouts.{t}.weight"] = _dense(old[f"readouts.{t}.weight"])
            shift += scale * float(old[f"readouts.{t}.bias"][0])
        else:
            new[f"readouts.{t}.net.0.weight"] = _dense(old[f"readouts.{t}.0.weight"])
            new[f"readouts.{t}.net.0.bias"] = old[f"readouts.{t}.0.bias"].view(1, 1, -1)
            new[f"readouts.{t}.net.2.weight"] = _dense(old[f"readouts.{t}.2.weight"],
                                                       1.0 / silu_factor)
            shift += scale * float(old[f"readouts.{t}.2.bias"][0])
    missing = sorted(set(target.state_dict()) - set(new))
    if missing:
        raise ModelFileError(f"version-1 model file: no source for {missing[:5]}")
    config["shift"] = shift
    out = dict(data, version=2, config=config, state_dict=new)
    out.setdefault("std_scale", 1.0)
    return out


#: version -> function upgrading a file dict of that version to version + 1.
MIGRATIONS: Dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}
