"""Training end to end on a tiny config: one step, exact resumption, safe loading, clear config errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from _fake_data import make_dataset
from _tiny_training import iterations, logged_steps, run, stop_at, tiny_config
from PIL import Image

from emca.checkpoint import load_generator
from emca.cli import find_user_error
from emca.errors import CheckpointError, DataError, WeightsError
from emca.io import safe_torch_load
from emca.module import adam

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_dataset(root, height=32, width=16)
    return root


def test_training_writes_checkpoints_and_samples(data_root: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO)
    recorder = run(tiny_config(data_root, run_dir, *iterations(3), "progress_log_seconds=1e-9"), monkeypatch)
    progress = [record.getMessage() for record in caplog.records if record.name == "emca.progress"]
    assert [line.split(",")[0] for line in progress[:3]] == [
        "iteration 1/3 (33 %)",
        "iteration 2/3 (67 %)",
        "iteration 3/3 (100 %)",
    ]
    assert len(progress) == 5 and progress[3].startswith(
        "validation after iteration 3 (PATN SSIM, no white padding): val/l1 "
    )
    assert "left; " in progress[0] and "train/l1 " in progress[0] and "val/ssim " in progress[3]
    # the end of the run in iterations, and not Lightning's line in optimizer steps ("max_steps=9 reached")
    assert progress[4].startswith("training finished: 3 of 3 iterations in ")
    assert not [record for record in caplog.records if "max_steps=" in record.getMessage()]
    assert len(recorder.losses) == 3  # three iterations, three optimizer steps each
    assert [step for step, _, _ in recorder.losses] == [3, 6, 9]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss, _ in recorder.losses)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    sheets = sorted((run_dir / "samples").glob("iteration_*.png"))
    assert sheets
    # rows of 32 px pictures, enlarged x8 (nearest) so that each is 256 px tall: one row is 8 x (32 + 2 padding)
    with Image.open(sheets[-1]) as sheet:
        assert sheet.height % (8 * 34) == 8 * 2 and sheet.height >= 256
    checkpoint = safe_torch_load(run_dir / "checkpoints" / "last.ckpt")
    assert isinstance(checkpoint["hyper_parameters"]["model"], dict)  # plain containers, not OmegaConf
    assert not any(key.startswith("perceptual_loss") for key in checkpoint["state_dict"])
    generator, hparams = load_generator(run_dir / "checkpoints" / "last.ckpt")
    assert hparams["data"]["height"] == 32
    batch = torch.zeros(1, 3, 32, 16), torch.zeros(1, 18, 32, 16), torch.zeros(1, 18, 32, 16)
    assert generator(*batch).shape == (1, 3, 32, 16)


def test_resume_continues_with_the_same_losses(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    # 12 training pairs, batch 4: 3 iterations per epoch; 4 epochs uninterrupted vs 2 (stopped) + resume
    full = run(tiny_config(data_root, tmp_path / "full"), monkeypatch)
    first_half = run(tiny_config(data_root, tmp_path / "half", stop_at(6)), monkeypatch)
    last = tmp_path / "half" / "checkpoints" / "last.ckpt"
    resumed = run(tiny_config(data_root, tmp_path / "resumed", f"resume={last}"), monkeypatch)
    assert len(full.losses) == 12 and len(first_half.losses) == 6 and len(resumed.losses) == 6
    assert first_half.losses == full.losses[:6]
    assert [step for step, _, _ in resumed.losses] == [step for step, _, _ in full.losses[6:]]
    resumed_values = [value for _, *values in resumed.losses for value in values]
    full_values = [value for _, *values in full.losses[6:] for value in values]
    assert resumed_values == pytest.approx(full_values, rel=1e-5)
    assert logged_steps(tmp_path / "resumed") == logged_steps(tmp_path / "full")[6:]


@pytest.mark.parametrize("switch", ["model.compile=true", "model.channels_last=true"])
def test_speed_switches_give_the_losses_of_eager_networks(
    switch: str, data_root: Path, tmp_path: Path, monkeypatch
) -> None:
    # no dropout: compiled code draws its random masks differently from eager code; fp32: bf16's rounding
    # differs between fused (compiled) and eager kernels by far more than fp32's
    same = (
        *iterations(2),
        "model.generator.dropout=0.0",
        "model.discriminator.dropout=0.0",
        "trainer.precision=32-true",
    )
    eager = run(tiny_config(data_root, tmp_path / "eager", *same), monkeypatch)
    switched = run(tiny_config(data_root, tmp_path / "switched", *same, switch), monkeypatch)
    assert [step for step, *_ in switched.losses] == [step for step, *_ in eager.losses] == [3, 6]
    eager_values = [value for _, *values in eager.losses for value in values]
    assert [value for _, *values in switched.losses for value in values] == pytest.approx(eager_values, rel=1e-4)
    # compiled in place, laid out in place: the checkpoint has the eager networks' names and loads as any other
    states = {path.name: safe_torch_load(path / "checkpoints" / "last.ckpt")["state_dict"] for path in
              (tmp_path / "eager", tmp_path / "switched")}  # fmt: skip
    assert set(states["switched"]) == set(states["eager"])
    first_conv = states["switched"]["generator.appearance_encoder.1.weight"]
    assert first_conv.is_contiguous(memory_format=torch.channels_last) == (switch == "model.channels_last=true")
    load_generator(tmp_path / "switched" / "checkpoints" / "last.ckpt")


def test_adam_is_fused_on_cpu_and_updates_as_torchs_per_parameter_loop() -> None:
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    steps = [[torch.randn_like(parameter) for parameter in start] for _ in range(3)]
    makers = {
        "emca": lambda parameters: adam(parameters, 1e-2, (0.5, 0.999)),
        "loop": lambda parameters: torch.optim.Adam(parameters, lr=1e-2, betas=(0.5, 0.999), foreach=False),
    }
    trained = {}
    for name, make in makers.items():
        parameters = [torch.nn.Parameter(tensor.clone()) for tensor in start]
        optimizer = make(parameters)
        for gradients in steps:
            for parameter, gradient in zip(parameters, gradients, strict=True):
                parameter.grad = gradient.clone()
            optimizer.step()
        trained[name] = (optimizer, parameters)
    assert trained["emca"][0].defaults["fused"] is True
    for fused, loop, initial in zip(trained["emca"][1], trained["loop"][1], start, strict=True):
        assert not torch.equal(fused, initial)  # the steps moved it
        torch.testing.assert_close(fused, loop, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("grad_clip", "fused"), [("null", True), ("1.0", False)])
def test_gradient_clipping_picks_the_unfused_adam(grad_clip: str, fused: bool) -> None:
    # Lightning's AMP plugins refuse to clip a fused optimizer's gradients, so clipping picks the per-parameter loop
    from emca.config import compose_train
    from emca.module import PoseTransferModule

    model = compose_train([f"model.grad_clip={grad_clip}"])["model"]
    optimizers = PoseTransferModule(model=model).configure_optimizers()[0]
    assert [optimizer.defaults["fused"] for optimizer in optimizers] == [fused] * 3


def test_ckpt_starts_a_new_run_from_the_weights(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Fine-tuning: the new run starts from the checkpoint's generator and discriminators, at step 0, with fresh
    optimisers (a learning rate of 1e-30 leaves the weights as loaded); a model that does not fit is named."""
    run(tiny_config(data_root, tmp_path / "base", *iterations(3)), monkeypatch)
    base = tmp_path / "base" / "checkpoints" / "last.ckpt"
    fine = run(
        tiny_config(data_root, tmp_path / "fine", *iterations(1), f"ckpt={base}", "model.optim.lr=1e-30"),
        monkeypatch,
    )
    assert [step for step, _, _ in fine.losses] == [3]  # one iteration (3 optimizer steps) from step 0: a new run
    started = safe_torch_load(base)["state_dict"]
    after = safe_torch_load(tmp_path / "fine" / "checkpoints" / "last.ckpt")["state_dict"]
    for name, tensor in started.items():
        if name.startswith(("generator.", "discriminators.")) and tensor.is_floating_point():
            torch.testing.assert_close(after[name], tensor, rtol=0, atol=1e-12, msg=name)
    with pytest.raises(Exception) as err:
        run(tiny_config(data_root, tmp_path / "wide", f"ckpt={base}", "model.generator.ngf=8"), monkeypatch)
    assert isinstance(find_user_error(err.value), CheckpointError)
    assert "ckpt=" in str(find_user_error(err.value)) and "has shape" in str(find_user_error(err.value))


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        safe_torch_load(evil)
    with pytest.raises(CheckpointError):
        load_generator(evil)
    with pytest.raises(Exception) as err:
        run(tiny_config(data_root, tmp_path / "run", f"resume={evil}"), monkeypatch)
    assert isinstance(find_user_error(err.value), CheckpointError)
    assert not marker.exists()


def test_unknown_dataset_path_is_one_clear_paragraph(tmp_path: Path, capsys) -> None:
    """`emca train` with a data.root that does not exist (the fault tests run the command in a fresh process)."""
    from emca.train import main

    missing = tmp_path / "no_such_dataset"
    with pytest.raises(SystemExit) as exit_info:
        main([f"data.root={missing}", "data.generate_if_missing=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err and str(missing) in err


def test_wrong_image_size_for_preset(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(Exception) as err:
        run(tiny_config(data_root, tmp_path / "run", "data.height=64", "data.width=32"), monkeypatch)
    error = find_user_error(err.value)
    assert isinstance(error, DataError)
    assert "64x32" in str(error) and "32x16" in str(error)


def test_missing_vgg_weights_names_file_url_and_how_to_disable(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    with pytest.raises(Exception) as err:
        run(tiny_config(data_root, tmp_path / "run", "model.loss.lambda_perceptual=1.0"), monkeypatch)
    error = find_user_error(err.value)
    assert isinstance(error, WeightsError)
    message = str(error)
    assert "vgg19-dcbb9e9d.pth" in message and "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "lambda_perceptual=0" in message


def test_wandb_logger_works_offline_without_an_account(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    run_dir = tmp_path / "run"
    run(tiny_config(data_root, run_dir, "logger=wandb", *iterations(1)), monkeypatch)
    runs = list(run_dir.glob("wandb/offline-run-*"))
    assert runs, f"no offline W&B run under {run_dir / 'wandb'}"
    assert list(runs[0].glob("*.wandb"))  # the run's log file, ready for `wandb sync`


def test_a_budget_that_ends_mid_epoch_validates_its_last_iteration(
    data_root: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    """12 training pairs in batches of 4 are 3 iterations per epoch: a 5-iteration run ends inside the second."""
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="emca.progress")
    run(tiny_config(data_root, run_dir, *iterations(5)), monkeypatch)
    validated = [
        record.getMessage().split(" (")[0]
        for record in caplog.records
        if record.name == "emca.progress" and record.getMessage().startswith("validation")
    ]
    assert validated == ["validation after iteration 3", "validation after iteration 5"]
    assert sorted(path.name for path in (run_dir / "samples").glob("iteration_*.png")) == [
        "iteration_0000003.png",
        "iteration_0000005.png",
    ]
    assert safe_torch_load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 5 * 3
