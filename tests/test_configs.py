"""Every preset under conf/ composes, and builds what it describes: each experiment (conf/experiment/*.yaml,
globbed, so a new one is covered without editing this file), each recipe on each model, each ablation
variant, and each evaluation protocol, whose every metric definition must parse."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from emca.build import build_discriminators, build_generator
from emca.protocol import parse_metric, parse_protocol

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def stems(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


EXPERIMENTS = stems("experiment")
RECIPES = stems("recipe")
MODELS = stems("model")
ABLATIONS = stems("ablation")
PROTOCOLS = stems("eval")
# the values an experiment leaves to the command line (???)
REQUIRED = {"personalize": ["ckpt=base.ckpt", "data.root=me"]}
# generator parameters, published (XingGAN's release) or documented (docs/xinggan.md, docs/xingganpp.md)
GENERATOR_PARAMETERS = {
    "xinggan_deepfashion": 44_844_634,
    "xinggan_market": 44_853_189,
    "xingganpp_deepfashion": 50_149_060,
    "xingganpp_market": 50_157_615,
}
# the full-size DeepFashion XingGAN's discriminators: D_PB reads image + pose (21 channels), D_PP two images
XINGGAN_DEEPFASHION_DISCRIMINATORS = {"pose": 3_975_424, "appearance": 3_928_384}


def compose_resolved(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """The composed config with every interpolation resolved (a broken one fails here)."""
    # ${hydra:runtime.output_dir} exists only in a real run
    overrides = [*overrides, "run_dir=unused" if config_name == "train" else "out=unused"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name, overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def build_networks(model: dict) -> dict[str, torch.nn.Module]:
    """The generator and both discriminators as the training module builds them, on the meta device (no memory)."""
    with torch.device("meta"):
        generator = build_generator(model)
        discriminators = build_discriminators(model)
    return {"generator": generator, "pose": discriminators.pose, "appearance": discriminators.appearance}


def test_the_globs_find_the_presets() -> None:
    assert {"xinggan_deepfashion", "xinggan_market", "xingganpp_deepfashion", "personalize"} <= set(EXPERIMENTS)
    assert RECIPES == ["deepfashion", "market"] and {"patn", "gfla"} <= set(PROTOCOLS)
    assert {"baseline", "full"} <= set(ABLATIONS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment: str) -> None:
    cfg = compose_resolved("train", [f"experiment={experiment}", *REQUIRED.get(experiment, [])])
    model = OmegaConf.to_container(cfg.model)
    assert cfg.trainer.max_steps is None  # the module gives the Trainer its step budget
    if experiment == "personalize":
        assert cfg.module == "emca.personalize.module.PersonalizationModule"
        assert model["base_ckpt"] == "base.ckpt" and cfg.data.root == "me"
        assert model["moa"] == {"token_grid": [8, 4], "router_hidden": 32, "router_init_prior": 0.9}
        assert model["optim"]["iterations"] > 0
        return
    assert cfg.module == "emca.module.PoseTransferModule"
    networks = build_networks(model)
    if experiment in GENERATOR_PARAMETERS:
        assert count_parameters(networks["generator"]) == GENERATOR_PARAMETERS[experiment]
    if experiment == "xinggan_deepfashion":
        assert {name: count_parameters(networks[name]) for name in ("pose", "appearance")} == (
            XINGGAN_DEEPFASHION_DISCRIMINATORS
        )


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_overrides_each_model(recipe: str) -> None:
    recipe_values = OmegaConf.load(CONF / "recipe" / f"{recipe}.yaml")
    for model_name in MODELS:
        cfg = compose_resolved("train", [f"model={model_name}", f"recipe={recipe}"])
        assert cfg.model.name == model_name
        # the recipe wins over the model config, whatever the model's own values
        assert OmegaConf.merge(cfg, recipe_values) == cfg, (model_name, recipe)
        build_networks(OmegaConf.to_container(cfg.model))


@pytest.mark.parametrize("variant", ABLATIONS)
def test_ablation_variant_composes_and_builds(variant: str) -> None:
    cfg = compose_resolved("train", ["experiment=ablation", f"ablation={variant}"])
    assert cfg.model.name == variant
    assert [callback.labels.variant for callback in cfg.callbacks] == [variant]
    build_networks(OmegaConf.to_container(cfg.model))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("preset", ["deepfashion", "market", "synthetic"])
def test_protocol_composes_and_every_definition_parses(protocol: str, preset: str) -> None:
    cfg = compose_resolved("eval", [f"eval={protocol}"])
    config = OmegaConf.to_container(cfg.eval)
    assert config["name"] == protocol
    definitions = config["definitions"]
    for name, definition in definitions.items():
        parse_metric(name, definition, preset)
    parsed = parse_protocol(config, list(cfg.metrics), preset)  # the protocol's default list
    assert [spec.name for spec in parsed.metrics] == list(config["metrics"])
    assert parse_protocol(config, list(definitions), preset).metrics


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "bf16-mixed"), (False, True, "bf16-mixed"), (False, False, "32-true")],
)
def test_cpu_trainer_uses_bf16_only_where_the_cpu_computes_it_natively(
    avx512_bf16: bool, amx: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("train", overrides=["run_dir=."])
    assert OmegaConf.to_container(cfg.trainer, resolve=True)["precision"] == expected
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        forced = compose("train", overrides=["run_dir=.", "trainer.precision=32-true"])
    assert forced.trainer.precision == "32-true"
