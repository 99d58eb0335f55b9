"""emca.allocator: with glibc's thresholds raised, large blocks come from the heap and stay mapped when freed,
so re-allocating freed tensors takes no new page faults.

Each case runs in a child process: the thresholds are process-wide and cannot be put back to glibc's adaptive
default once set.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emca.allocator import uses_glibc

pytestmark = pytest.mark.skipif(not uses_glibc(), reason="the thresholds are glibc's")

# glibc's own accounting (mallinfo2, glibc >= 2.33) of one 20 MB malloc and its free; torch is not imported, so
# the child starts from glibc's initial 128 KiB mmap threshold
MALLINFO_CHILD = """
import ctypes, json, sys
from emca.allocator import retain_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
before = libc.mallinfo2()
block = libc.malloc(20_000_000)
allocated = libc.mallinfo2()
libc.free(block)
freed = libc.mallinfo2()
print(json.dumps({"applied": applied, "mapped_alone": allocated.hblkhd - before.hblkhd,
                  "heap_after_free": freed.arena, "heap_allocated": allocated.arena}))
"""

# what a training iteration does to the allocator: 120 MB of 6 MB activations made, touched and freed, again and
# again, after a 31 MB block was freed (with glibc's defaults that raises the trim threshold to 62 MB only, so
# the freed 120 MB would be trimmed and faulted in again each round); the faults of the last five of eight
# rounds are counted (the first ones set up the heap)
FAULTS_CHILD = """
import json, resource
import torch
from emca.allocator import retain_freed_memory
applied = retain_freed_memory()
block = torch.ones(7_800_000)
del block
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [torch.ones(1_500_000) for _ in range(20)]
    del activations
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": sum(faults[3:])}))
"""


def _child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_large_blocks_come_from_the_heap_and_stay_mapped() -> None:
    default, retained = _child(MALLINFO_CHILD, "default"), _child(MALLINFO_CHILD, "retain")
    assert retained["applied"] is True
    assert default["mapped_alone"] >= 20_000_000, default  # glibc's default: a block of its own, unmapped on free
    assert retained["mapped_alone"] == 0, retained
    assert retained["heap_after_free"] >= retained["heap_allocated"] >= 20_000_000, retained  # not trimmed


def test_freed_tensors_are_reused_without_page_faults() -> None:
    retained = _child(FAULTS_CHILD)
    assert retained["applied"] is True
    # 5 rounds of 120 MB are about 146,000 pages; taken again from retained memory, they fault almost none
    assert retained["faults"] < 1_000, retained
