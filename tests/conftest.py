"""Test-suite setup: the tests import train.py and eval.py from the repository root, and run under the allocator
settings train.py uses by default (emca.allocator)."""

import sys
from pathlib import Path

import pytest
import torch

from emca.allocator import retain_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
retain_freed_memory()


@pytest.fixture()
def single_thread():
    """Tiny ops run fastest on one thread, and far faster than with several when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
