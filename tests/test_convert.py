"""The converter of the official XingGAN release (emca.convert) on state dicts made under the release's names.

The release's layout is written out here independently of the converter's tables: the list of official keys
and shapes (``official_generator_shapes``) and a loader that copies them into emca's generator module by
module (``load_by_hand``). A converted file must give the same generator as that hand loading, use every
official key once, fill every emca tensor, and convert back to the original tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from emca.checkpoint import initial_weights, load_generator, read_training_checkpoint
from emca.convert import DISCRIMINATOR_NAMES, GENERATOR_NAMES, convert_official, main, rename
from emca.errors import CheckpointError
from emca.networks.generator import XingGenerator

NORMS = {"deepfashion": "instance", "market": "batch"}
SIZES = {"deepfashion": (256, 176), "market": (128, 64)}


def norm_keys(prefix: str, channels: int, norm: str) -> dict[str, tuple[int, ...]]:
    if norm == "instance":  # affine-free, no statistics: nothing saved
        return {}
    shapes = {"weight": (channels,), "bias": (channels,), "running_mean": (channels,), "running_var": (channels,)}
    return {f"{prefix}.{name}": shape for name, shape in shapes.items()} | {f"{prefix}.num_batches_tracked": ()}


def conv_keys(
    prefix: str, shape: tuple[int, ...], norm: str, bias: bool | None = None, transposed: bool = False
) -> dict[str, tuple[int, ...]]:
    """A conv's weight, and its bias when it has one (only before an affine-free instance norm, unless fixed).
    A transposed conv's weight is (in, out, k, k), so its bias has shape[1] entries."""
    has_bias = norm == "instance" if bias is None else bias
    bias_shape = (shape[1] if transposed else shape[0],)
    return {f"{prefix}.weight": shape} | ({f"{prefix}.bias": bias_shape} if has_bias else {})


def official_generator_shapes(norm: str) -> dict[str, tuple[int, ...]]:
    """Every key of the release's generator (ngf 64, 9 blocks) with its shape, in the release's layout."""
    keys: dict[str, tuple[int, ...]] = {}
    for stream, channels in (("stream1_down", 3), ("stream2_down", 36)):
        for index, (cin, cout, kernel) in zip((1, 4, 7), ((channels, 64, 7), (64, 128, 3), (128, 256, 3)), strict=True):
            keys |= conv_keys(f"model.{stream}.{index}", (cout, cin, kernel, kernel), norm)
            keys |= norm_keys(f"model.{stream}.{index + 1}", cout, norm)
    for block in range(9):
        shape_in = 256 if block == 0 else 512
        prefix = f"model.att.{block}"
        keys[f"{prefix}.gamma"] = (1,)
        for stream, cin, final_norm in (("conv_block_stream1", 256, True), ("conv_block_stream2", shape_in, False)):
            keys |= conv_keys(f"{prefix}.{stream}.1", (cin, cin, 3, 3), norm) | norm_keys(
                f"{prefix}.{stream}.2", cin, norm
            )
            keys |= conv_keys(f"{prefix}.{stream}.6", (256, cin, 3, 3), norm)
            if final_norm:
                keys |= norm_keys(f"{prefix}.{stream}.7", 256, norm)
        for name, cout in (("query_conv", 32), ("key_conv", 32), ("value_conv", 256)):
            keys |= conv_keys(f"{prefix}.{name}", (cout, 256, 1, 1), norm, bias=True)
    for stream in ("stream1_up", "stream2_up"):  # transposed convs: (in, out, k, k)
        keys |= conv_keys(f"model.{stream}.0", (256, 128, 3, 3), norm, transposed=True)
        keys |= norm_keys(f"model.{stream}.1", 128, norm)
        keys |= conv_keys(f"model.{stream}.3", (128, 64, 3, 3), norm, transposed=True)
        keys |= norm_keys(f"model.{stream}.4", 64, norm)
        keys |= {f"model.{stream}.7.weight": (30, 64, 7, 7), f"model.{stream}.7.bias": (30,)}
    keys |= conv_keys("model.x2_con", (512, 256, 1, 1), norm, transposed=True) | norm_keys("model.x2_norm", 256, norm)
    keys |= conv_keys("model.atte_con", (768, 256, 3, 3), norm, transposed=True) | norm_keys(
        "model.atte_norm", 256, norm
    )
    keys |= conv_keys("model.atte_con1", (256, 128, 3, 3), norm, transposed=True)
    keys |= norm_keys("model.atte_norm1", 128, norm)
    return keys | conv_keys("model.atte_con2", (128, 21, 1, 1), norm, transposed=True)


def official_discriminator_shapes(condition_channels: int, norm: str) -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    for index, (cin, cout, kernel) in zip(
        (1, 4, 7), ((3 + condition_channels, 64, 7), (64, 128, 3), (128, 256, 3)), strict=True
    ):
        keys |= conv_keys(f"model.{index}", (cout, cin, kernel, kernel), norm) | norm_keys(
            f"model.{index + 1}", cout, norm
        )
    for block in (10, 11, 12):
        for conv, norm_index in ((1, 2), (6, 7)):
            keys |= conv_keys(f"model.{block}.conv_block.{conv}", (256, 256, 3, 3), norm)
            keys |= norm_keys(f"model.{block}.conv_block.{norm_index}", 256, norm)
    return keys


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[name] = torch.randn(shape, generator=generator) * 0.05
    return state


@torch.no_grad()
def load_by_hand(generator: XingGenerator, official: dict[str, torch.Tensor], norm: str) -> None:
    """The release's tensors copied into emca's generator layer by layer, without the converter's tables."""

    def layer(module: nn.Module, key: str) -> None:
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            tensor.copy_(official[f"{key}.{name}"])

    def sequential(sequence: nn.Sequential, key: str) -> None:
        for index, module in enumerate(sequence):
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                layer(module, f"{key}.{index}")

    sequential(generator.appearance_encoder, "model.stream1_down")
    sequential(generator.shape_encoder, "model.stream2_down")
    for index, block in enumerate(generator.blocks):
        sequential(block.appearance_conv, f"model.att.{index}.conv_block_stream1")
        sequential(block.shape_conv, f"model.att.{index}.conv_block_stream2")
        attention = block.cross_attention
        for module, name in (
            (attention.query, "query_conv"),
            (attention.key, "key_conv"),
            (attention.value, "value_conv"),
        ):
            layer(module, f"model.att.{index}.{name}")
        attention.gamma.copy_(official[f"model.att.{index}.gamma"])
    fusion = generator.fusion
    sequential(fusion.appearance_decoder, "model.stream1_up")
    sequential(fusion.shape_decoder, "model.stream2_up")
    layer(fusion.shape_reduce[0], "model.x2_con")
    for index, name in ((0, "atte_con"), (3, "atte_con1"), (6, "atte_con2")):
        layer(fusion.mask_decoder[index], f"model.{name}")
    if norm == "batch":
        layer(fusion.shape_reduce[1], "model.x2_norm")
        layer(fusion.mask_decoder[1], "model.atte_norm")
        layer(fusion.mask_decoder[4], "model.atte_norm1")


def write_release(
    folder: Path, dataset: str, discriminators: bool = True, legacy: bool = False, prefix: str = ""
) -> dict:
    norm = NORMS[dataset]
    files = {"latest_net_netG.pth": random_state(official_generator_shapes(norm), 0)}
    if discriminators:
        files["latest_net_netD_PB.pth"] = random_state(official_discriminator_shapes(18, norm), 1)
        files["latest_net_netD_PP.pth"] = random_state(official_discriminator_shapes(3, norm), 2)
    folder.mkdir(parents=True, exist_ok=True)
    for name, state in files.items():
        torch.save({prefix + k: v for k, v in state.items()}, folder / name, _use_new_zipfile_serialization=not legacy)
    return files


@pytest.mark.parametrize("dataset", ["deepfashion", "market"])
def test_official_layout_matches_the_published_counts(dataset: str) -> None:
    shapes = official_generator_shapes(NORMS[dataset])
    assert len(shapes) == {"deepfashion": 167, "market": 317}[dataset]
    trainable = sum(
        torch.Size(s).numel()
        for name, s in shapes.items()
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert trainable == {"deepfashion": 44_844_634, "market": 44_853_189}[dataset]


@pytest.mark.parametrize(
    ("dataset", "legacy", "prefix"),
    [("deepfashion", False, ""), ("market", True, "module.")],  # legacy format with a DataParallel prefix
)
def test_converted_release_equals_the_same_weights_loaded_by_hand(
    tmp_path: Path, dataset: str, legacy: bool, prefix: str
) -> None:
    release = write_release(tmp_path / "release" / f"{dataset}_XingGAN", dataset, legacy=legacy, prefix=prefix)
    out = tmp_path / "converted.ckpt"
    summary = convert_official(tmp_path / "release", dataset, out)  # the folder: found recursively
    assert summary["networks"] == ["appearance", "generator", "pose"]

    converted, hyper_parameters = load_generator(out)
    assert hyper_parameters["model"]["generator"]["norm"] == NORMS[dataset]
    assert (hyper_parameters["data"]["height"], hyper_parameters["data"]["width"]) == SIZES[dataset]
    by_hand = XingGenerator(ngf=64, num_blocks=9, norm=NORMS[dataset], dropout=0.5).eval()
    load_by_hand(by_hand, release["latest_net_netG.pth"], NORMS[dataset])
    # a quarter of the training size: every layer's weights still act on the output, at a sixteenth of the cost
    height, width = (side // 4 for side in SIZES[dataset])
    generator = torch.Generator().manual_seed(5)
    inputs = (
        torch.rand(1, 3, height, width, generator=generator) * 2 - 1,
        *torch.rand(2, 1, 18, height, width, generator=generator),
    )
    with torch.no_grad():
        torch.testing.assert_close(converted(*inputs), by_hand(*inputs), rtol=0, atol=0)

    state = read_training_checkpoint(out)[0]["state_dict"]
    for role, table, file in (
        ("generator.", GENERATOR_NAMES, "latest_net_netG.pth"),
        ("discriminators.pose.", DISCRIMINATOR_NAMES, "latest_net_netD_PB.pth"),
        ("discriminators.appearance.", DISCRIMINATOR_NAMES, "latest_net_netD_PP.pth"),
    ):
        emca = {name[len(role) :]: tensor for name, tensor in state.items() if name.startswith(role)}
        back = {rename(name, table, to_emca=False): tensor for name, tensor in emca.items()}
        assert back.keys() == release[file].keys()  # every official key used once, every emca tensor filled
        for name, tensor in release[file].items():
            assert torch.equal(back[name], tensor), name


def test_generator_only_release_and_fine_tuning_start(tmp_path: Path) -> None:
    """Without the discriminator files only the generator converts; emca train ckpt= then takes it."""
    write_release(tmp_path, "market", discriminators=False)
    out = tmp_path / "g.ckpt"
    main(["xinggan-official", str(tmp_path / "latest_net_netG.pth"), "--dataset", "market", "--out", str(out)])
    state = read_training_checkpoint(out)[0]["state_dict"]
    assert state and all(name.startswith("generator.") for name in state)

    class Module(nn.Module):  # the two networks a training module holds, at the release's size
        def __init__(self) -> None:
            super().__init__()
            model = read_training_checkpoint(out)[1]["model"]
            from emca.build import build_discriminators, build_generator

            with torch.device("meta"):
                self.generator, self.discriminators = build_generator(model), build_discriminators(model)

    weights = initial_weights(out, Module())
    assert weights.keys() == state.keys()


def test_wrong_dataset_and_damaged_files_are_named(tmp_path: Path) -> None:
    write_release(tmp_path / "df", "deepfashion", discriminators=False)
    with pytest.raises(CheckpointError, match=r"latest_net_netG.pth', key 'model.stream1_down.1.bias'.*--dataset"):
        convert_official(tmp_path / "df", "market", tmp_path / "out.ckpt")  # instance-norm biases, batch-norm model
    assert not (tmp_path / "out.ckpt").exists()

    state = random_state(official_generator_shapes("instance"), 0)
    del state["model.att.8.gamma"]
    torch.save(state, tmp_path / "latest_net_netG.pth")
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor\(s\).*'model.att.8.gamma'"):
        convert_official(tmp_path / "latest_net_netG.pth", "deepfashion", tmp_path / "out.ckpt")

    truncated = tmp_path / "cut" / "latest_net_netG.pth"
    truncated.parent.mkdir()
    truncated.write_bytes((tmp_path / "df" / "latest_net_netG.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut/latest_net_netG.pth"):
        convert_official(truncated, "deepfashion", tmp_path / "out.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="No 'latest_net_netG.pth' under"):
        convert_official(tmp_path / "empty", "deepfashion", tmp_path / "out.ckpt")
    with pytest.raises(CheckpointError, match="nowhere' does not exist"):
        convert_official(tmp_path / "nowhere", "deepfashion", tmp_path / "out.ckpt")
