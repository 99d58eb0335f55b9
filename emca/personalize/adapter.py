"""MoA adapter files: the trainable state of a personalisation, kept apart from the base checkpoint.

An adapter file (written atomically, loaded with ``weights_only=True``) is a plain dict::

    format       "emca-moa-adapter"
    version      1
    moa          the MoA settings: token_grid [gh, gw], router_hidden, router_init_prior
    base         the base architecture's fingerprint: model (the base checkpoint's model config) and
                 parameter_shapes {name: [sizes]} of the base generator's state dict
    state        {name: tensor}: the experts, routers and subject tokens (names in PersonalizedGenerator)

It only fits a base generator with the same parameter names and shapes; anything else is refused with a
CheckpointError that names the first difference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from emca.checkpoint import DEFAULT_LIMITS, LoadLimits, check_finite, load_generator, shape_differences
from emca.errors import CheckpointError
from emca.io import atomic_torch_save, safe_torch_load
from emca.personalize.moa import PersonalizedGenerator

ADAPTER_FORMAT = "emca-moa-adapter"
ADAPTER_VERSION = 1
SUBJECT_TOKENS_SUFFIX = "cross_attention.subject_tokens"


def architecture_fingerprint(generator: nn.Module, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The base model config and the shape of every entry of the base generator's state dict."""
    return {
        "model": model_cfg,
        "parameter_shapes": {name: list(tensor.shape) for name, tensor in generator.state_dict().items()},
    }


def trainable_state(personalized: PersonalizedGenerator) -> dict[str, Tensor]:
    """The parameters that personalisation trains, detached on the CPU."""
    return {
        name: parameter.detach().cpu().clone()
        for name, parameter in personalized.named_parameters()
        if parameter.requires_grad
    }


def save_adapter(
    path: str | os.PathLike, personalized: PersonalizedGenerator, fingerprint: dict[str, Any], moa_cfg: dict[str, Any]
) -> None:
    """Write the adapter of ``personalized`` (see the module docstring) atomically to ``path``."""
    atomic_torch_save(
        {
            "format": ADAPTER_FORMAT,
            "version": ADAPTER_VERSION,
            "moa": dict(moa_cfg),
            "base": fingerprint,
            "state": trainable_state(personalized),
        },
        path,
    )


def read_adapter(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check an adapter file's structure (not yet against a base)."""
    adapter = safe_torch_load(path)
    if not isinstance(adapter, dict) or adapter.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(
            f"'{path}' is not an emca MoA adapter file (no format '{ADAPTER_FORMAT}'); adapters "
            "are written as adapter.pt into the run directory of `emca train experiment=personalize`."
        )
    if adapter.get("version") != ADAPTER_VERSION:
        raise CheckpointError(
            f"Adapter '{path}' has version {adapter.get('version')}; this emca reads version {ADAPTER_VERSION}."
        )
    _check_structure(adapter, path)
    check_finite(adapter["state"], str(path))
    return adapter


def _check_structure(adapter: dict[str, Any], path: str | os.PathLike) -> None:
    """Every field the loader reads, with its type, so a damaged or hand-made file is named, not a KeyError."""

    def field(value: Any, name: str, expected: str, valid: bool) -> None:
        if not valid:
            raise CheckpointError(f"Adapter '{path}', field '{name}': expected {expected}, got {value!r:.80}.")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    base, moa, state = adapter.get("base"), adapter.get("moa"), adapter.get("state")
    field(base, "base", "a dict with the base model's fingerprint", isinstance(base, dict))
    field(base.get("model"), "base.model", "the base model config (a dict)", isinstance(base.get("model"), dict))
    shapes = base.get("parameter_shapes")
    field(
        shapes,
        "base.parameter_shapes",
        "a dict of parameter name -> list of sizes",
        isinstance(shapes, dict) and all(isinstance(v, list) and all(map(is_int, v)) for v in shapes.values()),
    )
    field(moa, "moa", "a dict of MoA settings", isinstance(moa, dict))
    grid = moa.get("token_grid")
    field(
        grid,
        "moa.token_grid",
        "[rows, cols] of positive integers",
        isinstance(grid, list) and len(grid) == 2 and all(is_int(v) and v > 0 for v in grid),
    )
    hidden = moa.get("router_hidden")
    field(hidden, "moa.router_hidden", "a positive integer", is_int(hidden) and hidden > 0)
    prior = moa.get("router_init_prior")
    field(
        prior,
        "moa.router_init_prior",
        "a number in [0.5, 1)",
        isinstance(prior, (int, float)) and not isinstance(prior, bool) and 0.5 <= prior < 1,
    )
    field(
        state,
        "state",
        "a dict of parameter name -> tensor",
        isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values()),
    )


def check_fits(
    adapter: dict[str, Any], adapter_path: str | os.PathLike, fingerprint: dict[str, Any], base_path: str | os.PathLike
) -> None:
    """Raise CheckpointError naming the first parameter where the adapter's base and this base differ."""
    trained_on, here = adapter["base"]["parameter_shapes"], fingerprint["parameter_shapes"]
    if trained_on == here:
        return
    differences = shape_differences(here, trained_on, "this base", "the adapter's base")
    trained_generator = adapter["base"]["model"].get("generator", {})
    raise CheckpointError(
        f"Adapter '{adapter_path}' was trained on a base generator of a different architecture than "
        f"'{base_path}' ({len(differences)} difference(s); first: {differences[0]}). The adapter's base "
        f"generator config was {trained_generator}. Load it onto the checkpoint it was personalised from."
    )


def load_personalized_generator(
    base_ckpt: str | os.PathLike,
    adapter_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    scale: float = 1.0,
    limits: LoadLimits = DEFAULT_LIMITS,
) -> tuple[PersonalizedGenerator, dict[str, Any]]:
    """Base checkpoint + adapter -> (PersonalizedGenerator in eval mode, the base's hyper_parameters).

    ``scale`` scales the personalised routing (0: the base generator exactly, 1: the trained mixture).
    """
    adapter = read_adapter(adapter_path)
    generator, hyper_parameters = load_generator(base_ckpt, limits=limits)
    check_fits(adapter, adapter_path, architecture_fingerprint(generator, hyper_parameters["model"]), base_ckpt)
    state = adapter["state"]
    tokens = next((tensor for name, tensor in state.items() if name.endswith(SUBJECT_TOKENS_SUFFIX)), None)
    if tokens is None:
        raise CheckpointError(f"Adapter '{adapter_path}' holds no subject tokens ('*.{SUBJECT_TOKENS_SUFFIX}').")
    moa = adapter["moa"]
    personalized = PersonalizedGenerator(
        generator, torch.zeros_like(tokens), moa["router_hidden"], moa["router_init_prior"]
    )
    expected = set(trainable_state(personalized))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(
            f"Adapter '{adapter_path}' does not fit its MoA settings {moa}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}."
        )
    try:
        personalized.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"Adapter '{adapter_path}': its tensors do not fit the MoA layers: {err}") from err
    personalized.set_routing_scale(scale)
    return personalized.to(device).eval(), hyper_parameters


def load_generator_with_adapter(
    ckpt: str | os.PathLike,
    adapter_path: str | os.PathLike | None,
    device: str | torch.device = "cpu",
    scale: float = 1.0,
    limits: LoadLimits = DEFAULT_LIMITS,
) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's generator, with the MoA adapter on top when ``adapter_path`` is given."""
    if adapter_path:
        return load_personalized_generator(ckpt, adapter_path, device, scale, limits)
    return load_generator(ckpt, device, limits=limits)


def adapter_path_in(run_dir: str | os.PathLike) -> Path:
    """Where a personalisation run writes its adapter."""
    return Path(run_dir) / "adapter.pt"
