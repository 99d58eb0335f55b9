"""Reading and writing video files with PyAV (FFmpeg's libraries): frames in and out as RGB arrays, the input's
frame rate and codec kept where the output's container can hold the codec, and the output written atomically.
PyAV comes with the ``pose`` extra.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np

from emca.errors import DataError, EmcaError
from emca.io import atomic_open

# encoders tried, in order, when the input's codec cannot be written into the output's container
FALLBACK_CODECS = ("libx264", "mpeg4", "mjpeg")
# the containers an output may be, by suffix
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska"}


def import_av() -> ModuleType:
    """PyAV, or an EmcaError saying how to install it."""
    try:
        import av
    except ImportError as err:
        raise EmcaError(f"Video files need PyAV, which cannot be imported ({err}): pip install 'emca[pose]'.") from err
    return av


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: Fraction
    codec: str
    height: int
    width: int
    frames: int | None  # as the container's header says; None when it does not


def probe(path: Path) -> VideoInfo:
    """What a video holds, or a DataError naming the file when it is not a video PyAV can decode."""
    av = import_av()
    if path.is_dir():
        raise DataError(f"Video '{path}' is a folder; expected a video file (e.g. .mp4, .avi).")
    if not path.is_file():
        raise DataError(f"Video '{path}' does not exist.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"'{path}' holds no video stream (an audio file, or not a video).")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise DataError(f"Cannot read video '{path}': it has a video stream but no frame decodes.")
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            return VideoInfo(path, Fraction(rate), stream.codec_context.name, first.height, first.width,
                             stream.frames or None)  # fmt: skip
    except av.error.FFmpegError as err:
        raise DataError(
            f"Cannot read video '{path}': FFmpeg finds no video it can decode in it ({err}). Expected a video file "
            "such as .mp4 or .avi; convert it with ffmpeg."
        ) from err


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of the first video stream as (H, W, 3) uint8 RGB."""
    av = import_av()
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def _writable(av: ModuleType, container_format: str, codec: str, fps: Fraction) -> bool:
    """Whether ``codec`` encodes a tiny clip into ``container_format`` (tried in memory)."""
    try:
        with av.open(io.BytesIO(), "w", format=container_format) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p" if codec != "mjpeg" else "yuvj420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        return True
    except (av.error.FFmpegError, ValueError, TypeError):
        return False


def output_codec(path: Path, preferred: str, fps: Fraction) -> str:
    """``preferred`` (the input's codec) when it can be written into ``path``'s container, else the first of
    FALLBACK_CODECS that can."""
    av = import_av()
    name = CONTAINERS[path.suffix.lower()]
    for codec in (preferred, *FALLBACK_CODECS):
        if _writable(av, name, codec, fps):
            return codec
    raise EmcaError(f"None of the encoders {[preferred, *FALLBACK_CODECS]} can write '{path}' with this FFmpeg.")


def write_video(path: Path, frames: Iterable[np.ndarray], fps: Fraction, codec: str) -> int:
    """Encode (H, W, 3) uint8 RGB ``frames`` (even sides) into ``path`` at ``fps`` with ``codec``, atomically:
    nothing is at ``path`` until every frame is written. Returns the number of frames."""
    av = import_av()
    count = 0
    with atomic_open(path, "wb") as handle, av.open(handle, "w", format=CONTAINERS[path.suffix.lower()]) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for image in frames:
            if count == 0:
                stream.height, stream.width = image.shape[:2]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
            count += 1
        container.mux(stream.encode())
    return count
