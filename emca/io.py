"""Atomic file writing and safe checkpoint loading, shared by every module that touches disk."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from emca.errors import CheckpointError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A crash (or exception) midway leaves any previous ``path`` untouched and removes the temporary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_save_image(image: Any, path: str | os.PathLike, **save_options: Any) -> None:
    """Save a PIL image atomically; the format comes from the suffix of ``path`` (options: e.g. quality)."""
    fmt = Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG")
    with atomic_open(path, "wb") as handle:
        image.save(handle, format=fmt, **save_options)


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only.

    A file that would need to unpickle arbitrary objects (and so could run code) is refused with a
    :class:`CheckpointError` instead of being executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refusing to load '{path}': it contains pickled objects other than tensors and plain "
            f"containers, which could run code when loaded ({str(err).splitlines()[0]}). Only load "
            "checkpoints written by emca, or re-save the file's state_dict from a trusted session."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"Cannot read checkpoint '{path}': {err}. Is the file complete?") from err
