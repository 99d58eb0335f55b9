"""Perceptual, GAN and combined losses, and the image pool, against direct computations."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _fake_data import VGG_FILE, write_fake_vgg19
from torch import nn

from emca.data.batch import PoseTransferBatch
from emca.errors import CheckpointError, ConfigError, WeightsError
from emca.losses import GANLoss, ImagePool, LossOptions, PerceptualLoss, PoseTransferLoss
from emca.networks.discriminator import DiscriminatorPair, ResnetDiscriminator
from emca.options import parse

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def fake_vgg_state(tmp_path_factory) -> tuple[Path, dict]:
    """A TORCH_HOME holding a seeded VGG19 state dict (:func:`_fake_data.write_fake_vgg19`)."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    return torch_home, write_fake_vgg19(torch_home)


@pytest.fixture
def torch_home(fake_vgg_state, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_vgg_state[0]))
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    return fake_vgg_state[0]


def relu1_2_features(image: torch.Tensor, state: dict) -> torch.Tensor:
    """conv1_1, ReLU, conv1_2, ReLU of VGG19 written out, on an image in [-1, 1]."""
    normalised = ((image + 1) / 2 - IMAGENET_MEAN) / IMAGENET_STD
    hidden = F.relu(F.conv2d(normalised, state["features.0.weight"], state["features.0.bias"], padding=1))
    return F.relu(F.conv2d(hidden, state["features.2.weight"], state["features.2.bias"], padding=1))


def test_perceptual_loss_matches_direct_vgg_computation(torch_home, fake_vgg_state):
    state = fake_vgg_state[1]
    loss = PerceptualLoss()
    generator = torch.Generator().manual_seed(1)
    generated = (torch.rand(2, 3, 16, 12, generator=generator) * 2 - 1).requires_grad_()
    target = torch.rand(2, 3, 16, 12, generator=generator) * 2 - 1
    value = loss(generated, target)
    expected = (relu1_2_features(generated, state) - relu1_2_features(target, state)).abs().mean()
    torch.testing.assert_close(value, expected)
    assert value > 0
    value.backward()
    assert generated.grad is not None and generated.grad.abs().sum() > 0


def test_perceptual_loss_is_frozen_and_kept_out_of_checkpoints(torch_home):
    model = nn.Module()
    model.head = nn.Linear(2, 2)
    model.perceptual = PerceptualLoss()
    assert list(model.perceptual.parameters()) == []
    assert set(model.state_dict()) == {"head.weight", "head.bias"}
    model.train()
    assert not model.perceptual.features.training
    model.to(torch.float64)  # buffers follow the module's conversions (and devices)
    assert model.perceptual.features[0].weight.dtype == torch.float64
    assert not model.perceptual.features[0].weight.requires_grad


def test_missing_vgg_weights_raise_a_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError) as error:
        PerceptualLoss()
    message = str(error.value)
    assert VGG_FILE in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "lambda_perceptual=0" in message


def test_wrong_vgg_file_raises_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / VGG_FILE)
    with pytest.raises(WeightsError, match=VGG_FILE):
        PerceptualLoss(weights_dir=tmp_path)


def test_lsgan_loss_is_mean_squared_error_to_the_label():
    prediction = torch.randn(2, 8, 4, 3, generator=torch.Generator().manual_seed(0))
    loss = GANLoss("lsgan")
    torch.testing.assert_close(loss(prediction, True), ((prediction - 1) ** 2).mean())
    torch.testing.assert_close(loss(prediction, False), (prediction**2).mean())


def test_vanilla_gan_loss_equals_official_sigmoid_then_bce():
    logits = torch.randn(2, 8, 4, 3, generator=torch.Generator().manual_seed(0))
    loss = GANLoss("vanilla")
    probability = torch.sigmoid(logits)
    torch.testing.assert_close(loss(logits, True), -probability.log().mean())
    torch.testing.assert_close(loss(logits, False), -(1 - probability).log().mean())
    torch.testing.assert_close(loss(logits, True), nn.BCELoss()(probability, torch.ones_like(logits)))


def test_gan_loss_rejects_unknown_mode():
    with pytest.raises(ConfigError, match=r"model.loss.gan_mode' is 'wgan'; expected one of \['lsgan', 'vanilla'\]"):
        parse(LossOptions, {"gan_mode": "wgan"}, "model.loss")


def tiny_batch(batch: int = 2, height: int = 8, width: int = 8) -> PoseTransferBatch:
    generator = torch.Generator().manual_seed(3)

    def images(channels: int) -> torch.Tensor:
        return torch.rand(batch, channels, height, width, generator=generator) * 2 - 1

    keypoints = torch.zeros(batch, 18, 2, dtype=torch.int64)
    names = [f"{index}.png" for index in range(batch)]
    return PoseTransferBatch(images(3), images(18), images(3), images(18), keypoints, keypoints, names, names)


def test_generator_and_discriminator_objectives():
    """PoseTransferLoss against the objective written out: D(image, condition) on the right conditions,
    the official weights, and the pool exchanging (image, condition) pairs together."""
    torch.manual_seed(0)
    discriminators = DiscriminatorPair(
        pose=ResnetDiscriminator(18, ndf=4, num_blocks=1, dropout=0.0),
        appearance=ResnetDiscriminator(3, ndf=4, num_blocks=1, dropout=0.0),
    )
    batch = tiny_batch()
    generated = torch.rand(2, 3, 8, 8) * 2 - 1
    loss = PoseTransferLoss(LossOptions(gan_mode="lsgan", lambda_l1=50, lambda_perceptual=0, lambda_gan=5))
    terms = loss.generator_terms(discriminators, generated, batch)
    gan = GANLoss("lsgan")
    gan_pose = gan(discriminators.pose.model(torch.cat((generated, batch.target_pose), 1)), True)
    gan_appearance = gan(discriminators.appearance.model(torch.cat((generated, batch.source_image), 1)), True)
    l1 = (generated - batch.target_image).abs().mean()
    torch.testing.assert_close(terms["gan_pose"], gan_pose)
    torch.testing.assert_close(terms["gan_appearance"], gan_appearance)
    torch.testing.assert_close(terms["loss_generator"], 50 * l1 + 5 * (gan_pose + gan_appearance) / 2)
    assert "perceptual" not in terms and loss.perceptual is None  # lambda 0: no VGG needed

    real = gan(discriminators.pose.model(torch.cat((batch.target_image, batch.target_pose), 1)), True)
    fake = gan(discriminators.pose.model(torch.cat((generated, batch.target_pose), 1)), False)
    actual = loss.discriminator_loss(discriminators.pose, batch.target_image, generated, batch.target_pose)
    torch.testing.assert_close(actual, 0.5 * 5 * (real + fake))

    # a full pool of size 2 answers with stored pairs half of the time: the image and its own condition
    pool = ImagePool(2, seed=0)
    stored_image, stored_condition = torch.full((2, 3, 8, 8), 0.25), torch.full((2, 18, 8, 8), -0.5)
    pool.query(torch.cat((stored_image, stored_condition), 1))
    seen = []
    judge = discriminators.pose

    def recording(image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        seen.append((image, condition))
        return judge.model(torch.cat((image, condition), 1))

    discriminators.pose.forward = recording
    for _ in range(4):
        loss.discriminator_loss(discriminators.pose, batch.target_image, generated, batch.target_pose, pool)
    fakes = [pair for index, pair in enumerate(seen) if index % 2 == 1]
    for image, condition in fakes:
        for row in range(2):
            from_pool = bool((image[row] == 0.25).all())
            assert from_pool == bool((condition[row] == -0.5).all())  # pairs stay together
    assert any((image == 0.25).all((1, 2, 3)).any() for image, _ in fakes)


def batches(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 2, 4, 4, generator=generator) for _ in range(count)]


def test_pool_of_size_zero_passes_images_through():
    images = torch.randn(3, 2, 4, 4)
    assert ImagePool(0).query(images) is images


def test_pool_fills_then_swaps_stored_images():
    pool = ImagePool(4, seed=0)
    inputs = batches(12)
    first = pool.query(inputs[0])
    torch.testing.assert_close(first, inputs[0])  # not full yet: images come straight back
    seen = [image for image in inputs[0]]
    swapped = 0
    for batch in inputs[1:]:
        output = pool.query(batch)
        assert output.shape == batch.shape and len(pool.images) == 4
        for returned, new in zip(output, batch):
            # every image returned is either the new one or one stored earlier (possibly earlier in this batch)
            assert torch.equal(returned, new) or any(torch.equal(returned, old) for old in seen)
            swapped += not torch.equal(returned, new)
            seen.append(new)
    stored_from_inputs = all(any(torch.equal(stored, old) for old in seen) for stored in pool.images)
    assert stored_from_inputs and 8 <= swapped <= 24  # about half of the 32 draws after filling swap


def test_pool_is_deterministic_per_seed():
    outputs = {}
    for seed in (0, 0, 1):
        pool = ImagePool(2, seed=seed)
        outputs.setdefault(seed, []).append(torch.cat([pool.query(batch) for batch in batches(6)]))
    torch.testing.assert_close(outputs[0][0], outputs[0][1])
    assert not torch.equal(outputs[0][0], outputs[1][0])


def test_pool_state_round_trip_resumes_exactly():
    inputs = batches(10)
    uninterrupted = ImagePool(4, seed=3)
    for batch in inputs[:5]:
        uninterrupted.query(batch)
    buffer = io.BytesIO()
    torch.save(uninterrupted.state_dict(), buffer)  # checkpoints load with weights_only=True
    buffer.seek(0)
    resumed = ImagePool(4, seed=99)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for batch in inputs[5:]:
        torch.testing.assert_close(resumed.query(batch), uninterrupted.query(batch))

    empty = ImagePool(4, seed=3)
    empty.load_state_dict(ImagePool(4, seed=3).state_dict())
    torch.testing.assert_close(empty.query(inputs[0]), inputs[0])


def test_pool_rejects_bad_sizes():
    with pytest.raises(ConfigError, match=r"model.loss.pool_size' is -1; expected a value >= 0"):
        parse(LossOptions, {"pool_size": -1}, "model.loss")
    with pytest.raises(CheckpointError, match="pool_size=8"):
        ImagePool(8).load_state_dict(ImagePool(4).state_dict())
