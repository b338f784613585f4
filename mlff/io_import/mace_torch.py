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

- ZBL pair repulsion (``pair_repulsion=True``, mace-torch's ``ZBLBasis``) becomes mlff's
  ``zbl`` prior with mace's constants (4-digit coefficients, screening length ``a_prefactor *
  0.529 / (Z^a_exp + Z^a_exp)``, ``k = 14.3996``, the file's own covalent radii, envelope order
  ``p``); ``ScaleShiftMACE`` adds it before its scale-shift, so its weight is the scale;
- multi-head files: one head is selected (``head=``; by default the one named "default" in
  any case, as mace-torch's calculator does); its E0s, scale and shift are that head's and its
  readouts are that head's slice (the non-linear readout's hidden channels are a contiguous
  block per head, the others masked to zero by mace), renormalised for the smaller fan-in.

Supported: ``ScaleShiftMACE`` and ``MACE``; a first interaction with or without residual
(``RealAgnosticInteractionBlock`` or ``RealAgnosticResidualInteractionBlock``, see
``MACEConfig.residual_first``) followed by residual ones; hidden irreps ``C x 0e (+ C x 1o (+ C x 2e))``;
Bessel radial basis with the polynomial envelope; the 2022 file format (``r_max`` a float,
``atomic_numbers`` a list) and the current one. Anything else is refused with an error that
names it (other blocks, distance transforms, a ZBL without mace-torch 0.3's buffers).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

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


def heads_of(root: Pickled) -> List[str]:
    """The head names of a pickled mace-torch model (``["Default"]`` for files without heads)."""
    heads = attr(root, "heads", None)
    return [str(h) for h in heads] if heads else ["Default"]


def select_head(root: Pickled, head: Optional[str] = None) -> int:
    """Index of ``head`` among the file's heads; ``None``: the only head, else the one named
    "default" (any case), as mace-torch's calculator chooses. An unknown name is an error that
    lists the heads (mace-torch would silently take the last one)."""
    heads = heads_of(root)
    if head is None:
        if len(heads) == 1:
            return 0
        named = [i for i, h in enumerate(heads) if h.lower() == "default"]
        if not named:
            raise UnsupportedModelError(f"multi-head model with heads {heads} and none named 'default': "
                                        "choose one with --head NAME (import_mace(head=...))")
        return named[0]
    if head not in heads:
        raise UnsupportedModelError(f"head {head!r} is not in this model; its heads are {heads}")
    return heads.index(head)


def zbl_prior(root: Pickled, elements: Sequence[int], weight: float) -> Dict[str, object]:
    """mlff's ``zbl`` prior options equal to the file's ``pair_repulsion_fn`` (mace-torch 0.3's
    ``ZBLBasis``: buffers ``c``, ``p``, ``covalent_radii``, ``a_exp``, ``a_prefactor``; its
    exponents 3.2, 0.9423, 0.4028, 0.2016, the 0.529 A Bohr radius and 14.3996 eV A are
    constants of its code)."""
    fn = root.child("pair_repulsion_fn")
    _require(fn, ("ZBLBasis",), "the pair repulsion")
    have = fn.tensors()
    missing = [k for k in ("c", "p", "covalent_radii", "a_exp", "a_prefactor") if k not in have]
    if missing:
        raise UnsupportedModelError(f"the ZBL pair repulsion lacks {missing}: written by a mace-torch "
                                    "older than 0.3, whose ZBL form mlff does not import")
    radii = have["covalent_radii"].to(torch.float64)
    return {"p": int(round(scalar(have["p"]))),
            "radii": [float(radii[int(z)]) for z in elements],
            "coefficients": [float(c) for c in have["c"].to(torch.float64).tolist()],
            "exponents": [3.2, 0.9423, 0.4028, 0.2016],
            "screening_length": scalar(have["a_prefactor"]) * 0.529,
            "z_power": scalar(have["a_exp"]), "coulomb": 14.3996, "weight": float(weight)}


def read_config(root: Pickled, dtype: str = "float64", head: Optional[str] = None) -> MACEConfig:
    """mlff's MACEConfig for a pickled mace-torch model (refuses unsupported parts); for a
    multi-head file that of one head (:func:`select_head`)."""
    _require(root, MODEL_CLASSES, "the model")
    h, n_heads = select_head(root, head), len(heads_of(root))
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
    if readout_hidden % n_heads:
        raise ModelFileError(f"the readout's {readout_hidden} hidden channels do not split into {n_heads} heads")
    readout_hidden //= n_heads
    e0s = root.child("atomic_energies_fn").tensor("atomic_energies").to(torch.float64)
    if e0s.numel() != n_heads * len(elements):
        raise ModelFileError(f"{e0s.numel()} atomic energies for {n_heads} head(s) x {len(elements)} elements")
    e0s = e0s.reshape(n_heads, len(elements))[h]
    scale, shift = 1.0, 0.0
    if root.name == "ScaleShiftMACE":
        ss = root.child("scale_shift")
        scale = scalar(ss.tensor("scale").reshape(-1)[h] if ss.tensor("scale").numel() > 1 else ss.tensor("scale"))
        shift = scalar(ss.tensor("shift").reshape(-1)[h] if ss.tensor("shift").numel() > 1 else ss.tensor("shift"))
    priors = {}
    if "pair_repulsion_fn" in root.children or attr(root, "pair_repulsion", False) is True:
        priors["zbl"] = zbl_prior(root, elements, scale)  # inside mace's scale-shift
    return MACEConfig(
        elements=elements, channels=channels, max_L=len(hidden) - 1, max_ell=sh[-1][1],
        correlation=correlations.pop(), r_cut=r_max, num_interactions=len(interactions),
        num_bessel=int(radial.child("bessel_fn").tensor("bessel_weights").numel()),
        cutoff_p=int(round(scalar(radial.child("cutoff_fn").tensor("p")))),
        radial_mlp=tuple(int(h) for h in hs[1:-1]), readout_mlp=int(readout_hidden),
        avg_num_neighbors=avg.pop(), e0s=tuple(e0s.tolist()), scale=scale, shift=shift, dtype=dtype,
        residual_first=interactions[0].name == LATER_INTERACTION, priors=priors)


def convert_state(root: Pickled, model: MACE, head: Optional[str] = None
                  ) -> Tuple[Dict[str, Tensor], Dict[str, float]]:
    """mlff's state dict for ``model`` (built from :func:`read_config` with the same ``head``)
    with mace's weights, and checks: ``{"contraction_residual": max relative residual of the
    projections in units of the file's machine epsilon}``."""
    c = model.config
    h, n_heads = select_head(root, head), len(heads_of(root))
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
    hid = c.readout_mlp  # per head
    for t, ro in enumerate(readouts):
        if t < len(readouts) - 1:
            (i_in, _, shape, pw), = instructions(ro.child("linear"))
            w = ro.child("linear").tensor("weight").view(int(shape[0]), n_heads).to(torch.float64) * float(pw)
            state[f"readouts.{t}.weight"] = (w[:, h:h + 1] * math.sqrt(c.channels)).unsqueeze(0)
        else:
            layers = []
            # this head's block of the hidden channels (mace masks the others to zero)
            for name, act, rows, cols in (("linear_1", True, slice(None), slice(h * hid, (h + 1) * hid)),
                                          ("linear_2", False, slice(h * hid, (h + 1) * hid), slice(h, h + 1))):
                lin = ro.child(name)
                (_, _, shape, pw), = instructions(lin)
                w = lin.tensor("weight").view(int(shape[0]), int(shape[1])).to(torch.float64)
                w = (w * float(pw))[rows, cols]
                w = w * math.sqrt(w.shape[0])  # e3nn norm -> GroupedLinear's 1/sqrt(in)
                constant = None
                if act:
                    acts = list(ro.child("non_linearity").child("acts").children.values())
                    check_silu(acts[0], f"readout {t}")
                    constant = scalar(acts[0].attrs["cst"])
                layers.append((w, constant))
            grouped_mlp(layers, f"readouts.{t}", state)
    return state, {"contraction_residual": residual}



def import_mace(path: Union[str, os.PathLike], dtype: str = "float64", head: Optional[str] = None
                ) -> Tuple[Potential, Dict[str, object]]:
    """A mace-torch model file -> (mlff :class:`Potential` in eval mode, metadata for the model
    file: source, SHA-256, class, the head, the projection residual).

    Args:
        head: for a multi-head file, the head to import (default: the one named "default").

    Raises:
        UnsafePickleError: the file names a global that is not part of a model.
        UnsupportedModelError: a block, option or layout mlff's MACE does not have.
    """
    root = load_pickled(path)
    if not isinstance(root, Pickled):
        raise ModelFileError(f"{path}: holds a {type(root).__name__}, not a pickled mace-torch model "
                             "(a state_dict alone has no hyperparameters; save the whole model)")
    config = read_config(root, dtype, head)
    model = MACE(config)
    state, checks = convert_state(root, model, head)
    if checks["contraction_residual"] > 100.0:
        raise ModelFileError(f"{path}: the symmetric contraction does not project onto mlff's basis "
                             f"(residual {checks['contraction_residual']:.1f} machine epsilons); please report it")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    metadata = {"imported_from": {"code": "mace-torch", "file": Path(path).name,
                                  "sha256": file_sha256(path), "class": root.name,
                                  "head": heads_of(root)[select_head(root, head)],
                                  "contraction_residual": checks["contraction_residual"]}}
    return Potential(model).eval(), metadata
