"""Faults during training: SIGTERM and Ctrl-C, a plateau of the validation score, NaN losses, a full disk,
a checkpoint of another architecture, temporaries left by ``kill -9``, and the files' permissions."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fake_data import make_dataset
from _tiny_training import REPO, iterations, logged_steps, run, tiny_config, tiny_overrides

import train as train_script
from emca import checkpoint as checkpoint_module
from emca.cli import find_user_error, user_errors
from emca.errors import CheckpointError, ConfigError, DiskFull, TrainingDiverged
from emca.io import atomic_directory, safe_torch_load
from emca.metrics.validation import ValidationMetrics
from emca.module import PoseTransferModule

TESTS = Path(__file__).resolve().parent


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_dataset(root, height=32, width=16)
    return root


@pytest.fixture(scope="module")
def shared_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "data"
    make_dataset(root, height=32, width=16)
    return root


@pytest.fixture(scope="module")
def uninterrupted(shared_data_root: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The tiny run from start to end without a fault, on ``shared_data_root``: what a resumed run must repeat.
    Returns its loss recorder and run folder."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the faulted runs: the same thread count gives the same float sums
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            return run(tiny_config(shared_data_root, run_dir), monkeypatch), run_dir
    finally:
        torch.set_num_threads(threads)


def step_of(checkpoint: Path) -> int:
    return int(safe_torch_load(checkpoint)["global_step"])


def start_training(data_root: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    """`python train.py` on the tiny config in a process of its own, one thread (the runs overlap)."""
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            *tiny_overrides(data_root, run_dir),
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"},
        # a job started in the background (as CI may start the suite) inherits SIGINT ignored, and Python then
        # never turns it into KeyboardInterrupt: give the run the default handling a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def signal_at(iteration: int, signum: signal.Signals = signal.SIGTERM) -> str:
    """The override that makes a run send itself ``signum`` after ``iteration`` (tests/_signals.py)."""
    return f"callbacks=[{{_target_:_signals.SignalAt,iteration:{iteration},signum:{int(signum)}}}]"


# 12 pairs, batch 4: 3 iterations per epoch
FAULTS = {
    "sigterm_mid_epoch": (signal_at(5),),  # inside the second epoch
    # iteration 4 is the second of its epoch: saved by the 2-iteration interval, then kill -9 after iteration 5
    "kill_after_interval_checkpoint": ("checkpoint_every_n_iterations=2", signal_at(5, signal.SIGKILL)),
    "sigterm_in_first_epoch": (signal_at(1),),
    # in a process of its own: Lightning ignores SIGINT for good once it has handled one
    "ctrl_c": (signal_at(4, signal.SIGINT),),
}


@pytest.fixture(scope="module")
def faulted(shared_data_root: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Every run of FAULTS in a process of its own, all started at once: most of each run's time is the
    interpreter's start-up, which overlaps on the cores. Returns name -> (the finished process, its run folder)."""
    folder = tmp_path_factory.mktemp("faulted")
    started = {name: start_training(shared_data_root, folder / name, *overrides) for name, overrides in FAULTS.items()}
    finished = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)
        finished[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), folder / name
    return finished


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")  # as the faulted run
def test_sigterm_mid_epoch_writes_last_checkpoint_and_resume_is_exact(
    shared_data_root: Path, uninterrupted, faulted, tmp_path: Path, monkeypatch
) -> None:
    (full, full_dir), (result, interrupted) = uninterrupted, faulted["sigterm_mid_epoch"]
    assert result.returncode != 0
    assert "SIGTERM at iteration 5" in result.stderr and "Traceback" not in result.stderr
    last = interrupted / "checkpoints" / "last.ckpt"
    assert step_of(last) == 5 * PoseTransferModule.optimizer_steps_per_iteration
    assert f"resume={last}" in result.stderr

    resumed = run(tiny_config(shared_data_root, tmp_path / "resumed", f"resume={last}"), monkeypatch)
    assert [step for step, *_ in resumed.losses] == [step for step, *_ in full.losses[5:]]
    resumed_values = [value for _, *values in resumed.losses for value in values]
    full_values = [value for _, *values in full.losses[5:] for value in values]
    assert resumed_values == pytest.approx(full_values, rel=1e-5)
    assert logged_steps(tmp_path / "resumed") == logged_steps(full_dir)[5:]


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")  # as the faulted run
def test_kill_after_an_interval_checkpoint_resumes_exactly_with_aligned_logs(
    shared_data_root: Path, uninterrupted, faulted, tmp_path: Path, monkeypatch
) -> None:
    (full, full_dir), (result, crashed) = uninterrupted, faulted["kill_after_interval_checkpoint"]
    assert result.returncode == -signal.SIGKILL
    last = crashed / "checkpoints" / "last.ckpt"
    assert step_of(last) == 4 * PoseTransferModule.optimizer_steps_per_iteration
    resumed = run(tiny_config(shared_data_root, tmp_path / "resumed", f"resume={last}"), monkeypatch)
    resumed_values = [value for _, *values in resumed.losses for value in values]
    full_values = [value for _, *values in full.losses[4:] for value in values]
    assert resumed_values == pytest.approx(full_values, rel=1e-5)
    assert logged_steps(tmp_path / "resumed") == logged_steps(full_dir)[4:]


@pytest.mark.slow
def test_sigterm_before_the_first_epoch_ends_is_not_a_success(faulted) -> None:
    result, run_dir = faulted["sigterm_in_first_epoch"]
    assert result.returncode != 0 and "SIGTERM at iteration 1" in result.stderr
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == PoseTransferModule.optimizer_steps_per_iteration


@pytest.mark.slow
def test_ctrl_c_writes_last_checkpoint(faulted) -> None:
    result, run_dir = faulted["ctrl_c"]
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == 4 * PoseTransferModule.optimizer_steps_per_iteration


def test_last_checkpoint_is_the_final_state_when_validation_plateaus(
    data_root: Path, tmp_path: Path, monkeypatch
) -> None:
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])  # the first validation is the best one
    original = ValidationMetrics.compute
    monkeypatch.setattr(
        ValidationMetrics, "compute", lambda self: {**original(self), "ssim": torch.tensor(next(scores))}
    )
    run(tiny_config(data_root, tmp_path / "run"), monkeypatch)
    folder = tmp_path / "run" / "checkpoints"
    assert step_of(folder / "last.ckpt") == 12 * PoseTransferModule.optimizer_steps_per_iteration
    assert step_of(folder / "best.ckpt") == 3 * PoseTransferModule.optimizer_steps_per_iteration


def test_last_checkpoint_on_an_iteration_interval(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    written: list[int] = []
    original = checkpoint_module.SafeCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):  # noqa: ANN001, ANN202
        if Path(path).name == "last.ckpt":
            written.append(checkpoint["global_step"] // PoseTransferModule.optimizer_steps_per_iteration)
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(checkpoint_module.SafeCheckpointIO, "save_checkpoint", recording_save)
    run(tiny_config(data_root, tmp_path / "run", *iterations(5), "checkpoint_every_n_iterations=2"), monkeypatch)
    # every 2 iterations, and at the end of each 3-iteration epoch
    assert sorted(set(written)) == [2, 3, 4, 5]


@pytest.mark.parametrize(
    "overrides",
    [("model.optim.lr=1e30",), ("model.optim.lr=1e30", "model.grad_clip=1.0", "model.ema_decay=0.9")],
    ids=["huge_lr", "huge_lr_clipped_with_ema"],
)
def test_non_finite_loss_stops_the_run_and_saves_no_broken_model(
    overrides: tuple[str, ...], data_root: Path, tmp_path: Path, monkeypatch
) -> None:
    with pytest.raises(Exception) as err:
        run(tiny_config(data_root, tmp_path / "run", *overrides), monkeypatch)
    diverged = find_user_error(err.value)
    assert isinstance(diverged, TrainingDiverged)
    assert "not finite" in str(diverged) and "model.optim.lr" in str(diverged)
    for checkpoint in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        state = safe_torch_load(checkpoint)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), checkpoint


def test_non_finite_loss_exits_non_zero_without_traceback(data_root: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info, user_errors():
        train_script.train(tiny_config(data_root, tmp_path / "run", "model.optim.lr=1e30"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Training diverged at iteration" in err and "is not finite" in err and "Traceback" not in err


def test_a_generator_collapsed_to_constant_images_is_reported_as_diverged(
    data_root: Path, tmp_path: Path, monkeypatch
) -> None:
    from emca.networks.generator import XingGenerator

    forward = XingGenerator.forward
    # saturated, as a huge learning rate leaves it: every image one flat colour (white)
    monkeypatch.setattr(XingGenerator, "forward", lambda self, *inputs: forward(self, *inputs) * 0 + 1)
    with pytest.raises(Exception) as err:
        run(tiny_config(data_root, tmp_path / "run"), monkeypatch)
    diverged = find_user_error(err.value)
    assert isinstance(diverged, TrainingDiverged) and "every validation image is a constant colour" in str(diverged)
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()  # nothing scored as a result


def test_a_run_of_zero_iterations_is_refused(data_root: Path, tmp_path: Path) -> None:
    zero = ("model.optim.constant_iterations=0", "model.optim.decay_iterations=0")
    with pytest.raises(ConfigError, match="both 0; a run needs at least one iteration"):
        train_script.train(tiny_config(data_root, tmp_path / "run", *zero))


def test_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(
    data_root: Path, tmp_path: Path, monkeypatch
) -> None:
    writes = {"count": 0}
    real_save = torch.save

    def filling_save(obj, handle, *args, **kwargs):  # noqa: ANN001, ANN202
        writes["count"] += 1
        if writes["count"] > 2:  # best.ckpt and last.ckpt of the first epoch fit, then the disk is full
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr("emca.io.torch.save", filling_save)
    with pytest.raises(Exception) as err:
        run(tiny_config(data_root, tmp_path / "run"), monkeypatch)
    full = find_user_error(err.value)
    folder = tmp_path / "run" / "checkpoints"
    assert isinstance(full, DiskFull) and str(folder) in str(full) and "previous version is intact" in str(full)
    monkeypatch.setattr("emca.io.torch.save", real_save)
    assert step_of(folder / "last.ckpt") == 3 * PoseTransferModule.optimizer_steps_per_iteration
    assert not list(folder.glob(".*.tmp"))


def test_resuming_another_architecture_names_the_first_difference(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    run(tiny_config(data_root, tmp_path / "small", *iterations(1)), monkeypatch)
    last = tmp_path / "small" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="another architecture") as err:
        train_script.train(tiny_config(data_root, tmp_path / "wide", f"resume={last}", "model.generator.ngf=8"))
    assert "has shape" in str(err.value) and str(last) in str(err.value)


def test_resume_removes_temporaries_a_killed_writer_left(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    run(tiny_config(data_root, tmp_path / "run", *iterations(1)), monkeypatch)
    folder = tmp_path / "run" / "checkpoints"
    stale = folder / ".last.ckpt.k1ll3d.tmp"
    stale.write_bytes(b"")
    run(
        tiny_config(data_root, tmp_path / "resumed", f"resume={folder / 'last.ckpt'}", *iterations(2)),
        monkeypatch,
    )
    assert not stale.exists()


def test_checkpoints_and_images_follow_the_umask(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    previous = os.umask(0o022)
    os.umask(previous)
    expected = 0o666 & ~previous
    run(tiny_config(data_root, tmp_path / "run", *iterations(1)), monkeypatch)
    for path in [*(tmp_path / "run" / "checkpoints").glob("*.ckpt"), *(tmp_path / "run" / "samples").glob("*.png")]:
        assert path.stat().st_mode & 0o777 == expected, path


def test_atomic_directory_replaces_a_folder_only_once_the_new_one_is_complete(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "old.txt").write_text("previous")
    with pytest.raises(RuntimeError, match="midway"), atomic_directory(root) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("midway")
    assert [path.name for path in tmp_path.iterdir()] == ["dataset"]  # no staging folder left
    assert [path.name for path in root.iterdir()] == ["old.txt"]
    with atomic_directory(root) as staging:
        (staging / "new.txt").write_text("complete")
        assert (root / "old.txt").is_file()  # the previous one stays until the new one is done
    assert [path.name for path in tmp_path.iterdir()] == ["dataset"]  # no staging or retired copy left
    assert [path.name for path in root.iterdir()] == ["new.txt"]
