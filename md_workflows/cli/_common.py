"""What every command module of the ``mlff`` command line shares: the command summaries and
argument types. Light: standard library only, so building the parser stays fast."""

from __future__ import annotations

import argparse
from typing import Dict

#: ``mlff`` subcommand -> one-line summary (``mlff --help`` lists them).
COMMANDS: Dict[str, str] = {
    "label": "label structures with GFN2-xTB (tblite): energies, forces, stress",
    "sample": "sample diverse configurations of molecules (MD, normal modes, displacements)",
    "stats": "statistics of a labelled dataset (E0s, neighbours, force RMS, ...)",
    "dataset": "build the project's reference datasets (organic-gfn2)",
    "train": "train a model from a YAML config (resumable with --resume)",
    "eval": "errors of a model on labelled data (MAE/RMSE, per element) with parity plots",
    "md": "molecular dynamics (OpenMM or ASE; NVE/NVT/NPT; uncertainty monitor; --resume)",
    "relax": "geometry relaxation (ASE FIRE/BFGS/LBFGS with optional cell filter, or OpenMM)",
    "analyze": "trajectory analysis with mdtraj: RMSD, Rg, dihedrals, Ramachandran, RDF",
    "demo": "the main job: the default ensemble runs alanine dipeptide MD in OpenMM with the UQ monitor",
    "label-demo": "sample and label alanine dipeptide with GFN2-xTB (the data side of the suite)",
    "import": "import a model trained by another code (mace-torch .model, torchmd-net TensorNet .ckpt) as an mlff model file",
    "info": "what a model file holds: config, elements, calibration, provenance, checksum status",
    "export": "compile a model ahead of time (torch.export + AOTInductor) into a .pt2 package that runs without TorchScript",
    "fe": "alchemical free energies: hydration (MBAR/BAR/TI/EXP) and relative binding by ATM (resumable)",
}

#: The type of ``argparse``'s subparser collection (what each ``add_*`` function receives).
Subparsers = argparse._SubParsersAction


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_model_arguments(p: argparse.ArgumentParser, model: str, device: str) -> None:
    """``--model``, ``--dtype`` and ``--device``: the options of every command that runs a model."""
    p.add_argument("--model", default=model, help="model file or 'default' (the shipped ensemble)")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="default: the model's own")
    p.add_argument("--device", default=device, help="cpu or cuda (default %(default)s)")
