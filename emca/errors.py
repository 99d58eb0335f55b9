"""User-facing errors.

Anything the user can fix (a path, a config field, a data file, missing weights) raises a subclass of
:class:`EmcaError` whose message is one paragraph naming the file / row / field and saying what was
expected. ``emca train`` and ``emca eval`` print such messages without a traceback.
"""

from collections.abc import Iterator


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it arose from (``__cause__``, else ``__context__``), each once: libraries
    (Hydra, Lightning, torch) re-raise the error that matters as the cause or context of their own."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


class EmcaError(Exception):
    """An error caused by user input, with a message that says how to fix it."""


class DataError(EmcaError):
    """A dataset file (image, annotation CSV, pairs CSV) is missing or malformed."""


class ConfigError(EmcaError):
    """A configuration value is invalid or inconsistent. Raised only where a command starts (the edge:
    emca.options, emca.build, the application modules), never by the classes the options configure."""


class InputShapeError(EmcaError, ValueError):
    """A tensor handed to a network or a metric has a shape it cannot take (channels, batch, size)."""


class Unavailable(EmcaError):
    """Something a run needs cannot be used on this machine: a kernel without its GPU, an optional package
    that is not installed."""


class WeightsError(EmcaError):
    """Pretrained weights needed by a loss or metric cannot be found or loaded."""


class CheckpointError(EmcaError):
    """A checkpoint or adapter file cannot be loaded safely or does not fit the model."""


class TrainingDiverged(EmcaError):
    """A loss or gradient became NaN or infinite; the run stops rather than train on or save a broken model."""


class DiskFull(EmcaError):
    """No space was left to write a file; the previous version of the file is intact."""


class OutputError(EmcaError):
    """A result cannot be written where the user asked: a read-only folder, a path through a file."""


class RunInterrupted(EmcaError):
    """A run was stopped from outside (SIGTERM); its last.ckpt holds the state it reached."""
