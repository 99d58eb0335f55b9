"""Benchmarks. ``python -m emca.bench attention`` times the cross-attention backends.

For each backend (reference, sdpa, chunked, fused) and XingGAN attention shape (both directions stacked on
the batch axis, so batch 2B; Dk = 32, Dv = 256) it reports the median forward time (no grad), the median
forward+backward time (gradients of query, key and value) and the peak memory one call needs beyond its
inputs: on a GPU torch.cuda.max_memory_allocated; on a Linux CPU the process's peak resident memory
(VmHWM, reset through /proc/self/clear_refs before the call) above its resident memory before it, which
also counts what torch's CPU allocator and the BLAS library hold. The fused backend is skipped on the CPU:
its Triton kernels need a CUDA GPU (the CPU interpreter is a correctness tool, far too slow to time).
Results go to a table and, atomically, to a JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich import box
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from emca.cli import user_errors
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
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_milliseconds(step: Callable[[], object], device: torch.device, warmup: int, repetitions: int) -> float:
    """Median wall time of ``step`` after ``warmup`` untimed calls (CUDA events on a GPU)."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    times = []
    for _ in range(repetitions):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            step()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{PROC_STATUS} has no {field} line")
    return int(match.group(1))


def peak_mebibytes(step: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory one call of ``step`` needs beyond what was held before it (see the module docstring);
    None on a CPU without Linux's /proc peak-memory reset."""
    if device.type != "cuda":
        if not PROC_CLEAR_REFS.exists():
            return None
        gc.collect()
        before = _status_kib("VmRSS")
        PROC_CLEAR_REFS.write_text("5")  # resets VmHWM, the peak resident set, to the current size
        step()
        return (_status_kib("VmHWM") - before) / 1024
    _synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    _synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emca.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    attention = sub.add_parser("attention", help="time reference, sdpa, chunked and fused cross-attention")
    attention.add_argument("--dtype", choices=list(DTYPES), default="float32")
    attention.add_argument("--repetitions", type=int, default=None, help="timed calls (default 20 GPU, 3 CPU)")
    attention.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 GPU, 1 CPU)")
    attention.add_argument("--backends", default=",".join(BACKENDS), help=f"subset of {','.join(BACKENDS)}")
    attention.add_argument("--shapes", default=",".join(SHAPES), help=f"subset of {','.join(SHAPES)}")
    attention.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    attention.add_argument("--output", type=Path, default=Path("bench-attention.json"), help="JSON results file")
    args = parser.parse_args(argv)
    with user_errors():
        run_attention_benchmark(args)


if __name__ == "__main__":
    main()
