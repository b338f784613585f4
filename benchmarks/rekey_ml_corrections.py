"""Re-key finished ML/MM correction runs to a model file that was re-saved with identical
weights (for example the shipped default model when it gained its checksum, 65d62826 ->
6c0b81fa): the correction folders are named and checked by the model file's SHA-256, so
without this a rerun of freesolv_ml.py would recompute hours of samples that are still valid.

It renames ``<out>/*/<molecule>/ml/<stem>-<old sha8>`` to ``<stem>-<new sha8>`` and rewrites the
``sha256`` of their leg.json files, but only after checking that the old and the new file hold
the same model: same model type, config and tensors (``mlff.io.model_checksum``), so a
changed model can never inherit another's samples. Run it when nothing is sampling there.

Usage: python benchmarks/rekey_ml_corrections.py OLD_MODEL.pt NEW_MODEL.pt [--out runs/freesolv_ml]
"""

import argparse
import sys
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from mlff.atomic import atomic_write_text, file_sha256
    from mlff.io import model_checksum, read_model_file

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old_model")
    p.add_argument("new_model")
    p.add_argument("--out", default=str(ROOT / "runs" / "freesolv_ml"))
    args = p.parse_args()
    old, new = Path(args.old_model), Path(args.new_model)
    if model_checksum(read_model_file(old)) != model_checksum(read_model_file(new)):
        raise SystemExit(f"{old} and {new} hold different models: nothing re-keyed")
    old_sha, new_sha = file_sha256(old), file_sha256(new)
    stem = new.stem
    moved = 0
    for folder in sorted(Path(args.out).glob(f"*/*/ml/{stem}-{old_sha[:8]}")):
        target = folder.with_name(f"{stem}-{new_sha[:8]}")
        if target.exists():
            print(f"{target} exists: left {folder} as it is")
            continue
        for leg in folder.glob("*/leg.json"):
            spec = json.loads(leg.read_text())
            if spec.get("ml", {}).get("sha256") == old_sha:
                spec["ml"]["sha256"] = new_sha
                spec["ml"]["model"] = str(new.resolve())
                atomic_write_text(leg, json.dumps(spec, indent=1))
        folder.rename(target)
        moved += 1
        print(f"{folder} -> {target.name}")
    print(f"{moved} correction folders re-keyed to {new.name} ({new_sha[:8]})")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import benchmark_lock  # noqa: E402

    with benchmark_lock(__file__):
        main()
