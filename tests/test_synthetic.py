"""The synthetic dataset: layout, determinism, valid keypoints, and a non-trivial pose-transfer task."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from emca.data import synthetic
from emca.data.__main__ import build_parser
from emca.data.annotations import read_annotations, read_pairs
from emca.data.keypoints import REQUIRED_FOR_PAIRS, visible
from emca.data.skeleton import person_mask
from emca.data.synthetic import SyntheticPeople, generate_synthetic_dataset
from emca.errors import ConfigError, DataError
from emca.options import parse

TINY = {"num_train_identities": 3, "num_test_identities": 2, "poses_per_identity": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(root, height=64, width=48, seed=3, **TINY)
    return root


def _identity(name: str) -> str:
    match = re.fullmatch(r"(id\d{4})_pose\d{2}\.png", name)
    assert match, name
    return match.group(1)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_layout_and_files_parse(dataset: Path) -> None:
    for split, identities in (("train", 3), ("test", 2)):
        annotations = read_annotations(dataset / f"synthetic-annotation-{split}.csv")
        images = sorted(path.name for path in (dataset / split).glob("*.png"))
        assert sorted(annotations) == images
        assert len(images) == identities * 3
        usable = [name for name in images if visible(annotations[name])[list(REQUIRED_FOR_PAIRS)].all()]
        expected = {(a, b) for a in usable for b in usable if a != b and _identity(a) == _identity(b)}
        pairs = read_pairs(dataset / f"synthetic-pairs-{split}.csv")
        assert len(pairs) == len(set(pairs)) and set(pairs) == expected
    assert sorted(path.name for path in dataset.iterdir()) == [
        "synthetic-annotation-test.csv",
        "synthetic-annotation-train.csv",
        "synthetic-pairs-test.csv",
        "synthetic-pairs-train.csv",
        "test",
        "train",
    ]


def test_train_and_test_identities_are_disjoint(dataset: Path) -> None:
    train = {_identity(path.name) for path in (dataset / "train").glob("*.png")}
    test = {_identity(path.name) for path in (dataset / "test").glob("*.png")}
    assert len(train) == 3 and len(test) == 2 and not train & test


def test_same_seed_gives_same_bytes_and_another_seed_differs(dataset: Path, tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path / "again", height=64, width=48, seed=3, **TINY)
    assert _file_bytes(tmp_path / "again") == _file_bytes(dataset)
    generate_synthetic_dataset(tmp_path / "other", height=64, width=48, seed=4, **TINY)
    other = _file_bytes(tmp_path / "other")
    assert other.keys() == _file_bytes(dataset).keys()
    assert all(other[name] != data for name, data in _file_bytes(dataset).items() if name.endswith(".png"))


@pytest.mark.parametrize(("height", "width"), [(64, 48), (128, 64)])
def test_images_have_the_requested_size_and_keypoints_lie_on_the_person(
    tmp_path: Path, height: int, width: int
) -> None:
    # plain backgrounds: the person is every pixel that differs from the most common colour
    generate_synthetic_dataset(
        tmp_path / "data",
        height=height,
        width=width,
        seed=1,
        num_train_identities=2,
        num_test_identities=1,
        poses_per_identity=3,
        background="plain",
    )
    annotations = read_annotations(tmp_path / "data" / "synthetic-annotation-train.csv")
    for name, keypoints in annotations.items():
        image = np.asarray(Image.open(tmp_path / "data" / "train" / name))
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        present = visible(keypoints)
        assert ((keypoints == -1) == ~present[:, None]).all()  # a missing joint is -1 in both coordinates
        assert (keypoints[present] >= 0).all() and (keypoints[present] < [height, width]).all()
        colours = Counter(map(tuple, image.reshape(-1, 3)))
        person = (image != np.array(colours.most_common(1)[0][0])).any(axis=-1)
        body_joints = present & (np.arange(18) < 14)  # eyes and ears may sit on the head's outline
        assert person[keypoints[body_joints, 0], keypoints[body_joints, 1]].all()
        # and nearly all of the person lies within a generous pose mask around its joints
        mask = person_mask(keypoints, height, width, point_radius=height / 12, closing_size=1)
        assert (person & ~mask).sum() < 0.1 * person.sum()


def test_copying_the_source_is_clearly_worse_than_the_target(dataset: Path) -> None:
    annotations = read_annotations(dataset / "synthetic-annotation-test.csv")
    ssims, l1s, displacements = [], [], []
    for source_name, target_name in read_pairs(dataset / "synthetic-pairs-test.csv"):
        source = np.asarray(Image.open(dataset / "test" / source_name))
        target = np.asarray(Image.open(dataset / "test" / target_name))
        ssims.append(
            structural_similarity(
                target,
                source,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                channel_axis=-1,
                data_range=255,
            )
        )
        l1s.append(np.abs(source / 127.5 - target / 127.5).mean())
        both = visible(annotations[source_name]) & visible(annotations[target_name])
        displacements.append(
            np.linalg.norm(annotations[source_name][both] - annotations[target_name][both], axis=1).mean()
        )
    assert len(ssims) >= 6
    assert np.mean(ssims) < 0.85
    assert np.mean(l1s) > 0.05
    assert np.mean(displacements) > 4.0


def test_same_identity_keeps_its_background(tmp_path: Path) -> None:
    generate_synthetic_dataset(
        tmp_path / "data",
        seed=2,
        num_train_identities=2,
        num_test_identities=1,
        poses_per_identity=4,
        background="textured",
    )
    images = {path.name: np.asarray(Image.open(path)) for path in sorted((tmp_path / "data" / "train").glob("*.png"))}
    # pixels that no image of an identity covers with the person agree across that identity's images
    for identity in ("id0000", "id0001"):
        stack = np.stack([image for name, image in images.items() if name.startswith(identity)])
        agreeing = (stack == stack[0]).all(axis=(0, -1))
        assert agreeing.mean() > 0.2
    first, second = (np.stack([v for k, v in images.items() if k.startswith(i)]) for i in ("id0000", "id0001"))
    shared_background = (first == first[0]).all(axis=(0, -1)) & (second == second[0]).all(axis=(0, -1))
    assert (first[0][shared_background] != second[0][shared_background]).any()


def test_existing_root_is_refused_unless_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "old.txt").write_text("old")
    with pytest.raises(DataError, match=re.escape(str(root))):
        generate_synthetic_dataset(root, num_train_identities=1, num_test_identities=1, poses_per_identity=2)
    generate_synthetic_dataset(
        root, num_train_identities=1, num_test_identities=1, poses_per_identity=2, overwrite=True
    )
    assert not (root / "old.txt").exists() and len(list((root / "train").glob("*.png"))) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]  # no staging or retired copies left


def test_a_crash_leaves_no_half_made_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_write_pairs(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "write_pairs", failing_write_pairs)
    with pytest.raises(OSError, match="disk full"):
        generate_synthetic_dataset(
            tmp_path / "data", num_train_identities=1, num_test_identities=1, poses_per_identity=2
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"background": "stripy"}, "data.synthetic.background"),
        ({"poses_per_identity": 1}, "data.synthetic.poses_per_identity"),
        ({"num_test_identities": 0}, "data.synthetic.num_test_identities"),
    ],
)
def test_bad_options_name_the_field(arguments: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse(SyntheticPeople, arguments, "data.synthetic")


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--poses", "1"], "poses_per_identity"), (["--height", "8"], "--height"), (["--seed", "-1"], "--seed")],
)
def test_bad_flags_name_the_flag(tmp_path: Path, flags: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        args = build_parser().parse_args(["synthetic", str(tmp_path / "data"), *flags])
        args.run(args)
    assert not (tmp_path / "data").exists()
