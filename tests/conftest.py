"""Test-suite setup: the tests import train.py and eval.py from the repository root."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
