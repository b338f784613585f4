"""The ``mlff`` command line: :func:`main` (the console script) and :func:`build_parser`.

Each subcommand builds a validated configuration and calls library code; the parsing lives in
this package and nowhere else, one module per command group (:mod:`.data`, :mod:`.train`,
:mod:`.md`, :mod:`.fe`). Building the parser imports no torch, numpy, OpenMM or ASE: the
defaults come from light configuration modules and a command's code is imported when it runs.

Errors: every expected user error (an :class:`mlff.errors.MLFFError`, ``ValueError`` or a file
error) ends as one line ``mlff <command>: error: ...`` on stderr and exit status 2;
``mlff --debug <command>`` shows the traceback instead. Run ``mlff <command> --help`` for the
options of each command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from mlff.md_workflows.cli import data, fe, md, models, train
from mlff.md_workflows.cli._common import COMMANDS

__all__ = ["COMMANDS", "build_parser", "main", "user_error_message"]

#: Exit status of an expected user error (argparse's own usage errors use it too).
EXIT_USER_ERROR = 2

#: The parser builders of every subcommand, in ``mlff --help`` order.
_ADDERS = (data.add_label, data.add_sample, data.add_stats, data.add_dataset, train.add_train,
           train.add_eval, models.add_import, models.add_info, models.add_export, md.add_md, md.add_relax, md.add_analyze, md.add_demo,
           data.add_label_demo, fe.add_fe)

#: File errors -> the fix the message suggests.
_FILE_ERROR_FIXES = (
    (FileNotFoundError, "check the path"),
    (FileExistsError, "remove it or choose another output path"),
    (IsADirectoryError, "give a file, not a directory"),
    (NotADirectoryError, "a part of the path is a file, not a directory; check the path"),
    (PermissionError, "check its permissions or choose another location"),
)


def _user_errors() -> tuple:
    """The exception types reported as one-line messages (the AmberTools error is an
    :class:`mlff.errors.ExternalToolError`, so an :class:`mlff.errors.MLFFError`)."""
    from mlff.errors import MLFFError

    return (MLFFError, ValueError) + tuple(t for t, _ in _FILE_ERROR_FIXES)


def user_error_message(exc: BaseException) -> str:
    """One line naming the problem (and, for file errors without one, the fix)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        # raised by open() and friends: "[Errno 2] No such file ..." -> path, reason and fix
        fix = next((f for t, f in _FILE_ERROR_FIXES if isinstance(exc, t)), "check the path")
        text = f"{exc.filename}: {exc.strerror.lower()}; {fix}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message's layout


def build_parser() -> argparse.ArgumentParser:
    """The ``mlff`` parser with every subcommand (imports only light modules)."""
    from mlff import __version__

    parser = argparse.ArgumentParser(
        prog="mlff",
        description="Equivariant machine-learned interatomic potentials: data, training, "
        "simulation.",
    )
    parser.add_argument("--version", action="version", version=f"mlff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of a one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _ADDERS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command and return its exit status:
    0 done, 2 a user error (one line on stderr), 3 and 4 as the command's help says."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        if args.debug:
            raise
        print(f"mlff {args.command}: error: {user_error_message(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
