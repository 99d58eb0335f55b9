"""A checkpoint keeps describing the model it was trained as when emca's defaults change later: training stores
every generator option, defaults included, and an option missing from a stored config (one added after the file
was written) takes the value that file's emca behaved as, not today's default. A config the user writes keeps
today's defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from _tiny_training import tiny_checkpoint

from emca.build import build_generator
from emca.checkpoint import load_generator, read_training_checkpoint
from emca.networks.dense_fusion import ConcatStageReduction, GatedStageSum
from emca.networks.options import XingGANPlusPlusOptions

ATTENTION = {"_target_": "emca.networks.attention.ReferenceAttention"}


def xingganpp(**switches: dict) -> dict:
    """A tiny XingGAN++ model config with the given switch mappings."""
    generator = {"_target_": "emca.networks.xingganpp.XingGANPlusPlusGenerator", "ngf": 4, "num_blocks": 2, **switches}
    return {"generator": generator, "attention": ATTENTION}


# as the first XingGAN++ checkpoints stored them: no pyramid_factors, no over, no mode
WRITTEN_BEFORE = xingganpp(
    multi_scale={"enabled": True, "full": True, "pool_factors": [2], "window_sizes": [4]},
    enhanced_attention={"enabled": True, "branches": ["pool", "window"]},
    dense_fusion={"enabled": True},
)
# the same model with the options added since written out as those checkpoints behaved
AS_IT_WAS = xingganpp(
    multi_scale={"enabled": True, "full": True, "pool_factors": [2], "pyramid_factors": [], "window_sizes": [4]},
    enhanced_attention={"enabled": True, "branches": ["pool", "window"], "over": "rows"},
    dense_fusion={"enabled": True, "mode": "concat"},
)


def layout(generator: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in generator.state_dict().items()}


def test_a_stored_config_without_a_later_option_builds_the_model_it_was_written_as() -> None:
    stored = build_generator(WRITTEN_BEFORE, source="old.ckpt")
    explicit = build_generator(AS_IT_WAS)
    assert repr(stored) == repr(explicit) and layout(stored) == layout(explicit)
    assert any(isinstance(module, ConcatStageReduction) for module in stored.modules())
    assert len(stored.blocks[0].cross_attention.scales) == 3  # full, pooled 2x, window 4: no pyramid level


def test_a_users_config_without_those_options_gets_todays_defaults() -> None:
    users = build_generator(WRITTEN_BEFORE)
    assert any(isinstance(module, GatedStageSum) for module in users.modules())
    assert not any(isinstance(module, ConcatStageReduction) for module in users.modules())
    assert len(users.blocks[0].cross_attention.scales) == 5  # full, pooled 2x, pyramid 2x and 4x, window 4
    assert layout(users) != layout(build_generator(AS_IT_WAS))


def stored_keys(options: dict, parsed: object) -> None:
    """Every field of the parsed options dataclass, nested ones included, is a key of the stored mapping."""
    for field in dataclasses.fields(parsed):
        assert field.name in options, f"the checkpoint does not store '{field.name}'"
        value = getattr(parsed, field.name)
        if dataclasses.is_dataclass(value):
            stored_keys(options[field.name], value)


@pytest.mark.slow
def test_training_stores_every_option_so_a_switch_given_bare_loads_as_trained(tmp_path: Path) -> None:
    """`dense_fusion=true` given bare trains today's gated fusion; the checkpoint says so, and loads as gated
    (read as a config from before `mode` existed, it would build the concatenating head and fail to load)."""
    checkpoint = tiny_checkpoint(
        tmp_path, "model=xingganpp", "model.generator.ngf=4", "model.generator.num_blocks=2",
        "model.loss.lambda_perceptual=0", "model.generator.multi_scale.enabled=false",
        "model.generator.enhanced_attention.enabled=false",
        "~model.generator.dense_fusion", "+model.generator.dense_fusion=true",
    )  # fmt: skip
    _, hyper = read_training_checkpoint(checkpoint)
    stored = hyper["model"]["generator"]
    assert stored["dense_fusion"] == {"enabled": True, "mode": "gated"}
    stored_keys(stored, XingGANPlusPlusOptions())
    generator, _ = load_generator(checkpoint)
    assert any(isinstance(module, GatedStageSum) for module in generator.modules())
