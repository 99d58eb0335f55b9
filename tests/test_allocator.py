"""emca.allocator: with glibc's thresholds raised, re-allocating freed tensors takes no new page faults.

Each case runs in a child process: the thresholds are process-wide and cannot be put back to glibc's adaptive
default once set.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's"
)

# what a training iteration does to the allocator: 60 MB of 6 MB activations made, touched and freed, again
# and again; the minor page faults of the last five of eight rounds are counted (the first two set up the heap)
CHILD = """
import json, resource, sys
import torch
from emca.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [torch.ones(1_500_000) for _ in range(10)]
    del activations
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": sum(faults[3:])}))
"""


def _page_faults(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_retained_memory_is_reused_without_page_faults() -> None:
    default, retained = _page_faults("default"), _page_faults("retain")
    assert retained["applied"] is True
    # 5 rounds of 60 MB are about 73,000 pages: glibc's defaults fault them all in again each round (the freed top
    # of the heap is trimmed), retained memory none
    assert default["faults"] > 50_000, default
    assert retained["faults"] < default["faults"] / 50, (default, retained)
