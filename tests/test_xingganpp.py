"""XingGAN++: switch combinations, exact reduction to XingGAN, EA and dense fusion at initialisation,
multi-scale attention against a brute-force computation, recording, configs and the figure tool."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _fake_data import make_dataset
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from torch import Tensor, nn

from emca.build import build, build_generator
from emca.config import to_plain
from emca.errors import ConfigError
from emca.figures import main as figures_main
from emca.figures import make_figures
from emca.io import atomic_torch_save
from emca.networks.attention import ReferenceAttention, SDPAttention
from emca.networks.attention_recording import record_attention
from emca.networks.cross_attention import MemoryKeys, XingAttention, to_tokens
from emca.networks.dense_fusion import GatedStageSum
from emca.networks.enhanced_attention import EnhancedAttention
from emca.networks.generator import XingBlock, XingGenerator
from emca.networks.multiscale import AttentionScale, MultiScaleXingAttention, ScaleSpec
from emca.networks.xingganpp import XingGANPlusPlusGenerator

REPO = Path(__file__).resolve().parents[1]
# 32x16 images: an 8x4 token grid; windows of 3 do not divide it, so the shifted last windows are used
MULTI_SCALE = {"enabled": True, "pool_factors": [2, 4], "pyramid_factors": [2], "window_sizes": [3]}
ENHANCED = {"enabled": True, "branches": ["pool", "window"], "inner_channels": 4, "heads": 2}


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def random_inputs(batch: int = 2, height: int = 32, width: int = 16, dtype: torch.dtype = torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator, dtype=dtype) * 2 - 1
    poses = torch.rand(2, batch, 18, height, width, generator=generator, dtype=dtype)
    return image, poses[0], poses[1]


def plus_plus(attention: nn.Module | None = None, **options) -> nn.Module:
    """XingGAN++ built as from a config: the switches given as mappings (or true / false) are parsed at the
    edge, by emca.build, into the generator's typed options."""
    config = {"_target_": "emca.networks.xingganpp.XingGANPlusPlusGenerator", **options}
    return build("generator", config, "model.generator", attention=attention or ReferenceAttention())


def set_gamma(generator: nn.Module, value: float) -> None:
    with torch.no_grad():
        for block in generator.blocks:
            block.cross_attention.gamma.fill_(value)


def switches(multi_scale: bool, enhanced: bool, dense: bool, fusion: str = "softmax") -> dict:
    return {
        "multi_scale": {**MULTI_SCALE, "enabled": multi_scale, "fusion": fusion},
        # with multi-scale off the only branch is the full one, so EA alone refines it
        "enhanced_attention": {
            **ENHANCED,
            "enabled": enhanced,
            "branches": ["pool", "window"] if multi_scale else ["full"],
        },
        "dense_fusion": {"enabled": dense},
    }


pytestmark = pytest.mark.usefixtures("single_thread")


COMBINATIONS = [(*flags, "softmax") for flags in itertools.product((False, True), repeat=3)] + [
    (True, True, True, "conv")
]


@pytest.mark.parametrize(("multi_scale", "enhanced", "dense", "fusion"), COMBINATIONS)
def test_every_switch_combination_runs_forward_and_backward(multi_scale, enhanced, dense, fusion):
    torch.manual_seed(0)
    generator = plus_plus(ngf=8, num_blocks=2, dropout=0.5, **switches(multi_scale, enhanced, dense, fusion))
    set_gamma(generator, 0.5)  # so every attention parameter gets a gradient
    output = generator(*random_inputs())
    assert output.shape == (2, 3, 32, 16)
    output.square().mean().backward()
    gradients = {name: parameter.grad for name, parameter in generator.named_parameters()}
    assert all(grad is not None and torch.isfinite(grad).all() for grad in gradients.values())
    assert all(gradients[f"blocks.{i}.cross_attention.gamma"].abs().sum() > 0 for i in range(2))
    attention_type = MultiScaleXingAttention if multi_scale or enhanced else XingAttention
    assert all(type(block.cross_attention) is attention_type for block in generator.blocks)
    assert (generator.stage_aggregation is not None) == dense
    if enhanced:  # EA's learned consensus weights are reached by the loss
        assert any(grad.abs().sum() > 0 for name, grad in gradients.items() if "consensus_weight" in name)


def test_all_switches_off_is_exactly_xinggan():
    torch.manual_seed(0)
    xinggan = XingGenerator(ngf=8, num_blocks=3).double()
    torch.manual_seed(0)
    plus = plus_plus(ngf=8, num_blocks=3, **switches(False, False, False)).double()
    assert count_parameters(plus) == count_parameters(xinggan)
    assert plus.state_dict().keys() == xinggan.state_dict().keys()
    for name, tensor in xinggan.state_dict().items():
        assert torch.equal(plus.state_dict()[name], tensor), name
    set_gamma(xinggan, 0.7)
    set_gamma(plus, 0.7)
    inputs = random_inputs(dtype=torch.float64)
    torch.manual_seed(1)  # dropout draws the same masks in both
    expected = xinggan(*inputs)
    torch.manual_seed(1)
    assert torch.equal(plus(*inputs), expected)


def test_release_size_parameter_counts():
    with torch.device("meta"):
        xinggan = XingGenerator(ngf=64, num_blocks=9)
        off = plus_plus(ngf=64, num_blocks=9)
        full = plus_plus(
            ngf=64,
            num_blocks=9,
            multi_scale={"enabled": True, "window_sizes": [8]},
            enhanced_attention=True,
            dense_fusion=True,
        )
    assert count_parameters(off) == count_parameters(xinggan) == pytest.approx(44.84e6, rel=0.005)
    # gated dense fusion: per stream 8 gates, 1x1 convs 2C -> C with bias (C = 256 and 512), and 8 stage weights;
    # per block 4 branch logits (full, pyramid2, pyramid4, window8) and EA on pyramid2, pyramid4 and window8:
    # row query / key maps 32 -> 2 heads x 16, 2 consensus weights
    dense = sum(8 * (2 * c * c + c) + 8 for c in (256, 512))
    per_block = 4 + 3 * (2 * 32 * 32 + 2)
    assert count_parameters(full) - count_parameters(xinggan) == dense + 9 * per_block


def load_shared_weights(target: nn.Module, source: nn.Module) -> set[str]:
    """Copy the parameters ``target`` has from ``source``; returns the names of source's extra ones."""
    result = target.load_state_dict(source.state_dict(), strict=False)
    assert not result.missing_keys
    return set(result.unexpected_keys)


@pytest.mark.parametrize("multi_scale", [True, False])
def test_enhanced_attention_at_initialisation_changes_nothing(multi_scale):
    torch.manual_seed(0)
    with_ea = plus_plus(ngf=8, num_blocks=2, dropout=0.0, **switches(multi_scale, True, False)).double().eval()
    without_ea = plus_plus(ngf=8, num_blocks=2, dropout=0.0, **switches(multi_scale, False, False)).double().eval()
    extra = load_shared_weights(without_ea, with_ea)
    assert extra and all(".enhancement." in name or "scale_logits" in name for name in extra)
    set_gamma(with_ea, 0.7)
    set_gamma(without_ea, 0.7)
    inputs = random_inputs(dtype=torch.float64)
    with torch.no_grad():
        plain = without_ea(*inputs)
        torch.testing.assert_close(with_ea(*inputs), plain, rtol=0, atol=1e-12)
        for name, parameter in with_ea.named_parameters():  # EA switched on for real: the output moves
            if "consensus_weight" in name:
                parameter.fill_(0.5)
        # (small: with N(0, 0.02) projections the fresh correlations are close to 0)
        assert (with_ea(*inputs) - plain).abs().max() > 1e-8


DENSE_EXTRAS = {
    "concat": {"weight", "bias"},
    "gated": {"stage_weights", *(f"gates.{k}.{field}" for k in (0, 1) for field in ("weight", "bias"))},
}


@pytest.mark.parametrize("mode", ["concat", "gated"])
def test_dense_fusion_starts_as_the_last_block(mode):
    torch.manual_seed(0)
    dense = plus_plus(ngf=8, num_blocks=3, dropout=0.0, dense_fusion={"enabled": True, "mode": mode}).double().eval()
    plain = XingGenerator(ngf=8, num_blocks=3, dropout=0.0).double().eval()
    assert load_shared_weights(plain, dense) == {
        f"stage_aggregation.{stream}_reduction.{name}"
        for stream in ("appearance", "shape")
        for name in DENSE_EXTRAS[mode]
    }
    set_gamma(dense, 0.5)
    set_gamma(plain, 0.5)
    inputs = random_inputs(dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(dense(*inputs), plain(*inputs), rtol=0, atol=1e-12)
        shape_reduction = dense.stage_aggregation.shape_reduction
        if mode == "concat":
            shape_reduction.weight[:, :8].normal_(0, 0.1)  # let the first block in
        else:
            shape_reduction.stage_weights.fill_(0.5)
        assert (dense(*inputs) - plain(*inputs)).abs().max() > 1e-4


def test_gated_stage_sum_matches_its_formula():
    """last + sum_k w_k * sigmoid(W_k [stage_k; last] + b_k) * stage_k, written per pixel and channel."""
    torch.manual_seed(0)
    gated = GatedStageSum(3, 4).double()
    with torch.no_grad():
        gated.stage_weights.copy_(torch.tensor([0.7, -1.3]))
    stages = [torch.randn(2, 4, 3, 5, dtype=torch.float64) for _ in range(3)]
    expected = stages[2].clone()
    for k in (0, 1):
        weight, bias = gated.gates[k].weight[:, :, 0, 0], gated.gates[k].bias
        both = torch.cat((stages[k], stages[2]), 1)  # (B, 8, h, w)
        logits = torch.einsum("oc,bchw->bohw", weight, both) + bias[:, None, None]
        expected += gated.stage_weights[k] * torch.sigmoid(logits) * stages[k]
    torch.testing.assert_close(gated(stages), expected, rtol=0, atol=1e-12)


def inner_consensus(enhancement: EnhancedAttention, rows: Tensor, context: Tensor, space: Tensor) -> Tensor:
    """EA's correction written out head by head: tokens = softmax(rows) @ space, inner attention from the rows'
    tokens to the context's, its weights applied to the context rows, mixed by the per-head weights."""
    d = enhancement.inner_channels
    row_tokens, context_tokens = torch.softmax(rows, -1) @ space, torch.softmax(context, -1) @ space
    correction = torch.zeros_like(rows)
    for h in range(enhancement.heads):
        inner_query = row_tokens @ enhancement.row_query.weight[h * d : (h + 1) * d].T
        inner_key = context_tokens @ enhancement.row_key.weight[h * d : (h + 1) * d].T
        inner = torch.softmax(inner_query @ inner_key.transpose(1, 2) / d**0.5, -1)
        correction += enhancement.consensus_weight[h] * inner @ context
    return correction


@pytest.mark.parametrize("over", ["rows", "columns"])
def test_enhanced_attention_matches_its_formula(over):
    """E' = E + correction, over the queries' rows (with a pooled context) or over the keys' columns of E."""
    torch.manual_seed(0)
    enhancement = EnhancedAttention(6, inner_channels=3, heads=2, over=over).double()
    with torch.no_grad():
        enhancement.consensus_weight.copy_(torch.tensor([0.8, -0.5]))
    query, key = torch.randn(2, 12, 6, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    value, context_query = torch.randn(2, 5, 7, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    raw = query @ key.transpose(1, 2)
    if over == "rows":
        expected = raw + inner_consensus(enhancement, raw, context_query @ key.transpose(1, 2), key)
    else:  # the keys agree among themselves; the pooled query context plays no part
        columns = raw.transpose(1, 2)
        expected = raw + inner_consensus(enhancement, columns, columns, query).transpose(1, 2)
    result = enhancement(query, key, value, context_query if over == "rows" else None)
    torch.testing.assert_close(result.raw, raw, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.refined, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.output, torch.softmax(expected, -1) @ value, rtol=0, atol=1e-12)


def brute_force_block(block: XingBlock, appearance, shape, logits):
    """The block's SA / AS written out per direction, with pooling by avg_pool2d, windows as masks and pyramid
    levels attended at the pooled size, then upsampled."""
    appearance, shape = block.appearance_conv(appearance), block.shape_conv(shape)
    attention = block.cross_attention
    height, width = appearance.shape[-2:]
    weights = torch.softmax(logits, 0)

    def window_mask(size):  # mask[n, m]: key m lies in query n's window (last window shifted inward)
        def axis_windows(length):
            starts = [min(i * size, length - min(size, length)) for i in range(-(-length // size))]
            owner = [min(p // size, len(starts) - 1) for p in range(length)]
            return [range(starts[o], starts[o] + min(size, length)) for o in owner]

        rows, cols = axis_windows(height), axis_windows(width)
        mask = torch.zeros(height * width, height * width, dtype=torch.bool)
        for n in range(height * width):
            for r in rows[n // width]:
                for c in cols[n % width]:
                    mask[n, r * width + c] = True
        return mask

    def attend(updated, guide):
        query = attention.query(updated).flatten(2).transpose(1, 2)  # (B, N, Dk)
        key_map, value_map = attention.key(guide), attention.value(updated)
        total = 0
        for weight, scale in zip(weights, attention.scales, strict=True):
            kind, size = scale.spec.kind, scale.spec.size
            key, value, branch_query = key_map, value_map, query
            if kind in ("pool", "pyramid"):
                key, value = F.avg_pool2d(key, size), F.avg_pool2d(value, size)
            if kind == "pyramid":
                branch_query = F.avg_pool2d(attention.query(updated), size).flatten(2).transpose(1, 2)
            logits_ = branch_query @ key.flatten(2)
            if kind == "window":
                logits_ = logits_.masked_fill(~window_mask(size), float("-inf"))
            branch = torch.softmax(logits_, -1) @ value.flatten(2).transpose(1, 2)
            if kind == "pyramid":  # attended at the pooled level, then bilinearly back to the grid
                coarse = branch.transpose(1, 2).unflatten(2, (height // size, width // size))
                branch = F.interpolate(coarse, size=(height, width), mode="bilinear").flatten(2).transpose(1, 2)
            total = total + weight * branch
        return updated + attention.gamma * total.transpose(1, 2).reshape(updated.shape)

    new_appearance = attend(appearance, shape)
    return new_appearance, torch.cat((new_appearance, attend(shape, appearance)), 1)


@pytest.mark.parametrize(
    ("height", "width", "scales"),
    [
        (
            8,
            4,
            (
                ScaleSpec("full"),
                ScaleSpec("pool", 2),
                ScaleSpec("pyramid", 2),
                ScaleSpec("window", 3),
                ScaleSpec("window", 2),
            ),
        ),
        # windows that do not divide the grid (avg_pool2d only matches adaptive pooling on divisible sizes)
        (6, 5, (ScaleSpec("full"), ScaleSpec("window", 4), ScaleSpec("window", 2))),
    ],
)
def test_multi_scale_block_matches_brute_force(height, width, scales):
    torch.manual_seed(0)
    block = XingBlock(
        32, 16, "instance", 0.0, "reflect", lambda: MultiScaleXingAttention(16, 4, ReferenceAttention(), scales=scales)
    ).double()
    logits = torch.linspace(-0.4, 0.5, len(scales), dtype=torch.float64)
    with torch.no_grad():
        block.cross_attention.gamma.fill_(0.8)
        block.cross_attention.scale_logits.copy_(logits)
    appearance = torch.randn(2, 16, height, width, dtype=torch.float64)
    shape = torch.randn(2, 32, height, width, dtype=torch.float64)
    expected = brute_force_block(block, appearance, shape, logits)
    for actual, wanted in zip(block(appearance, shape), expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=0, atol=1e-10)


def test_attention_backends_agree_on_the_full_model():
    torch.manual_seed(0)
    reference = (
        plus_plus(ngf=8, num_blocks=2, dropout=0.0, attention=ReferenceAttention(), **switches(True, True, True))
        .double()
        .eval()
    )
    sdpa = (
        plus_plus(ngf=8, num_blocks=2, dropout=0.0, attention=SDPAttention(), **switches(True, True, True))
        .double()
        .eval()
    )
    sdpa.load_state_dict(reference.state_dict())
    set_gamma(reference, 0.5)
    set_gamma(sdpa, 0.5)
    inputs = random_inputs(dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(sdpa(*inputs), reference(*inputs), rtol=0, atol=1e-10)


def test_same_weights_run_at_any_resolution():
    torch.manual_seed(0)
    generator = plus_plus(ngf=8, num_blocks=1, **switches(True, True, True)).eval()
    with torch.no_grad():
        for height, width in ((32, 16), (48, 24), (20, 12), (8, 8)):  # (8, 8): 2x2 tokens, windows of 3 shrink
            assert generator(*random_inputs(1, height, width)).shape == (1, 3, height, width)


def test_full_model_overfits_one_batch():
    torch.manual_seed(0)
    generator = plus_plus(ngf=8, num_blocks=1, dropout=0.0, **switches(True, True, True))
    inputs = random_inputs(2, 16, 12, seed=1)
    target = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(2)) * 2 - 1
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(40):
        loss = F.l1_loss(generator(*inputs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"multi_scale": {"enabled": True, "fusion": "max"}}, "multi_scale.fusion"),
        ({"multi_scale": {"enabled": True, "pool_factors": [1]}}, "multi_scale.pool_factors"),
        ({"multi_scale": {"enabled": True, "window_sizes": "4"}}, "multi_scale.window_sizes"),
        ({"multi_scale": {"enabled": True, "scales": [2]}}, "multi_scale"),
        (
            {"multi_scale": {"enabled": True, "full": False, "pyramid_factors": [], "window_sizes": []}},
            "multi_scale",
        ),
        ({"enhanced_attention": {"enabled": True, "branches": ["global"]}}, "enhanced_attention.branches"),
        ({"enhanced_attention": {"enabled": True, "branches": ["pool"]}}, "enhanced_attention.branches"),
        ({"enhanced_attention": {"enabled": True, "branches": ["full"], "heads": 0}}, "enhanced_attention.heads"),
        ({"dense_fusion": {"enabled": "yes"}}, "dense_fusion.enabled"),
        ({"dense_fusion": {"enabled": True, "mode": "sum"}}, "dense_fusion.mode"),
        ({"multi_scale": {"enabled": True, "pyramid_factors": [1]}}, "multi_scale.pyramid_factors"),
        ({"enhanced_attention": {"enabled": True, "branches": ["full"], "over": "keys"}}, "enhanced_attention.over"),
    ],
)
def test_bad_configuration_names_the_field(options, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        plus_plus(ngf=8, num_blocks=1, **options)


def test_recording_captures_attention_without_changing_the_output():
    torch.manual_seed(0)
    generator = plus_plus(ngf=8, num_blocks=2, dropout=0.0, **switches(True, True, False)).eval()
    set_gamma(generator, 0.5)
    inputs = random_inputs(3)
    tokens = [0, 13, 31]  # on the 8x4 grid: corner, middle, last
    with torch.no_grad():
        plain = generator(*inputs)
        with record_attention(generator, tokens, sample=1) as recorder:
            recorded = generator(*inputs)
        # the branch inputs of block 0, to recompute its full attention independently
        block = generator.blocks[0]
        appearance = block.appearance_conv(generator.appearance_encoder(inputs[0]))
        shape = block.shape_conv(generator.shape_encoder(torch.cat(inputs[1:], 1)))
        attention = block.cross_attention
        query = to_tokens(attention.query(torch.cat((appearance, shape))))  # stacked SA (rows < 3) then AS
        key = to_tokens(attention.key(torch.cat((shape, appearance))))
        after = generator(*inputs)
    torch.testing.assert_close(recorded, plain, rtol=0, atol=0)
    assert len(recorder.records) == 10, "leaving the context removes the recording hooks"
    torch.testing.assert_close(after, plain, rtol=0, atol=0)
    names = [(record.block, record.scale) for record in recorder.records]
    assert names == [(b, s) for b in (0, 1) for s in ("full", "pool2", "pool4", "pyramid2", "window3")]
    grids = {"full": (8, 4), "pool2": (4, 2), "pool4": (2, 1), "pyramid2": (4, 2), "window3": (8, 4)}
    for record in recorder.records:
        assert record.attention.shape == (2, 3, *grids[record.scale])
        torch.testing.assert_close(record.attention.sum((-2, -1)), torch.ones(2, 3))
        assert (record.refined is None) == (record.scale in ("full", "pyramid2"))  # EA on pool and window only
        if record.refined is not None:  # untrained EA: E' = E
            torch.testing.assert_close(record.refined, record.raw, equal_nan=True)
        if record.scale == "window3":  # 3x3 windows: 9 keys each, the rest of the grid untouched
            assert ((record.attention > 0).sum((-2, -1)) == 9).all()
            assert (record.raw.isnan().sum((-2, -1)) == 32 - 9).all()
    full, pyramid = recorder.records[0], recorder.records[3]
    pooled_query, pooled_key = (
        to_tokens(F.avg_pool2d(projection(torch.cat(pair)), 2))
        for projection, pair in ((attention.query, (appearance, shape)), (attention.key, (shape, appearance)))
    )
    cells = [0, 2, 7]  # the 2x2 cells of the 4x2 pooled grid holding tokens 0 (0, 0), 13 (3, 1), 31 (7, 3)
    for direction, row in enumerate((1, 3 + 1)):
        expected = torch.softmax(query[row, tokens] @ key[row].T, -1).reshape(3, 8, 4)
        torch.testing.assert_close(full.attention[direction], expected)
        expected = torch.softmax(pooled_query[row, cells] @ pooled_key[row].T, -1).reshape(3, 4, 2)
        torch.testing.assert_close(pyramid.attention[direction], expected)


def test_recording_refuses_xinggan_and_tokens_off_the_grid():
    with (
        pytest.raises(ValueError, match="no multi-scale attention"),
        record_attention(XingGenerator(ngf=8, num_blocks=1), [0]),
    ):
        pass
    generator = plus_plus(ngf=8, num_blocks=1, multi_scale=True)
    with pytest.raises(ValueError, match="32 tokens"), record_attention(generator, [32]), torch.no_grad():
        generator(*random_inputs(1))  # 32x16 images: an 8x4 grid


def compose_config(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "attention_type"),
    [
        (["model=xingganpp"], ReferenceAttention),
        (["experiment=xingganpp_deepfashion", "model/attention=sdpa"], SDPAttention),
        (["experiment=xingganpp_market"], ReferenceAttention),
    ],
)
def test_release_configs_build_xingganpp(overrides, attention_type):
    cfg = compose_config(*overrides)
    model = to_plain(cfg.model)
    assert all(
        model["generator"][switch]["enabled"] for switch in ("multi_scale", "enhanced_attention", "dense_fusion")
    )
    assert "full" not in model["generator"]["enhanced_attention"]["branches"]  # too large at these sizes
    with torch.device("meta"):
        generator = build_generator(model)
    assert isinstance(generator, XingGANPlusPlusGenerator) and len(generator.blocks) == 9
    assert all(isinstance(block.cross_attention.backend, attention_type) for block in generator.blocks)


def test_small_config_trains_at_the_embedded_default_size():
    cfg = compose_config("model=xingganpp_small")
    torch.manual_seed(0)
    generator = build_generator(to_plain(cfg.model))
    assert isinstance(generator, XingGANPlusPlusGenerator) and generator.dense_fusion.enabled
    output = generator(*random_inputs(1, cfg.data.height, cfg.data.width))
    assert output.shape == (1, 3, cfg.data.height, cfg.data.width)
    xinggan = instantiate(compose_config("model=xinggan_small").model.generator)
    assert count_parameters(generator) > count_parameters(xinggan)


def fake_sample(height: int = 32, width: int = 16) -> dict:
    image, source_pose, target_pose = random_inputs(1, height, width)
    keypoints = torch.tensor([[5 + j, 3 + j % 10] for j in range(18)])
    keypoints[13] = -1  # a missing joint is skipped
    return {
        "source_image": image[0],
        "source_pose": source_pose[0],
        "target_pose": target_pose[0],
        "target_image": image[0].flip(-1),
        "target_keypoints": keypoints,
    }


def is_png(path: Path) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 50


def test_figures_of_a_generator(tmp_path: Path):
    torch.manual_seed(0)
    generator = plus_plus(ngf=8, num_blocks=2, **switches(True, True, True)).eval()
    written = make_figures(generator, fake_sample(), tmp_path, joints=[1], blocks=[0, -1])
    assert sorted(path.name for path in written) == sorted(
        [
            "fusion_masks.png",
            "attention_block0.png",
            "enhanced_attention_block0.png",
            "attention_block1.png",
            "enhanced_attention_block1.png",
        ]
    )
    assert all(is_png(path) for path in written)
    with pytest.raises(ConfigError, match="--blocks"):
        make_figures(generator, fake_sample(), tmp_path, blocks=[2])
    # XingGAN: the masks only
    assert [p.name for p in make_figures(XingGenerator(ngf=8, num_blocks=1), fake_sample(), tmp_path / "x")] == [
        "fusion_masks.png"
    ]


def test_figure_command_reads_a_checkpoint(tmp_path: Path, capsys):
    root = tmp_path / "data"
    make_dataset(root, height=32, width=16)
    cfg = compose_config(
        "model=xingganpp_small",
        f"data.root={root}",
        "data.height=32",
        "data.width=16",
        "data.generate_if_missing=false",
        "model.generator.ngf=8",
        "model.generator.num_blocks=1",
        "model.generator.multi_scale.window_sizes=[3]",
        "model.generator.enhanced_attention.inner_channels=4",
    )
    model = to_plain(cfg.model)
    generator = build_generator(model)
    checkpoint = {
        "hyper_parameters": {"model": model, "data": to_plain(cfg.data)},
        "state_dict": {f"generator.{name}": value for name, value in generator.state_dict().items()},
    }
    atomic_torch_save(checkpoint, tmp_path / "run.ckpt")
    out = tmp_path / "figures"
    figures_main(["--ckpt", str(tmp_path / "run.ckpt"), "--pair-index", "2", "--out", str(out), "--joints", "1"])
    assert {path.name for path in out.iterdir()} == {
        "fusion_masks.png",
        "attention_block0.png",
        "enhanced_attention_block0.png",
    }
    with pytest.raises(SystemExit) as exit_info:
        figures_main(["--ckpt", str(tmp_path / "run.ckpt"), "--pair-index", "999", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "--pair-index 999" in capsys.readouterr().err


@pytest.mark.parametrize("spec", [ScaleSpec("full"), ScaleSpec("pool", 2), ScaleSpec("window", 2)], ids=str)
def test_memory_keys_join_every_query_key_set(spec: ScaleSpec) -> None:
    """Memory keys / values (personalisation's subject tokens) are attended by every query of a branch: the
    full grid, the 2x2-pooled grid, or its own 2x2 window, each with the T memory tokens, in fp64."""
    torch.manual_seed(0)
    batch, height, width, memory_tokens = 2, 4, 6, 3
    query = torch.randn(batch, height * width, 5, dtype=torch.float64)
    key = torch.randn(batch, height * width, 5, dtype=torch.float64)
    value = torch.randn(batch, height * width, 7, dtype=torch.float64)
    memory = MemoryKeys(*(torch.randn(memory_tokens, width, dtype=torch.float64) for width in (5, 7)))
    output = AttentionScale(spec, ReferenceAttention())(query, key, value, height, width, memory)

    grid_key, grid_value = (t.unflatten(1, (height, width)) for t in (key, value))
    for b, row, col in itertools.product(range(batch), range(height), range(width)):
        if spec.kind == "full":
            keys, values = key[b], value[b]
        elif spec.kind == "pool":  # mean of each 2x2 block of the grid
            blocks = (t[b].unflatten(0, (height // 2, 2)).unflatten(2, (width // 2, 2)) for t in (grid_key, grid_value))
            keys, values = (block.mean((1, 3)).flatten(0, 1) for block in blocks)
        else:  # the 2x2 window holding (row, col)
            top, left = row // 2 * 2, col // 2 * 2
            keys, values = (t[b, top : top + 2, left : left + 2].flatten(0, 1) for t in (grid_key, grid_value))
        keys, values = torch.cat((keys, memory.key)), torch.cat((values, memory.value))
        expected = torch.softmax(keys @ query[b, row * width + col], 0) @ values
        torch.testing.assert_close(output[b, row * width + col], expected)
