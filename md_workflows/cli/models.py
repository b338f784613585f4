"""``mlff import`` (models trained by other codes -> mlff model files), ``mlff info`` (what a
model file holds) and ``mlff export`` (a model compiled ahead of time into a .pt2 package).

Building the parser imports only the standard library; the importer runs when called.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

from mlff.md_workflows.cli._common import COMMANDS, Subparsers


def add_import(sub: Subparsers) -> None:
    """``mlff import mace FILE -o OUT.pt`` and ``mlff import torchmd-net CKPT --elements ... -o OUT.pt``."""
    p = sub.add_parser("import", help=COMMANDS["import"], description=COMMANDS["import"] + (
        ". The file is read as plain data by a restricted unpickler (nothing from it runs, "
        "mace-torch and torchmd-net are not needed); weights are mapped exactly, not refitted. "
        "The result is a normal mlff model file: ASE, OpenMM, mlff md, mlff fe, ensembles."))
    p.add_argument("code", choices=["mace", "torchmd-net"],
                   help="the code that wrote the file (mace: mace-torch .model; torchmd-net: a "
                        "TensorNet checkpoint .ckpt)")
    p.add_argument("input", help="the model file")
    p.add_argument("-o", "--output", required=True, help="mlff model file to write (.pt)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="dtype of the imported model (default %(default)s)")
    p.add_argument("--head", default=None,
                   help="mace: the head of a multi-head file to import (default: the one named "
                        "'default'; an unknown name lists the heads)")
    p.add_argument("--elements", nargs="+", default=None,
                   help="torchmd-net: the elements the model was trained on (symbols or atomic "
                        "numbers; a checkpoint embeds every atomic number up to max_z)")
    p.add_argument("--energy-unit", default="eV", choices=["eV", "kcal/mol", "kJ/mol", "hartree"],
                   help="torchmd-net: the unit of the training energies (default %(default)s); "
                        "converted to eV")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=run_import)


def _atomic_numbers(values: List[str]) -> List[int]:
    from ase.data import atomic_numbers

    out = []
    for v in values:
        if v.isdigit():
            out.append(int(v))
        elif v in atomic_numbers:
            out.append(atomic_numbers[v])
        else:
            raise ValueError(f"--elements: {v!r} is neither an element symbol nor an atomic number")
    return out


def run_import(args: argparse.Namespace) -> int:
    """Import ``args.input`` and write ``args.output`` (atomically)."""
    from mlff.atomic import check_writable
    from mlff.io import save_model

    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    check_writable(out.parent, "output folder")
    if args.code == "torchmd-net":
        if not args.elements:
            raise ValueError("mlff import torchmd-net needs --elements (the elements the model was "
                             "trained on, e.g. --elements H C N O): a checkpoint does not list them")
        from mlff.io_import.torchmd_net import import_torchmd_net

        potential, metadata = import_torchmd_net(args.input, _atomic_numbers(args.elements), dtype=args.dtype,
                                                 energy_unit=args.energy_unit)
        save_model(potential, out, metadata=metadata)
        c = potential.model.config
        n_params = sum(p.numel() for p in potential.model.parameters())
        print(f"{out}: TensorNet from torchmd-net {Path(args.input).name} (elements {list(c.elements)}, "
              f"{c.channels} channels, {c.num_layers} layers, r_cut {c.r_cut:g} A, energies from "
              f"{args.energy_unit}, {n_params} parameters, {args.dtype})")
        return 0
    from mlff.io_import.mace_torch import import_mace

    potential, metadata = import_mace(args.input, dtype=args.dtype, head=args.head)
    save_model(potential, out, metadata=metadata)
    c = potential.model.config
    n_params = sum(p.numel() for p in potential.model.parameters())
    extras = [f"head {metadata['imported_from']['head']}"] if args.head or metadata["imported_from"]["head"] != "Default" else []
    extras += ["ZBL pair repulsion"] if "zbl" in c.priors else []
    print(f"{out}: MACE from {metadata['imported_from']['class']} {Path(args.input).name} "
          f"(elements {list(c.elements)}, {c.channels} channels, max_L {c.max_L}, "
          f"correlation {c.correlation}, {c.num_interactions} interactions, r_cut {c.r_cut:g} A, "
          f"{n_params} parameters, {args.dtype}{''.join(', ' + e for e in extras)})")
    return 0


def add_export(sub: Subparsers) -> None:
    """``mlff export MODEL --aot OUT.pt2``."""
    p = sub.add_parser("export", help=COMMANDS["export"], description=COMMANDS["export"] + (
        ". The package holds the weights and compiled C++ for this CPU (a build of a few "
        "minutes); the ASE calculator (MLFFCalculator(model='OUT.pt2')) and the OpenMM python "
        "route take it wherever they take a model file. Models with a long-range block, "
        "the d3 prior or a total-charge input cannot be exported yet."))
    p.add_argument("model", help="model file or 'default' (the shipped ensemble)")
    p.add_argument("--aot", required=True, metavar="OUT.pt2", help="the package to write")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="compile the network in this dtype (default: the model's)")
    p.add_argument("--force", action="store_true", help="overwrite OUT.pt2")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    import time

    from mlff.atomic import check_writable
    from mlff.export import ExportedPotential, export_aot
    from mlff.io import resolve_model

    out = Path(args.aot)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    check_writable(out.parent, "output folder")
    potential = resolve_model(args.model, "cpu", args.dtype)
    start = time.perf_counter()
    export_aot(potential, out, metadata={"source": str(args.model)})
    exported = ExportedPotential(out)
    print(f"{out}: {exported.metadata['model_type']} with {exported.num_members} member(s), elements "
          f"{exported.elements}, r_cut {exported.r_cut:g} A, {exported.metadata['dtype']}, compiled in "
          f"{time.perf_counter() - start:.0f} s ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_info(sub: Subparsers) -> None:
    """``mlff info MODEL``."""
    p = sub.add_parser("info", help=COMMANDS["info"], description=COMMANDS["info"] + (
        ". Reads the file as plain data (nothing in it runs) and checks its checksum: exit "
        "status 2 when the weights or config do not match it (a corrupted file)."))
    p.add_argument("model", help="model file or 'default' (the shipped ensemble)")
    p.set_defaults(func=run_info)


#: How ``mlff info`` states each checksum status.
_CHECKSUM_TEXT = {
    "ok": "ok: weights and config match the file's sha256",
    "missing": "none (written before model files had a checksum; corruption cannot be "
               "detected): save it again with mlff.io.save_model to add one",
    "mismatch": "MISMATCH: the weights or config differ from what was saved (corrupted file)",
}


def info_lines(path: Path, data: Dict[str, object], status: str) -> List[str]:
    """The lines ``mlff info`` prints for a model file's dict ``data``."""
    from ase.data import chemical_symbols

    config: Dict[str, object] = dict(data["config"])  # type: ignore[call-overload]
    meta: Dict[str, object] = dict(data.get("metadata", {}))  # type: ignore[call-overload]
    state = data["state_dict"]
    n_params = sum(int(t.numel()) for t in state.values())  # type: ignore[attr-defined]
    members = int(config.get("ensemble_size", 1))  # type: ignore[call-overload]
    elements = [int(z) for z in config.get("elements", ())]  # type: ignore[attr-defined]
    calibration = meta.get("calibration")
    lines = [
        f"file          {path} ({path.stat().st_size:,} bytes)",
        f"format        {data.get('format')} version {data.get('version')}, model type "
        f"{data.get('model_type')}",
        f"checksum      {_CHECKSUM_TEXT[status]}"
        + (f" ({str(data['sha256'])[:16]}...)" if data.get("sha256") else ""),
        f"elements      {' '.join(chemical_symbols[z] for z in elements)} (Z {elements})",
        f"members       {members}" + (" (deep ensemble)" if members > 1 else " (single model)"),
        f"weights       {n_params:,} numbers in {len(state)} tensors (buffers included)",  # type: ignore[arg-type]
        f"calibration   std_scale {float(data.get('std_scale', 1.0)):g}"  # type: ignore[arg-type]
        + (f"; {json.dumps(calibration, default=str)}" if calibration else
           (" (not recalibrated)" if members > 1 else " (single model: no spread)")),
        "config",
    ]
    lines += [f"  {k:22s} {v}" for k, v in config.items()]
    provenance = {k: v for k, v in meta.items() if k not in ("elements", "calibration")}
    lines.append("provenance" + ("" if provenance else "    none recorded"))
    lines += [f"  {k:22s} {json.dumps(v, default=str)}" for k, v in provenance.items()]
    return lines


def run_info(args: argparse.Namespace) -> int:
    """Print what the model file holds; a checksum mismatch is a ModelFileError (exit 2)."""
    from mlff.errors import ModelFileError
    from mlff.io import checksum_status, model_path, read_model_file

    path = model_path(args.model)
    data = read_model_file(path)
    status = checksum_status(data)
    print("\n".join(info_lines(path, data, status)))
    if status == "mismatch":
        raise ModelFileError(f"{path} is corrupted: its weights or config do not match the "
                             "checksum it was saved with; copy it again from its source, or "
                             "retrain it")
    return 0
