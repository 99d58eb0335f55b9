"""PoseTransferPipeline: the stored inference result reproduced bit for bit, equality with the generator called
directly, batching, autocast and memory format, and device errors.

``fixtures/pipeline/`` holds a tiny exported model (3 training iterations of the test config, exported with
``emca export``), a photo with its pose, a target pose, and ``expected.png``: what ``emca infer`` wrote for them
at commit c9c4397, before inference moved into the pipeline. A torch release that changes CPU convolution
rounding could move a pixel by one level; regenerate ``expected.png`` with the infer command below then, after
checking that the difference is that and nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emca.checkpoint import load_generator
from emca.cli import resolve_device
from emca.data.keypoints import pose_heatmaps
from emca.errors import CheckpointError, ConfigError
from emca.infer import InferOptions, Transfer, read_pose_json
from emca.infer import main as infer_main
from emca.pipeline import PoseTransferPipeline

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pipeline"
MODEL = FIXTURE / "model"


@pytest.fixture(scope="module")
def pipeline() -> PoseTransferPipeline:
    return PoseTransferPipeline.from_pretrained(MODEL, device="cpu")


def expected() -> np.ndarray:
    return np.asarray(Image.open(FIXTURE / "expected.png"))


def test_infer_reproduces_the_stored_result(tmp_path: Path) -> None:
    out = tmp_path / "result.png"
    infer_main(
        [
            f"ckpt={MODEL}",
            f"source={FIXTURE / 'source.png'}",
            f"source_pose={FIXTURE / 'source_pose.json'}",
            f"target={FIXTURE / 'target_pose.json'}",
            f"out={out}",
        ]
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected())


def test_pipeline_reproduces_the_stored_result(pipeline: PoseTransferPipeline) -> None:
    # the photo and poses framed to the model's size as infer frames them; then only the pipeline
    transfer = Transfer(InferOptions(ckpt=str(MODEL), device="cpu"))
    photo_size = Image.open(FIXTURE / "source.png").size[::-1]
    image, source_keypoints = transfer.framed_source(
        FIXTURE / "source.png", read_pose_json(FIXTURE / "source_pose.json", photo_size).keypoints
    )
    target_keypoints = transfer.target_pose(FIXTURE / "target_pose.json")
    generated = pipeline(pipeline.from_uint8(image)[None], [source_keypoints], [target_keypoints])
    np.testing.assert_array_equal(np.asarray(pipeline.to_pil(generated)[0]), expected())


def keypoints(count: int, seed: int) -> np.ndarray:
    """(count, 18, 2) joints inside the 32x16 frame, a few missing (-1)."""
    rng = np.random.default_rng(seed)
    points = np.stack([rng.integers(0, 32, (count, 18)), rng.integers(0, 16, (count, 18))], axis=-1)
    points[:, 16:] = -1
    return points


def test_pipeline_equals_the_generator_called_directly(pipeline: PoseTransferPipeline) -> None:
    generator, hyper_parameters = load_generator(MODEL)
    sigma = hyper_parameters["data"]["sigma"]
    source = torch.rand(3, 3, 32, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    source_points, target_points = keypoints(3, 1), keypoints(3, 2)
    maps = [torch.stack([pose_heatmaps(p, 32, 16, sigma) for p in points]) for points in (source_points, target_points)]
    with torch.no_grad():
        direct = generator(source, *maps)
    assert pipeline.size == (32, 16) and pipeline.sigma == sigma
    assert torch.equal(pipeline(source, source_points, target_points), direct)


def test_batching_autocast_and_memory_format_keep_the_result(pipeline: PoseTransferPipeline) -> None:
    source = torch.rand(5, 3, 32, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    source_points, target_points = keypoints(5, 4), keypoints(5, 5)
    reference = pipeline(source, source_points, target_points)
    generator = pipeline.generator
    variants = {
        "batches of 2": PoseTransferPipeline(generator, 32, 16, pipeline.sigma, batch_size=2),
        "channels last": PoseTransferPipeline(generator, 32, 16, pipeline.sigma, channels_last=True),
    }
    for name, variant in variants.items():
        torch.testing.assert_close(variant(source, source_points, target_points), reference, msg=name)
    generator.to(memory_format=torch.contiguous_format)
    bf16 = PoseTransferPipeline(generator, 32, 16, pipeline.sigma, autocast_dtype=torch.bfloat16)
    result = bf16(source, source_points, target_points)
    assert result.dtype == torch.float32 and not torch.equal(result, reference)  # it ran in bf16
    assert (result - reference).abs().max() < 0.05  # bf16 keeps 8 bits of mantissa: about 1/256 per step


def test_device_names_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device=gpu0: expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("height", 0, "expected the model's image height in pixels, a whole number in [1, 4096]"),
        ("width", "wide", "expected the model's image width in pixels"),
        ("height", 1_000_000, "in [1, 4096]"),
        ("sigma", 0, "expected the pose maps' Gaussian width in pixels, a positive number"),
        ("sigma", "NaN", "a positive number"),
    ],
)
def test_a_model_with_a_bad_frame_is_refused_naming_the_field(
    field: str, value: object, expected: str, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    config["data"][field] = float(value) if value == "NaN" else value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        PoseTransferPipeline.from_pretrained(folder, device="cpu")
    assert f"'{folder}', field 'data.{field}'" in str(error.value) and expected in str(error.value)
