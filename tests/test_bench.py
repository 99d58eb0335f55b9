"""The benchmarks run end to end: ``python -m emca.bench gpu-report --smoke`` on the CPU writes a complete report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emca.bench.__main__ import main
from emca.bench.gpu_report import BACKENDS, SMOKE, gpu_report
from emca.bench.training import PRECISIONS, projected_hours
from emca.errors import ConfigError


@pytest.mark.slow
def test_smoke_gpu_report_measures_every_model_backend_and_precision(tmp_path: Path) -> None:
    paths = gpu_report(tmp_path / "report", smoke=True, device_name="cpu")
    report = json.loads(paths["json"].read_text())
    assert report["plan"].startswith("smoke") and report["gpu_tests"]["run"] is False

    attention = {(row["backend"], row["dtype"]): row for row in report["attention"]}
    assert set(attention) == {(backend, dtype) for backend in BACKENDS for dtype in ("float32", "bfloat16")}
    assert attention["fused", "float32"]["skipped"] == "needs CUDA"  # no GPU here
    assert all(attention[backend, "float32"]["forward_backward_ms"] > 0 for backend in ("reference", "sdpa", "chunked"))

    for section in ("training", "inference"):
        rows = {(row["model"], row["backend"], row["precision"]): row for row in report[section]}
        assert set(rows) == {(m, b, p) for m in SMOKE.models for b in BACKENDS for p in PRECISIONS}
        for (_, backend, _), row in rows.items():
            if backend == "fused":
                assert "needs a CUDA GPU" in row["skipped"]
            else:
                assert row["skipped"] is None and row["images_per_second"] > 0
                assert row["images_per_second"] == pytest.approx(row["batch"] / (row["step_ms"] / 1e3))
    training = report["training"][0]
    assert training["projected_hours"] == pytest.approx(projected_hours(training["step_ms"]))
    assert projected_hours(1000.0) == pytest.approx(37_500 / 3600)  # 37,500 iterations of one second

    markdown = paths["md"].read_text()
    assert "## One training iteration" in markdown and "| xingganpp | chunked | bf16-mixed |" in markdown


def test_full_report_without_a_gpu_says_how_to_run_the_smoke_check(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="add --smoke"):
        gpu_report(tmp_path, smoke=False, device_name="cpu")
    with pytest.raises(SystemExit) as exit_info:
        main(["gpu-report", "--out", str(tmp_path), "--device", "cpu"])
    assert exit_info.value.code != 0 and "add --smoke" in capsys.readouterr().err


def test_cpu_peak_memory_sees_a_known_allocation() -> None:
    """64 MiB written inside the call: the peak resident memory above the one before it is about that."""
    import torch

    from emca.bench.timing import peak_mebibytes

    peak = peak_mebibytes(lambda: torch.empty(16 * 2**20).fill_(1.0), torch.device("cpu"))
    assert peak == pytest.approx(64, abs=8)


def tiny_overrides(tmp_path: Path) -> list[str]:
    """A 32x16 fake dataset under ``tmp_path`` and the overrides of a model small enough to time in seconds."""
    from _fake_data import make_dataset

    make_dataset(tmp_path / "data", height=32, width=16)
    return [
        f"data.root={tmp_path / 'data'}", "data.height=32", "data.width=16", "data.batch_size=4",
        "data.generate_if_missing=false", "model.generator.ngf=4", "model.generator.num_blocks=1",
        "model.discriminator.ndf=4",
    ]  # fmt: skip


def test_cpu_training_variants_time_each_variant_from_the_same_seed(tmp_path: Path) -> None:
    from emca.bench.training import training_variants

    overrides = tiny_overrides(tmp_path)
    threads = torch.get_num_threads()
    results = training_variants(overrides, ["baseline", "1 thread", "channels_last"], iterations=2, rounds=2)
    assert list(results) == ["baseline", "1 thread", "channels_last"]
    assert results["baseline"]["speedup"] == 1.0
    for result in results.values():
        assert len(result["rounds"]) == 2 and result["s_per_iteration"] > 0
        assert result["speedup"] == pytest.approx(results["baseline"]["s_per_iteration"] / result["s_per_iteration"])
    assert results["1 thread"]["variant"]["threads"] == 1
    assert torch.get_num_threads() == threads and torch.backends.mkldnn.enabled  # settings restored


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_overhead_runs_both_loops_in_the_configs_precision_and_layout(tmp_path: Path, precision) -> None:
    from emca.bench.training import lightning_overhead

    overrides = [*tiny_overrides(tmp_path), f"trainer.precision={precision}", "model.channels_last=true"]
    result = lightning_overhead(overrides, iterations=3, rounds=2)
    assert result["precision"] == precision
    assert len(result["rounds"]["lightning"]) == len(result["rounds"]["bare"]) == 2
    assert result["overhead"] == pytest.approx(result["lightning_s"] / result["bare_s"] - 1)


def test_generator_benchmark_runs_the_preset_at_the_size_asked(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["generator", "--experiment", "xinggan_market", "--batch", "1", "--backends", "chunked"]
    main([*arguments, "--size", "32x16", "--repetitions", "1", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "xinggan_market generator, chunked, 32-true, batch 1 at 32x16, cpu" in printed and "peak" in printed
    main([*arguments, "--size", "32x16", "--repetitions", "1", "--device", "cpu", "--precision", "bf16-mixed"])
    assert "xinggan_market generator, chunked, bf16-mixed, batch 1 at 32x16, cpu" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*arguments, "--size", "30x16"])
    assert "--size 30x16: expected HEIGHTxWIDTH with both divisible by 4" in capsys.readouterr().err
