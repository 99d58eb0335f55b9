"""PoseTransferDataset items, pre-training validation errors and the Lightning data module."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from _fake_data import make_dataset, make_split, random_image
from PIL import Image

from emca.build import build_datamodule
from emca.data import dataset as dataset_module
from emca.data.annotations import write_annotations, write_pairs
from emca.data.batch import PoseTransferBatch
from emca.data.datamodule import PoseTransferDataModule, PoseTransferDataOptions
from emca.data.dataset import PoseTransferDataset, load_image, make_layout, select_pairs, validate_split
from emca.data.keypoints import JOINT_NAMES, pose_heatmaps
from emca.data.synthetic import SyntheticPeople
from emca.errors import ConfigError, DataError
from emca.options import parse


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    make_dataset(tmp_path, height=32, width=16)
    return tmp_path


LAYOUT = make_layout("synthetic", height=32, width=16)


def annotation_file(root: Path, split: str = "train") -> Path:
    return LAYOUT.annotation_path(root, split)


def pairs_file(root: Path, split: str = "train") -> Path:
    return LAYOUT.pairs_path(root, split)


def replace_line(path: Path, line_number: int, new_line: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


def test_item_contents(dataset_root: Path) -> None:
    dataset = PoseTransferDataset(dataset_root, LAYOUT, "train", sigma=4.0)
    assert len(dataset) == 2 * 3 * 2  # 2 people, 3 images each, ordered pairs
    item = dataset[0]
    source_name, target_name = dataset.pairs[0]
    assert (item["source_name"], item["target_name"]) == (source_name, target_name)
    pixels = np.asarray(Image.open(dataset_root / "train" / source_name).convert("RGB"), dtype=np.float64)
    expected_image = torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1).float()
    torch.testing.assert_close(item["source_image"], expected_image)
    assert item["source_image"].shape == (3, 32, 16) and item["target_image"].shape == (3, 32, 16)
    assert item["source_image"].min() >= -1 and item["source_image"].max() <= 1
    keypoints = dataset.annotations[target_name]
    assert item["target_keypoints"].dtype == torch.int64
    np.testing.assert_array_equal(item["target_keypoints"].numpy(), keypoints)
    torch.testing.assert_close(item["target_pose"], pose_heatmaps(keypoints, 32, 16, 4.0))
    assert item["source_pose"].shape == (18, 32, 16)


@pytest.mark.parametrize("flip_probability", [0.0, 0.5])
def test_images_and_pose_maps_are_made_once_per_image_with_the_same_items(
    dataset_root: Path, flip_probability: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    def items(dataset: PoseTransferDataset) -> list[dict]:
        torch.manual_seed(0)  # the same flips on both sides
        return [dataset[index] for _ in range(3) for index in range(len(dataset))]

    cached = PoseTransferDataset(dataset_root, LAYOUT, "train", sigma=2.0, flip_probability=flip_probability)
    decoded = []
    monkeypatch.setattr(
        dataset_module, "load_image", lambda path, *size: decoded.append(path.name) or load_image(path, *size)
    )
    cached_items = items(cached)
    # every image is in 4 of the 36 items' pairs, yet decoded once (once per orientation when flipping)
    counts = Counter(decoded)
    assert set(counts) == set(cached.annotations)
    assert set(counts.values()) <= ({1, 2} if flip_probability else {1})
    monkeypatch.setattr(dataset_module, "IMAGE_CACHE_BUDGET_BYTES", 0)  # nothing fits: every item made afresh
    uncached = PoseTransferDataset(dataset_root, LAYOUT, "train", sigma=2.0, flip_probability=flip_probability)
    decoded.clear()
    uncached_items = items(uncached)
    assert len(decoded) == 2 * len(uncached_items)
    for mine, theirs in zip(cached_items, uncached_items, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert torch.equal(value, theirs[key]) if isinstance(value, torch.Tensor) else value == theirs[key]


def test_subsets_are_deterministic(dataset_root: Path) -> None:
    pairs = PoseTransferDataset(dataset_root, LAYOUT, "train").pairs
    assert PoseTransferDataset(dataset_root, LAYOUT, "train", max_pairs=3).pairs == pairs[:3]
    even = PoseTransferDataset(dataset_root, LAYOUT, "train", max_pairs=4, subset="even").pairs
    assert even == [pairs[0], pairs[3], pairs[6], pairs[9]]  # 12 pairs, every third
    assert select_pairs(pairs, 100, "even") == pairs


def test_missing_images_are_counted_and_listed(dataset_root: Path) -> None:
    (dataset_root / "train" / "person00_1.png").unlink()
    (dataset_root / "train" / "person01_2.png").unlink()
    with pytest.raises(DataError) as err:
        PoseTransferDataset(dataset_root, LAYOUT, "train")
    message = str(err.value)
    assert "2 image(s)" in message and str(pairs_file(dataset_root)) in message
    assert "'person00_1.png'" in message and "'person01_2.png'" in message
    assert "line 2" in message  # person00_0 -> person00_1 is the first pair


def test_unreadable_image(dataset_root: Path) -> None:
    (dataset_root / "train" / "person01_0.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"1 image\(s\) .* cannot be read as images: 'person01_0.png'"):
        validate_split(dataset_root, LAYOUT, "train")


def test_wrong_length_keypoint_list_names_line(dataset_root: Path) -> None:
    replace_line(annotation_file(dataset_root), 3, "person00_1.png: [1, 2, 3]: [1, 2, 3]")
    with pytest.raises(DataError, match=rf"{annotation_file(dataset_root)}, line 3.*expected 18 coordinates"):
        PoseTransferDataset(dataset_root, LAYOUT, "train")


def test_coordinate_below_minus_one(dataset_root: Path) -> None:
    replace_line(
        annotation_file(dataset_root),
        4,
        "person00_2.png: [" + ", ".join(["5"] * 17 + ["-3"]) + "]: [" + ", ".join(["5"] * 18) + "]",
    )
    with pytest.raises(DataError) as err:
        PoseTransferDataset(dataset_root, LAYOUT, "train")
    message = str(err.value)
    assert f"{annotation_file(dataset_root)}, line 4" in message
    assert "keypoints_y" in message and "-3" in message and JOINT_NAMES[17] in message


def test_keypoint_outside_image(dataset_root: Path) -> None:
    replace_line(
        annotation_file(dataset_root),
        5,
        "person01_0.png: [" + ", ".join(["5"] * 18) + "]: [" + ", ".join(["5"] * 6 + ["16"] + ["5"] * 11) + "]",
    )
    with pytest.raises(DataError) as err:
        PoseTransferDataset(dataset_root, LAYOUT, "train")
    message = str(err.value)
    assert f"{annotation_file(dataset_root)}, line 5" in message
    assert "left_elbow" in message and "col 16" in message and "32x16" in message and "cols 0..15" in message


def test_pair_without_annotation(dataset_root: Path) -> None:
    replace_line(pairs_file(dataset_root), 4, "person00_1.png,stranger.png")
    with pytest.raises(DataError) as err:
        PoseTransferDataset(dataset_root, LAYOUT, "train")
    message = str(err.value)
    assert f"{pairs_file(dataset_root)}, line 4" in message
    assert "'stranger.png'" in message and str(annotation_file(dataset_root)) in message


def test_image_of_wrong_size(dataset_root: Path) -> None:
    random_image(np.random.default_rng(0), 30, 16).save(dataset_root / "train" / "person01_1.png")
    with pytest.raises(DataError) as err:
        PoseTransferDataset(dataset_root, LAYOUT, "train")
    message = str(err.value)
    assert "person01_1.png" in message and "30x16" in message and "expects 32x16" in message
    assert "prepare" in message and "data.height" in message


def test_empty_split(dataset_root: Path) -> None:
    write_pairs(pairs_file(dataset_root), [])
    with pytest.raises(DataError, match=rf"{pairs_file(dataset_root)} lists no pairs.*'train' split is empty"):
        PoseTransferDataset(dataset_root, LAYOUT, "train")


def test_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="synthetic-annotation-train.csv' does not exist"):
        PoseTransferDataset(tmp_path, LAYOUT, "train")
    make_dataset(tmp_path)
    (tmp_path / "test").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"Image folder '.*test' does not exist"):
        PoseTransferDataset(tmp_path, LAYOUT, "test")


def test_truncated_jpeg_fails_when_loaded(tmp_path: Path) -> None:
    layout = make_layout("synthetic", height=128, width=64)  # large enough that half the file is pixel data
    make_split(tmp_path, layout, "train", people=1, images_per_person=2, suffix=".jpg")
    path = tmp_path / "train" / "person00_1.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    dataset = PoseTransferDataset(tmp_path, layout, "train")  # the header is intact: validation passes
    with pytest.raises(DataError, match=r"Cannot decode image '.*person00_1.jpg'.*truncated"):
        dataset[0]


def test_invalid_options() -> None:
    with pytest.raises(ConfigError, match="flip_probability"):
        parse(PoseTransferDataOptions, {"root": "/nowhere", "flip_probability": 1.5, "height": 8, "width": 8}, "data")
    with pytest.raises(ConfigError, match="sigma"):
        parse(PoseTransferDataOptions, {"root": "/nowhere", "sigma": 0, "height": 8, "width": 8}, "data")


def test_datamodule_loaders(dataset_root: Path) -> None:
    module = PoseTransferDataModule(
        str(dataset_root), preset="synthetic", height=32, width=16, batch_size=4, val_subset=3, seed=1
    )
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert isinstance(batch, PoseTransferBatch) and len(batch) == 4
    assert batch.source_image.shape == batch.target_image.shape == (4, 3, 32, 16)
    assert batch.source_pose.shape == batch.target_pose.shape == (4, 18, 32, 16)
    assert batch.source_keypoints.shape == (4, 18, 2) and batch.source_keypoints.dtype == torch.int64
    assert len(batch.source_name) == len(batch.target_name) == 4 and batch.target_mask is None
    assert len(module.train_dataloader()) == 3  # 12 pairs / 4, last partial batch dropped
    test_pairs = PoseTransferDataset(dataset_root, LAYOUT, "test").pairs  # 3 people x 2 images -> 6 pairs
    assert module.val_dataset.pairs == [test_pairs[0], test_pairs[2], test_pairs[4]]
    module.setup("test")
    assert module.test_dataset.pairs == test_pairs
    # shuffling draws from the global RNG, which training seeds (and re-seeds each epoch)
    orders = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        orders.append([name for batch in module.train_dataloader() for name in batch.source_name])
    assert orders[0] == orders[1], "the same global seed gives the same shuffle"
    assert orders[0] != orders[2], "the training loader shuffles"


def test_datamodule_generates_missing_synthetic_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_generator(root: Path, height: int, width: int, seed: int, **kwargs: object) -> None:
        calls.append((Path(root), height, width, seed, kwargs))
        make_dataset(Path(root), height=height, width=width, seed=seed)

    monkeypatch.setitem(
        sys.modules, "emca.data.synthetic", types.SimpleNamespace(generate_synthetic_dataset=fake_generator)
    )
    root = tmp_path / "synthetic"
    module = PoseTransferDataModule(
        str(root), height=32, width=16, seed=7, generate_if_missing=True, synthetic=SyntheticPeople(5)
    )
    module.prepare_data()
    module.prepare_data()  # the data now exists: not generated again
    assert calls == [(root, 32, 16, 7, dataclasses.asdict(SyntheticPeople(5)))]
    module.setup("fit")
    assert len(module.train_dataset) == 12


def test_datamodule_config_errors(tmp_path: Path) -> None:
    def data(**options: object) -> dict:
        return {"_target_": "emca.data.datamodule.PoseTransferDataModule", "root": str(tmp_path), **options}

    with pytest.raises(ConfigError, match="generate_if_missing only works with the 'synthetic' preset"):
        build_datamodule(data(preset="market", generate_if_missing=True))
    with pytest.raises(ConfigError, match="data.batch_size"):
        build_datamodule(data(height=8, width=8, batch_size=0))
    with pytest.raises(ConfigError, match=r"data.synthetic' has unknown keys \['identities'\].*num_train_identities"):
        build_datamodule(data(height=8, width=8, generate_if_missing=True, synthetic={"identities": 600}))
    with pytest.raises(ConfigError, match=r"data.root is empty"):
        build_datamodule(data(root="", height=8, width=8))


def test_datamodule_builds_from_a_config(dataset_root: Path) -> None:
    config = {
        "_target_": "emca.data.datamodule.PoseTransferDataModule",
        "root": str(dataset_root),
        "preset": "synthetic",
        "height": 32,
        "width": 16,
        "batch_size": 2,
        "num_workers": 0,
        "synthetic": {"poses_per_identity": 3},
    }
    module = build_datamodule(config)
    assert isinstance(module, PoseTransferDataModule)
    assert (module.height, module.width, module.synthetic.poses_per_identity) == (32, 16, 3)


def test_annotations_unused_by_pairs_need_no_image(dataset_root: Path) -> None:
    annotations = {"person00_0.png": np.zeros((18, 2), dtype=np.int64), "ghost.png": np.zeros((18, 2), dtype=np.int64)}
    write_annotations(annotation_file(dataset_root), annotations)
    write_pairs(pairs_file(dataset_root), [("person00_0.png", "person00_0.png")])
    contents = validate_split(dataset_root, LAYOUT, "train")
    assert contents.image_names == ["person00_0.png"]


def test_datamodule_synthetic_options_are_the_generators() -> None:
    """data.synthetic is checked against SyntheticPeople: it must name what the generator takes, with its defaults."""
    from emca.data.synthetic import generate_synthetic_dataset

    set_by_the_datamodule = {"root", "height", "width", "seed", "overwrite", "preset"}
    parameters = inspect.signature(generate_synthetic_dataset).parameters
    defaults = {name: p.default for name, p in parameters.items() if name not in set_by_the_datamodule}
    assert defaults == dataclasses.asdict(SyntheticPeople())
