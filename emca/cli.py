"""The edge shared by the commands: key=value options, device names, renamed spellings, and turning user errors
into one clear paragraph instead of a traceback."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from emca.config import CONF
from emca.errors import ConfigError, EmcaError, error_chain

# Spellings that earlier releases used, per command, with the one that replaced them. Each fails with a
# message naming the new spelling instead of working as a silent alias, so docs and scripts converge.
RENAMED: dict[str, dict[str, str]] = {
    "train": {
        "ckpt_path": "resume= (continue a run exactly)",
        "init_ckpt": "ckpt= (start a new run from a model's weights)",
        "base_ckpt": "ckpt= (experiment=personalize: the model to personalise)",
        "subject_dir": "data.root= (experiment=personalize: the subject's photos)",
    },
    "eval": {"ckpt_path": "ckpt=", "out_dir": "out="},
}

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
    found = next((link for link in error_chain(error) if isinstance(link, EmcaError)), None)
    return None if found is None else _unwrap_worker_error(found)


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


def check_spellings(command: str, overrides: Sequence[str]) -> None:
    """Raise a ConfigError naming the current spelling for an override that uses a renamed key."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in RENAMED.get(command, {}):
            raise ConfigError(f"emca {command}: '{key}=' was renamed; use {RENAMED[command][key]}.")


def check_placeholders(overrides: Sequence[str]) -> None:
    """A ``{split}`` placeholder outside quotes would stop Hydra's parser with "mismatched input '{'": say how to
    quote it instead."""
    for override in overrides:
        key, _, value = override.partition("=")
        if "{split}" in value and value[:1] not in ("'", '"'):
            raise ConfigError(
                f"'{override}': Hydra reads '{{' as the start of a dictionary; quote the value, and the whole "
                f"argument for the shell: \"{key}='{value}'\"."
            )


def hydra_command(config_name: str, task: Callable[[Any], Any], argv: Sequence[str] | None) -> None:
    """Run ``task(cfg)`` on ``conf/<config_name>.yaml`` composed by Hydra from ``key=value`` overrides (and
    Hydra's own flags: ``-m``, ``--help``, ``--cfg job``), turning emca's errors into one paragraph.

    The arguments go to Hydra's parser directly, as ``@hydra.main`` would pass ``sys.argv[1:]``: sys.argv stays
    the user's command line, which Lightning's DDP launcher re-runs to start the other processes
    (``emca train ...``, ``python -m emca train ...`` or ``python train.py ...``)."""
    from hydra import version
    from hydra._internal.utils import _run_hydra, get_args_parser

    arguments = list(sys.argv[1:] if argv is None else argv)
    with user_errors():
        check_spellings(config_name, arguments)
        check_placeholders(arguments)

    def run(cfg: Any) -> Any:
        with user_errors():
            return task(cfg)

    version.setbase("1.3")
    parser = get_args_parser()
    _run_hydra(
        args=parser.parse_args(arguments),
        args_parser=parser,
        task_function=run,
        config_path=str(CONF),
        config_name=config_name,
    )


def renamed_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Make ``old`` (a flag earlier releases had) fail with a message naming ``new`` instead of argparse's
    'unrecognized arguments'."""

    class Renamed(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
            parser.error(f"{old} was renamed; use {new}.")

    parser.add_argument(old, nargs="?", action=Renamed, help=argparse.SUPPRESS)


def key_value_arguments(argv: Sequence[str] | None, doc: str) -> list[str] | None:
    """The ``key=value`` arguments of a command (``sys.argv[1:]`` when ``argv`` is None); None after printing
    ``doc`` for ``-h`` / ``--help``, which such a command answers instead of parsing."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if any(argument in ("-h", "--help") for argument in arguments):
        print(doc)
        return None
    return arguments


def key_value_options(options_class: type, argv: Sequence[str], command: str) -> Any:
    """``key=value`` arguments (``emca infer``, ``emca demo``) parsed into ``options_class`` by emca.options:
    the one check of types, ranges and unknown keys."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from emca.options import parse

    try:
        values = OmegaConf.to_container(OmegaConf.from_cli(list(argv)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"Bad argument: {err}. Arguments are key=value; see `emca {command} --help`.") from err
    return parse(options_class, values, "")


def resolve_device(name: Any) -> Any:
    """``device=``: ``auto`` is the GPU when there is one, else the CPU; a CUDA device without CUDA is refused."""
    import torch

    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine; use device=cpu or device=auto.")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name}: expected auto, cpu, cuda or cuda:N.") from err
