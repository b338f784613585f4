"""Errors that reach users: each message names the problem and the fix.

The command line turns every :class:`MLFFError` (and the standard ``ValueError``,
``FileNotFoundError``, ``FileExistsError`` and ``PermissionError`` raised for bad arguments) into
a one-line message and a non-zero exit status; ``mlff --debug`` shows the traceback instead.
"""

from __future__ import annotations


class MLFFError(Exception):
    """Base of mlff's user-facing errors (bad input, bad model file, failed external tool)."""


class InputError(MLFFError, ValueError):
    """Bad structural input (NaN positions, overlapping atoms, degenerate cell, unknown
    element, ...)."""


class ConfigError(MLFFError, ValueError):
    """A configuration (YAML, dataclass, command-line options) that cannot be run."""


class ModelFileError(MLFFError, ValueError):
    """A file that is not a readable mlff model (foreign, truncated, corrupted, too new)."""


class ExternalToolError(MLFFError, RuntimeError):
    """An external program (AmberTools, xtb, ...) failed on this input."""
