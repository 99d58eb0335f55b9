"""MoA personalisation: exactness against the base, what trains, router loss, adapters, end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

import train as train_script
from emca import checkpoint as checkpoint_module
from emca.build import build, build_discriminators
from emca.checkpoint import load_generator
from emca.cli import find_user_error
from emca.data.annotations import write_annotations
from emca.data.synthetic import render_identity
from emca.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from emca.io import safe_torch_load
from emca.networks.attention import ReferenceAttention
from emca.networks.generator import XingGenerator
from emca.personalize.__main__ import main as personalize_cli
from emca.personalize.adapter import architecture_fingerprint, load_personalized_generator, read_adapter, save_adapter
from emca.personalize.data import SubjectPairs
from emca.personalize.loss import masked_l1
from emca.personalize.moa import PersonalizedGenerator, router_loss, subject_tokens

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 32, 16


pytestmark = pytest.mark.usefixtures("single_thread")


def random_inputs(batch: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, 3, HEIGHT, WIDTH, generator=generator, dtype=dtype) * 2 - 1,
        torch.rand(batch, 18, HEIGHT, WIDTH, generator=generator, dtype=dtype),
        torch.rand(batch, 18, HEIGHT, WIDTH, generator=generator, dtype=dtype),
    )


# the full XingGAN++ at a tiny size: multi-scale blocks with enhanced attention and dense fusion
PLUS_PLUS = {
    "multi_scale": {"enabled": True, "pool_factors": [2], "window_sizes": [2]},
    "enhanced_attention": {"enabled": True, "branches": ["pool", "window"], "inner_channels": 4},
    "dense_fusion": {"enabled": True},
}


def base_generator(
    dtype: torch.dtype = torch.float32, ngf: int = 4, num_blocks: int = 2, plus_plus: bool = False
) -> XingGenerator:
    """A small generator whose attention matters (gamma != 0, as after training); XingGAN++ if asked."""
    torch.manual_seed(0)
    target = (
        "emca.networks.xingganpp.XingGANPlusPlusGenerator" if plus_plus else "emca.networks.generator.XingGenerator"
    )
    config = {
        "_target_": target,
        "ngf": ngf,
        "num_blocks": num_blocks,
        "dropout": 0.0,
        **(PLUS_PLUS if plus_plus else {}),
    }
    generator = build("generator", config, "model.generator", attention=ReferenceAttention()).to(dtype).eval()
    with torch.no_grad():
        for index, block in enumerate(generator.blocks):
            block.cross_attention.gamma.fill_(0.5 + index)
    return generator


def personalize(generator: XingGenerator, seed: int = 1) -> PersonalizedGenerator:
    """Wrap a copy of ``generator`` with tokens from random photos, and move every expert off its copy so
    that the personalised branch differs from the prior (as after training)."""
    photos = random_inputs(3, next(generator.parameters()).dtype, seed)[0]
    personalized = PersonalizedGenerator(copy.deepcopy(generator), subject_tokens(generator, photos, (2, 2)))
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in personalized.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return personalized


@pytest.mark.parametrize("plus_plus", [False, True], ids=["xinggan", "xinggan++"])
def test_routing_to_the_prior_reproduces_the_base_exactly(plus_plus: bool) -> None:
    base = base_generator(torch.float64, plus_plus=plus_plus)
    inputs = random_inputs(2, torch.float64)
    expected = base(*inputs)
    personalized = personalize(base)
    assert (personalized(*inputs) - expected).abs().max() > 1e-6  # the mixture does change the output
    with torch.no_grad():
        for mixture in personalized.mixtures:  # logits (1000, 0): softmax gives exactly (1, 0)
            mixture.router.logits.weight.zero_()
            mixture.router.logits.bias.copy_(torch.tensor([1000.0, 0.0, 1000.0, 0.0]))
    assert torch.equal(personalized(*inputs), expected)
    assert all(torch.equal(weights, torch.ones_like(weights)) for weights in personalized.prior_weights())


@pytest.mark.parametrize("plus_plus", [False, True], ids=["xinggan", "xinggan++"])
def test_scale_zero_is_the_base_and_scale_is_checked(plus_plus: bool) -> None:
    base = base_generator(plus_plus=plus_plus)
    inputs = random_inputs(2)
    personalized = personalize(base)
    personalized.set_routing_scale(0.0)
    assert torch.equal(personalized(*inputs), base(*inputs))
    personalized.set_routing_scale(1.0)
    full = personalized(*inputs)
    personalized.set_routing_scale(0.5)
    half = personalized(*inputs)
    base_distance, half_distance = (full - base(*inputs)).abs().mean(), (half - base(*inputs)).abs().mean()
    assert 0 < half_distance < base_distance
    with pytest.raises(ValueError, match="scale is 1.5"):
        personalized.set_routing_scale(1.5)


@pytest.mark.parametrize("plus_plus", [False, True], ids=["xinggan", "xinggan++"])
def test_personalised_expert_is_the_block_attention_with_subject_keys(plus_plus: bool) -> None:
    """Before training, each expert is its block's own attention step (every multi-scale branch for
    XingGAN++) with the subject tokens' keys and values added to every key set, and the prior is the
    block's attention step itself."""
    base = base_generator(torch.float64, plus_plus=plus_plus)
    tokens = torch.randn(4, 16, dtype=torch.float64)
    personalized = PersonalizedGenerator(copy.deepcopy(base), tokens)
    appearance, shape = torch.randn(2, 2, 16, 4, 3, dtype=torch.float64)
    for block, mixture in zip(base.blocks, personalized.mixtures, strict=True):
        attention = block.cross_attention
        assert type(mixture.prior) is type(attention) and type(mixture.personal) is type(attention)
        expected = attention(appearance, shape, memory=tokens)
        for actual, wanted in zip(mixture.personal(appearance, shape, memory=tokens), expected, strict=True):
            torch.testing.assert_close(actual, wanted, rtol=0, atol=1e-12)
        for actual, wanted in zip(mixture.prior(appearance, shape), attention(appearance, shape), strict=True):
            assert torch.equal(actual, wanted)
        without_subject = attention(appearance, shape)
        assert (expected[0] - without_subject[0]).abs().max() > 1e-6  # the subject tokens are attended


def test_router_starts_on_the_prior() -> None:
    personalized = PersonalizedGenerator(base_generator(), torch.randn(4, 16), router_init_prior=0.99)
    personalized(*random_inputs(2))
    for weights in personalized.prior_weights():
        assert torch.allclose(weights, torch.full_like(weights, 0.99))


@pytest.mark.parametrize("plus_plus", [False, True], ids=["xinggan", "xinggan++"])
def test_only_the_experts_routers_and_tokens_receive_gradients(plus_plus: bool) -> None:
    base = base_generator(plus_plus=plus_plus)
    personalized = personalize(base)
    frozen = {name for name, _ in base.named_parameters()}
    trainable = {name for name, parameter in personalized.named_parameters() if parameter.requires_grad}
    suffixes = {name.split(".", 4)[4] for name in trainable}  # after 'generator.blocks.<i>.cross_attention.'
    # a XingGAN++ expert also copies the multi-scale branches (with their EA) and the fusion weights
    multi_scale = {
        f"personal.{name}"
        for name, _ in base.blocks[0].cross_attention.named_parameters()
        if name.startswith(("scales.", "scale_logits", "scale_mixing"))
    }
    assert bool(multi_scale) == plus_plus
    assert suffixes == multi_scale | {
        "personal.query.weight",
        "personal.query.bias",
        "personal.key.weight",
        "personal.key.bias",
        "personal.value.weight",
        "personal.value.bias",
        "personal.gamma",
        "subject_tokens",
        "router.features.0.weight",
        "router.features.0.bias",
        "router.logits.weight",
        "router.logits.bias",
    }
    personalized.train()
    source, source_pose, target_pose = random_inputs(2)
    generated = personalized(source, source_pose, target_pose)
    mask = (torch.rand(2, 1, HEIGHT, WIDTH) > 0.5).float()
    (generated.square().mean() + router_loss(personalized.prior_weights(), mask)).backward()
    for name, parameter in personalized.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    # the frozen parameters are exactly the base generator's, the attention steps' under the mixture's 'prior'
    frozen_here = {
        name.removeprefix("generator.").replace(".cross_attention.prior.", ".cross_attention.")
        for name, parameter in personalized.named_parameters()
        if not parameter.requires_grad
    }
    assert frozen_here == frozen


def test_frozen_base_stays_in_eval_mode() -> None:
    base = XingGenerator(ngf=4, num_blocks=1, dropout=0.5)
    personalized = PersonalizedGenerator(base, torch.randn(4, 16)).train()
    assert personalized.training and not any(module.training for module in personalized.generator.modules())
    inputs = random_inputs(1)
    assert torch.equal(personalized(*inputs), personalized(*inputs))  # no dropout


def test_router_loss_matches_the_formula() -> None:
    torch.manual_seed(0)
    batch = 2
    mask = (torch.rand(batch, 1, 16, 8) > 0.4).float()
    layers = [torch.rand(2 * batch, 4, 2), torch.rand(2 * batch, 8, 4)]
    expected = 0.0
    for weights in layers:
        height, width = weights.shape[-2:]
        fy, fx = 16 // height, 8 // width
        for row in range(2 * batch):
            block_mask = mask[row % batch, 0].reshape(height, fy, width, fx).mean(dim=(1, 3))
            expected += (((1 - block_mask) * (1 - weights[row])) ** 2).sum().item() / (2 * batch * height * width)
    assert router_loss(layers, mask).item() == pytest.approx(expected, rel=1e-6)
    assert router_loss([torch.ones(2 * batch, 4, 2)], mask).item() == 0.0  # all on the prior: no loss


# ---- checkpoints and adapters ----------------------------------------------------------------------------
def model_config(ngf: int) -> dict:
    return {
        "generator": {"_target_": "emca.networks.generator.XingGenerator", "ngf": ngf, "num_blocks": 2, "dropout": 0.0},
        "attention": {"_target_": "emca.networks.attention.ReferenceAttention"},
        "discriminator": {
            "_target_": "emca.networks.discriminator.ResnetDiscriminator",
            "ndf": 4,
            "num_blocks": 1,
            "dropout": 0.0,
        },
        "loss": {"gan_mode": "lsgan"},
    }


def write_base_checkpoint(path: Path, ngf: int = 4) -> Path:
    """A checkpoint as PoseTransferModule writes it (plain hyper_parameters, prefixed state dict)."""
    model = model_config(ngf)
    state = {f"generator.{k}": v for k, v in base_generator(ngf=ngf).state_dict().items()}
    state |= {f"discriminators.{k}": v for k, v in build_discriminators(model).state_dict().items()}
    torch.save(
        {
            "hyper_parameters": {"model": model, "data": {"height": HEIGHT, "width": WIDTH, "sigma": 6.0}},
            "state_dict": state,
        },
        path,
    )
    return path


def write_adapter(tmp_path: Path, base_ckpt: Path) -> Path:
    generator, hyper_parameters = load_generator(base_ckpt)
    fingerprint = architecture_fingerprint(generator, hyper_parameters["model"])
    personalized = personalize(generator)
    path = tmp_path / "adapter.pt"
    save_adapter(
        path, personalized, fingerprint, {"token_grid": [2, 2], "router_hidden": 32, "router_init_prior": 0.99}
    )
    return path


def test_adapter_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    base_ckpt = write_base_checkpoint(tmp_path / "base.ckpt")
    generator, hyper_parameters = load_generator(base_ckpt)
    personalized = personalize(generator)
    inputs = random_inputs(2)
    path = tmp_path / "adapter.pt"
    save_adapter(
        path,
        personalized,
        architecture_fingerprint(generator, hyper_parameters["model"]),
        {"token_grid": [2, 2], "router_hidden": 32, "router_init_prior": 0.99},
    )
    adapter = safe_torch_load(path)  # plain containers and tensors only
    assert adapter["base"]["model"] == model_config(4)
    assert sum(t.numel() for t in adapter["state"].values()) < sum(p.numel() for p in personalized.parameters())
    reloaded, hyper_parameters = load_personalized_generator(base_ckpt, path)
    assert hyper_parameters["data"]["height"] == HEIGHT
    assert torch.equal(reloaded(*inputs), personalized.eval()(*inputs))
    reloaded.set_routing_scale(0.0)
    assert torch.equal(reloaded(*inputs), load_generator(base_ckpt)[0](*inputs))


def test_adapter_on_a_different_architecture_is_refused(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path, write_base_checkpoint(tmp_path / "base.ckpt", ngf=4))
    other = write_base_checkpoint(tmp_path / "wider.ckpt", ngf=8)
    with pytest.raises(CheckpointError) as error:
        load_personalized_generator(other, adapter)
    message = str(error.value)
    assert "adapter.pt" in message and "wider.ckpt" in message and "different architecture" in message
    assert "appearance_encoder.1.weight" in message and "[8, 3, 7, 7]" in message and "[4, 3, 7, 7]" in message


def test_a_file_that_is_not_an_adapter_is_refused(tmp_path: Path) -> None:
    base_ckpt = write_base_checkpoint(tmp_path / "base.ckpt")
    with pytest.raises(CheckpointError, match="base.ckpt' is not an emca MoA adapter"):
        read_adapter(base_ckpt)


# ---- subject data and training end to end --------------------------------------------------------------------
def write_subject(directory: Path, num_photos: int = 6, height: int = HEIGHT, width: int = WIDTH) -> Path:
    directory.mkdir(parents=True)
    annotations = {}
    for index, (image, keypoints) in enumerate(render_identity(0, 3, num_photos, height, width)):
        name = f"me_{index:02d}.png"
        Image.fromarray(image).save(directory / name)
        annotations[name] = keypoints
    write_annotations(directory / "annotations.csv", annotations)
    return directory


def test_subject_pairs_have_target_masks(tmp_path: Path) -> None:
    pairs = SubjectPairs(write_subject(tmp_path / "me"), sigma=2.0)
    assert (pairs.height, pairs.width) == (HEIGHT, WIDTH)
    assert len(pairs) == len(pairs.pairs) >= 2
    item = pairs[0]
    assert item["target_mask"].shape == (1, HEIGHT, WIDTH)
    keypoints = pairs.annotations[item["target_name"]]
    rows, cols = keypoints[keypoints[:, 0] >= 0].T
    assert item["target_mask"][0, rows, cols].all() and 0 < item["target_mask"].mean() < 1
    assert pairs.reference_images().shape == (len(pairs.photo_names), 3, HEIGHT, WIDTH)


def test_subject_without_usable_pairs_is_a_clear_error(tmp_path: Path) -> None:
    directory = write_subject(tmp_path / "me", num_photos=2)
    annotations = {name: np.full((18, 2), -1) for name in ("me_00.png", "me_01.png")}
    write_annotations(directory / "annotations.csv", annotations)
    with pytest.raises(DataError, match="annotations.csv: fewer than two photos show both hips"):
        SubjectPairs(directory)


def personalisation_config(tmp_path: Path, *overrides: str, **subject: int) -> DictConfig:
    """``experiment=personalize``, small and quiet, of a base written to ``tmp_path/base.ckpt`` on a subject written
    to ``tmp_path/me`` (``subject``: write_subject's options; 4 photos = 12 pairs = 3 iterations of batch 4 per
    epoch), running in ``tmp_path/run``, with ``overrides`` on top."""
    base_ckpt = write_base_checkpoint(tmp_path / "base.ckpt")
    subject_dir = write_subject(tmp_path / "me", **{"num_photos": 4, **subject})
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(
            "train",
            overrides=[
                "experiment=personalize",
                f"ckpt={base_ckpt}",
                f"data.root={subject_dir}",
                f"run_dir={tmp_path / 'run'}",
                "model.moa.token_grid=[2,2]",
                "data.batch_size=4",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                *overrides,
            ],
        )


def test_personalisation_end_to_end(tmp_path: Path) -> None:
    base_ckpt, subject_dir, run_dir = tmp_path / "base.ckpt", tmp_path / "me", tmp_path / "run"
    cfg = personalisation_config(
        tmp_path,
        "model.optim.iterations=4",
        "model.loss.lambda_gan=1.0",
        "trainer.check_val_every_n_epoch=1",
        "trainer.log_every_n_steps=1",
    )
    metrics = train_script.train(cfg)
    assert np.isfinite(metrics["train/loss"]) and "val/ssim" in metrics and "train/preservation" in metrics
    checkpoint = safe_torch_load(run_dir / "checkpoints" / "last.ckpt")  # weights_only
    assert isinstance(checkpoint["hyper_parameters"]["model"], dict)
    assert checkpoint["global_step"] == 4  # last.ckpt is the final state: 4 iterations (3 per epoch)
    base_state = safe_torch_load(base_ckpt)["state_dict"]
    stored = checkpoint["state_dict"]
    assert torch.equal(
        stored["personalized.generator.blocks.0.cross_attention.prior.query.weight"],
        base_state["generator.blocks.0.cross_attention.query.weight"],
    )  # the base stayed frozen
    assert not torch.equal(
        stored["personalized.generator.blocks.0.cross_attention.personal.query.weight"],
        base_state["generator.blocks.0.cross_attention.query.weight"],
    )  # the expert trained

    adapter = run_dir / "adapter.pt"
    personalized, _ = load_personalized_generator(base_ckpt, adapter)
    tokens = personalized.mixtures[0].subject_tokens
    assert tokens.shape == (4, 16) and tokens.abs().sum() > 0  # from the photos, not the placeholder
    inputs = random_inputs(2)
    assert not torch.equal(personalized(*inputs), load_generator(base_ckpt)[0](*inputs))

    maps = tmp_path / "maps"
    personalize_cli(
        [
            "router-maps",
            "--ckpt",
            str(base_ckpt),
            "--adapter",
            str(adapter),
            "--annotations",
            str(subject_dir / "annotations.csv"),
            "--source",
            "me_00.png",
            "--target",
            "me_01.png",
            "--scale",
            "0.5",
            "--out",
            str(maps),
        ]
    )
    written = sorted(path.name for path in maps.iterdir())
    assert written == ["block0_as.png", "block0_sa.png", "block1_as.png", "block1_sa.png", "generated.png"]
    assert Image.open(maps / "block0_sa.png").size == (WIDTH, HEIGHT)


def test_personalisation_checkpoints_and_interruptions_count_its_iterations(tmp_path: Path, monkeypatch) -> None:
    """One optimizer step per iteration: checkpoint_every_n_iterations=2 saves at 2, 4, ... and SIGTERM after
    iteration 5 names iteration 5 (the GAN's three steps per iteration would give 6, 12 and 'iteration 1')."""
    written: list[int] = []
    original = checkpoint_module.SafeCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):  # noqa: ANN001, ANN202
        if Path(path).name == "last.ckpt":
            written.append(checkpoint["global_step"])
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(checkpoint_module.SafeCheckpointIO, "save_checkpoint", recording_save)
    run_dir = tmp_path / "run"
    cfg = personalisation_config(
        tmp_path,
        "model.optim.iterations=8",
        "checkpoint_every_n_iterations=2",
        "callbacks=[{_target_:_signals.SignalAt,iteration:5}]",
    )
    with pytest.raises(Exception) as error:
        train_script.train(cfg)
    message = str(find_user_error(error.value))
    assert "SIGTERM at iteration 5;" in message and f"resume={run_dir / 'checkpoints' / 'last.ckpt'}" in message
    # every 2 iterations, at the end of each 3-iteration epoch, and the interrupted state after iteration 5
    assert sorted(set(written)) == [2, 3, 4, 5]
    assert safe_torch_load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 5


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.moa.router_init_prior=0.2", "'model.moa.router_init_prior' is 0.2; expected a value >= 0.5"),
        ("model.moa.token_grid=[2]", "'model.moa.token_grid' is [2]; expected 2 values"),
        ("model.moa.router_hidden=0", "'model.moa.router_hidden' is 0; expected a value >= 1"),
        ("model.loss.lambda_router=-1", "'model.loss.lambda_router' is -1.0; expected a value >= 0"),
        ("+model.loss.lambda_colour=1", "'model.loss' has unknown keys ['lambda_colour']"),
        ("model.optim.lr=-1", "'model.optim.lr' is -1.0; expected a value > 0"),
        ("model.optim.iterations=0", "'model.optim.iterations' is 0; expected a value >= 1"),
    ],
)
def test_bad_personalisation_options_are_named_before_the_base_is_read(
    override: str, expected: str, tmp_path: Path
) -> None:
    subject_dir = write_subject(tmp_path / "me", num_photos=2)
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(
            "train",
            overrides=[
                "experiment=personalize",
                "ckpt=missing.ckpt",
                f"data.root={subject_dir}",
                "run_dir=unused",
                override,
            ],
        )
    with pytest.raises(ConfigError) as error:  # the base checkpoint does not exist: the options come first
        train_script.train(cfg)
    assert expected in str(error.value)


@pytest.mark.parametrize("override", ["model.loss.lambda_l1=1e39", "model.optim.lr=1e30"])
def test_a_diverging_personalisation_stops_and_writes_no_adapter(override: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = personalisation_config(tmp_path, "model.optim.iterations=6", override)
    with pytest.raises(Exception) as error:
        train_script.train(cfg)
    diverged = find_user_error(error.value)
    assert isinstance(diverged, TrainingDiverged) and "not finite" in str(diverged), diverged
    assert not (run_dir / "adapter.pt").exists()


def test_personalisation_without_a_model_says_how_to_give_one(tmp_path: Path) -> None:
    subject_dir = write_subject(tmp_path / "me", num_photos=2)
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("train", overrides=["experiment=personalize", f"data.root={subject_dir}", "run_dir=unused"])
    with pytest.raises(ConfigError, match=r"Config field 'ckpt' is empty; pass ckpt=PATH/TO/last.ckpt"):
        train_script.train(cfg)


def test_masked_l1_averages_inside_the_mask_only() -> None:
    generated = torch.zeros(1, 3, 2, 2)
    target = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).expand(1, 3, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert masked_l1(generated, target, mask).item() == pytest.approx((1 + 5) / 2)  # the right column is ignored
    assert masked_l1(generated, target, torch.zeros_like(mask)).item() == 0.0  # an empty mask is no error


@pytest.mark.parametrize(
    ("photo_size", "override", "expected"),
    [
        ((48, 32), "data.sigma=null", ["48x32", "32x16"]),
        ((HEIGHT, WIDTH), "data.sigma=3.0", ["data.sigma is 3.0", "sigma 6.0"]),
    ],
)
def test_photos_that_do_not_fit_the_base_are_a_clear_error(tmp_path: Path, photo_size, override, expected) -> None:
    cfg = personalisation_config(tmp_path, override, height=photo_size[0], width=photo_size[1])
    with pytest.raises(Exception) as error:
        train_script.train(cfg)
    user_error = find_user_error(error.value)
    assert isinstance(user_error, ConfigError)
    assert all(text in str(user_error) for text in expected), str(user_error)
