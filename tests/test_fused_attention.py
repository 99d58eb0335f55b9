"""The fused Triton attention (ext/emca_fused) against the reference backend.

The kernel tests run wherever the kernel runs: compiled on a CUDA GPU, or through Triton's CPU
interpreter. Triton 3.x reads TRITON_INTERPRET when ``@triton.jit`` decorates a function, and its own
library (``tl.zeros``, ``tl.sum``) is decorated when triton is first imported - which torchmetrics and
Lightning do on import, so in a full test session the variable cannot be switched on from here. Without
a GPU, ``test_kernel_tests_pass_in_triton_interpreter`` therefore re-runs this file in a fresh Python with
TRITON_INTERPRET=1, where the same kernel source runs interpreted on the CPU. GPU tests (marked ``gpu``)
add the real XingGAN shapes and torch.compile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import triton
from emca_fused import launch, xing_attention, xing_attention_backward, xing_attention_with_statistics
from omegaconf import OmegaConf
from triton.backends.compiler import GPUTarget

from emca.build import build
from emca.errors import ConfigError, Unavailable
from emca.networks.attention import FusedAttention, ReferenceAttention, SDPAttention
from emca.networks.cross_attention import XingAttention

FUSED_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "model" / "attention" / "fused.yaml"
INTERPRETED = launch.interpreter_enabled()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
kernel_test = pytest.mark.skipif(
    DEVICE == "cpu" and not INTERPRETED,
    reason="no GPU: run by test_kernel_tests_pass_in_triton_interpreter in a TRITON_INTERPRET=1 subprocess",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process without CUDA and without Triton's interpreter."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launch, "interpreter_enabled", lambda: False)


def attention_inputs(
    batch: int,
    queries: int,
    keys: int,
    key_width: int,
    value_width: int,
    dtype: torch.dtype = torch.float32,
    device: str = DEVICE,
    seed: int = 0,
) -> list[torch.Tensor]:
    """query, key, value as leaf tensors requiring grad, laid out channels-first and transposed, as
    to_tokens makes them (non-contiguous)."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(count: int, width: int) -> torch.Tensor:
        return torch.randn(batch, width, count, generator=generator).transpose(1, 2)

    tensors = [tokens(queries, key_width), tokens(keys, key_width), tokens(keys, value_width)]
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in tensors]


def output_and_gradients(
    backend: torch.nn.Module, inputs: list[torch.Tensor], grad_output: torch.Tensor
) -> list[torch.Tensor]:
    output = backend(*inputs)
    return [output, *torch.autograd.grad(output, inputs, grad_output)]


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, name: str) -> None:
    """Elementwise |actual - expected| <= tolerance * (|expected| + max |expected|)."""
    torch.testing.assert_close(
        actual.to(expected.dtype),
        expected,
        rtol=tolerance,
        atol=tolerance * expected.abs().max().item(),
        msg=lambda message: f"{name}: {message}",
    )


def assert_matches_reference(
    inputs: list[torch.Tensor], tolerance: float, reference_dtype: torch.dtype = torch.float32
) -> None:
    """Fused output and the gradients of query, key and value against ReferenceAttention run on the same
    values in ``reference_dtype``."""
    query, _, value = inputs
    grad_output = torch.randn((*query.shape[:2], value.shape[2]), generator=torch.Generator().manual_seed(1))
    grad_output = grad_output.to(value)
    fused = output_and_gradients(FusedAttention(), inputs, grad_output)
    reference_inputs = [t.detach().to(reference_dtype).requires_grad_() for t in inputs]
    reference = output_and_gradients(ReferenceAttention(), reference_inputs, grad_output.to(reference_dtype))
    for name, actual, expected, dtype in zip(
        ("output", "query", "key", "value"), fused, reference, [value.dtype] + [t.dtype for t in inputs]
    ):
        assert actual.dtype == dtype and actual.shape == expected.shape, name
        assert_close_to_scale(actual, expected, tolerance, name)


@pytest.mark.skipif(DEVICE == "cuda" or INTERPRETED, reason="the kernel tests run in this process")
def test_kernel_tests_pass_in_triton_interpreter() -> None:
    environment = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-rs", "-p", "no:cacheprovider", "-m", "not gpu"]
    result = subprocess.run(command, check=False, env=environment, capture_output=True, text=True, timeout=300)
    report = f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert result.returncode == 0, f"interpreted kernel tests failed:\n{report}"
    assert "no GPU: run by" not in result.stdout, f"kernel tests were skipped in the subprocess:\n{report}"


@kernel_test
@pytest.mark.parametrize(
    ("queries", "keys", "key_width", "value_width"),
    [
        (35, 130, 32, 64),  # more keys than one tile, neither count a multiple of the tile
        (130, 35, 32, 64),  # several query tiles
        (35, 35, 20, 48),  # feature widths that are not powers of two
    ],
)
def test_fused_matches_reference_fp32(queries: int, keys: int, key_width: int, value_width: int) -> None:
    assert_matches_reference(attention_inputs(2, queries, keys, key_width, value_width), tolerance=1e-4)


@kernel_test
def test_fused_matches_reference_bf16() -> None:
    assert_matches_reference(attention_inputs(2, 35, 70, 32, 64, dtype=torch.bfloat16), tolerance=3e-2)


@kernel_test
def test_cross_attention_with_fused_backend_matches_reference() -> None:
    """The gated SA / AS step (gate and residual in torch, attention in the kernel) with every parameter
    gradient, including gamma's and the streams', as with the reference backend."""
    torch.manual_seed(0)
    fused = XingAttention(48, 16, FusedAttention()).to(DEVICE)
    reference = XingAttention(48, 16, ReferenceAttention()).to(DEVICE)
    with torch.no_grad():
        fused.gamma.fill_(0.7)
    reference.load_state_dict(fused.state_dict())
    streams = [torch.randn(2, 48, 5, 7, device=DEVICE) for _ in range(2)]
    results = {}
    for name, module in (("fused", fused), ("reference", reference)):
        inputs = [stream.clone().requires_grad_() for stream in streams]
        appearance, shape = module(*inputs)
        loss = (appearance.square() + shape.sin()).sum()
        results[name] = [appearance, shape, *torch.autograd.grad(loss, [*inputs, *module.parameters()])]
    # against the largest value of all: the key bias's exact gradient is 0 (a softmax ignores a shift of a row)
    scale = max(tensor.abs().max().item() for tensor in results["reference"])
    for index, (actual, expected) in enumerate(zip(results["fused"], results["reference"], strict=True)):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale, msg=f"output or gradient {index}")


@kernel_test
def test_statistics_and_their_gradients_match_torch() -> None:
    """Both outputs of the op (attention, logsumexp) and gradients through each."""
    query, key, value = attention_inputs(3, 35, 70, 32, 64)
    scores = torch.bmm(query, key.transpose(1, 2))
    expected = (torch.bmm(torch.softmax(scores, -1), value), torch.logsumexp(scores, -1))
    actual = xing_attention_with_statistics(query, key, value)
    weights = [
        torch.randn(t.shape, generator=torch.Generator().manual_seed(seed)).to(t) for seed, t in enumerate(expected)
    ]
    inputs = (query, key, value)

    def weighted_gradients(outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        loss = sum((weight * output).sum() for weight, output in zip(weights, outputs))
        return torch.autograd.grad(loss, inputs)

    actual_grads, expected_grads = weighted_gradients(actual), weighted_gradients(expected)
    for name, value_actual, value_expected in zip(("attention", "logsumexp"), actual, expected):
        assert_close_to_scale(value_actual, value_expected.detach(), 1e-5, name)
    for name, grad_actual, grad_expected in zip(("query", "key", "value"), actual_grads, expected_grads):
        assert_close_to_scale(grad_actual, grad_expected, 1e-4, name)


@kernel_test
def test_opcheck_forward_and_backward_ops() -> None:
    query, key, value = attention_inputs(2, 35, 20, 32, 48)
    torch.library.opcheck(xing_attention_with_statistics, (query, key, value))
    shapes = ((2, 35, 48), (2, 35), (2, 35))
    d_attention, logsumexp, delta = (torch.randn(shape, device=DEVICE) for shape in shapes)
    torch.library.opcheck(
        xing_attention_backward, (d_attention, query.detach(), key.detach(), value.detach(), logsumexp, delta)
    )


def test_reference_equals_sdpa_in_fp64() -> None:
    inputs = attention_inputs(2, 35, 130, 32, 64, dtype=torch.float64, device="cpu")
    grad_output = torch.randn(2, 35, 64, dtype=torch.float64)
    for actual, expected in zip(
        output_and_gradients(SDPAttention(), inputs, grad_output),
        output_and_gradients(ReferenceAttention(), inputs, grad_output),
    ):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_bad_shapes_and_dtypes_name_the_tensor() -> None:
    query, key, value = (t.detach() for t in attention_inputs(1, 8, 8, 32, 64))
    with pytest.raises(ValueError, match=r"key has shape \(1, 8, 16\), expected \(1, 8, 32\)"):
        xing_attention(query, key[..., :16], value)
    with pytest.raises(ValueError, match="value has batch 2"):
        xing_attention(query, key, value.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="'value': 'torch.float64'"):
        xing_attention(query, key, value.double())
    with pytest.raises(ValueError, match="at least one key"):
        xing_attention(query, key[:, :0], value[:, :0])


@pytest.mark.skipif(
    INTERPRETED or "nvidia" not in triton.backends.backends,
    reason="needs Triton's NVIDIA compiler (not the interpreter)",
)
def test_kernels_compile_for_hopper_within_shared_memory() -> None:
    """Triton's GPU compiler (to a cubin for sm_90, no GPU needed) accepts the kernels at the XingGAN widths,
    they use Hopper's tensor-core instructions, and each fits in an H100's 227 KiB of shared memory."""
    config = launch.launch_config(torch.bfloat16, key_width=32, value_width=256)
    constants = config.constants()
    statistics = ("logsumexp_ptr", "delta_ptr")
    for kernel_name in ("forward_kernel", "backward_key_value_kernel", "backward_query_kernel"):
        kernel = getattr(launch.triton_kernels, kernel_name)
        signature = {
            name: "constexpr"
            if name in constants
            else ("*fp32" if name in statistics else "*bf16")
            if name.endswith("_ptr")
            else "i32"
            for name in kernel.arg_names
        }
        source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants)
        compiled = triton.compile(
            source,
            target=GPUTarget("cuda", 90, 32),
            options={key: value for key, value in config.launch_options().items() if key not in constants},
        )
        assert "wgmma" in compiled.asm["ptx"], f"{kernel_name} does not use Hopper tensor-core instructions"
        assert compiled.metadata.shared <= 227 * 1024, f"{kernel_name} needs {compiled.metadata.shared} bytes"


def test_no_cuda_is_a_config_error_where_the_model_is_built(no_gpu: None) -> None:
    with pytest.raises(ConfigError) as error:
        build("attention", {"_target_": "emca.networks.attention.FusedAttention"}, "model.attention")
    message = str(error.value)
    for hint in (
        "needs a CUDA GPU",
        "model/attention=sdpa",
        "model/attention=reference",
        "model.attention.allow_reference_fallback=true",
    ):
        assert hint in message
    with pytest.raises(Unavailable, match="needs a CUDA GPU"):  # the class alone, below the config's edge
        FusedAttention()


def test_config_file_builds_the_fused_backend_or_fails_clearly() -> None:
    config = OmegaConf.load(FUSED_CONFIG)
    assert config.allow_reference_fallback is False
    if DEVICE == "cuda" or INTERPRETED:
        backend = build("attention", OmegaConf.to_container(config), "model.attention")
        assert isinstance(backend, FusedAttention) and backend.fallback is None
    else:
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            build("attention", OmegaConf.to_container(config), "model.attention")


def test_fallback_warns_once_and_computes_the_reference(no_gpu: None) -> None:
    with pytest.warns(RuntimeWarning, match="falling back to the reference attention"):
        config = {**OmegaConf.to_container(OmegaConf.load(FUSED_CONFIG)), "allow_reference_fallback": True}
        backend = build("attention", config, "model.attention")
    inputs = attention_inputs(2, 35, 20, 32, 48, device="cpu")
    grad_output = torch.randn(2, 35, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warning per call
        fallback = output_and_gradients(backend, inputs, grad_output)
    for actual, expected in zip(fallback, output_and_gradients(ReferenceAttention(), inputs, grad_output)):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_cpu_tensors_without_interpreter_raise_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backend = FusedAttention()  # built where the kernel can run, then given CPU tensors
    monkeypatch.setattr(launch, "interpreter_enabled", lambda: False)
    with pytest.raises(Unavailable, match="got tensors on cpu"):
        backend(*attention_inputs(1, 8, 8, 32, 64, device="cpu"))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 2e-4), (torch.bfloat16, 3e-2)])
def test_fused_matches_reference_on_gpu_at_deepfashion_shape(dtype: torch.dtype, tolerance: float) -> None:
    # Two directions of batch 1 stacked, 64 x 44 tokens, Dk = 32, Dv = 256, as in XingGAN on DeepFashion.
    assert_matches_reference(attention_inputs(2, 2816, 2816, 32, 256, dtype=dtype), tolerance)


@pytest.mark.gpu
@needs_cuda
def test_compiled_xing_block_with_fused_attention_matches_reference() -> None:
    from emca.networks.generator import XingBlock

    torch.manual_seed(0)

    def block(backend: torch.nn.Module) -> XingBlock:
        return XingBlock(256, 256, "instance", 0.0, "reflect", lambda: XingAttention(256, 32, backend)).cuda()

    fused_block = block(FusedAttention())
    with torch.no_grad():
        fused_block.cross_attention.gamma.fill_(0.5)
    reference_block = block(ReferenceAttention())
    reference_block.load_state_dict(fused_block.state_dict())
    appearance, shape = torch.randn(2, 256, 32, 16, device="cuda"), torch.randn(2, 256, 32, 16, device="cuda")
    compiled = torch.compile(fused_block, fullgraph=True)
    outputs = {"fused": compiled(appearance, shape), "reference": reference_block(appearance, shape)}
    for output in outputs.values():
        sum(tensor.square().mean() for tensor in output).backward()
    for actual, expected in zip(outputs["fused"], outputs["reference"]):
        # loose: both blocks' convolutions may use TF32, in different algorithms once compiled
        assert_close_to_scale(actual.detach(), expected.detach(), 1e-2, "block output")
    # Scaled by the largest gradient of all: biases followed by instance norm get ~0 gradients (noise).
    gradient_scale = max(parameter.grad.abs().max().item() for parameter in reference_block.parameters())
    fused_parameters = dict(fused_block.named_parameters())
    for name, parameter in reference_block.named_parameters():
        torch.testing.assert_close(
            fused_parameters[name].grad,
            parameter.grad,
            rtol=1e-2,
            atol=1e-2 * gradient_scale,
            msg=lambda message, name=name: f"{name}: {message}",
        )


def test_attention_benchmark_times_cpu_backends_and_skips_fused_honestly() -> None:
    from emca.bench.attention import AttentionShape, measure

    tiny = AttentionShape("tiny", batch=1, tokens=16)
    for backend in ("reference", "sdpa"):
        result = measure(backend, tiny, torch.float32, torch.device("cpu"), warmup=0, repetitions=2)
        assert result.skipped is None and result.stacked_batch == 2
        assert result.forward_ms > 0 and result.forward_backward_ms > 0
        assert result.forward_peak_mib >= 0 and result.forward_backward_peak_mib >= 0  # CPU: peak resident memory
    fused = measure("fused", tiny, torch.float32, torch.device("cpu"), warmup=0, repetitions=2)
    assert fused.skipped == "needs CUDA" and fused.forward_ms is None
