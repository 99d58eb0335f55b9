"""``emca bench attention``: time and measure the attention backends on XingGAN's shapes.

For each backend (reference, sdpa, chunked, fused) and XingGAN attention shape (both directions stacked on
the batch axis, so batch 2B; Dk = 32, Dv = 256) it reports the median forward time (no grad), the median
forward+backward time (gradients of query, key and value) and the peak memory one call needs beyond its
inputs (emca.bench.timing). The fused backend is skipped on the CPU: its Triton kernels need a CUDA GPU (the
CPU interpreter is a correctness tool, far too slow to time). Results go to a table and, atomically, to a
JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable

import torch
from rich import box
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from emca.bench.timing import map_large_blocks, median_milliseconds, peak_mebibytes
from emca.errors import ConfigError
from emca.io import atomic_write_text
from emca.networks.attention import ChunkedAttention, FusedAttention, ReferenceAttention, SDPAttention

KEY_WIDTH = 32
VALUE_WIDTH = 256
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    """One attention call of a generator: ``batch`` images, so 2 * batch stacked rows of ``tokens``."""

    name: str
    batch: int
    tokens: int


SHAPES = {
    "market-b32": AttentionShape("market-b32", 32, 16 * 32),
    "deepfashion-b8": AttentionShape("deepfashion-b8", 8, 64 * 44),
    "deepfashion-b32": AttentionShape("deepfashion-b32", 32, 64 * 44),
}


BACKENDS: dict[str, Callable[[], nn.Module]] = {
    "reference": ReferenceAttention,
    "sdpa": SDPAttention,
    "chunked": ChunkedAttention,
    "fused": FusedAttention,
}


@dataclasses.dataclass
class Measurement:
    backend: str
    shape: str
    stacked_batch: int
    tokens: int
    forward_ms: float | None = None
    forward_backward_ms: float | None = None
    forward_peak_mib: float | None = None  # None: not measured (CPU) or skipped
    forward_backward_peak_mib: float | None = None
    skipped: str | None = None


def attention_inputs(shape: AttentionShape, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """query (2B, N, 32), key (2B, N, 32), value (2B, N, 256), all leaves requiring grad; scaled like 1x1-conv
    projections of normalised features."""
    rows = 2 * shape.batch
    widths = (KEY_WIDTH, KEY_WIDTH, VALUE_WIDTH)
    tensors = [torch.randn(rows, shape.tokens, width, device=device).mul_(width**-0.25).to(dtype) for width in widths]
    return [t.requires_grad_() for t in tensors]


def measure(
    backend_name: str, shape: AttentionShape, dtype: torch.dtype, device: torch.device, warmup: int, repetitions: int
) -> Measurement:
    result = Measurement(backend_name, shape.name, 2 * shape.batch, shape.tokens)
    if backend_name == "fused" and device.type != "cuda":
        result.skipped = "needs CUDA"
        return result
    try:
        backend = BACKENDS[backend_name]().to(device)
        inputs = attention_inputs(shape, dtype, device)
        grad_output = torch.randn_like(inputs[2])

        def forward() -> Tensor:
            with torch.no_grad():
                return backend(*inputs)

        def forward_backward() -> tuple[Tensor, ...]:
            return torch.autograd.grad(backend(*inputs), inputs, grad_output)

        result.forward_ms = median_milliseconds(forward, device, warmup, repetitions)
        result.forward_backward_ms = median_milliseconds(forward_backward, device, warmup, repetitions)
        result.forward_peak_mib = peak_mebibytes(forward, device)
        result.forward_backward_peak_mib = peak_mebibytes(forward_backward, device)
    except torch.OutOfMemoryError:
        result.skipped = "out of memory"
    except ConfigError as error:  # a backend this machine cannot run (fused without Triton)
        result.skipped = str(error).split(";")[0]
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render_table(results: list[Measurement], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("backend", "shape", "2B x N", "fwd ms", "fwd+bwd ms", "fwd MiB", "fwd+bwd MiB"):
        table.add_column(column, no_wrap=True, justify="left" if column in ("backend", "shape") else "right")
    table.add_column("note")
    for result in results:
        table.add_row(
            result.backend,
            result.shape,
            f"{result.stacked_batch}x{result.tokens}",
            _format(result.forward_ms),
            _format(result.forward_backward_ms),
            _format(result.forward_peak_mib),
            _format(result.forward_backward_peak_mib),
            result.skipped or "",
        )
    return table


def _names(text: str, known: dict, flag: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(
            f"{flag}: unknown or empty choice {unknown or text!r}; expected a comma-separated "
            f"subset of {', '.join(known)}"
        )
    return names


def run_attention_benchmark(args: argparse.Namespace) -> None:
    map_large_blocks()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA GPU on this machine; use --device cpu")
    on_gpu = device.type == "cuda"
    repetitions = args.repetitions or (20 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    dtype = DTYPES[args.dtype]
    backends = _names(args.backends, BACKENDS, "--backends")
    shapes = [SHAPES[name] for name in _names(args.shapes, SHAPES, "--shapes")]

    console = Console(width=max(Console().width, 120))  # the table needs about 100 columns
    device_name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    results = []
    for shape in shapes:
        for backend_name in backends:
            with console.status(f"{backend_name} at {shape.name}"):
                results.append(measure(backend_name, shape, dtype, device, warmup, repetitions))
    title = (
        f"cross-attention, {args.dtype}, Dk={KEY_WIDTH}, Dv={VALUE_WIDTH}, {device_name}: "
        f"median of {repetitions} after {warmup} warm-up; peak memory beyond the inputs"
    )
    console.print(render_table(results, title))
    if not on_gpu:
        console.print(
            f"CPU, {torch.get_num_threads()} threads: memory is the peak resident set above the one before each call; "
            "fused skipped (its Triton kernels need a CUDA GPU; Triton's CPU interpreter is for correctness tests, "
            "far too slow to time)"
        )
    report = {
        "benchmark": "attention",
        "device": device_name,
        "dtype": args.dtype,
        "key_width": KEY_WIDTH,
        "value_width": VALUE_WIDTH,
        "repetitions": repetitions,
        "warmup": warmup,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": [dataclasses.asdict(result) for result in results],
    }
    atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.output}")
