"""Atomic file writing and safe checkpoint loading, shared by every module that touches disk."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import secrets
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image

from emca.errors import CheckpointError, DiskFull, OutputError, error_chain


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; the renamed result gets the mode a plain open() would have given it
_FILE_MODE = 0o666 & ~_umask()
TEMPORARY_SUFFIX = ".tmp"


def _unwritable(path: Path, error: OSError) -> OutputError:
    """The message for a path that cannot be created: name the file in the way, or the folder and the reason."""
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return OutputError(f"Cannot write '{path}': '{blocking}' is a file, not a folder. Choose another output path.")
    where = f" ('{error.filename}')" if error.filename else ""
    return OutputError(
        f"Cannot write '{path}': {error.strerror}{where}. Choose an output path in a folder you can write to."
    )


def _disk_full(error: BaseException) -> bool:
    """Whether ``error`` or one it arose from is a full disk or quota (torch's zip writer reports ENOSPC as a
    RuntimeError 'unexpected pos' raised while handling the OSError)."""
    return any(isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT) for link in error_chain(error))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A crash (or exception) midway leaves any previous ``path`` untouched and removes the temporary. A full
    disk raises :class:`DiskFull`, naming the folder; a folder that cannot be written (read-only, or a path
    through a file) raises :class:`OutputError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as err:
        if _disk_full(err):
            raise DiskFull(f"No space left on '{path.parent}' to write '{path.name}'; nothing was written.") from err
        raise _unwritable(path, err) from err
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _disk_full(err):
            previous = "the previous version is intact" if path.exists() else "nothing was written"
            raise DiskFull(f"No space left on '{path.parent}' while writing '{path.name}'; {previous}.") from err
        raise


@contextlib.contextmanager
def atomic_directory(root: str | os.PathLike) -> Iterator[Path]:
    """A new folder beside ``root`` to fill; on success it becomes ``root`` (an existing ``root`` is replaced only
    then), and on any exception it is removed, leaving ``root`` as it was."""
    root = Path(root)
    staging = root.parent / f".{root.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as err:
        raise _unwritable(root, err) from err
    try:
        yield staging
        if root.is_dir():
            retired = root.parent / f".{root.name}.{secrets.token_hex(4)}.old"
            os.replace(root, retired)
            os.replace(staging, root)
            shutil.rmtree(retired)
        else:
            os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, suffix: str) -> list[Path]:
    """Delete the temporaries of ``*suffix`` files that a writer killed midway (``kill -9``) left in ``folder``."""
    stale = [p for p in Path(folder).glob(f".*{suffix}.*{TEMPORARY_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_save_image(image: Any, path: str | os.PathLike, **save_options: Any) -> None:
    """Save a PIL image atomically; the format comes from the suffix of ``path`` (options: e.g. quality)."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise OutputError(
            f"Cannot write '{path}': {f'its suffix {suffix!r}' if suffix else 'it has no suffix, which'} does not "
            "name an image format Pillow writes; end the name in .png (lossless) or .jpg."
        )
    with atomic_open(path, "wb") as handle:
        image.save(handle, format=fmt, **save_options)


def _pickled_global(message: str) -> str | None:
    """The Python object a refused pickle names (``posix.system``), from torch's weights_only message."""
    match = re.search(r"(?i)global:?\s+([\w.]+)", message)
    return match.group(1) if match else None


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only.

    A file that would need to unpickle arbitrary objects (and so could run code) is refused with a
    :class:`CheckpointError` instead of being executed; a damaged file gets one that says so.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"Checkpoint '{path}' is a directory; expected a checkpoint file (.ckpt / .pt).")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"Checkpoint '{path}' is empty (0 bytes): its writing was interrupted, or it was not copied."
        )
    damaged = (
        f"Cannot read checkpoint '{path}': it is damaged or truncated (an interrupted download or copy?), or "
        "not a file written by torch.save"
    )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        named = _pickled_global(str(err))
        if named is None:
            raise CheckpointError(f"{damaged}.") from err
        raise CheckpointError(
            f"Refusing to load '{path}': it contains a pickled '{named}' object, and unpickling objects other "
            "than tensors and plain containers could run code. Only load checkpoints written by emca, or "
            "re-save the file's state_dict from a trusted session."
        ) from err
    # a malformed pickle stream makes torch's weights-only unpickler fail in many ways (an empty stack: IndexError,
    # an unknown memo key: KeyError, bad operands: TypeError or struct.error); all mean a damaged file
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, struct.error) as err:
        raise CheckpointError(f"{damaged} ({str(err).splitlines()[0] or type(err).__name__}).") from err
