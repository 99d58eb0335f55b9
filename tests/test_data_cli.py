"""The ``python -m emca.data`` command line."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from _fake_data import make_dataset

from emca.data.__main__ import main
from emca.data.annotations import read_pairs


def test_validate_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(tmp_path, height=32, width=16)
    assert main(["validate", str(tmp_path), "--preset", "synthetic", "--height", "32", "--width", "16"]) == 0
    printed = capsys.readouterr().out
    assert "train: 12 pairs over 6 images (6 annotated)" in printed
    assert "test: 6 pairs over 6 images (6 annotated)" in printed


def test_user_errors_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(tmp_path, height=32, width=16)
    assert main(["validate", str(tmp_path), "--preset", "synthetic", "--height", "40", "--width", "16"]) == 2
    captured = capsys.readouterr()
    assert captured.err.lstrip().startswith("error: ") and "expects 40x16" in captured.err
    assert "Traceback" not in captured.err
    assert main(["validate", str(tmp_path), "--preset", "synthetic"]) == 2
    assert "--height: the 'synthetic' preset has no fixed image size" in capsys.readouterr().err


def test_pairs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = make_dataset(tmp_path)
    out = tmp_path / "pairs.csv"
    annotations = layout.annotation_path(tmp_path, "train")
    assert main(["pairs", str(annotations), "--out", str(out), "--person-id", "prefix:_"]) == 0
    assert sorted(read_pairs(out)) == sorted(read_pairs(layout.pairs_path(tmp_path, "train")))
    assert "12 pairs written" in capsys.readouterr().out
    assert main(["pairs", str(annotations), "--out", str(out), "--person-id", "bogus"]) == 2


def test_synthetic_command_calls_the_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.SimpleNamespace(generate_synthetic_dataset=lambda root, **kwargs: calls.append((root, kwargs)))
    monkeypatch.setitem(sys.modules, "emca.data.synthetic", fake)
    assert main(["synthetic", str(tmp_path), "--height", "48", "--width", "24", "--seed", "3"]) == 0
    assert calls == [(tmp_path, {"height": 48, "width": 24, "seed": 3, "preset": "synthetic"})]
    calls.clear()
    assert main(["synthetic", str(tmp_path), "--train-identities", "600", "--poses", "4"]) == 0
    assert calls == [
        (
            tmp_path,
            {"height": 64, "width": 48, "seed": 0, "preset": "synthetic", "num_train_identities": 600,
             "poses_per_identity": 4},
        )
    ]  # fmt: skip


def test_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emca.data", "openpose", str(tmp_path), "--out", str(tmp_path / "a.csv")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "No OpenPose '*.json' files" in result.stderr and "Traceback" not in result.stderr
