"""XingGAN generator and discriminators: sizes against the release, shapes, attention, blending, training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emca.build import build
from emca.errors import ConfigError, InputShapeError
from emca.networks.attention import ChunkedAttention, ReferenceAttention, SDPAttention
from emca.networks.blocks import PointwiseConvTranspose2d
from emca.networks.cross_attention import XingAttention
from emca.networks.discriminator import ResnetDiscriminator
from emca.networks.generator import XingBlock, XingGenerator


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def random_inputs(batch: int, height: int, width: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator, dtype=dtype) * 2 - 1
    source_pose = torch.rand(batch, 18, height, width, generator=generator, dtype=dtype)
    target_pose = torch.rand(batch, 18, height, width, generator=generator, dtype=dtype)
    return image, source_pose, target_pose


def set_gamma(generator: XingGenerator, value: float) -> None:
    with torch.no_grad():
        for block in generator.blocks:
            block.cross_attention.gamma.fill_(value)


def test_generator_parameter_count_matches_release():
    with torch.device("meta"):  # counts without allocating
        generator = XingGenerator(ngf=64, num_blocks=9, norm="instance")
    assert count_parameters(generator) == 44_844_634  # the official DeepFashion generator, exactly


def test_discriminator_parameter_counts_match_release():
    pose_judge = ResnetDiscriminator(condition_channels=18, ndf=64, num_blocks=3, norm="instance")
    pair_judge = ResnetDiscriminator(condition_channels=3, ndf=64, num_blocks=3, norm="instance")
    assert count_parameters(pose_judge) == 3_975_424
    assert count_parameters(pair_judge) == 3_928_384


@pytest.mark.parametrize(
    ("height", "width", "norm", "padding_type"),
    [(32, 24, "instance", "reflect"), (16, 16, "batch", "zero"), (24, 8, "instance", "replicate")],
)
def test_output_shapes(height, width, norm, padding_type):
    generator = XingGenerator(ngf=8, num_blocks=2, norm=norm, padding_type=padding_type)
    image, source_pose, target_pose = random_inputs(2, height, width)
    fake = generator(image, source_pose, target_pose)
    assert fake.shape == (2, 3, height, width)
    judge = ResnetDiscriminator(18, ndf=8, num_blocks=1, norm=norm, padding_type=padding_type)
    assert judge(fake, target_pose).shape == (2, 32, height // 4, width // 4)


@pytest.mark.parametrize("upsampling", ["transposed", "resize"])
def test_upsampling_choice_keeps_shapes_and_only_resize_avoids_the_checkerboard(upsampling: str) -> None:
    generator = XingGenerator(ngf=8, num_blocks=1, upsampling=upsampling)
    image, source_pose, target_pose = random_inputs(2, 32, 24)
    assert generator(image, source_pose, target_pose).shape == (2, 3, 32, 24)
    # the first x2 step (its convolution, before the norm) on a constant map: nearest-then-conv keeps it
    # constant; a stride-2 transposed convolution overlaps its kernel unevenly, a period-2 pattern
    step = nn.Sequential(*generator.fusion.appearance_decoder[: 3 if upsampling == "resize" else 1])
    with torch.no_grad():
        upsampled = step(torch.ones(1, step[-1].in_channels, 4, 3))
    assert upsampled.shape == (1, 16, 8, 6)
    interior = upsampled[..., 1:-1, 1:-1]
    spread = (interior - interior[..., :1, :1]).abs().amax().item()
    assert (spread < 1e-6) == (upsampling == "resize")


def test_xing_block_computes_sa_and_as_as_released():
    """One stacked backend call must equal the two directions written out separately."""
    torch.manual_seed(0)
    block = XingBlock(
        shape_in_channels=32,
        channels=16,
        norm="instance",
        dropout=0.0,
        padding_type="reflect",
        make_attention=lambda: XingAttention(channels=16, query_key_channels=4, backend=ReferenceAttention()),
    ).double()
    attention = block.cross_attention
    with torch.no_grad():
        attention.gamma.fill_(0.8)
    appearance_in = torch.randn(2, 16, 4, 3, dtype=torch.float64)
    shape_in = torch.randn(2, 32, 4, 3, dtype=torch.float64)
    appearance_out, shape_out = block(appearance_in, shape_in)

    appearance, shape = block.appearance_conv(appearance_in), block.shape_conv(shape_in)

    def attend(query_side, key_side):  # E = q(query_side)^T k(key_side), softmax over key positions
        query = attention.query(query_side).flatten(2)  # (B, Dk, N)
        key = attention.key(key_side).flatten(2)
        value = attention.value(query_side).flatten(2)  # (B, C, N)
        weights = torch.softmax(torch.einsum("bdn,bdm->bnm", query, key), dim=-1)
        attended = torch.einsum("bcm,bnm->bcn", value, weights).reshape(query_side.shape)
        return query_side + 0.8 * attended

    expected_appearance = attend(appearance, shape)
    expected_shape = attend(shape, appearance)
    torch.testing.assert_close(appearance_out, expected_appearance, rtol=0, atol=1e-10)
    torch.testing.assert_close(shape_out, torch.cat((expected_appearance, expected_shape), 1), rtol=0, atol=1e-10)


def test_attention_backends_give_the_same_generator_output():
    torch.manual_seed(0)
    reference = XingGenerator(ngf=8, num_blocks=2, attention=ReferenceAttention()).double().eval()
    sdpa = XingGenerator(ngf=8, num_blocks=2, attention=SDPAttention()).double().eval()
    sdpa.load_state_dict(reference.state_dict())
    inputs = random_inputs(2, 16, 12, dtype=torch.float64)
    with torch.no_grad():
        without_attention = reference(*inputs)
        set_gamma(reference, 0.5)
        set_gamma(sdpa, 0.5)
        reference_output = reference(*inputs)
        sdpa_output = sdpa(*inputs)
    assert (reference_output - without_attention).abs().max() > 1e-3  # the attention path is exercised
    torch.testing.assert_close(sdpa_output, reference_output, rtol=0, atol=1e-6)


def test_output_is_a_convex_blend_of_candidates_and_source():
    torch.manual_seed(0)
    generator = XingGenerator(ngf=8, num_blocks=1).eval()
    set_gamma(generator, 1.0)
    image, source_pose, target_pose = random_inputs(2, 16, 12)
    with torch.no_grad():
        appearance = generator.appearance_encoder(image)
        shape = generator.shape_encoder(torch.cat((source_pose, target_pose), 1))
        appearance, shape = generator.blocks[0](appearance, shape)
        candidates, masks = generator.fusion.candidates_and_masks(appearance, shape, image)
        output = generator(image, source_pose, target_pose)
    assert candidates.shape == (2, 21, 3, 16, 12) and masks.shape == (2, 21, 1, 16, 12)
    torch.testing.assert_close(candidates[:, -1], image)
    assert (masks >= 0).all()
    torch.testing.assert_close(masks.sum(1), torch.ones(2, 1, 16, 12))
    torch.testing.assert_close(output, (candidates * masks).sum(1))
    tolerance = 1e-6
    assert (output >= candidates.min(1).values - tolerance).all() and (
        output <= candidates.max(1).values + tolerance
    ).all()
    assert output.abs().max() <= 1 + tolerance


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_transposed_convolution_equals_torchs_in_fp64(bias: bool) -> None:
    torch.manual_seed(0)
    released = nn.ConvTranspose2d(12, 7, 1, bias=bias).double()
    pointwise = PointwiseConvTranspose2d(12, 7, bias=bias).double()
    pointwise.load_state_dict(released.state_dict())  # the same keys and shapes: released weights load as they are
    features = torch.randn(3, 12, 5, 4, dtype=torch.float64)
    outputs = []
    for layer in (released, pointwise):
        layer.zero_grad()
        given = features.clone().requires_grad_()
        output = layer(given)
        (output * torch.linspace(-1, 1, output.numel(), dtype=torch.float64).view_as(output)).sum().backward()
        outputs.append((output, given.grad, *(parameter.grad for parameter in layer.parameters())))
    for expected, actual in zip(*outputs, strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


@torch.no_grad()
def test_initialisation_follows_the_release():
    torch.manual_seed(0)
    generator = XingGenerator(ngf=16, num_blocks=2, norm="batch")
    assert all(block.cross_attention.gamma.item() == 0 for block in generator.blocks)
    conv_weights = torch.cat(
        [
            module.weight.flatten()
            for module in generator.modules()
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
        ]
    )
    assert conv_weights.mean().abs() < 1e-3 and conv_weights.std() == pytest.approx(0.02, rel=0.02)
    norm_weights = torch.cat([module.weight for module in generator.modules() if isinstance(module, nn.BatchNorm2d)])
    norm_biases = torch.cat([module.bias for module in generator.modules() if isinstance(module, nn.BatchNorm2d)])
    assert norm_weights.mean() == pytest.approx(1.0, abs=0.005) and norm_weights.std() == pytest.approx(0.02, rel=0.1)
    assert (norm_biases == 0).all()


def test_fresh_generator_blocks_reduce_to_their_conv_branches():
    """gamma = 0 at initialisation, so the attention contributes nothing until it is learned."""
    torch.manual_seed(0)
    block = XingGenerator(ngf=8, num_blocks=1).eval().blocks[0]
    appearance, shape = torch.randn(1, 32, 4, 4), torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        appearance_out, shape_out = block(appearance, shape)
        expected = block.appearance_conv(appearance), block.shape_conv(shape)
    torch.testing.assert_close(appearance_out, expected[0])
    torch.testing.assert_close(shape_out, torch.cat(expected, 1))


@pytest.fixture
def single_thread():
    """Tiny ops run fastest on one thread, and far faster than with several when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_generator_overfits_one_batch(single_thread):
    torch.manual_seed(0)
    generator = XingGenerator(ngf=8, num_blocks=1, dropout=0.0)
    image, source_pose, target_pose = random_inputs(2, 16, 12, seed=1)
    target = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(2)) * 2 - 1
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.l1_loss(generator(image, source_pose, target_pose), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("argument", "shape"),
    [("source_pose", (2, 17, 16, 12)), ("target_pose", (2, 18, 16, 8)), ("source_image", (2, 3, 18, 12))],
)
def test_generator_rejects_mismatched_inputs(argument, shape):
    generator = XingGenerator(ngf=8, num_blocks=1)
    image, source_pose, target_pose = random_inputs(2, 16, 12)
    inputs = {"source_image": image, "source_pose": source_pose, "target_pose": target_pose}
    inputs[argument] = torch.zeros(shape)
    if argument == "source_image":  # keep the poses consistent with the odd-sized image
        inputs["source_pose"] = inputs["target_pose"] = torch.zeros(2, 18, 18, 12)
    with pytest.raises(InputShapeError, match=argument):
        generator(**inputs)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"norm": "group"}, "norm"),
        ({"padding_type": "circular"}, "padding_type"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"upsampling": "bilinear"}, "upsampling"),
    ],
)
def test_bad_configuration_names_the_field(options, field):
    config = {"_target_": "emca.networks.generator.XingGenerator", "ngf": 8, **options}
    with pytest.raises(ConfigError, match=f"model.generator.{field}"):
        build("generator", config, "model.generator", attention=ReferenceAttention())


def test_discriminator_rejects_wrong_channel_count():
    judge = ResnetDiscriminator(3, ndf=8, num_blocks=1)  # D_PP: the image and the source image
    with pytest.raises(
        InputShapeError, match=r"input 'condition' has shape \(1, 18, 16, 16\); expected \(B, 3, H, W\)"
    ):
        judge(torch.zeros(1, 3, 16, 16), torch.zeros(1, 18, 16, 16))
    with pytest.raises(InputShapeError, match=r"input 'image' has shape \(1, 21, 16, 16\); expected \(B, 3, H, W\)"):
        judge(torch.zeros(1, 21, 16, 16), torch.zeros(1, 3, 16, 16))


def tokens(generator: torch.Generator, batch: int, count: int, channels: int, transposed: bool) -> torch.Tensor:
    """(batch, count, channels) float64, stored channels-first when ``transposed`` (as the Xing blocks pass
    their feature maps: a transposed view)."""
    if transposed:
        return torch.randn(batch, channels, count, generator=generator, dtype=torch.float64).transpose(1, 2)
    return torch.randn(batch, count, channels, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])  # one query, uneven chunks, several, one chunk
def test_chunked_attention_equals_reference_in_fp64(chunk_size: int, transposed: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    query, key = (tokens(generator, 3, count, 8, transposed) for count in (50, 40))
    value = tokens(generator, 3, 40, 12, transposed)
    grad_output = tokens(generator, 3, 50, 12, transposed)
    results = {}
    for name, backend in (("chunked", ChunkedAttention(chunk_size)), ("reference", ReferenceAttention())):
        inputs = [t.clone().requires_grad_() for t in (query, key, value)]
        output = backend(*inputs)
        results[name] = [output, *torch.autograd.grad(output, inputs, grad_output)]
        with torch.no_grad():
            results[name].append(backend(query, key, value))
    for actual, expected in zip(results["chunked"], results["reference"], strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-13)


def test_chunked_attention_keeps_no_attention_matrix_for_the_backward() -> None:
    """What autograd saves: the reference backend keeps the (B, N, M) probabilities, the chunked one only its
    inputs (a chunk's matrix is recomputed in the backward)."""
    query, key, value = (torch.randn(2, 512, width, requires_grad=True) for width in (8, 8, 16))
    matrix = 2 * 512 * 512

    def largest_saved(backend: torch.nn.Module) -> int:
        sizes = []

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            backend(query, key, value).sum().backward()
        return max(sizes)

    assert largest_saved(ReferenceAttention()) >= matrix
    assert largest_saved(ChunkedAttention(64)) < matrix // 4


def test_chunked_attention_refuses_a_bad_chunk_size() -> None:
    with pytest.raises(ConfigError, match=r"model.attention.chunk_size' is 0"):
        build("attention", {"_target_": "emca.networks.attention.ChunkedAttention", "chunk_size": 0}, "model.attention")


@pytest.mark.parametrize(("height", "width"), [(5, 7), (10, 13), (64, 44)])  # N = 35, 130, DeepFashion's 2,816
def test_chunked_attention_step_equals_reference_with_gate_and_streams(height: int, width: int) -> None:
    """The whole SA / AS step (the gate and the residual streams included) in fp64: outputs and the gradients of
    both streams, gamma and every projection agree with the reference backend to 1e-10."""
    torch.manual_seed(0)
    steps = {name: XingAttention(16, 4, backend).double() for name, backend in
             (("chunked", ChunkedAttention(256)), ("reference", ReferenceAttention()))}  # fmt: skip
    with torch.no_grad():
        steps["reference"].gamma.fill_(0.7)
    steps["chunked"].load_state_dict(steps["reference"].state_dict())
    streams = [torch.randn(1, 16, height, width, dtype=torch.float64) for _ in range(2)]
    results = {}
    for name, step in steps.items():
        inputs = [stream.clone().requires_grad_() for stream in streams]
        appearance, shape = step(*inputs)
        loss = (appearance * appearance.detach().sin()).sum() + shape.square().sum()
        results[name] = [appearance, shape, *torch.autograd.grad(loss, [*inputs, *step.parameters()])]
    for actual, expected in zip(results["chunked"], results["reference"], strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
