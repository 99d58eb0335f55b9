"""Timing and peak memory of one call, on a GPU or a CPU, for the benchmarks.

Time: the median of several calls after untimed warm-up calls (CUDA events on a GPU). Peak memory: what one
call needs beyond what was held before it. On a GPU that is torch.cuda.max_memory_allocated. On a Linux CPU
it is the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs before the call) above
its resident memory before it, which also counts what torch's CPU allocator and the BLAS library hold.
"""

from __future__ import annotations

import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


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
        return max(0.0, (_status_kib("VmHWM") - before) / 1024)  # below 0: the call freed memory held before
    _synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    _synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20
