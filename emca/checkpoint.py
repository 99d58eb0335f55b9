"""Checkpoints: atomic writing, safe (weights_only) loading, and rebuilding a generator from one.

A Lightning checkpoint of emca stores its configuration as plain containers under
``hyper_parameters`` (``model``: the model config, ``data``: the data config), so it loads with
``weights_only=True``, and its networks are rebuilt through emca's closed registry (:mod:`emca.build`),
never by instantiating what the file names: a checkpoint from the internet cannot run code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from emca.build import build_generator, image_frame
from emca.data.batch import IMAGE_CHANNELS
from emca.data.keypoints import NUM_JOINTS
from emca.errors import CheckpointError, Unavailable
from emca.io import atomic_torch_save, remove_stale_temporaries, safe_torch_load

GENERATOR_PREFIX = "generator."
EMA_GENERATOR_PREFIX = "generator_ema.module."
# an exported model folder (emca.export)
EXPORT_FORMAT = "emca-model"
EXPORT_VERSION = 1
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"


@dataclass(frozen=True)
class LoadLimits:
    """How large a model file may ask a loader to build, checked on the meta device before any memory is taken.

    ``max_parameters``: of the generator; 500,000,000 is about 10x the official XingGAN (44.8 M) and XingGAN++
    (47.8 M), 1.9 GiB in fp32. ``max_activation_gib``: the largest tensor one image makes in a forward pass at
    the model's size; 8 GiB admits the reference attention at 512x352 (0.95 GiB: 11,264 tokens squared, both
    directions, fp32) and refuses it at 1024x704 (15 GiB).
    """

    max_parameters: int = 500_000_000
    max_activation_gib: float = 8.0

    def __post_init__(self) -> None:
        assert self.max_parameters > 0 and self.max_activation_gib > 0, "commands check these (their option schemas)"


DEFAULT_LIMITS = LoadLimits()

HUB_PREFIX = "hf://"  # an exported model on the Hugging Face Hub: hf://OWNER/NAME[@REVISION]


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically and loads tensors and plain containers only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return safe_torch_load(path, map_location=map_location or "cpu")


def generator_state(state_dict: dict[str, torch.Tensor], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The generator's weights from a module state dict: the EMA copy when there is one."""
    prefix = (
        EMA_GENERATOR_PREFIX
        if prefer_ema and any(k.startswith(EMA_GENERATOR_PREFIX) for k in state_dict)
        else GENERATOR_PREFIX
    )
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def read_exported_model(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """An exported model folder (``emca export``: ``model.safetensors`` + ``config.json``) read as a
    checkpoint: ``({"state_dict": ...}, {"model": ..., "data": ...})``. safetensors holds tensors only, and
    the config is plain JSON whose architecture :mod:`emca.build` checks against its registry."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(
                f"'{folder}' is a directory without '{path.name}': neither a checkpoint file (best.ckpt, last.ckpt) "
                f"nor an exported emca model, which holds {EXPORT_WEIGHTS} and {EXPORT_CONFIG} "
                "(emca export CKPT --out DIR writes them)."
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"'{config_path}' is not valid JSON ({err}).") from err
    except RecursionError as err:  # json's parser recurses once per level of nesting
        raise CheckpointError(f"'{config_path}' nests deeper than Python's JSON reader can follow.") from err
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"'{config_path}' is not an emca model config (no format '{EXPORT_FORMAT}').")
    if config.get("version") != EXPORT_VERSION:
        raise CheckpointError(
            f"'{config_path}' has version {config.get('version')!r}; this emca reads version {EXPORT_VERSION}."
        )
    for field in ("model", "data"):
        if not isinstance(config.get(field), dict):
            raise CheckpointError(
                f"'{config_path}', field '{field}': expected a mapping, got {config.get(field)!r:.60}."
            )
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"'{weights_path}' is not a readable safetensors file ({err}).") from err
    return {"state_dict": state}, {"model": config["model"], "data": config["data"]}


def hub_folder(spec: str) -> Path:
    """The local copy of an exported model on the Hugging Face Hub, ``hf://OWNER/NAME[@REVISION]``: only its
    safetensors weights, config.json and model card are downloaded (the optional ``hub`` extra)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise Unavailable(f"'{spec}' is on the Hugging Face Hub: pip install 'emca[hub]' to download it.") from err
    repo_id, _, revision = spec[len(HUB_PREFIX) :].partition("@")
    try:
        folder = snapshot_download(
            repo_id=repo_id, revision=revision or None, allow_patterns=[EXPORT_WEIGHTS, EXPORT_CONFIG, "README.md"]
        )
    except Exception as err:  # huggingface_hub raises its own errors for network, auth and missing repos
        raise CheckpointError(f"'{spec}': the download from the Hugging Face Hub failed ({err}).") from err
    return Path(folder)


def read_training_checkpoint(ckpt_path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Safely load an emca training checkpoint, or an exported model folder, and check its structure:
    ``(checkpoint, hyper_parameters)``.

    ``hyper_parameters`` holds ``model`` (and usually ``data``) as plain dicts; ``checkpoint["state_dict"]`` maps
    names to tensors.
    """
    if str(ckpt_path).startswith(HUB_PREFIX):
        checkpoint, hyper_parameters = read_exported_model(hub_folder(str(ckpt_path)))
    elif Path(ckpt_path).is_dir():
        checkpoint, hyper_parameters = read_exported_model(Path(ckpt_path))
    else:
        checkpoint, hyper_parameters = _read_checkpoint_file(ckpt_path)
    check_finite(checkpoint["state_dict"], str(ckpt_path))
    return checkpoint, hyper_parameters


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, in one pass without a boolean copy: aminmax propagates a NaN to both
    extremes, and an infinity is one of them (isfinite().all() writes and reads a boolean of every value)."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    low, high = tensor.aminmax()
    return bool(low.isfinite() & high.isfinite())


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a model file whose floating-point tensors hold NaN or inf: its images would be black or white."""
    broken = [name for name, tensor in tensors.items() if not _finite(tensor)]
    if broken:
        raise CheckpointError(
            f"'{source}': {len(broken)} tensor(s) hold NaN or inf (first: '{broken[0]}'), so the model would "
            "generate black or white images. It was saved from a run that diverged, or the file is damaged: use an "
            "earlier checkpoint of the run, or retrain with a lower learning rate."
        )


def _read_checkpoint_file(ckpt_path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """A training checkpoint file (``best.ckpt``, ``last.ckpt``, a converted release), its structure checked."""
    checkpoint = safe_torch_load(ckpt_path)
    hint = "emca reads the best.ckpt / last.ckpt files that `emca train` writes."
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{ckpt_path}' holds a {type(checkpoint).__name__}, not a training checkpoint; {hint}")
    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(hyper_parameters, dict) or not isinstance(hyper_parameters.get("model"), dict):
        raise CheckpointError(f"'{ckpt_path}' is not an emca training checkpoint (no hyper_parameters.model); {hint}")
    data = hyper_parameters.get("data")
    if data is not None and not isinstance(data, dict):
        raise CheckpointError(
            f"'{ckpt_path}', field 'hyper_parameters.data': expected a dict, got {type(data).__name__}."
        )
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"'{ckpt_path}' has no state_dict of tensors (field 'state_dict'); {hint}")
    return checkpoint, hyper_parameters


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation makes (bytes, operation), e.g. on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.largest: tuple[int, str] = (0, "")

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.numel() * tensor.element_size() > self.largest[0]:
                self.largest = (tensor.numel() * tensor.element_size(), str(func))
        return out


def check_size(model: dict[str, Any], data: dict[str, Any] | None, source: str, limits: LoadLimits) -> None:
    """Build the generator a config describes on the meta device (which allocates nothing) and refuse it when it
    has more parameters, or makes a larger tensor for one image at its size, than ``limits`` allow."""
    with torch.device("meta"):
        planned = build_generator(model, source=source)
    count = sum(parameter.numel() for parameter in planned.parameters())
    if count > limits.max_parameters:
        raise CheckpointError(
            f"'{source}': its config describes a generator of {count:,} parameters "
            f"({count * 4 / 2**30:.1f} GiB in fp32), over the {limits.max_parameters:,} allowed. The official "
            "XingGAN has 44.8 million. If you trust this model, allow it with max_parameters=N."
        )
    if not data:
        return
    height, width, _ = image_frame(data, source)
    with torch.device("meta"), torch.no_grad(), _LargestTensor() as recorder:
        planned(torch.zeros(1, IMAGE_CHANNELS, height, width), *torch.zeros(2, 1, NUM_JOINTS, height, width))
    largest, operation = recorder.largest
    if largest > limits.max_activation_gib * 2**30:
        raise CheckpointError(
            f"'{source}': at its {height}x{width} image size the generator makes a {largest / 2**30:.1f} GiB tensor "
            f"({operation}) for a single image, over the {limits.max_activation_gib:g} GiB allowed. If you have the "
            "memory and trust this model, allow it with max_activation_gib=N."
        )


def load_generator(
    ckpt_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    prefer_ema: bool = True,
    limits: LoadLimits = DEFAULT_LIMITS,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained generator of a checkpoint in eval mode, after :func:`check_size`.

    Returns ``(generator, hyper_parameters)``; ``hyper_parameters["data"]`` holds the data config the model
    was trained with (root, preset, height, width, sigma, ...).
    """
    checkpoint, hyper_parameters = read_training_checkpoint(ckpt_path)
    check_size(hyper_parameters["model"], hyper_parameters.get("data"), str(ckpt_path), limits)
    generator = build_generator(hyper_parameters["model"], source=str(ckpt_path))
    weights = generator_state(checkpoint["state_dict"], prefer_ema)
    if not weights:
        raise CheckpointError(
            f"'{ckpt_path}': its state_dict holds no generator weights (no '{GENERATOR_PREFIX}*' entries)."
        )
    try:
        generator.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"'{ckpt_path}': the stored generator weights do not fit its config: {err}") from err
    return generator.to(device).eval(), hyper_parameters


def find_latest_checkpoint(root: str | os.PathLike = "outputs/train", name: str = "best.ckpt") -> Path | None:
    candidates = sorted(Path(root).glob(f"*/checkpoints/{name}"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def shape_differences(stored: dict[str, Any], expected: dict[str, Any], stored_in: str, expected_in: str) -> list[str]:
    """Every parameter that one of two {name: shape} tables lacks or sizes differently, in words."""
    differences = [f"'{n}' is missing from {stored_in}" for n in expected if n not in stored]
    differences += [f"'{n}' is not in {expected_in}" for n in stored if n not in expected]
    differences += [
        f"'{n}' has shape {list(stored[n])} in {stored_in} but {list(expected[n])} in {expected_in}"
        for n in expected
        if n in stored and list(stored[n]) != list(expected[n])
    ]
    return differences


def check_resumable(ckpt_path: str | os.PathLike, module: nn.Module) -> None:
    """Refuse, naming the first difference, a checkpoint whose weights do not fit ``module``; and clear the
    temporaries a killed writer left beside it."""
    checkpoint, _ = read_training_checkpoint(ckpt_path)
    remove_stale_temporaries(Path(ckpt_path).parent, ".ckpt")
    stored = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    differences = shape_differences(stored, expected, "the checkpoint", "this model")
    if differences:
        raise CheckpointError(
            f"resume='{ckpt_path}' was written by a model of another architecture than this config builds "
            f"({len(differences)} difference(s); first: {differences[0]}). Resume with the config the run was "
            "started with (the checkpoint's model settings are in its run directory's .hydra/config.yaml)."
        )


def initial_weights(ckpt_path: str | os.PathLike, module: nn.Module) -> dict[str, torch.Tensor]:
    """The generator and (when the checkpoint has them) discriminator weights of ``ckpt_path`` for starting a
    new run of ``module`` from them (fine-tuning, e.g. from a converted official release). Each network the
    checkpoint holds must fit exactly; the difference is named otherwise."""
    checkpoint, _ = read_training_checkpoint(ckpt_path)
    expected = module.state_dict()
    selected = {}
    for prefix in ("generator.", "discriminators."):
        stored = {name: t for name, t in checkpoint["state_dict"].items() if name.startswith(prefix)}
        if not stored and prefix == "discriminators.":
            continue  # a generator-only checkpoint: the discriminators start from scratch
        wanted = {name: t for name, t in expected.items() if name.startswith(prefix)}
        differences = shape_differences(
            {n: tuple(t.shape) for n, t in stored.items()}, {n: tuple(t.shape) for n, t in wanted.items()},
            "the checkpoint", "this model",
        )  # fmt: skip
        if differences:
            raise CheckpointError(
                f"ckpt='{ckpt_path}': its {prefix[:-1]} does not fit the model this config builds "
                f"({len(differences)} difference(s); first: {differences[0]}). Use the model config it was made "
                "with (e.g. experiment=xinggan_deepfashion for a converted DeepFashion release)."
            )
        selected |= stored
    return selected


class InterruptCheckpoint(Checkpoint):
    """Writes ``last.ckpt`` when a run is interrupted (SIGTERM from a scheduler or ``kill``, Ctrl-C), so it
    resumes from the step it reached. A run stopped by an error (a diverged loss) keeps its last good one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)


def last_checkpoint(run_dir: str | os.PathLike) -> Path:
    """Where a run keeps its newest state (see :func:`checkpoint_callbacks`)."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def checkpoint_callbacks(
    run_dir: Path, every_n_iterations: int | None, optimizer_steps_per_iteration: int
) -> list[Checkpoint]:
    """``best.ckpt`` by validation SSIM; ``last.ckpt``, the state after the last epoch (and every
    ``every_n_iterations`` iterations when set) and at an interruption. Both are overwritten in place,
    atomically (:class:`SafeCheckpointIO`). ``optimizer_steps_per_iteration`` is the training module's own
    (Lightning counts optimizer steps)."""
    folder = last_checkpoint(run_dir).parent
    # no monitor: the newest state is kept, whatever the validation score did
    latest = {"dirpath": folder, "filename": "last", "save_top_k": 1, "enable_version_counter": False}
    callbacks: list[Checkpoint] = [
        ModelCheckpoint(
            dirpath=folder, filename="best", monitor="val/ssim", mode="max", save_top_k=1, enable_version_counter=False
        ),
        ModelCheckpoint(**latest, every_n_epochs=1, save_on_train_epoch_end=True),
        InterruptCheckpoint(last_checkpoint(run_dir)),
    ]
    if every_n_iterations:  # Lightning takes one trigger per callback, and counts optimizer steps
        every_n_steps = every_n_iterations * optimizer_steps_per_iteration
        callbacks.append(ModelCheckpoint(**latest, every_n_train_steps=every_n_steps))
    return callbacks
