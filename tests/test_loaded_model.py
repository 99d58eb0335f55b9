"""What a loaded model may contain: every tensor finite, sizes within emca's bounds, a generator of at most
max_parameters parameters, counted on the meta device before anything is allocated. Each refusal names the
file and the field or tensor, whichever command loads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _tiny_training import moved_adapter
from safetensors.torch import load_file, save_file

from emca.checkpoint import LoadLimits, check_finite
from emca.cli import user_errors
from emca.errors import CheckpointError
from emca.infer import main as infer_main
from emca.io import safe_torch_load
from emca.pipeline import PoseTransferPipeline

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pipeline"
MODEL = FIXTURE / "model"
TENSOR = "generator.blocks.0.cross_attention.query.weight"


def copied_model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    return folder


def with_config(folder: Path, section: str, field: str, value: object) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config["model"][section][field] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_a_model_with_non_finite_weights_is_refused(bad: float, tmp_path: Path) -> None:
    folder = copied_model(tmp_path)
    weights = load_file(folder / "model.safetensors")
    assert TENSOR in weights
    weights[TENSOR][0, 0] = bad
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        PoseTransferPipeline.from_pretrained(folder, device="cpu")
    assert f"'{folder}'" in str(error.value) and f"first: '{TENSOR}'" in str(error.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_one_non_finite_value_anywhere_is_found(dtype: torch.dtype) -> None:
    """check_finite against isfinite, value by value: one NaN or infinity at any place of a tensor."""
    tensors = {"clean": torch.randn(7, 5).to(dtype), "empty": torch.zeros(0, dtype=dtype), "steps": torch.arange(9)}
    check_finite(tensors, "clean.ckpt")
    for place in range(35):
        for bad in (float("nan"), float("inf"), -float("inf")):
            broken = torch.randn(7, 5).to(dtype)
            broken.view(-1)[place] = bad
            assert not broken.isfinite().all()
            with pytest.raises(CheckpointError, match="first: 'broken'"):
                check_finite({**tensors, "broken": broken}, "broken.ckpt")


def test_infer_names_the_non_finite_tensor_without_a_traceback(tmp_path: Path, capsys) -> None:
    folder = copied_model(tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights[TENSOR][:] = float("nan")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(SystemExit) as exit_info, user_errors():
        infer_main([f"ckpt={folder}", f"source={FIXTURE / 'source.png'}", "target=t.json", f"out={tmp_path / 'r.png'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "NaN or inf" in err and "Traceback" not in err
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize(
    ("section", "field", "value", "expected"),
    [
        ("generator", "ngf", 3000, "'model.generator.ngf' is 3000; expected at most 1024"),
        ("generator", "num_blocks", 1_000_000, "'model.generator.num_blocks' is 1000000; expected at most 64"),
        ("discriminator", "ndf", 5000, "'model.discriminator.ndf' is 5000; expected at most 1024"),
    ],
)
def test_sizes_beyond_the_bounds_are_refused_before_building(
    section: str, field: str, value: int, expected: str, tmp_path: Path
) -> None:
    folder = with_config(copied_model(tmp_path), section, field, value)
    with pytest.raises(CheckpointError, match=expected):
        if section == "discriminator":
            from emca.build import build_discriminators

            build_discriminators(json.loads((folder / "config.json").read_text())["model"], source=str(folder))
        else:
            PoseTransferPipeline.from_pretrained(folder, device="cpu")


def test_a_generator_over_max_parameters_is_refused_unless_allowed(tmp_path: Path) -> None:
    # the fixture's generator, counted independently of emca's check
    count = sum(p.numel() for p in PoseTransferPipeline.from_pretrained(MODEL, device="cpu").generator.parameters())
    with pytest.raises(CheckpointError) as error:
        PoseTransferPipeline.from_pretrained(MODEL, device="cpu", limits=LoadLimits(max_parameters=count - 1))
    assert f"generator of {count:,} parameters" in str(error.value) and "max_parameters=N" in str(error.value)
    assert PoseTransferPipeline.from_pretrained(MODEL, device="cpu", limits=LoadLimits(max_parameters=count)).size == (
        32,
        16,
    )
    # within the size bounds but far over the default: refused before the memory is taken
    folder = with_config(with_config(copied_model(tmp_path), "generator", "ngf", 1024), "generator", "num_blocks", 64)
    with pytest.raises(CheckpointError, match=r"over the 500,000,000 allowed"):
        PoseTransferPipeline.from_pretrained(folder, device="cpu")


def test_a_deeply_nested_config_is_refused(tmp_path: Path) -> None:
    folder = copied_model(tmp_path)
    (folder / "config.json").write_text('{"format": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="nests deeper"):
        PoseTransferPipeline.from_pretrained(folder, device="cpu")


def test_an_adapter_with_non_finite_tensors_is_refused(tiny_run_checkpoint: Path, tmp_path: Path) -> None:
    from emca.personalize.adapter import load_personalized_generator

    checkpoint = tiny_run_checkpoint
    path = moved_adapter(checkpoint, tmp_path / "adapter.pt")
    content = safe_torch_load(path)
    name = next(iter(content["state"]))
    content["state"][name] = torch.full_like(content["state"][name], float("nan"))
    torch.save(content, path)
    with pytest.raises(CheckpointError) as error:
        load_personalized_generator(checkpoint, path)
    assert f"'{path}'" in str(error.value) and f"first: '{name}'" in str(error.value)


def test_a_model_whose_largest_tensor_for_one_image_is_over_the_limit_is_refused(tmp_path: Path, capsys) -> None:
    # the reference attention's correlation of 1/4-resolution tokens, SA and AS stacked: 2 x N^2 x 4 bytes
    folder = copied_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["data"]["height"], config["data"]["width"] = 1024, 704
    (folder / "config.json").write_text(json.dumps(config))
    tokens = (1024 // 4) * (704 // 4)
    expected_gib = 2 * tokens**2 * 4 / 2**30
    with pytest.raises(CheckpointError) as error:
        PoseTransferPipeline.from_pretrained(folder, device="cpu")
    assert f"makes a {expected_gib:.1f} GiB tensor" in str(error.value) and "over the 8 GiB allowed" in str(error.value)
    # allowed explicitly, the same file loads (nothing of that size is allocated by loading)
    limits = LoadLimits(max_activation_gib=expected_gib + 1)
    assert PoseTransferPipeline.from_pretrained(folder, device="cpu", limits=limits).size == (1024, 704)
    with pytest.raises(SystemExit), user_errors():
        infer_main([f"ckpt={folder}", "source=a.png", "target=b.json", "out=r.png", "max_activation_gib=0"])
    assert "'max_activation_gib' is 0.0; expected a value > 0" in capsys.readouterr().err
