"""The C allocator under CPU training: keep freed memory in the process instead of handing it back to the kernel.

A training step allocates and frees the same activation buffers every iteration. glibc's malloc returns large
freed blocks to the kernel (``munmap`` of blocks over its mmap threshold, ``trim`` of a large free top of the
heap), so the next iteration touches fresh pages again and takes a page fault for each 4 KiB. For the embedded
default that was about 3,600-4,400 minor page faults and 10-40 ms of kernel time (as costly as faults were at
the time) per 150-220 ms iteration on a 2-core machine. Raising both thresholds keeps the pages mapped: a
process's resident memory then stays near its peak instead of shrinking between iterations.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc accepts mmap thresholds up to HEAP_MAX_SIZE / 2, 32 MiB on 64-bit: blocks above it are still mapped
# per allocation, but a step that large costs far more than its page faults
MMAP_THRESHOLD = 32 * 1024 * 1024
# the largest value mallopt takes (an int): in effect, never trim
TRIM_THRESHOLD = 2**31 - 1


def uses_glibc() -> bool:
    """Whether this process runs on glibc, whose malloc the thresholds are (not macOS, Windows or musl)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds so freed blocks stay mapped in this process (and in processes it
    forks later, such as DataLoader workers). Both must be set together: setting either one turns off glibc's
    adaptive mmap threshold, and a fixed 128 KiB threshold alone makes page faults far more frequent.

    Returns whether it took effect: false where the C library is not glibc (macOS, Windows, musl), where
    nothing is changed and the default allocator runs."""
    if not uses_glibc():
        log.info("retain_freed_memory: the C library is not glibc, so its allocator is left as it is")
        return False
    libc = ctypes.CDLL(None)  # the symbols this process already has, glibc's mallopt among them: no library search
    # mmap first, and trim only once it took: a refused mmap threshold with trim set would leave the adaptive
    # threshold off at 128 KiB, the slow state
    applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not applied:
        log.warning("retain_freed_memory: glibc's mallopt refused the thresholds; its defaults stay in effect")
    return applied
