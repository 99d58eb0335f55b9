"""Turning user errors into one clear paragraph instead of a traceback."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator, Sequence

from emca.errors import EmcaError

# torch re-raises an exception from a DataLoader worker (or its pin-memory thread) as a new exception of
# the same type whose message is this header plus the worker's whole formatted traceback
_WORKER_HEADER = re.compile(r"Caught \w+ in .*\.\nOriginal Traceback \(most recent call last\):\n")
_TRACEBACK_START = "Traceback (most recent call last):\n"


def _unwrap_worker_error(error: EmcaError) -> EmcaError:
    """The worker's own error for one that torch re-raised from a DataLoader worker; ``error`` otherwise."""
    text = str(error)
    if not _WORKER_HEADER.match(text):
        return error
    # the last traceback is the error itself (earlier ones are its causes); its frame lines are indented
    last_traceback = text[text.rindex(_TRACEBACK_START) + len(_TRACEBACK_START) :]
    summary = "\n".join(line for line in last_traceback.splitlines() if not line.startswith(" "))
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    if not summary.startswith(prefix):
        return error
    original = type(error)(summary[len(prefix) :])
    original.__cause__ = error
    return original


def find_user_error(error: BaseException) -> EmcaError | None:
    """The EmcaError behind ``error``, which Hydra's instantiate, Lightning or a DataLoader worker may wrap."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, EmcaError):
            return _unwrap_worker_error(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print an EmcaError (however deeply wrapped) as one paragraph and exit with status 2."""
    try:
        yield
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        print(f"\nerror: {user_error}", file=sys.stderr)
        sys.exit(2)


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and call the chosen subcommand's ``run(args)``; returns 0, or 2 after a user error."""
    args = parser.parse_args(argv)
    try:
        with user_errors():
            args.run(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def key_value_arguments(argv: Sequence[str] | None, doc: str) -> list[str] | None:
    """The ``key=value`` arguments of a command (``sys.argv[1:]`` when ``argv`` is None); None after printing
    ``doc`` for ``-h`` / ``--help``, which such a command answers instead of parsing."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if any(argument in ("-h", "--help") for argument in arguments):
        print(doc)
        return None
    return arguments
