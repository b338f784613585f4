"""A user's mistakes and a damaged disk, tried as a user would: each case runs the ``mlff``
console script (or the calculators) in a real subprocess and checks the exit status and the
message's key words (issue 20). Expected failures end as one line ``mlff CMD: error: ...`` with
exit status 2, never a traceback, and leave no output folder behind; two runs into one folder do
not merge; a resume with other settings is refused. The cases that were already solid (the
calculator's structure checks, pickled payloads never run, unknown options and keys named) are
here too, so that they stay so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List

import ase.io
import pytest
import torch
from ase.build import molecule

#: The model file entry of the checksum (mlff.io.CHECKSUM; spelled out so that this module also
#: runs against an mlff from before checksums, where every case here must fail).
CHECKSUM = "sha256"

REPO = Path(__file__).resolve().parents[1]
ALANINE = REPO / "data" / "examples" / "alanine_dipeptide.pdb"
MLFF = shutil.which("mlff") or str(Path(sys.executable).with_name("mlff"))
#: Energy scale (eV) of the random test model: gentle forces, so short MD stays sane.
GENTLE_SCALE_EV = 0.05


def mlff(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``mlff ARGS...`` (the console script) and return the finished process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([MLFF, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_user_error(done: subprocess.CompletedProcess, command: str, *words: str) -> str:
    """Exit status 2, one line ``mlff COMMAND: error: ...`` holding every word, no traceback."""
    err = done.stderr
    assert done.returncode == 2, (done.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    line = [ln for ln in err.splitlines() if ln.startswith(f"mlff {command}: error: ")]
    assert len(line) == 1, err[-3000:]
    for word in words:
        assert word in line[0], (word, line[0])
    return line[0]


class Payload:
    """A pickle that would create ``marker`` if anything ever unpickled it unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def flip_weight_bytes(src: Path, dst: Path, n: int = 64) -> None:
    """Copy ``src`` with ``n`` bytes inverted inside its largest tensor (the zip stays valid:
    torch does not check the entries' CRCs)."""
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        entry = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[entry.header_offset + 26: entry.header_offset + 30])
    start = entry.header_offset + 30 + name_len + extra_len + 8
    for k in range(start, start + n):
        raw[k] ^= 0xFF
    dst.write_bytes(raw)


@pytest.fixture(scope="module")
def files(tmp_path_factory, saved_model) -> Dict[str, Path]:
    """The bad (and the good) files of the cases, in one folder."""
    d = tmp_path_factory.mktemp("bad_inputs")
    good = saved_model(d, 1, name="good.pt", scale=GENTLE_SCALE_EV)
    f = {"dir": d, "good": good, "marker": d / "payload_ran"}
    f["text"] = d / "text.pt"
    f["text"].write_text("hello, I am a text file\n")
    f["truncated"] = d / "truncated.pt"
    f["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    data = torch.load(good, weights_only=True)
    f["no_elements"] = d / "no_elements.pt"
    config = {k: v for k, v in data["config"].items() if k != "elements"}
    metadata = {k: v for k, v in data["metadata"].items() if k != "elements"}
    no_elements = dict(data, config=config, metadata=metadata)
    no_elements.pop(CHECKSUM, None)  # a foreign or pre-checksum file (else the checksum catches it)
    torch.save(no_elements, f["no_elements"])
    f["pickle"] = d / "pickle.pt"
    torch.save(dict(data, payload=Payload(f["marker"])), f["pickle"])
    f["corrupted"] = d / "corrupted.pt"
    flip_weight_bytes(good, f["corrupted"])
    f["old"] = d / "old.pt"  # as written before model files had a checksum
    torch.save({k: v for k, v in data.items() if k != CHECKSUM}, f["old"])
    f["empty"] = d / "empty.extxyz"
    f["empty"].write_text("")
    f["one_line_pdb"] = d / "one_line.pdb"
    f["one_line_pdb"].write_text("HEADER    just one line of text\n")
    f["water"] = d / "water.extxyz"
    ase.io.write(f["water"], [molecule("H2O"), molecule("CH4")])
    return f


# --- model files -------------------------------------------------------------------------------


@pytest.mark.parametrize("case, words", [
    ("text", ("not an mlff model file", "not a torch.save archive", "mlff train")),
    ("truncated", ("truncated or damaged", "mlff train")),
    ("no_elements", ("do not make a 'mace' model", "elements", "damaged or was not written by mlff")),
    ("pickle", ("not a trusted mlff model", "pickled Python objects", "posix.system")),
])
def test_bad_model_files_are_named_errors(files, case, words):
    done = mlff("eval", files[case], files["water"], "--out", files["dir"] / f"eval_{case}")
    line = assert_user_error(done, "eval", *words)
    assert "weights_only" not in line  # never the advice to load pickled code anyway
    assert not files["marker"].exists()  # the payload never ran
    assert not (files["dir"] / f"eval_{case}").exists()  # no output folder for a failed run


def test_corrupted_model_and_info(files):
    """64 flipped bytes in a weight: refused on load (the calculator cases below) and shown by
    ``mlff info``, which prints what the file holds and exits 2; a file from before checksums
    is shown as such and loads (with a warning, below)."""
    bad = mlff("info", files["corrupted"])
    for line in ("checksum      MISMATCH", "elements      H C N O", "members       1",
                 "calibration   std_scale 1", "  r_cut                  4.0", "provenance"):
        assert line in bad.stdout, (line, bad.stdout)
    assert_user_error(bad, "info", "is corrupted", "copy it again from its source")
    old = mlff("info", files["old"])
    assert old.returncode == 0, old.stderr[-3000:]
    assert "checksum      none (written before model files had a checksum" in old.stdout


def test_pickled_payload_is_refused_by_the_importer(files):
    done = mlff("import", "mace", files["pickle"], "-o", files["dir"] / "imported.pt")
    assert_user_error(done, "import", "refusing to load", "posix.system", "not a trusted model")
    assert "weights_only" not in done.stderr
    assert not files["marker"].exists() and not (files["dir"] / "imported.pt").exists()


#: The calculator cases: name -> Python code raising (or warning) inside the subprocess.
CALCULATOR_CASES = {
    "empty_atoms": "calc(GOOD).get_potential_energy(Atoms())",
    "unknown_element": "calc(GOOD).get_potential_energy(Atoms('Fe'))",
    "nan_positions": "calc(GOOD).get_potential_energy(Atoms('H2', [[0, 0, 0], [0, 0, float('nan')]]))",
    "atoms_too_close": "calc(GOOD).get_potential_energy(Atoms('H2', [[0, 0, 0], [0, 0, 0.05]]))",
    "periodic_without_cell": "calc(GOOD).get_potential_energy(Atoms('H2', [[0, 0, 0], [0, 0, 0.8]], pbc=True))",
    "degenerate_cell": ("calc(GOOD).get_potential_energy(Atoms('H2', [[0, 0, 0], [0, 0, 0.8]], "
                        "cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]], pbc=True))"),
    "pickle_calculator": "calc(PICKLE)",
    "pickle_openmm": "build_ml_system(PICKLE, [1, 1])",
    "corrupted_calculator": "calc(CORRUPTED)",
    "old_file_warns": "calc(OLD)",
}

#: name -> (exception or warning class name, words of its message).
CALCULATOR_EXPECTED = {
    "empty_atoms": ("InputError", ("has no atoms", "at least one atom")),
    "unknown_element": ("InputError", ("['Fe'] not in the model", "['H', 'C', 'N', 'O']")),
    "nan_positions": ("InputError", ("NaN or infinite",)),
    "atoms_too_close": ("InputError", ("apart", "minimum allowed")),
    "periodic_without_cell": ("InputError", ("zero length", "set the cell")),
    "degenerate_cell": ("InputError", ("degenerate",)),
    "pickle_calculator": ("ModelFileError", ("not a trusted mlff model",)),
    "pickle_openmm": ("ModelFileError", ("not a trusted mlff model",)),
    "corrupted_calculator": ("ModelFileError", ("is corrupted",)),
    "old_file_warns": ("ModelFileWarning", ("has no checksum", "save it again")),
}


@pytest.fixture(scope="module")
def calculator_results(files) -> Dict[str, List[str]]:
    """Every calculator case, run in one subprocess: name -> [class name, message]."""
    script = f"""
import json, warnings
from ase import Atoms
from mlff.calculators.ase import MLFFCalculator
from mlff.calculators.openmm import build_ml_system
GOOD, PICKLE, CORRUPTED, OLD = {str(files['good'])!r}, {str(files['pickle'])!r}, \\
    {str(files['corrupted'])!r}, {str(files['old'])!r}
CACHE = {{}}
def calc(path):
    if path not in CACHE:  # one model load per file
        CACHE[path] = MLFFCalculator(path)
    return CACHE[path]
results = {{}}
for name, code in {CALCULATOR_CASES!r}.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exec(code)
            results[name] = [caught[0].category.__name__, str(caught[0].message)] if caught else ["none", ""]
        except Exception as exc:
            results[name] = [type(exc).__name__, str(exc)]
print(json.dumps(results))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(CALCULATOR_CASES))
def test_calculator_cases(calculator_results, files, case):
    kind, words = CALCULATOR_EXPECTED[case]
    got_kind, message = calculator_results[case]
    assert got_kind == kind, (case, got_kind, message)
    for word in words:
        assert word in message, (case, word, message)
    assert "weights_only" not in message and not files["marker"].exists()


# --- structures, datasets, checkpoints, outputs ------------------------------------------------


def test_empty_extxyz_for_label_eval_and_md(files):
    d = files["dir"]
    label = mlff("label", files["empty"], "-o", d / "labelled.extxyz")
    assert_user_error(label, "label", "empty.extxyz is empty", "at least one structure")
    # `default` is the shipped model for eval as for --model: the error is about the data
    ev = mlff("eval", "default", files["empty"], "--out", d / "eval_empty")
    assert_user_error(ev, "eval", "data file", "empty.extxyz is empty")
    md = mlff("md", files["empty"], "--model", files["good"], "--engine", "ase", "--out", d / "md_empty")
    assert_user_error(md, "md", "structure file", "empty.extxyz is empty")
    for out in ("labelled.extxyz", "eval_empty", "md_empty"):
        assert not (d / out).exists(), out  # no output, not even an empty folder


def test_one_line_pdb(files):
    done = mlff("md", files["one_line_pdb"], "--model", files["good"], "--engine", "ase",
                "--out", files["dir"] / "md_pdb")
    assert_user_error(done, "md", "one_line.pdb", "holds no atoms", "ATOM or HETATM")
    assert not (files["dir"] / "md_pdb").exists()


def test_truncated_md_checkpoint(files):
    run = files["dir"] / "md_truncated"
    run.mkdir()
    (run / "log.csv").write_text("step\n0\n")
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)  # a zip cut short
    done = mlff("md", ALANINE, "--model", files["good"], "--engine", "ase", "--out", run, "--resume")
    assert_user_error(done, "md", "checkpoint.npz is damaged", "BadZipFile", "without --resume")


def test_damaged_label_chunk(files):
    from mlff.data.label import _hash_file
    from mlff.data.label_settings import LabelSettings

    out = files["dir"] / "chunked.extxyz"
    partial = out.with_name(out.name + ".partial")
    partial.mkdir()
    identity = {"input_sha256": _hash_file(files["water"]), "n_frames": 2, "chunk_size": 1,
                "settings": asdict(LabelSettings())}
    (partial / "identity.json").write_text(json.dumps(identity))
    (partial / "chunk_00000000.extxyz").write_text("3\nProperties=species:S:1:pos:R:3\nH 0 0 0\n")
    (partial / "chunk_00000000.failed.json").write_text("[]")
    done = mlff("label", files["water"], "-o", out, "--chunk-size", "1")
    assert_user_error(done, "label", "chunk_00000000.extxyz is damaged", "XYZError",
                      "delete it and chunk_00000000.failed.json")


def test_unwritable_output_is_refused_before_anything_is_built(files):
    blocker = files["dir"] / "a_file"
    blocker.write_text("not a folder")
    # the model does not exist: the output is checked first, so the error names the output
    done = mlff("md", ALANINE, "--model", files["dir"] / "missing.pt", "--out", blocker / "run")
    assert_user_error(done, "md", "cannot write the MD output folder", "is a file, not a folder",
                      "choose another location")
    if Path("/sys").is_dir():  # not writable even for root
        done = mlff("label", files["water"], "-o", "/sys/mlff_test/labelled.extxyz")
        assert_user_error(done, "label", "cannot write the output folder", "not writable")


def test_failed_train_and_fe_leave_no_folder(files, tmp_path):
    config = tmp_path / "train.yaml"
    out = tmp_path / "train_out"
    config.write_text(f"model: {{type: mace, channels: 8, max_L: 0, max_ell: 1, correlation: 1}}\n"
                      f"data: {{train: {files['empty']}}}\nout: {out}\n")
    assert_user_error(mlff("train", config), "train", "empty.extxyz is empty")
    assert not out.exists()
    fe_out = tmp_path / "fe_out"
    done = mlff("fe", "hydration", "--smiles", "C1CC", "--out", fe_out, "--no-progress")
    assert_user_error(done, "fe", "invalid SMILES 'C1CC'")
    assert not fe_out.exists()  # was: a lone config.json


def test_unknown_options_and_keys_are_named(tmp_path):
    done = mlff("md", ALANINE, "--temprature", "300")
    assert done.returncode == 2 and "unrecognized arguments: --temprature" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("smiles: CCO\nproduction_ns: 1\n")
    assert_user_error(mlff("fe", "run", bad, "--out", tmp_path / "fe"), "fe",
                      "unknown keys ['production_ns']", "valid keys")
    bad.write_text("model: {type: mace}\ndata: {train: x.extxyz}\nbogus: 1\n")
    assert_user_error(mlff("train", bad), "train", "unknown keys ['bogus']", "valid keys")


def test_debug_keeps_the_traceback(files):
    done = subprocess.run([MLFF, "--debug", "label", str(files["empty"]), "-o",
                           str(files["dir"] / "debug.extxyz")], capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback (most recent call last)" in done.stderr
    assert "InputError" in done.stderr


# --- two runs, one folder; resume with other settings --------------------------------------------


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def two_md_runs(files):
    """Run A (NVE, 0.5 fs) in a folder; as soon as A holds the folder (its lock file, or
    without locks its first checkpoint), run B into the same folder; once A has checkpointed
    it is killed with SIGKILL. Returns (folder, A's pid, B's finished process)."""
    run = files["dir"] / "md_shared"
    args = [MLFF, "md", str(ALANINE), "--model", str(files["good"]), "--engine", "ase",
            "--ensemble", "nve", "--steps", "100000", "--report-every", "5", "--out", str(run),
            "--no-progress"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        _wait_for(lambda: any((run / f).exists() for f in (".mlff-run.lock", "checkpoint.npz"))
                  or first.poll() is not None, 300, "the first run to hold the folder")
        assert first.poll() is None, "the first run ended early"
        second = subprocess.run(args + ["--seed", "7"], capture_output=True, text=True, timeout=300)
        _wait_for(lambda: (run / "checkpoint.npz").exists() or first.poll() is not None, 300,
                  "the first run's checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    return run, first.pid, second


def test_second_run_into_the_folder_fails_naming_the_first(two_md_runs):
    run, first_pid, second = two_md_runs
    assert_user_error(second, "md", f"{run} is in use by another run", "mlff md",
                      f"pid {first_pid}", "choose another output folder")
    steps = [row.split(",")[0] for row in (run / "log.csv").read_text().splitlines()[1:]]
    assert len(steps) == len(set(steps))  # one run's rows only, never interleaved


def test_stale_lock_is_taken_over_and_a_changed_resume_is_refused(two_md_runs, files):
    run, first_pid, _ = two_md_runs
    done = mlff("md", ALANINE, "--model", files["good"], "--engine", "ase", "--ensemble", "nvt",
                "--temperature", "1000", "--timestep", "2.0", "--report-every", "5",
                "--out", run, "--resume")
    assert "in use by another run" not in done.stderr  # the killed run's lock is stale
    assert "taking over the stale lock" in done.stderr and f"pid {first_pid}" in done.stderr
    assert_user_error(done, "md", "holds a run started with other settings",
                      "ensemble 'nve' -> 'nvt'", "temperature_K 300.0 -> 1000.0",
                      "timestep_fs 0.5 -> 2.0", "may change on resume: steps")


def test_relax_resume_with_other_settings_is_refused(files):
    """The checkpoint of a FIRE relaxation killed after 1 step (written by relax's own writer),
    resumed with BFGS."""
    from ase.io import read

    from mlff.md_workflows.relax import CHECKPOINT, RelaxConfig
    from mlff.md_workflows.run_folder import save_npz_checkpoint
    from mlff.resume_check import run_settings

    out = files["dir"] / "relax"
    out.mkdir()
    cfg = RelaxConfig(structure=str(ALANINE), out=str(out), model=str(files["good"]), steps=1)
    inputs = {k: v for k, v in run_settings(cfg).items() if k.endswith("_sha256")}
    save_npz_checkpoint(out / CHECKPOINT, {"positions": read(ALANINE).positions},
                        {"steps_done": 1, "config": asdict(cfg), "inputs": inputs})
    done = mlff("relax", ALANINE, "--model", files["good"], "--steps", "5",
                "--optimizer", "BFGS", "--out", out, "--resume")
    assert_user_error(done, "relax", "other settings", "optimizer 'FIRE' -> 'BFGS'",
                      "may change on resume: steps")
