"""Import torchmd-net TensorNet checkpoints (Lightning ``.ckpt``) into mlff's TensorNet, exactly.

A torchmd-net checkpoint is a ``torch.save`` of a dict: ``hyper_parameters`` (the training
arguments) and ``state_dict`` (the weights, keys prefixed ``model.``), plus the trainer's
optimizer and loop state. It is read by the restricted unpickler of
:mod:`mlff.io_import.safe_pickle` (torchmd-net and Lightning are not imported, nothing from the
file runs), and its weights are mapped onto :class:`~mlff.models.tensornet.TensorNet`:

- ``nn.Linear`` (``x W^T + b``) -> :class:`~mlff.nn.linear.GroupedLinear` (``x W' / sqrt(in) +
  b``): ``W' = sqrt(in) W^T``; the three ``distance_proj`` layers of the embedding become one
  layer with their outputs side by side (I, A, S).
- the species-pair embedding: torchmd-net concatenates (receiver, sender) embeddings, mlff
  (sender, receiver): the halves of ``emb2``'s input swap; ``emb`` rows are picked by atomic
  number for the elements the model is imported for.
- torchmd-net's graph has self loops (each atom its own neighbour at r = 0):
  ``TensorNetConfig.self_loops``; its total-charge input ``q`` (``1 + 0.1 q`` on each layer's
  products): ``charge_input``; its exp-normal centres and widths as stored (trained, or rounded
  in float32): ``stored_rbf_widths``.
- checkpoints written before torchmd-net changed its tensor layout from [N, F, 3, 3] to
  [N, 3, 3, F] (they carry ``check_errors`` in their hyperparameters) have the outputs of the
  layers that make the per-part factors interleaved by channel: re-ordered as torchmd-net's own
  ``load_model`` does.
- energy: ``E = sum_i (std * y_i + atomref[Z_i]) + mean`` in the units the model was trained
  in; mlff's ``scale = u std`` and ``e0s = u atomref`` with ``u`` the energy unit in eV. A
  per-structure ``mean`` has no per-atom form and is refused (torchmd-net's ``standardize``).

Refused with a named error: other architectures, ``SO(3)``, a lower cutoff, the Gaussian basis,
activations other than SiLU and tanh, output models other than ``Scalar`` with sum reduction,
priors other than ``Atomref`` and ``derivative: false``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from mlff.atomic import file_sha256
from mlff.errors import ModelFileError
from mlff.io_import.safe_pickle import Pickled, UnsupportedModelError, load_pickled
from mlff.models.potential import Potential
from mlff.models.tensornet import TensorNet, TensorNetConfig
from mlff.units import HARTREE_TO_EV, KCAL_PER_MOL_TO_EV, KJ_PER_MOL_TO_EV

#: globals a Lightning checkpoint of torchmd-net may name besides tensors and plain containers
#: (recorded inertly: the hyperparameter namespace and the trainer's callback / scheduler state)
CHECKPOINT_ALLOWED: Tuple[str, ...] = ("argparse.Namespace",)

#: energy unit of the training data -> eV
ENERGY_UNITS: Dict[str, float] = {"eV": 1.0, "kcal/mol": KCAL_PER_MOL_TO_EV, "kJ/mol": KJ_PER_MOL_TO_EV,
                                  "hartree": HARTREE_TO_EV}

_REP = "representation_model."



def read_checkpoint(path: Union[str, os.PathLike]) -> Tuple[Dict[str, object], Dict[str, Tensor]]:
    """``(hyper_parameters, state_dict)`` of a torchmd-net checkpoint, the ``model.`` prefix and
    the output network's old key names (before torchmd-net PR 314) normalised."""
    root = load_pickled(path, allowed=CHECKPOINT_ALLOWED)
    if not isinstance(root, dict) or "state_dict" not in root or "hyper_parameters" not in root:
        keys = sorted(root) if isinstance(root, dict) else type(root).__name__
        raise ModelFileError(f"{path} is not a torchmd-net checkpoint (a dict with 'hyper_parameters' "
                             f"and 'state_dict'; found {keys}): pass the .ckpt that torchmd-train wrote")
    hparams = root["hyper_parameters"]
    if isinstance(hparams, Pickled):  # an argparse.Namespace
        hparams = dict(hparams.attrs)
    hparams = dict(hparams)
    state = {}
    for key, value in dict(root["state_dict"]).items():
        key = re.sub(r"^model\.", "", key)
        key = re.sub(r"output_model\.output_network\.([02])\.(weight|bias)",
                     r"output_model.output_network.layers.\1.\2", key)
        state[key] = value
    return hparams, state


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise UnsupportedModelError(message + " (mlff's TensorNet has no equivalent; nothing was written)")


def read_config(hparams: Mapping[str, object], state: Mapping[str, Tensor], elements: Sequence[int],
                dtype: str = "float64", energy_unit: str = "eV") -> TensorNetConfig:
    """The :class:`TensorNetConfig` of a torchmd-net TensorNet (``energy_unit``: the unit of the
    energies it was trained on; e0s and scale are converted to eV)."""
    model = hparams.get("model")
    _refuse(model != "tensornet", f"the checkpoint holds a torchmd-net {model!r} model; only 'tensornet' "
            "is imported (TensorNet2 and the transformers are other architectures)")
    group = hparams.get("equivariance_invariance_group", "O(3)")
    _refuse(group != "O(3)", f"equivariance_invariance_group {group!r}: only O(3) is imported")
    _refuse(float(hparams.get("cutoff_lower", 0.0)) != 0.0,
            f"cutoff_lower {hparams.get('cutoff_lower')} A: only 0 is imported")
    _refuse(hparams.get("rbf_type", "expnorm") != "expnorm", f"rbf_type {hparams.get('rbf_type')!r}: only "
            "'expnorm' is imported")
    act = hparams.get("activation", "silu")
    _refuse(act not in ("silu", "tanh"), f"activation {act!r}: only 'silu' and 'tanh' are imported")
    _refuse(hparams.get("output_model", "Scalar") != "Scalar",
            f"output_model {hparams.get('output_model')!r}: only 'Scalar' is imported")
    _refuse(hparams.get("reduce_op", "add") not in ("add", "sum"),
            f"reduce_op {hparams.get('reduce_op')!r}: only a sum over atoms is an energy")
    _refuse(not hparams.get("derivative", True), "derivative: false (the model was not trained for forces)")
    _refuse(int(hparams.get("output_mlp_num_layers", 0) or 0) != 0, "output_mlp_num_layers > 0")
    for name in _prior_names(hparams):
        _refuse(name != "Atomref", f"the prior {name!r}: only 'Atomref' is imported")
    mean = state.get("mean")
    if mean is not None and float(mean.abs().max()) != 0.0:
        raise UnsupportedModelError(
            f"the model adds a per-structure mean energy ({float(mean.flatten()[0]):g}; torchmd-net's "
            "'standardize: true'), which has no per-atom form in mlff; nothing was written")
    if energy_unit not in ENERGY_UNITS:
        raise ValueError(f"energy_unit must be one of {sorted(ENERGY_UNITS)}, got {energy_unit!r}")
    u = ENERGY_UNITS[energy_unit]
    max_z = state[_REP + "tensor_embedding.emb.weight"].shape[0]
    bad = [z for z in elements if not 0 < int(z) < max_z]
    if bad or not elements:
        raise ModelFileError(f"elements {list(elements)}: the model embeds atomic numbers 1..{max_z - 1}; "
                             "name the elements it was trained on (--elements H C N O)")
    atomref = _atomref(hparams, state)
    e0s = tuple(u * float(atomref[int(z)]) for z in elements) if atomref is not None else ()
    std = state.get("std")
    scale = u * (float(std.flatten()[0]) if std is not None else 1.0)
    return TensorNetConfig(
        elements=tuple(int(z) for z in elements), channels=int(hparams["embedding_dimension"]),
        num_layers=int(hparams["num_layers"]), num_rbf=int(hparams["num_rbf"]), radial_basis="expnorm",
        r_cut=float(hparams["cutoff_upper"]), activation=str(act), e0s=e0s, scale=scale, shift=0.0,
        dtype=dtype, self_loops=True, charge_input=True, stored_rbf_widths=True)


def _prior_names(hparams: Mapping[str, object]) -> Sequence[str]:
    prior = hparams.get("prior_model")
    if not prior:
        return []
    items = prior if isinstance(prior, (list, tuple)) else [prior]
    names = []
    for item in items:
        names.extend(item.keys() if isinstance(item, dict) else [item])
    return [str(n) for n in names]


def _atomref(hparams: Mapping[str, object], state: Mapping[str, Tensor]) -> Optional[Tensor]:
    """Atomref energies by atomic number ``[max_z]`` (training units), or None (no prior, or
    the prior disabled: torchmd-net's ``enable: false``)."""
    if "Atomref" not in _prior_names(hparams):
        return None
    args = hparams.get("prior_args")
    args = args[0] if isinstance(args, (list, tuple)) and args else args
    if isinstance(args, dict) and args.get("enable", True) is False:
        return None
    key = "prior_model.0.atomref.weight"
    if key not in state:
        raise ModelFileError(f"the checkpoint names an Atomref prior but has no {key!r}")
    return state[key].flatten().to(torch.float64)


def _dense(weight: Tensor) -> Tensor:
    """``nn.Linear`` weight ``[out, in]`` -> GroupedLinear weight ``[1, in, out]``."""
    return (weight.t() * math.sqrt(weight.shape[1])).unsqueeze(0)


def _row(vector: Tensor) -> Tensor:
    """A bias or layer-norm vector ``[F]`` -> ``[1, 1, F]``."""
    return vector.reshape(1, 1, -1)


def _part_major(weight: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor]:
    """Outputs interleaved by channel (``[F, 3]``, the old layout) -> by part (``[3, F]``)."""
    out, size_in = weight.shape
    w = weight.view(out // 3, 3, size_in).transpose(0, 1).reshape(out, size_in)
    return w, bias.view(out // 3, 3).transpose(0, 1).reshape(out)


def convert_state(hparams: Mapping[str, object], state: Mapping[str, Tensor],
                  config: TensorNetConfig) -> Dict[str, Tensor]:
    """torchmd-net weights -> the state dict of ``TensorNet(config)``."""
    state = dict(state)

    def get(key: str) -> Tensor:
        if key not in state:
            raise ModelFileError(f"the checkpoint has no weight {key!r}; is it a TensorNet with "
                                 f"{config.num_layers} layers?")
        return state[key].to(torch.float64)

    emb = _REP + "tensor_embedding."
    old_layout = "check_errors" in hparams  # torchmd-net's own test for the [N, F, 3, 3] era
    if old_layout:
        keys = [emb + "linears_scalar.1"] + [f"{_REP}layers.{k}.linears_scalar.2" for k in range(config.num_layers)]
        for key in keys:
            state[key + ".weight"], state[key + ".bias"] = _part_major(get(key + ".weight"), get(key + ".bias"))
    c = config.channels
    out: Dict[str, Tensor] = {
        "e0s": torch.tensor(config.e0s or [0.0] * len(config.elements), dtype=torch.float64),
        "radial_basis.centres": get(_REP + "distance_expansion.means"),
        "radial_basis.betas": get(_REP + "distance_expansion.betas"),
        "embedding.species.weight": get(emb + "emb.weight")[list(config.elements)],
    }
    pair = get(emb + "emb2.weight")  # [C, 2C] on (receiver, sender)
    out["embedding.pair.weight"] = _dense(torch.cat([pair[:, c:], pair[:, :c]], dim=1))
    out["embedding.pair.bias"] = _row(get(emb + "emb2.bias"))
    proj = [f"{emb}distance_proj{k}" for k in (1, 2, 3)]
    out["embedding.distance.weight"] = _dense(torch.cat([get(p + ".weight") for p in proj], dim=0))
    out["embedding.distance.bias"] = _row(torch.cat([get(p + ".bias") for p in proj]))
    out["embedding.norm.weight"] = _row(get(emb + "init_norm.weight"))
    out["embedding.norm.bias"] = _row(get(emb + "init_norm.bias"))
    for k in range(3):
        out[f"embedding.parts.linears.{k}.weight"] = _dense(get(f"{emb}linears_tensor.{k}.weight"))
    for k in range(2):
        out[f"embedding.gate.{k}.weight"] = _dense(get(f"{emb}linears_scalar.{k}.weight"))
        out[f"embedding.gate.{k}.bias"] = _row(get(f"{emb}linears_scalar.{k}.bias"))
    for layer in range(config.num_layers):
        src, dst = f"{_REP}layers.{layer}.", f"layers.{layer}."
        for k in range(3):
            out[f"{dst}radial.{k}.weight"] = _dense(get(f"{src}linears_scalar.{k}.weight"))
            out[f"{dst}radial.{k}.bias"] = _row(get(f"{src}linears_scalar.{k}.bias"))
            out[f"{dst}before.linears.{k}.weight"] = _dense(get(f"{src}linears_tensor.{k}.weight"))
            out[f"{dst}after.linears.{k}.weight"] = _dense(get(f"{src}linears_tensor.{k + 3}.weight"))
    out["out_norm.weight"] = _row(get(_REP + "out_norm.weight"))
    out["out_norm.bias"] = _row(get(_REP + "out_norm.bias"))
    out["out_linear.weight"] = _dense(get(_REP + "linear.weight"))
    out["out_linear.bias"] = _row(get(_REP + "linear.bias"))
    head = "output_model.output_network.layers."
    out["head_hidden.weight"] = _dense(get(head + "0.weight"))
    out["head_hidden.bias"] = _row(get(head + "0.bias"))
    out["head_out.weight"] = _dense(get(head + "2.weight"))
    out["head_out.bias"] = _row(get(head + "2.bias"))
    extra = sorted(k for k in state if k.startswith(_REP + "layers.")
                   and int(k.split(".")[2]) >= config.num_layers)
    if extra:
        raise ModelFileError(f"the checkpoint has weights of more layers than num_layers "
                             f"{config.num_layers}: {extra[:3]}")
    return out


def import_torchmd_net(path: Union[str, os.PathLike], elements: Sequence[int], dtype: str = "float64",
                       energy_unit: str = "eV") -> Tuple[Potential, Dict[str, object]]:
    """A torchmd-net TensorNet checkpoint -> (mlff :class:`Potential` in eval mode, metadata).

    ``elements``: the atomic numbers the model was trained on (a torchmd-net checkpoint embeds
    every atomic number up to ``max_z`` and does not list them); ``energy_unit``: the unit of
    the training energies (torchmd-net has none of its own), one of :data:`ENERGY_UNITS`.
    Positions are taken to be in A, as torchmd-net's datasets give them.

    Raises:
        UnsafePickleError: the file names a global outside the checkpoint's allow-list.
        UnsupportedModelError: an architecture or option mlff's TensorNet does not have.
    """
    hparams, state = read_checkpoint(path)
    config = read_config(hparams, state, elements, dtype, energy_unit)
    model = TensorNet(config)
    mapped = convert_state(hparams, state, config)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)
    metadata = {"imported_from": {
        "code": "torchmd-net", "file": Path(path).name, "sha256": file_sha256(path), "class": "TensorNet",
        "energy_unit": energy_unit, "max_num_neighbors": hparams.get("max_num_neighbors"),
        "old_tensor_layout": "check_errors" in hparams}}
    return Potential(model).eval(), metadata
