"""Import a mace-torch model file (a pickled ``ScaleShiftMACE`` or ``MACE``) as an mlff MACE.

The file is read as inert data (:mod:`mlff.io_import.safe_pickle`; nothing from it runs and
mace-torch is not imported), its hyperparameters become a :class:`~mlff.models.mace.MACEConfig`
and its weights are rewritten into mlff's layout. Nothing is refitted; every map is exact:

- equivariant linears (``o3.Linear``): e3nn's path weight (1/sqrt(fan-in)) is folded in and the
  rows are matched channel by channel. mace-torch sorts the irreps of the convolution's output
  (and merges equal ones) before its linear, mlff keeps the tensor product's instruction order;
  rows are matched by the instruction (input irrep, harmonic, output irrep) they come from;
- species-dependent tensor products with the one-hot (skip connections, first-layer mixing):
  ``[mul_in, S, mul_out]`` blocks normalised by 1/sqrt(S mul_in) -> mlff's ``[S, mul_in,
  mul_out]`` normalised by 1/sqrt(mul_in);
- the radial MLP (e3nn ``FullyConnectedNet``, no biases): the same normalisation; the columns
  of its last layer follow the convolution's instructions, so they are permuted by instruction;
  the activation's normalisation constant is checked against mlff's (any difference goes into
  the next layer);
- the symmetric contraction: mace-torch's generalised Clebsch-Gordan tensors ``U`` keep
  redundant (linearly dependent, and non-symmetric) coupling paths. Contracted with the
  symmetric power ``A x ... x A`` only the symmetric part of ``sum_k w_k U_k`` counts, which lies
  in the span of mlff's orthonormal symmetric basis ``B``: the weights become ``B . U w``
  exactly, and the residual ``|Sym(U) - B B^T Sym(U)|`` is checked to be round-off.

Supported: ``ScaleShiftMACE`` and ``MACE``; a first interaction with or without residual
(``RealAgnosticInteractionBlock`` or ``RealAgnosticResidualInteractionBlock``, see
``MACEConfig.residual_first``) followed by residual ones; hidden irreps ``C x 0e (+ C x 1o (+ C x 2e))``;
Bessel radial basis with the polynomial envelope; the 2022 file format (``r_max`` a float,
``atomic_numbers`` a list) and the current one. Anything else is refused with an error that
names it (ZBL pair repulsion, multi-head files, other blocks, distance transforms).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor

from mlff.atomic import file_sha256
from mlff.errors import ModelFileError
from mlff.io_import.e3nn_weights import (
    Irreps, Label, UnsupportedModelError, check_silu, contraction_weights, fill_irreps_linear, grouped_mlp, labels,
    linear_rows, mlp_layers, species_rows)
from mlff.io_import.safe_pickle import Pickled, attr, instructions, load_pickled, scalar
from mlff.models.mace import MACE, MACEConfig
from mlff.models.potential import Potential


MODEL_CLASSES = ("ScaleShiftMACE", "MACE")
FIRST_INTERACTION = "RealAgnosticInteractionBlock"
LATER_INTERACTION = "RealAgnosticResidualInteractionBlock"


# ------------------------------------------------------------------------------------------
# reading the pickled records
# ------------------------------------------------------------------------------------------


def irreps_of(value: object) -> Irreps:
    """A pickled ``e3nn.o3.Irreps`` (or its string) -> ``[(mul, l, parity)]``."""
    if isinstance(value, str):
        from e3nn import o3

        return [(mul, ir.l, ir.p) for mul, ir in o3.Irreps(value)]
    if not (isinstance(value, Pickled) and value.name == "Irreps"):
        raise ModelFileError(f"expected e3nn Irreps, got {value!r:.200}")
    out: Irreps = []
    for mulir in value.args[0]:
        mul, ir = mulir.args[0] if isinstance(mulir, Pickled) else mulir
        l, p = ir.args[0] if isinstance(ir, Pickled) else ir
        out.append((int(mul), int(l), int(p)))
    return out


def _require(node: Pickled, names: Sequence[str], what: str) -> None:
    if node.name not in names:
        raise UnsupportedModelError(
            f"{what} is a {node.qualname}; mlff imports {' or '.join(names)} here. Re-train with "
            "those blocks, or open an issue naming this block")


# ------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------


def read_config(root: Pickled, dtype: str = "float64") -> MACEConfig:
    """mlff's MACEConfig for a pickled mace-torch model (refuses unsupported parts)."""
    _require(root, MODEL_CLASSES, "the model")
    for flag in ("pair_repulsion", "use_pair_repulsion"):
        if attr(root, flag, False) is True or "pair_repulsion_fn" in root.children:
            raise UnsupportedModelError("the model has ZBL pair repulsion (pair_repulsion=True), "
                                        "which mlff's MACE import does not support yet")
    heads = attr(root, "heads", None)
    if heads is not None and len(heads) > 1:
        raise UnsupportedModelError(f"multi-head model (heads {list(heads)}); mlff imports single-head files")
    numbers = attr(root, "atomic_numbers")
    elements = tuple(int(z) for z in (numbers.tolist() if isinstance(numbers, Tensor) else numbers))
    radial = root.child("radial_embedding")
    if radial.children.get("distance_transform") is not None or attr(radial, "distance_transform") not in (None, "None"):
        raise UnsupportedModelError("the radial embedding has a distance transform (Agnesi/Soft)")
    _require(radial.child("bessel_fn"), ("BesselBasis",), "the radial basis")
    _require(radial.child("cutoff_fn"), ("PolynomialCutoff",), "the radial cutoff")
    r_max = scalar(attr(root, "r_max", None) if attr(root, "r_max", None) is not None
                    else radial.child("cutoff_fn").tensor("r_max"))
    for flag in ("use_agnostic_product", "use_so3", "use_last_readout_only", "use_embedding_readout",
                 "use_edge_irreps_first", "keep_last_layer_irreps"):
        if attr(root, flag, False):
            raise UnsupportedModelError(f"the model was built with {flag}=True")
    if attr(root, "edge_irreps", None) is not None:
        raise UnsupportedModelError("the model has edge_irreps (reduced edge features)")
    if attr(root, "apply_cutoff", True) is not True:
        raise UnsupportedModelError("the model was built with apply_cutoff=False")
    interactions = list(root.child("interactions").children.values())
    for t, block in enumerate(interactions):
        _require(block, (FIRST_INTERACTION, LATER_INTERACTION) if t == 0 else (LATER_INTERACTION,),
                 f"interaction {t}")
    hidden = irreps_of(interactions[0].attrs["hidden_irreps"])
    channels = hidden[0][0]
    if any(mul != channels for mul, _, _ in hidden) or [(l, p) for _, l, p in hidden] != [
            (l, (-1) ** l) for l in range(len(hidden))]:
        raise UnsupportedModelError(f"hidden irreps {hidden}: mlff needs C x 0e + C x 1o + C x 2e ... "
                                    "with equal multiplicities")
    sh = irreps_of(root.child("spherical_harmonics").attrs["irreps_out"])
    avg = {round(scalar(b.attrs["avg_num_neighbors"]), 12) for b in interactions}
    if len(avg) != 1:
        raise UnsupportedModelError(f"different avg_num_neighbors per interaction {sorted(avg)}")
    correlations = set()
    for prod in root.child("products").children.values():
        for c in prod.child("symmetric_contractions").child("contractions").children.values():
            correlations.add(int(c.attrs["correlation"]))
    if len(correlations) != 1:
        raise UnsupportedModelError(f"different correlation orders per layer {sorted(correlations)}")
    hs = interactions[0].child("conv_tp_weights").attrs["hs"]
    readouts = list(root.child("readouts").children.values())
    last = readouts[-1]
    _require(last, ("NonLinearReadoutBlock",), "the last readout")
    for r in readouts[:-1]:
        _require(r, ("LinearReadoutBlock",), "an inner readout")
    readout_hidden = irreps_of(last.child("linear_1").attrs["irreps_out"])[0][0]
    e0s = root.child("atomic_energies_fn").tensor("atomic_energies").to(torch.float64).reshape(-1)
    scale, shift = 1.0, 0.0
    if root.name == "ScaleShiftMACE":
        ss = root.child("scale_shift")
        scale, shift = scalar(ss.tensor("scale")), scalar(ss.tensor("shift"))
    return MACEConfig(
        elements=elements, channels=channels, max_L=len(hidden) - 1, max_ell=sh[-1][1],
        correlation=correlations.pop(), r_cut=r_max, num_interactions=len(interactions),
        num_bessel=int(radial.child("bessel_fn").tensor("bessel_weights").numel()),
        cutoff_p=int(round(scalar(radial.child("cutoff_fn").tensor("p")))),
        radial_mlp=tuple(int(h) for h in hs[1:-1]), readout_mlp=int(readout_hidden),
        avg_num_neighbors=avg.pop(), e0s=tuple(e0s.tolist()), scale=scale, shift=shift, dtype=dtype,
        residual_first=interactions[0].name == LATER_INTERACTION)


def convert_state(root: Pickled, model: MACE) -> Tuple[Dict[str, Tensor], Dict[str, float]]:
    """mlff's state dict for ``model`` (built from :func:`read_config`) with mace's weights,
    and checks: ``{"contraction_residual": max relative residual of the projections in units of
    the file's machine epsilon}``."""
    c = model.config
    state = {k: v.clone() for k, v in model.state_dict().items()}
    species = len(c.elements)
    scalars: Irreps = [(c.channels, 0, 1)]
    hidden: Irreps = [(c.channels, l, (-1) ** l) for l in range(c.max_L + 1)]
    target: Irreps = [(c.channels, l, (-1) ** l) for l in range(c.max_ell + 1)]

    emb = root.child("node_embedding").child("linear")
    (_, _, shape, pw), = instructions(emb)
    state["embedding.weight"] = emb.tensor("weight").view(species, c.channels).to(torch.float64) * float(pw)
    state["bessel.frequencies"] = root.child("radial_embedding").child("bessel_fn").tensor("bessel_weights").to(torch.float64)

    residual = 0.0
    irreps_in = scalars
    for t, (block, prod) in enumerate(zip(root.child("interactions").children.values(),
                                          root.child("products").children.values())):
        last = t == c.num_interactions - 1
        irreps_out = scalars if last else hidden
        mine = model.interactions[t]
        p = f"interactions.{t}"
        in_keys = [("in", i) for i in range(len(irreps_in))]
        in_labels = labels(irreps_in, in_keys)
        state[f"{p}.linear_up.weight"] = fill_irreps_linear(
            mine.linear_up, linear_rows(block.child("linear_up"), in_labels), in_labels,
            irreps_in, irreps_in, f"{p}.linear_up")
        # convolution: instructions keyed by (input block, harmonic, output irrep)
        conv = block.child("conv_tp")
        mace_irreps_mid = irreps_of(conv.attrs["irreps_out"])
        mace_ins = instructions(conv)
        key_of = {}
        for ins in mace_ins:
            i1, i2, i_out = int(ins[0]), int(ins[1]), int(ins[2])
            key_of[i_out] = (i1, i2, mace_irreps_mid[i_out][1], mace_irreps_mid[i_out][2])
        mlff_keys = []
        for ins in mine.conv_tp.instructions:
            ir = mine.conv_tp.irreps_out[ins.i_out].ir
            mlff_keys.append((ins.i_in1, ins.i_in2, ir.l, ir.p))
        mace_pw = {key_of[int(ins[2])]: float(ins[5]) for ins in mace_ins}
        for ins, key in zip(mine.conv_tp.instructions, mlff_keys):
            if key not in mace_pw or abs(mace_pw[key] - ins.path_weight) > 1e-9 * abs(ins.path_weight):
                raise ModelFileError(f"{p}.conv_tp: path {key} differs from mlff's "
                                     f"({mace_pw.get(key)} vs {ins.path_weight})")
        # radial MLP: last-layer columns are per instruction [mul] blocks
        mace_cols, off = {}, 0
        for ins in mace_ins:
            mul = int(ins[6][0])
            mace_cols[key_of[int(ins[2])]] = torch.arange(off, off + mul)
            off += mul
        order = torch.cat([mace_cols[key] for key in mlff_keys])
        grouped_mlp(mlp_layers(block.child("conv_tp_weights"), f"{p}.conv_tp_weights"),
                     f"{p}.radial", state, column_order=order)
        # linear after the convolution: mace's input = sorted, merged mid irreps
        mace_mid_labels = [[(key_of[i], u) for u in range(mul)] for i, (mul, _, _) in enumerate(mace_irreps_mid)]
        lin = block.child("linear")
        lin_in = irreps_of(lin.attrs["irreps_in"])
        merged, pos = [], 0
        for mul, _, _ in lin_in:
            block_labels: List[Label] = []
            while len(block_labels) < mul:
                block_labels += mace_mid_labels[pos]
                pos += 1
            merged.append(block_labels)
        mlff_mid = [(mul, ir.l, ir.p) for mul, ir in mine.conv_tp.irreps_out]
        mlff_mid_labels = labels(mlff_mid, mlff_keys)
        state[f"{p}.linear.weight"] = fill_irreps_linear(
            mine.linear, linear_rows(lin, merged), mlff_mid_labels, mlff_mid, target, f"{p}.linear")
        skip = block.child("skip_tp")
        has_skip = t > 0 or c.residual_first
        if not has_skip:  # non-residual: species mixing of the messages
            tl = labels(target, [("msg", i) for i in range(len(target))])
            state[f"{p}.mixing.0.weight"] = fill_irreps_linear(
                mine.mixing[0], species_rows(skip, tl, target), tl, target, target, f"{p}.mixing")
        else:  # residual: species-dependent skip from the layer input, added after the product
            state[f"products.{t}.skips.0.weight"] = fill_irreps_linear(
                model.products[t].skips[0], species_rows(skip, in_labels, irreps_in), in_labels,
                irreps_in, irreps_out, f"products.{t}.skips")
        if bool(prod.attrs.get("use_sc", has_skip)) != has_skip:
            raise UnsupportedModelError(f"product {t}: use_sc={prod.attrs.get('use_sc')} "
                                        f"with interaction {block.name}")
        # product basis
        contractions = list(prod.child("symmetric_contractions").child("contractions").children.values())
        if len(contractions) != len(irreps_out):
            raise ModelFileError(f"product {t}: {len(contractions)} contractions for {len(irreps_out)} outputs")
        weights = []
        for (_, l, par), contraction in zip(irreps_out, contractions):
            w, res = contraction_weights(contraction, c.max_ell, l, par, c.correlation)
            weights.append(w)
            residual = max(residual, res)
        weights = torch.cat(weights, dim=1)
        expected = state[f"products.{t}.contraction.weights"].shape
        if tuple(weights.shape) != tuple(expected):
            raise ModelFileError(f"product {t}: projected weights {tuple(weights.shape)}, mlff expects {tuple(expected)}")
        state[f"products.{t}.contraction.weights"] = weights
        ol = labels(irreps_out, [("out", i) for i in range(len(irreps_out))])
        state[f"products.{t}.linear.weight"] = fill_irreps_linear(
            model.products[t].linear, linear_rows(prod.child("linear"), ol), ol, irreps_out,
            irreps_out, f"products.{t}.linear")
        irreps_in = irreps_out

    readouts = list(root.child("readouts").children.values())
    for t, ro in enumerate(readouts):
        if t < len(readouts) - 1:
            (i_in, _, shape, pw), = instructions(ro.child("linear"))
            w = ro.child("linear").tensor("weight").view(int(shape[0]), 1).to(torch.float64) * float(pw)
            state[f"readouts.{t}.weight"] = (w * math.sqrt(c.channels)).unsqueeze(0)
        else:
            layers = []
            for name, act in (("linear_1", True), ("linear_2", False)):
                lin = ro.child(name)
                (_, _, shape, pw), = instructions(lin)
                w = lin.tensor("weight").view(int(shape[0]), int(shape[1])).to(torch.float64)
                w = w * float(pw) * math.sqrt(int(shape[0]))  # e3nn norm -> GroupedLinear's 1/sqrt(in)
                constant = None
                if act:
                    acts = list(ro.child("non_linearity").child("acts").children.values())
                    check_silu(acts[0], f"readout {t}")
                    constant = scalar(acts[0].attrs["cst"])
                layers.append((w, constant))
            grouped_mlp(layers, f"readouts.{t}", state)
    return state, {"contraction_residual": residual}



def import_mace(path: Union[str, os.PathLike], dtype: str = "float64") -> Tuple[Potential, Dict[str, object]]:
    """A mace-torch model file -> (mlff :class:`Potential` in eval mode, metadata for the model
    file: source, SHA-256, class, the projection residual).

    Raises:
        UnsafePickleError: the file names a global that is not part of a model.
        UnsupportedModelError: a block, option or layout mlff's MACE does not have.
    """
    root = load_pickled(path)
    if not isinstance(root, Pickled):
        raise ModelFileError(f"{path}: holds a {type(root).__name__}, not a pickled mace-torch model "
                             "(a state_dict alone has no hyperparameters; save the whole model)")
    config = read_config(root, dtype)
    model = MACE(config)
    state, checks = convert_state(root, model)
    if checks["contraction_residual"] > 100.0:
        raise ModelFileError(f"{path}: the symmetric contraction does not project onto mlff's basis "
                             f"(residual {checks['contraction_residual']:.1f} machine epsilons); please report it")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    metadata = {"imported_from": {"code": "mace-torch", "file": Path(path).name,
                                  "sha256": file_sha256(path), "class": root.name,
                                  "contraction_residual": checks["contraction_residual"]}}
    return Potential(model).eval(), metadata
