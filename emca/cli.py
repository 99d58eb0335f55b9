"""Turning user errors into one clear paragraph instead of a traceback."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence

from emca.errors import EmcaError


def find_user_error(error: BaseException) -> EmcaError | None:
    """The EmcaError behind ``error``: Hydra's instantiate and Lightning wrap exceptions they pass on."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, EmcaError):
            return current
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
