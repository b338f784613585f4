"""Errors that reach users: each message names the problem and the fix.

The command line turns every :class:`MLFFError` (and the standard ``ValueError``,
``FileNotFoundError``, ``FileExistsError`` and ``PermissionError`` raised for bad arguments) into
a one-line message and exit status 2; ``mlff --debug`` shows the traceback instead. Code that
reads a file written by someone else (a model, a structure, a checkpoint) turns the reader's own
exceptions (``KeyError``, ``BadZipFile``, ``XYZError``, ...) into one of these, so a bad file is
never a traceback.
"""

from __future__ import annotations


class MLFFError(Exception):
    """Base of mlff's user-facing errors (bad input, bad model file, failed external tool)."""


class InputError(MLFFError, ValueError):
    """Bad structural input (NaN positions, overlapping atoms, degenerate cell, unknown
    element, no atoms, an empty or unreadable structure or data file, ...)."""


class ConfigError(MLFFError, ValueError):
    """A configuration (YAML, dataclass, command-line options) that cannot be run."""


class ResumeMismatchError(ConfigError):
    """``--resume`` with settings that differ from the saved run's (the message lists them and
    the settings that may change)."""


class ModelFileError(MLFFError, ValueError):
    """A file that is not a readable mlff model (foreign, truncated, corrupted, too new)."""


class ModelFileWarning(UserWarning):
    """A model file that loads but cannot be verified (written before model files had a
    checksum)."""


class CheckpointError(MLFFError):
    """A checkpoint or saved partial work (``checkpoint.npz``, a label chunk, ...) that cannot
    be read: truncated or damaged."""


class OutputError(MLFFError):
    """An output location that cannot be written (checked before any work starts)."""


class RunLockedError(MLFFError):
    """The run folder is in use by another running process (named in the message)."""


class ExternalToolError(MLFFError, RuntimeError):
    """An external program (AmberTools, xtb, ...) failed on this input."""
