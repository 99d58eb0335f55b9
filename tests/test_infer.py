"""python -m emca.infer end to end on a tiny checkpoint, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _fake_data import PHOTO_SIZE, pose_json_text, write_person_photos
from _tiny_training import moved_adapter
from PIL import Image

from emca.data.annotations import write_annotations, write_pairs
from emca.data.keypoints import JOINT_NAMES
from emca.errors import CheckpointError, DataError
from emca.infer import InferOptions, Transfer, main, read_pose_json
from emca.io import atomic_torch_save, safe_torch_load


@pytest.fixture(scope="module")
def checkpoint(tiny_run_checkpoint: Path) -> Path:
    return tiny_run_checkpoint


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Two synthetic photos of one person, with their keypoints in the photos' frame."""
    folder = tmp_path_factory.mktemp("photos")
    return folder, write_person_photos(folder)


def xy_json(path: Path, keypoints: np.ndarray, size: tuple[int, int] | None) -> Path:
    path.write_text(pose_json_text(keypoints, size))
    return path


def test_pose_json_formats_agree(tmp_path: Path, photos) -> None:
    keypoints = photos[1]["p0.png"]
    from_list = read_pose_json(xy_json(tmp_path / "a.json", keypoints, PHOTO_SIZE), (32, 16))
    flat = [v for r, c in keypoints for v in ((float(c), float(r), 0.9) if r >= 0 else (0.0, 0.0, 0.0))]
    (tmp_path / "b.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": flat}], "height": 96, "width": 64}))
    from_openpose = read_pose_json(tmp_path / "b.json", (32, 16))
    np.testing.assert_array_equal(from_list.keypoints, keypoints)
    np.testing.assert_array_equal(from_openpose.keypoints, keypoints)
    assert from_list.size == from_openpose.size == PHOTO_SIZE


def test_single_photo_to_pose_writes_image_and_sheet(tmp_path: Path, checkpoint: Path, photos) -> None:
    folder, annotations = photos
    source_pose = xy_json(tmp_path / "source.json", annotations["p0.png"], PHOTO_SIZE)
    target_pose = xy_json(tmp_path / "target.json", annotations["p1.png"], PHOTO_SIZE)
    out, sheet = tmp_path / "out" / "result.png", tmp_path / "out" / "sheet.png"
    main(
        [
            f"ckpt={checkpoint}",
            f"source={folder / 'p0.png'}",
            f"source_pose={source_pose}",
            f"target={target_pose}",
            f"out={out}",
            f"sheet={sheet}",
        ]
    )
    with Image.open(out) as result:
        assert result.size == (16, 32)
        produced = np.asarray(result)
    with Image.open(sheet) as image:
        assert image.size == (4 * 16 + 5 * 2, 32 + 2 * 2)  # source | source pose | target pose | result

    # the written image is the generator's output on the framed inputs
    options = InferOptions(ckpt=str(checkpoint), device="cpu")
    transfer = Transfer(options)
    image, framed_source = transfer.framed_source(folder / "p0.png", annotations["p0.png"])
    _, expected, _ = transfer(image, framed_source, transfer.target_pose(target_pose))
    np.testing.assert_array_equal(produced, np.asarray(expected))


def test_batch_from_pairs_csv(tmp_path: Path, checkpoint: Path, photos) -> None:
    folder, annotations = photos
    write_annotations(tmp_path / "annotations.csv", annotations)
    write_pairs(tmp_path / "pairs.csv", [("p0.png", "p1.png"), ("p1.png", "p0.png")])
    main(
        [
            f"ckpt={checkpoint}",
            f"pairs={tmp_path / 'pairs.csv'}",
            f"images={folder}",
            f"annotations={tmp_path / 'annotations.csv'}",
            f"out={tmp_path / 'results'}",
        ]
    )
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["p0___p1.png", "p1___p0.png"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_missing_joints_are_named(tmp_path: Path, checkpoint: Path, photos, capsys) -> None:
    folder, annotations = photos
    no_hips = annotations["p1.png"].copy()
    no_hips[[8, 11]] = -1
    target = xy_json(tmp_path / "target.json", no_hips, PHOTO_SIZE)
    source_pose = xy_json(tmp_path / "source.json", annotations["p0.png"], PHOTO_SIZE)
    message = run_cli(
        [
            f"ckpt={checkpoint}",
            f"source={folder / 'p0.png'}",
            f"source_pose={source_pose}",
            f"target={target}",
            f"out={tmp_path / 'r.png'}",
        ],
        capsys,
    )
    assert str(target) in message and JOINT_NAMES[8] in message and JOINT_NAMES[11] in message
    assert not (tmp_path / "r.png").exists()


def test_unreadable_image_is_named(tmp_path: Path, checkpoint: Path, photos, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    source_pose = xy_json(tmp_path / "source.json", photos[1]["p0.png"], PHOTO_SIZE)
    message = run_cli(
        [
            f"ckpt={checkpoint}",
            f"source={broken}",
            f"source_pose={source_pose}",
            f"target={source_pose}",
            f"out={tmp_path / 'r.png'}",
        ],
        capsys,
    )
    assert str(broken) in message


def test_checkpoint_config_mismatch(tmp_path: Path, checkpoint: Path) -> None:
    content = safe_torch_load(checkpoint)
    content["hyper_parameters"]["model"]["generator"]["ngf"] = 8
    mismatched = tmp_path / "mismatched.ckpt"
    atomic_torch_save(content, mismatched)
    with pytest.raises(CheckpointError, match="mismatched.ckpt"):
        Transfer(InferOptions(ckpt=str(mismatched), device="cpu"))


def test_unknown_argument_is_refused(tmp_path: Path, checkpoint: Path, capsys) -> None:
    message = run_cli([f"ckpt={checkpoint}", "sauce=x.jpg", f"out={tmp_path / 'r.png'}"], capsys)
    assert "sauce" in message


def test_no_person_detected(tmp_path: Path, checkpoint: Path, photos) -> None:
    pytest.importorskip("mediapipe")
    grey = tmp_path / "grey.png"
    Image.new("RGB", (64, 96), (128, 128, 128)).save(grey)
    transfer = Transfer(InferOptions(ckpt=str(checkpoint), device="cpu"))
    with pytest.raises(DataError, match="grey.png"):
        transfer.target_pose(grey)


def test_half_body_photo_is_refused_naming_missing_hips(tmp_path: Path, checkpoint: Path) -> None:
    """A real photo: MediaPipe finds the astronaut's head and shoulders, but her hips are out of frame."""
    pytest.importorskip("mediapipe")
    from skimage.data import astronaut

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut()).save(photo)
    transfer = Transfer(InferOptions(ckpt=str(checkpoint), device="cpu"))
    keypoints = transfer.detect(astronaut(), photo)
    assert (keypoints[[0, 1, 2, 5]] >= 0).all()  # nose, neck, shoulders found
    with pytest.raises(DataError) as err:
        transfer.framed_source(photo, None)
    assert str(photo) in str(err.value) and JOINT_NAMES[8] in str(err.value) and JOINT_NAMES[11] in str(err.value)


def test_adapter_applies_personalisation_and_scale_zero_is_the_base(tmp_path: Path, checkpoint: Path, photos) -> None:
    """adapter=... runs base + MoA adapter; adapter_scale=0 writes exactly the base model's image."""
    adapter = moved_adapter(checkpoint, tmp_path / "adapter.pt")

    folder, annotations = photos
    source_pose = xy_json(tmp_path / "source.json", annotations["p0.png"], PHOTO_SIZE)
    target_pose = xy_json(tmp_path / "target.json", annotations["p1.png"], PHOTO_SIZE)
    common = [
        f"ckpt={checkpoint}",
        f"source={folder / 'p0.png'}",
        f"source_pose={source_pose}",
        f"target={target_pose}",
    ]
    written = {}
    for name, extra in (
        ("base", []),
        ("scale0", [f"adapter={adapter}", "adapter_scale=0"]),
        ("scale1", [f"adapter={adapter}"]),
    ):
        main([*common, *extra, f"out={tmp_path / name}.png"])
        written[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    np.testing.assert_array_equal(written["scale0"], written["base"])
    assert np.abs(written["scale1"].astype(int) - written["base"].astype(int)).max() > 0
    with pytest.raises(SystemExit):
        main([*common, f"adapter={adapter}", "adapter_scale=2", f"out={tmp_path / 'bad.png'}"])


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_the_usage_and_runs_nothing(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import emca.infer

    main([f"out={tmp_path / 'never.png'}", flag])
    assert capsys.readouterr().out.strip() == emca.infer.__doc__.strip()
    assert not list(tmp_path.iterdir())
