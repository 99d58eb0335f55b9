"""Bad dataset inputs end in one paragraph naming the file, line or field; valid odd inputs load correctly."""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from _fake_data import make_split
from PIL import Image
from torch.utils.data import DataLoader

from emca.build import build_datamodule
from emca.cli import find_user_error, user_errors
from emca.data.__main__ import main
from emca.data.datamodule import PoseTransferDataModule
from emca.data.dataset import PoseTransferDataset, load_image, make_layout
from emca.data.keypoints import JOINT_NAMES
from emca.errors import ConfigError, DataError

DATAMODULE = "emca.data.datamodule.PoseTransferDataModule"

HEIGHT, WIDTH = 32, 16
LAYOUT = make_layout("synthetic", height=HEIGHT, width=WIDTH)


def validate_args(root: Path) -> list[str]:
    """``python -m emca.data`` arguments that validate (decoding every image) the 'train' split of ``root``."""
    return [
        "validate",
        str(root),
        "--preset",
        "synthetic",
        "--height",
        str(HEIGHT),
        "--width",
        str(WIDTH),
        "--splits",
        "train",
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """One 'train' split of 2 people x 3 JPEG images, person00_0.jpg ... person01_2.jpg (12 pairs)."""
    make_split(tmp_path, LAYOUT, "train", people=2, images_per_person=3, suffix=".jpg")
    return tmp_path


def annotation_path(root: Path) -> Path:
    return LAYOUT.annotation_path(root, "train")


def pairs_path(root: Path) -> Path:
    return LAYOUT.pairs_path(root, "train")


def image_path(root: Path, name: str) -> Path:
    return LAYOUT.image_dir_path(root, "train") / name


def rewrite_annotation(root: Path, name: str, rows: list[int], cols: list[int]) -> int:
    """Replace the annotation row of ``name`` (coordinates written verbatim); returns its 1-based line."""
    lines = annotation_path(root).read_text().splitlines()
    line_number = next(n for n, line in enumerate(lines, start=1) if line.startswith(f"{name}:"))
    lines[line_number - 1] = f"{name}: {json.dumps(rows)}: {json.dumps(cols)}"
    annotation_path(root).write_text("\n".join(lines) + "\n")
    return line_number


def first_pairs_line_using(root: Path, name: str) -> int:
    lines = pairs_path(root).read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if name in line.split(","))


def start_of_scan(data: bytes) -> int:
    """Offset of a JPEG's start-of-scan marker: everything before it is the header PIL reads lazily."""
    return data.index(b"\xff\xda")


def truncate_jpeg(path: Path) -> None:
    data = path.read_bytes()
    scan = start_of_scan(data)
    path.write_bytes(data[: scan + (len(data) - scan) // 2])


def blank_jpeg_body(path: Path) -> None:
    """Overwrite everything from the start-of-scan marker with zero bytes, keeping the end-of-image marker."""
    data = path.read_bytes()
    scan = start_of_scan(data)
    path.write_bytes(data[:scan] + bytes(len(data) - scan - 2) + b"\xff\xd9")


# each case breaks the dataset at ``root`` and returns the fragments the error message must contain


def huge_coordinate(root: Path) -> list[str]:
    line = rewrite_annotation(root, "person00_1.jpg", [5] * 17 + [10**30], [5] * 18)
    return [
        f"{annotation_path(root)}, line {line}, field 'keypoints_y'",
        JOINT_NAMES[17],
        str(10**30),
        "from 0 to 2147483647",
    ]


def non_utf8_annotation(root: Path) -> list[str]:
    path = annotation_path(root)
    data = path.read_bytes()
    third_line = data.index(b"\n", data.index(b"\n") + 1) + 1
    latin1 = b"caf\xe9"  # 'cafe' with a Latin-1 e-acute, starting line 3's name
    path.write_bytes(data[:third_line] + latin1 + data[third_line:])
    return [f"{path}, line 3", "byte 0xe9", f"byte offset {third_line + 3}", "must be saved as UTF-8"]


def non_utf8_pairs(root: Path) -> list[str]:
    path = pairs_path(root)
    data = path.read_bytes()
    path.write_bytes(data + b"person00_0.jpg,\xff\xfe.jpg\n")  # an appended last line, in UTF-16 bytes
    line = data.count(b"\n") + 1
    return [f"{path}, line {line}", "byte 0xff", f"byte offset {len(data) + len('person00_0.jpg,')}", "UTF-8"]


def truncated_jpeg(root: Path) -> list[str]:
    truncate_jpeg(image_path(root, "person01_1.jpg"))
    return ["cannot be read as images: 'person01_1.jpg'", str(image_path(root, "person01_1.jpg")), "truncated"]


def corrupt_jpeg_body(root: Path) -> list[str]:
    blank_jpeg_body(image_path(root, "person00_2.jpg"))
    return ["cannot be read as images: 'person00_2.jpg'", str(image_path(root, "person00_2.jpg")), "re-download"]


def half_missing_joint(root: Path) -> list[str]:
    line = rewrite_annotation(root, "person01_0.jpg", [5] * 4 + [-1] + [5] * 13, [5] * 18)
    return [
        f"{annotation_path(root)}, line {line}",
        f"joint '{JOINT_NAMES[4]}'",
        "'person01_0.jpg'",
        "keypoints_y -1 and keypoints_x 5",
        "both set to -1",
    ]


def image_without_joints(root: Path) -> list[str]:
    rewrite_annotation(root, "person00_1.jpg", [-1] * 18, [-1] * 18)
    line = first_pairs_line_using(root, "person00_1.jpg")
    return [
        f"{pairs_path(root)}, line {line}",
        "image 'person00_1.jpg'",
        "all 18 joints missing",
        str(annotation_path(root)),
    ]


def annotation_is_a_directory(root: Path) -> list[str]:
    annotation_path(root).unlink()
    annotation_path(root).mkdir()
    return [f"Annotation file '{annotation_path(root)}' is a directory", "expected a CSV file"]


def pairs_file_is_a_directory(root: Path) -> list[str]:
    pairs_path(root).unlink()
    pairs_path(root).mkdir()
    return [f"Pairs file '{pairs_path(root)}' is a directory", "expected a CSV file"]


def image_is_a_directory(root: Path) -> list[str]:
    image_path(root, "person01_2.jpg").unlink()
    image_path(root, "person01_2.jpg").mkdir()
    line = first_pairs_line_using(root, "person01_2.jpg")
    return [
        str(pairs_path(root)),
        "are directories",
        "'person01_2.jpg'",
        "image files were expected",
        f"used on line {line}",
    ]


def swapped_x_and_y(root: Path) -> list[str]:
    """Every image annotated x first: its rows 10..27 land in the x list, outside the 16-pixel-wide image."""
    rows, cols = [10 + joint for joint in range(18)], [joint % 16 for joint in range(18)]
    for person in range(2):
        for view in range(3):
            rewrite_annotation(root, f"person{person:02d}_{view}.jpg", cols, rows)
    return [
        str(annotation_path(root)),
        "outside the 32x16 image",
        "Did you swap x and y? The PATN format lists y (row) first",
    ]


def joint_outside_both_ways(root: Path) -> list[str]:
    """Row 40 fits neither 32 rows nor, swapped, 16 columns: no swap hint."""
    line = rewrite_annotation(root, "person00_0.jpg", [40] + [5] * 17, [5] * 18)
    return [f"{annotation_path(root)}, line {line}", "'nose'", "(row 40, col 5)"]


CLI_CASES: dict[str, Callable[[Path], list[str]]] = {
    "1 coordinate 10**30": huge_coordinate,
    "2 non-UTF-8 annotation": non_utf8_annotation,
    "2 non-UTF-8 pairs": non_utf8_pairs,
    "4 truncated JPEG": truncated_jpeg,
    "4 corrupt JPEG body": corrupt_jpeg_body,
    "5 only y is -1": half_missing_joint,
    "6 paired image without joints": image_without_joints,
    "7 annotation CSV is a directory": annotation_is_a_directory,
    "7 pairs CSV is a directory": pairs_file_is_a_directory,
    "7 image is a directory": image_is_a_directory,
    "8 x and y swapped": swapped_x_and_y,
    "8 outside, not swapped": joint_outside_both_ways,
}


@pytest.mark.parametrize("break_dataset", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_validate_reports_one_paragraph(
    root: Path, break_dataset: Callable[[Path], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    expected = break_dataset(root)
    assert main(validate_args(root)) == 2
    err = capsys.readouterr().err
    assert err.lstrip().startswith("error: ") and "Traceback" not in err
    message = err.strip().splitlines()
    assert len(message) == 1, err
    for fragment in expected:
        assert fragment in message[0]
    assert ("swap x and y" in message[0]) == (break_dataset is swapped_x_and_y)


def test_validate_entry_point_prints_no_traceback(root: Path) -> None:
    expected = huge_coordinate(root)
    result = subprocess.run(
        [sys.executable, "-m", "emca.data", *validate_args(root)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "OverflowError" not in result.stderr
    assert all(fragment in result.stderr for fragment in expected)


@pytest.mark.parametrize("break_image", [truncate_jpeg, blank_jpeg_body], ids=["truncated", "corrupt body"])
def test_training_check_reads_headers_only(root: Path, break_image: Callable[[Path], None]) -> None:
    """Training's up-front check stays fast (headers only); the body's damage shows when the item is loaded.

    Where every PIL plugin is registered (Image.init, which e.g. importing Gradio does), PIL's JPEG
    identification also reads the multi-picture segment and may already refuse the blanked body when the header
    is read; then the up-front check names the file instead. Either way the file is named, with no traceback."""
    break_image(image_path(root, "person00_1.jpg"))
    try:
        dataset = PoseTransferDataset(root, LAYOUT, "train")
    except DataError as error:
        assert Image._initialized >= 2 and "cannot be read as images: 'person00_1.jpg'" in str(error)
        return
    with pytest.raises(DataError, match=r"Cannot decode image '.*person00_1.jpg'"):
        dataset[0]  # (person00_0, person00_1)


def test_validate_shows_a_decoding_progress_bar(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("emca.data.dataset._PROGRESS_DELAY_S", 0.0)  # the bar normally waits 2 s
    assert main(validate_args(root)) == 0
    captured = capsys.readouterr()
    assert "Decoding images in" in captured.err and "6/6" in captured.err
    assert "train: 12 pairs over 6 images" in captured.out


def sixteen_bit_samples() -> np.ndarray:
    """(32, 16) uint16 gray samples spanning 0..65535, most of them above 255 (white when clipped to 8 bits)."""
    return np.linspace(0, 65535, HEIGHT * WIDTH).round().astype(np.uint16).reshape(HEIGHT, WIDTH)


def write_pgm(path: Path, samples: np.ndarray) -> None:
    """A binary 16-bit PGM written by hand (PIL opens it in mode 'I')."""
    height, width = samples.shape
    path.write_bytes(f"P5\n{width} {height}\n65535\n".encode() + samples.astype(">u2").tobytes())


SIXTEEN_BIT_WRITERS: dict[str, Callable[[Path, np.ndarray], None]] = {
    "PNG I;16": lambda path, samples: Image.fromarray(samples).save(path, format="PNG"),
    "TIFF I;16": lambda path, samples: Image.fromarray(samples).save(path, format="TIFF"),
    "PGM I": write_pgm,
}


@pytest.mark.parametrize("write", SIXTEEN_BIT_WRITERS.values(), ids=SIXTEEN_BIT_WRITERS.keys())
def test_sixteen_bit_gray_images_load_scaled(
    root: Path, write: Callable[[Path, np.ndarray], None], capsys: pytest.CaptureFixture[str]
) -> None:
    samples = sixteen_bit_samples()
    path = image_path(root, "person00_1.jpg")  # PIL goes by the content, not the name
    write(path, samples)
    with Image.open(path) as written:
        assert written.mode in ("I;16", "I")
    expected = torch.from_numpy(samples.astype(np.float64) / 65535.0 * 2.0 - 1.0).float().expand(3, HEIGHT, WIDTH)
    torch.testing.assert_close(load_image(path, HEIGHT, WIDTH), expected)
    item = PoseTransferDataset(root, LAYOUT, "train")[0]  # (person00_0, person00_1)
    torch.testing.assert_close(item["target_image"], expected)
    assert main(validate_args(root)) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        (np.full((HEIGHT, WIDTH), 70000, dtype=np.int32), "32-bit integer samples"),
        (np.full((HEIGHT, WIDTH), 0.5, dtype=np.float32), "floating-point samples"),
    ],
    ids=["32-bit integers", "floats"],
)
def test_wider_than_sixteen_bit_images_are_refused(tmp_path: Path, samples: np.ndarray, expected: str) -> None:
    path = tmp_path / "wide.tif"
    Image.fromarray(samples).save(path)
    with pytest.raises(DataError, match=rf"Image '{path}' has {expected}.*expected an 8-bit or 16-bit image"):
        load_image(path, HEIGHT, WIDTH)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("val_subset", 0, "is 0; expected a value >= 1"),
        ("val_subset", -4, "is -4; expected a value >= 1"),
        ("max_train_pairs", 0, "is 0; expected a value >= 1"),
        ("eval_batch_size", 0, "is 0; expected a value >= 1"),
        ("num_workers", -1, "is -1; expected a value >= 0"),
        ("flip_probability", 1.5, "is 1.5; expected a value <= 1"),
        ("flip_probability", -0.1, "is -0.1; expected a value >= 0"),
        ("sigma", 0.0, "is 0.0; expected a value > 0"),
        ("sigma", -2.0, "is -2.0; expected a value > 0"),
        ("batch_size", True, "is True; expected an integer"),
    ],
)
def test_datamodule_fields_are_checked_where_the_module_is_built(
    tmp_path: Path, field: str, value: float, expected: str
) -> None:
    config = {"_target_": DATAMODULE, "root": str(tmp_path), "height": HEIGHT, "width": WIDTH, field: value}
    with pytest.raises(ConfigError) as err:
        build_datamodule(config)
    assert str(err.value).startswith(f"Config field 'data.{field}' ") and expected in str(err.value)


@pytest.mark.parametrize(("split", "name"), [("train", "person01_1.png"), ("test", "person00_0.png")])
def test_datamodule_setup_checks_image_sizes_before_training(tmp_path: Path, split: str, name: str) -> None:
    for split_name in ("train", "test"):
        make_split(tmp_path, LAYOUT, split_name, people=2, images_per_person=2)
    Image.new("RGB", (WIDTH, HEIGHT - 2)).save(LAYOUT.image_dir_path(tmp_path, split) / name)
    module = PoseTransferDataModule(str(tmp_path), height=HEIGHT, width=WIDTH, val_subset=None)
    with pytest.raises(DataError) as err:
        module.setup("fit")  # what Lightning calls before the first training step
    message = str(err.value)
    assert str(LAYOUT.image_dir_path(tmp_path, split) / name) in message and "is 30x16" in message
    assert "expects 32x16" in message


@pytest.mark.parametrize("num_workers", [0, 2], ids=["in process", "2 workers"])
def test_worker_errors_reach_the_user_unwrapped(
    root: Path, num_workers: int, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_image = image_path(root, "person01_0.jpg")
    truncate_jpeg(bad_image)
    with pytest.raises(DataError) as direct:
        load_image(bad_image, HEIGHT, WIDTH)
    loader = DataLoader(PoseTransferDataset(root, LAYOUT, "train"), batch_size=1, num_workers=num_workers)
    with pytest.raises(Exception) as raised:
        for _ in loader:
            pass
    # the traceback's frames hold the loader's iterator: free it here, so that its workers are shut down now and
    # not when a later test's garbage collection finds it (then torch waits 5 s for each worker to answer)
    traceback.clear_frames(raised.tb)
    if num_workers:  # what torch hands on: the worker's whole traceback as the message
        assert "DataLoader worker process" in str(raised.value) and "Traceback" in str(raised.value)
    user_error = find_user_error(raised.value)
    assert isinstance(user_error, DataError) and str(user_error) == str(direct.value)
    with pytest.raises(SystemExit), user_errors():
        raise raised.value
    assert capsys.readouterr().err == f"\nerror: {direct.value}\n"
