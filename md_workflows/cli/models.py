"""``mlff import``: models trained by other codes -> mlff model files.

Building the parser imports only the standard library; the importer runs when called.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlff.md_workflows.cli._common import COMMANDS, Subparsers


def add_import(sub: Subparsers) -> None:
    """``mlff import mace FILE -o OUT.pt``."""
    p = sub.add_parser("import", help=COMMANDS["import"], description=COMMANDS["import"] + (
        ". The file is read as plain data by a restricted unpickler (nothing from it runs, "
        "mace-torch is not needed); weights are mapped exactly, not refitted. The result is a "
        "normal mlff model file: ASE, OpenMM, mlff md, mlff fe, ensembles."))
    p.add_argument("code", choices=["mace"], help="the code that wrote the file (mace: mace-torch .model)")
    p.add_argument("input", help="the model file (for mace: a torch.save of a ScaleShiftMACE or MACE)")
    p.add_argument("-o", "--output", required=True, help="mlff model file to write (.pt)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="dtype of the imported model (default %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Import ``args.input`` and write ``args.output`` (atomically)."""
    from mlff.atomic import check_writable
    from mlff.io import save_model
    from mlff.io_import.mace_torch import import_mace

    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    check_writable(out.parent, "output folder")
    potential, metadata = import_mace(args.input, dtype=args.dtype)
    save_model(potential, out, metadata=metadata)
    c = potential.model.config
    n_params = sum(p.numel() for p in potential.model.parameters())
    print(f"{out}: MACE from {metadata['imported_from']['class']} {Path(args.input).name} "
          f"(elements {list(c.elements)}, {c.channels} channels, max_L {c.max_L}, "
          f"correlation {c.correlation}, {c.num_interactions} interactions, r_cut {c.r_cut:g} A, "
          f"{n_params} parameters, {args.dtype})")
    return 0
