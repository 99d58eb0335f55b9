"""Timing and peak memory of one call, on a GPU or a CPU, for the benchmarks.

Time: the median of several calls after untimed warm-up calls (CUDA events on a GPU). Peak memory: what one
call needs beyond what was held before it. On a GPU that is torch.cuda.max_memory_allocated. On a Linux CPU
it is the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs before the call) above
its resident memory before it. For that to follow the tensors, glibc's malloc is told to map every block of
64 KiB or more on its own (mallopt M_MMAP_THRESHOLD, fixed): freed tensors then leave the resident set at
once, instead of being kept for reuse by a threshold that adapts to the program.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 64 * 1024


@functools.cache
def map_large_blocks() -> bool:
    """Fix glibc's mmap threshold (see the module docstring); False where the C library is not glibc. The
    benchmarks call it before they allocate anything, so no earlier block is reused unseen."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


@functools.cache
def _freeze_survivors() -> None:
    """Move what is alive at the first measurement (the imported libraries: torch alone brings hundreds of
    thousands of objects) out of the collector's sight, once: each later gc.collect then scans only what was
    made since, instead of all of them again."""
    gc.collect()
    gc.freeze()


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
        if not PROC_CLEAR_REFS.exists() or not map_large_blocks():
            return None
        _freeze_survivors()
        gc.collect()  # cyclic garbage of the previous call would otherwise count as held before this one
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
