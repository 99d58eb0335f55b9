"""Where results go: an unwritable path, a name without an image suffix and a full disk end with one message
naming the path, and nothing half-written is left behind."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from emca.cli import user_errors
from emca.errors import DiskFull, OutputError
from emca.infer import main as infer_main
from emca.io import atomic_directory, atomic_save_image, atomic_torch_save

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pipeline"


def test_a_path_through_a_file_is_named(tmp_path: Path) -> None:
    blocking = tmp_path / "photo.png"
    blocking.write_text("x")
    with pytest.raises(OutputError, match=f"'{blocking}' is a file, not a folder"):
        atomic_torch_save({"x": 1}, blocking / "sub" / "state.pt")
    with pytest.raises(OutputError, match=f"'{blocking}' is a file, not a folder"), atomic_directory(blocking / "data"):
        pass


@pytest.mark.parametrize(("name", "expected"), [("result", "it has no suffix"), ("result.tmp", "its suffix '.tmp'")])
def test_an_image_name_without_an_image_suffix_is_refused(name: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=expected):
        atomic_save_image(Image.new("RGB", (2, 2)), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_infer_into_a_path_through_a_file_prints_one_message(tmp_path: Path, capsys) -> None:
    out = FIXTURE / "source.png" / "result.png"  # the fixture photo is a file
    arguments = [f"source={FIXTURE / 'source.png'}", f"source_pose={FIXTURE / 'source_pose.json'}"]
    with pytest.raises(SystemExit) as exit_info, user_errors():
        infer_main([f"ckpt={FIXTURE / 'model'}", *arguments, f"target={FIXTURE / 'target_pose.json'}", f"out={out}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is a file, not a folder" in err and "Traceback" not in err


class FullDisk(io.RawIOBase):
    """A file that takes 1,000 bytes, then fails as a full disk does."""

    def __init__(self) -> None:
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)


def test_torch_reporting_a_full_disk_as_a_runtime_error_is_disk_full(tmp_path: Path, monkeypatch) -> None:
    real_save = torch.save
    with pytest.raises(RuntimeError) as raw:  # what torch's zip writer makes of ENOSPC
        real_save({"x": torch.zeros(10_000)}, FullDisk())
    assert isinstance(raw.value.__context__, OSError) and "unexpected pos" in str(raw.value)

    path = tmp_path / "last.ckpt"
    atomic_torch_save({"x": torch.ones(3)}, path)
    before = path.read_bytes()
    monkeypatch.setattr("emca.io.torch.save", lambda obj, handle: real_save(obj, FullDisk()))
    with pytest.raises(DiskFull, match="the previous version is intact"):
        atomic_torch_save({"x": torch.zeros(10_000)}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
