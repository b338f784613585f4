"""What ``--resume`` compares: the settings a run was started with against the new ones.

A resumed run must be the run that was started: :func:`check_resume_settings` refuses any
changed setting outside an explicit list of those that may change (budgets, progress and
reporting options), with a :class:`~mlff.errors.ResumeMismatchError` that lists each change
(old -> new) and the settings that may change. Used by ``mlff md`` and ``mlff relax``; settings
are compared as JSON values, nested dicts key by key (dotted names).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Sequence, Tuple

#: Config fields compared by the content of the file they name, not by the path.
INPUT_FILES = ("structure", "model")
#: What a run's config names by path but a resume does not compare (the run folder itself).
_NOT_COMPARED = ("out",) + INPUT_FILES


def changed_settings(old: Mapping[str, object], new: Mapping[str, object],
                     prefix: str = "") -> List[Tuple[str, object, object]]:
    """``(dotted key, old value, new value)`` of every setting that differs (a key missing on
    one side counts as ``None`` there), in key order."""
    out: List[Tuple[str, object, object]] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, name + ".")
        elif a != b:
            out.append((name, a, b))
    return out


def as_json(settings: Mapping[str, object]) -> Dict[str, object]:
    """``settings`` as they compare after a round trip through JSON (tuples become lists)."""
    return json.loads(json.dumps(dict(settings)))


def check_resume_settings(old: Mapping[str, object], new: Mapping[str, object],
                          may_change: Sequence[str], where: str, option: str = "--out") -> None:
    """Refuse to resume the run in ``where`` (saved settings ``old``) with ``new`` when a
    setting outside ``may_change`` differs.

    Raises:
        ResumeMismatchError: naming each changed setting with its old and new value, the
            settings that may change, and the fix.
    """
    from mlff.errors import ResumeMismatchError

    changes = [c for c in changed_settings(as_json(old), as_json(new)) if c[0] not in may_change]
    if changes:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changes)
        raise ResumeMismatchError(
            f"{where} holds a run started with other settings ({listed}); resume with the same "
            f"settings, or start a new run with another {option} (may change on resume: "
            f"{', '.join(may_change)})")


def run_settings(cfg: Any) -> Dict[str, object]:
    """What a resume compares of a run's config dataclass ``cfg`` (``mlff md``, ``relax``): its
    fields, with the ``structure`` and ``model`` files as their SHA-256
    (``structure_sha256``, ``model_sha256``: a path written differently still matches, an
    edited file does not) and without ``out``, the folder itself."""
    from mlff.atomic import file_sha256
    from mlff.io import model_path

    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_COMPARED}
    settings["structure_sha256"] = file_sha256(cfg.structure)
    settings["model_sha256"] = file_sha256(model_path(cfg.model))
    return settings


def saved_settings(cls: type, config: Mapping[str, object], inputs: Mapping[str, object],
                   new: Mapping[str, object]) -> Dict[str, object]:
    """The :func:`run_settings` of a saved run: its ``config`` (a dict of the dataclass
    ``cls``) and ``inputs`` (the files' hashes). Fields added to mlff since the run was saved
    count as their defaults; an input the run did not hash counts as unchanged (``new``'s)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in _NOT_COMPARED}
    old = {**defaults, **{k: v for k, v in dict(config).items() if k in defaults}}
    for key in (f"{name}_sha256" for name in INPUT_FILES):
        old[key] = dict(inputs).get(key, new[key])
    return old
