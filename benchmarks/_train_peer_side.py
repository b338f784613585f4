"""Peer side of benchmarks/train_vs_peer.py, run in benchmarks/.peer-venv (mace-torch 0.3.16).

``mace_run_train`` has no wall-clock budget, so train_vs_peer.py stops it when the budget is
spent. A stopped run never reaches the end of ``run()``, where mace-torch turns its best
checkpoint into a ``.model`` file: its checkpoints (``checkpoints/<name>_run-<seed>_epoch-<N>.pt``)
hold only state dicts (model, optimizer, scheduler), saved with the EMA weights whenever the
validation loss improves. This script rebuilds the model the way ``mace_run_train`` does, with
mace-torch's own argument parser, ``check_args`` and ``configure_model`` on the same command
line, loads the newest readable checkpoint (strict), and saves the whole model as
``mace_run_train`` would, for ``mace_eval_configs``.

Usage: python _train_peer_side.py ARGV.json CHECKPOINTS_DIR OUT.model
(ARGV.json: the list of ``mace_run_train`` arguments). Prints one JSON line: checkpoint, epoch
(0-based, as in mace-torch's log), params.
"""

import ast
import json
import re
import sys
from pathlib import Path

import torch


def build_model(argv):
    from mace import tools
    from mace.tools.model_script_utils import configure_model
    from mace.tools.scripts_utils import dict_to_array

    args = tools.build_default_arg_parser().parse_args(argv)
    args, _ = tools.check_args(args)
    tools.set_default_dtype(args.default_dtype)
    e0s = {int(z): float(e) for z, e in ast.literal_eval(args.E0s).items()}
    heads = ["Default"]
    z_table = tools.AtomicNumberTable(sorted(e0s))
    atomic_energies = dict_to_array({"Default": e0s}, heads)
    # scale and shift are buffers of the checkpoint: placeholders here, so that configure_model
    # needs no training data
    args.mean, args.std = 0.0, 1.0
    # what run_train sets for an energy + forces model before configure_model
    args.compute_energy, args.compute_dipole, args.compute_polarizability = True, False, False
    model, _ = configure_model(args, None, atomic_energies, None, heads, z_table, None)
    return model


def checkpoints(directory: Path):
    """Checkpoint files, newest epoch first."""
    found = []
    for path in directory.glob("*_epoch-*.pt"):
        m = re.search(r"_epoch-(\d+)\.pt$", path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found, reverse=True)


def main():
    argv_json, ckpt_dir, out = sys.argv[1:4]
    argv = json.loads(Path(argv_json).read_text())
    model = build_model(argv)
    errors = []
    for epoch, path in checkpoints(Path(ckpt_dir)):
        try:  # a run stopped while saving leaves a truncated newest file; fall back to the previous
            state = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"], strict=True)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{path.name}: {exc}")
            continue
        model = model.to("cpu")
        torch.save(model, out)
        print(json.dumps({"checkpoint": str(path), "epoch": epoch, "unreadable": errors,
                          "params": sum(p.numel() for p in model.parameters())}))
        return
    raise SystemExit(f"no readable checkpoint in {ckpt_dir} ({errors or 'none written'}): "
                     "mace_run_train writes one only after a completed epoch improves the "
                     "validation loss; give it a longer budget")


if __name__ == "__main__":
    main()
