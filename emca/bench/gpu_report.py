"""``emca bench gpu-report --out DIR``: every speed and memory claim, measured in one call on one GPU.

It writes ``report.json`` and ``report.md`` atomically, with:

- the GPU tests (``pytest -m gpu``) and their outcome;
- the attention backends (reference, sdpa, chunked, fused) at the Market (B=32, N=512) and DeepFashion
  (B=8 and 32, N=2,816) shapes in fp32 and bf16: forward and forward+backward time and peak memory
  (emca.bench.attention);
- one training iteration (G, D_PP, D_PB) of XingGAN and XingGAN++ at DeepFashion size, batch 32, per
  backend, in 32-true and bf16-mixed: images/s and peak memory; ``torch.compile`` of the generator on the
  sdpa and fused backends in bf16-mixed (emca.bench.training);
- inference images/s per model and backend;
- the projected wall time of the official DeepFashion recipe (37,500 iterations of 32) from each step time.

``--smoke`` runs the same code at tiny shapes with the small models, on any device, without the GPU tests
and without torch.compile; the test suite runs it on the CPU. A backend that cannot run (fused without CUDA,
out of memory) is reported as skipped, with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from emca.bench.attention import SHAPES, AttentionShape, measure
from emca.bench.timing import map_large_blocks
from emca.bench.training import (
    OFFICIAL_DEEPFASHION_ITERATIONS,
    PRECISIONS,
    ModelMeasurement,
    Workload,
    measure_generator,
    measure_inference,
    measure_training,
    projected_hours,
    with_backend,
)
from emca.config import compose_train
from emca.errors import ConfigError
from emca.io import atomic_write_text

BACKENDS = ("reference", "sdpa", "chunked", "fused")
COMPILED_BACKENDS = ("sdpa", "fused")
REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one report measures."""

    models: dict[str, str]  # report name -> the conf/ override that selects it
    attention_shapes: tuple[AttentionShape, ...]
    attention_dtypes: tuple[torch.dtype, ...]
    batch: int
    height: int
    width: int
    compile: bool
    gpu_tests: bool
    warmup: int
    repetitions: int


FULL = Plan(
    models={"xinggan": "experiment=xinggan_deepfashion", "xingganpp": "experiment=xingganpp_deepfashion"},
    attention_shapes=tuple(SHAPES.values()),
    attention_dtypes=(torch.float32, torch.bfloat16),
    batch=32,
    height=256,
    width=176,
    compile=True,
    gpu_tests=True,
    warmup=3,
    repetitions=10,
)
SMOKE = Plan(
    models={"xinggan": "model=xinggan_small", "xingganpp": "model=xingganpp_small"},
    attention_shapes=(AttentionShape("smoke", 1, 48),),
    attention_dtypes=(torch.float32, torch.bfloat16),
    batch=2,
    height=32,
    width=24,
    compile=False,
    gpu_tests=False,
    warmup=1,
    repetitions=2,
)


def run_gpu_tests() -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess: its exit status and the counts of its JUnit report."""
    junit = REPO / ".pytest-gpu-report.xml"
    began = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    outcome: dict[str, Any] = {"exit_status": completed.returncode, "seconds": round(time.perf_counter() - began, 1)}
    if junit.is_file():
        suite = ElementTree.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        outcome |= {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        junit.unlink()
    outcome["tail"] = completed.stdout[-2000:]
    return outcome


def model_configs(plan: Plan) -> dict[tuple[str, str], dict[str, Any] | str]:
    """(model, backend) -> the model config with that attention backend, or why it cannot be built here."""
    configs: dict[tuple[str, str], dict[str, Any] | str] = {}
    for name, override in plan.models.items():
        model = compose_train([override])["model"]
        for backend in BACKENDS:
            backend_config = compose_train([override, f"model/attention={backend}"])["model"]["attention"]
            configs[name, backend] = with_backend(model, backend_config)
    return configs


def measure_models(plan: Plan, device: torch.device, progress: tqdm) -> tuple[list[ModelMeasurement], ...]:
    training, inference = [], []
    runs: list[tuple[str, str, str, bool]] = [
        (model, backend, precision, False) for model in plan.models for backend in BACKENDS for precision in PRECISIONS
    ]
    if plan.compile:
        runs += [(model, backend, "bf16-mixed", True) for model in plan.models for backend in COMPILED_BACKENDS]
    configs = model_configs(plan)
    for model, backend, precision, compiled in runs:
        workload = Workload(
            model, configs[model, backend], backend, plan.batch, plan.height, plan.width, device, plan.warmup,
            plan.repetitions,
        )  # fmt: skip
        progress.set_description(f"training {model} {backend} {precision}{' compiled' if compiled else ''}")
        training.append(measure_training(workload, precision, compiled))
        progress.update()
        if not compiled:
            progress.set_description(f"inference {model} {backend} {precision}")
            inference.append(measure_inference(workload, precision))
            progress.update()
    return training, inference


def _rows(measurements: Iterable[Any], fields: tuple[str, ...]) -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for measurement in measurements:
        lines.append("| " + " | ".join(cell(getattr(measurement, field)) for field in fields) + " |")
    return lines


def render_markdown(report: dict[str, Any], attention: list, training: list, inference: list) -> str:
    lines = [
        f"# emca GPU report: {report['device']}",
        "",
        f"torch {report['torch']}, {report['plan']}, {report['seconds']:.0f} s in all.",
        "",
        "## GPU tests",
        "",
        f"`pytest -m gpu`: {json.dumps({k: v for k, v in report['gpu_tests'].items() if k != 'tail'})}",
        "",
        "## Attention (both directions stacked: batch 2B; ms and MiB beyond the inputs)",
        "",
        *_rows(attention, ("backend", "shape", "dtype", "forward_ms", "forward_backward_ms", "forward_peak_mib",
                           "forward_backward_peak_mib", "skipped")),
        "",
        "## One training iteration (G, D_PP, D_PB; no perceptual term)",
        "",
        *_rows(training, ("model", "backend", "precision", "compiled", "batch", "step_ms", "images_per_second",
                          "peak_mib", "projected_hours", "skipped")),
        "",
        f"projected_hours: {OFFICIAL_DEEPFASHION_ITERATIONS:,} iterations (the official DeepFashion recipe) at the "
        "measured step time, data loading and validation aside.",
        "",
        "## Inference",
        "",
        *_rows(inference, ("model", "backend", "precision", "batch", "step_ms", "images_per_second", "peak_mib",
                           "skipped")),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class _AttentionRow:
    dtype: str
    backend: str
    shape: str
    forward_ms: float | None
    forward_backward_ms: float | None
    forward_peak_mib: float | None
    forward_backward_peak_mib: float | None
    skipped: str | None


@dataclasses.dataclass
class _TrainingRow(ModelMeasurement):
    projected_hours: float | None = None


def run_generator_benchmark(args: Any) -> None:
    """``emca bench generator``: the full generator of a preset, forward+backward, per backend."""
    map_large_blocks()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = []
    if args.size:
        match = re.fullmatch(r"(\d+)x(\d+)", args.size)
        if match is None or int(match.group(1)) % 4 or int(match.group(2)) % 4:
            raise ConfigError(f"--size {args.size}: expected HEIGHTxWIDTH with both divisible by 4, e.g. 512x352.")
        size = [f"data.height={match.group(1)}", f"data.width={match.group(2)}"]
    base = compose_train([f"experiment={args.experiment}", *size])
    for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
        if backend not in BACKENDS:
            raise ConfigError(f"--backends: {backend!r} is not one of {list(BACKENDS)}.")
        attention = compose_train([f"experiment={args.experiment}", f"model/attention={backend}"])["model"]["attention"]
        data = base["data"]
        workload = Workload(
            args.experiment, with_backend(base["model"], attention), backend, args.batch, data["height"],
            data["width"], device, 1, args.repetitions,
        )  # fmt: skip
        result = measure_generator(workload, args.precision)
        print(
            f"{args.experiment} generator, {backend}, {args.precision}, batch {args.batch} at "
            f"{data['height']}x{data['width']}, "
            f"{device} ({torch.get_num_threads()} threads): forward+backward {result.step_ms:,.0f} ms, "
            f"peak {result.peak_mib:,.0f} MiB beyond weights and gradients"
            if result.skipped is None
            else result.skipped
        )


def gpu_report(out: Path, smoke: bool = False, device_name: str | None = None) -> dict[str, Path]:
    """Measure everything of the plan on one device and write ``report.json`` / ``report.md`` into ``out``."""
    map_large_blocks()
    plan = SMOKE if smoke else FULL
    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA GPU on this machine; add --smoke to run on the CPU.")
    if device.type != "cuda" and not smoke:
        raise ConfigError(
            "gpu-report measures a GPU, and torch sees none; add --smoke for the CPU check at tiny sizes."
        )
    began = time.perf_counter()
    model_runs = len(plan.models) * len(BACKENDS) * len(PRECISIONS) * 2
    model_runs += len(plan.models) * len(COMPILED_BACKENDS) if plan.compile else 0
    attention_runs = len(plan.attention_shapes) * len(plan.attention_dtypes) * len(BACKENDS)
    gpu_tests = run_gpu_tests() if plan.gpu_tests else {"run": False, "why": "smoke mode"}
    attention = []
    with tqdm(total=attention_runs + model_runs, unit="run") as progress:
        for dtype in plan.attention_dtypes:
            for shape in plan.attention_shapes:
                for backend in BACKENDS:
                    progress.set_description(f"attention {backend} {shape.name} {dtype}")
                    result = measure(backend, shape, dtype, device, plan.warmup, plan.repetitions)
                    values = {
                        f.name: getattr(result, f.name) for f in dataclasses.fields(_AttentionRow) if f.name != "dtype"
                    }
                    attention.append(_AttentionRow(dtype=str(dtype).removeprefix("torch."), **values))
                    progress.update()
        training, inference = measure_models(plan, device, progress)
    training_rows = [
        _TrainingRow(**dataclasses.asdict(m), projected_hours=projected_hours(m.step_ms) if m.step_ms else None)
        for m in training
    ]
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "plan": "smoke (tiny shapes, small models)" if smoke else "full",
        "gpu_tests": gpu_tests,
        "attention": [dataclasses.asdict(row) for row in attention],
        "training": [dataclasses.asdict(row) for row in training_rows],
        "inference": [dataclasses.asdict(row) for row in inference],
    }
    report["seconds"] = time.perf_counter() - began
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    atomic_write_text(paths["md"], render_markdown(report, attention, training_rows, inference))
    return paths
