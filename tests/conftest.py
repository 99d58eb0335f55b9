"""Test-suite setup: the tests import train.py and eval.py from the repository root, and run under the allocator
settings train.py uses by default (emca.allocator)."""

import logging
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


@pytest.fixture(autouse=True)
def _drop_hydra_log_handlers():
    """A Hydra entry point run in this process (``eval.main()``) gives the root logger a console handler on the
    stream pytest captured for that test, and a file handler in its run folder. Left in place, the next test's
    log lines go to a closed stream and print "--- Logging error ---" with a traceback into that test's output."""
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in [
        h for h in root.handlers if h not in before and type(h) in (logging.StreamHandler, logging.FileHandler)
    ]:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture(scope="session")
def tiny_run_checkpoint(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """last.ckpt of the tiny config trained for 3 iterations (tests/_tiny_training.py), trained once for the
    tests that only read it: inference, the demo, the refusals of hostile and damaged checkpoints."""
    from _tiny_training import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
