"""Converting the official XingGAN release's trained networks into an emca checkpoint.

    emca convert xinggan-official PATH --dataset deepfashion|market --out FILE.ckpt

PATH is the release's ``latest_net_netG.pth`` or a folder holding it, e.g. the unpacked
``{deepfashion,market}_pretrained`` archive. If ``latest_net_netD_PB.pth`` and ``latest_net_netD_PP.pth``
lie beside it, the discriminators are converted too. Each file is a plain state dict of the bare network
(keys ``model.*``; a DataParallel ``module.`` prefix is accepted), in the zip or the legacy format.
It is loaded with ``weights_only=True``, so nothing in it can run.

Every tensor is renamed through the explicit tables below: the official names are facts of the release,
and docs/xinggan.md lists the layout. Every shape is then checked against emca's network built with
the dataset's official settings (``experiment=xinggan_<dataset>``: instance norm for DeepFashion, batch
norm for Market). Every official key must be used once and every emca tensor filled; anything else is
refused with a message that names the key. The checkpoint written (atomically) is an ordinary emca
training checkpoint without optimiser state. ``emca eval ckpt=``, ``emca infer ckpt=``,
``emca train experiment=personalize ckpt=`` and ``emca train ckpt=`` (fine-tuning) all accept it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emca.build import build_discriminators, build_generator
from emca.cli import user_errors
from emca.config import compose_train
from emca.errors import CheckpointError, ConfigError
from emca.io import atomic_torch_save, safe_torch_load
from emca.weights import file_sha256

DATASETS = ("deepfashion", "market")
FILES = {"generator": "latest_net_netG.pth", "pose": "latest_net_netD_PB.pth", "appearance": "latest_net_netD_PP.pth"}

# (official name prefix, emca name prefix); ``{i}`` is a block index. Indices inside the Sequentials are the
# same in both (emca builds its layers in the release's order, with dropout as released).
GENERATOR_NAMES: tuple[tuple[str, str], ...] = (
    ("model.stream1_down.", "appearance_encoder."),
    ("model.stream2_down.", "shape_encoder."),
    ("model.att.{i}.conv_block_stream1.", "blocks.{i}.appearance_conv."),
    ("model.att.{i}.conv_block_stream2.", "blocks.{i}.shape_conv."),
    ("model.att.{i}.query_conv.", "blocks.{i}.cross_attention.query."),
    ("model.att.{i}.key_conv.", "blocks.{i}.cross_attention.key."),
    ("model.att.{i}.value_conv.", "blocks.{i}.cross_attention.value."),
    ("model.att.{i}.gamma", "blocks.{i}.cross_attention.gamma"),
    ("model.stream1_up.", "fusion.appearance_decoder."),
    ("model.stream2_up.", "fusion.shape_decoder."),
    ("model.x2_con.", "fusion.shape_reduce.0."),
    ("model.x2_norm.", "fusion.shape_reduce.1."),
    ("model.atte_con.", "fusion.mask_decoder.0."),
    ("model.atte_norm.", "fusion.mask_decoder.1."),
    ("model.atte_con1.", "fusion.mask_decoder.3."),
    ("model.atte_norm1.", "fusion.mask_decoder.4."),
    ("model.atte_con2.", "fusion.mask_decoder.6."),
)
# the release's discriminator is one Sequential: the encoder's layers at 1..8, residual blocks at 10..12;
# emca's holds the encoder as its first element and the residual blocks after it
DISCRIMINATOR_NAMES: tuple[tuple[str, str], ...] = tuple(
    (f"model.{10 + block}.conv_block.", f"model.{1 + block}.body.") for block in range(3)
) + tuple((f"model.{layer}.", f"model.0.{layer}.") for layer in (1, 2, 4, 5, 7, 8))
NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)"))


def rename(name: str, table: Sequence[tuple[str, str]], to_emca: bool = True) -> str | None:
    """``name`` through the first matching rule of ``table`` (official -> emca, or back); None if none matches."""
    for official, emca in table:
        source, target = (official, emca) if to_emca else (emca, official)
        match = _pattern(source).match(name)
        if match:
            return target.format(**match.groupdict()) + name[match.end() :]
    return None


def official_state(path: Path) -> dict[str, Tensor]:
    """A release file's tensors, keyed ``model.*`` (a DataParallel ``module.`` prefix removed)."""
    state = safe_torch_load(path)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            f"'{path}' is not a state dict of tensors (as the official XingGAN release saves with "
            "torch.save(net.state_dict())); check that it is the release's file and not a damaged download."
        )
    stripped = {}
    for name, tensor in state.items():
        name = name.removeprefix("module.")
        if not name.startswith("model."):
            raise CheckpointError(
                f"'{path}', key '{name}': expected the release's 'model.*' names (its networks wrap their "
                "layers as `model`); this is not an official XingGAN network file."
            )
        stripped[name] = tensor
    return stripped


def convert_state(
    official: Mapping[str, Tensor], expected: Mapping[str, Tensor], table: Sequence[tuple[str, str]], path: Path
) -> dict[str, Tensor]:
    """Rename ``official`` through ``table`` and check it against emca's ``expected`` state dict, key by key."""
    converted: dict[str, Tensor] = {}
    for name, tensor in official.items():
        target = rename(name, table)
        if target is None or target not in expected:
            if name.endswith(NORM_STATISTICS) and target is not None:
                continue  # instance-norm statistics that old torch versions saved: instance norm does not use them
            raise CheckpointError(
                f"'{path}', key '{name}': not a layer of the official XingGAN network emca converts "
                f"({'no rule for it' if target is None else f'its emca name {target!r} does not exist'}); "
                "is it the right file for --dataset (DeepFashion uses instance norm, Market batch norm)?"
            )
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise CheckpointError(
                f"'{path}', key '{name}': shape {tuple(tensor.shape)}, but emca's '{target}' has "
                f"{tuple(expected[target].shape)}; is it the right file for --dataset?"
            )
        converted[target] = tensor.to(expected[target].dtype)
    missing = [name for name in expected if name not in converted]
    # a file from before torch 0.4.1 has no batch-norm step counts; eval-mode inference never reads them
    for name in [name for name in missing if name.endswith("num_batches_tracked")]:
        converted[name] = torch.zeros((), dtype=torch.int64)
        missing.remove(name)
    if missing:
        official_name = rename(missing[0], table, to_emca=False)
        raise CheckpointError(
            f"'{path}' lacks {len(missing)} tensor(s) of the network, first '{official_name}' (emca '{missing[0]}'); "
            "the file is truncated or from another architecture (check --dataset)."
        )
    return converted


def official_configs(dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and data configs of ``experiment=xinggan_<dataset>``: the official settings."""
    cfg = compose_train([f"experiment=xinggan_{dataset}"])
    return cfg["model"], cfg["data"]


def release_files(path: Path) -> dict[str, Path]:
    """The release's network files: the generator (required) and the discriminators beside it (optional)."""
    if path.is_dir():
        found = sorted(path.rglob(FILES["generator"]))
        if not found:
            raise CheckpointError(f"No '{FILES['generator']}' under '{path}'; give the file or the unpacked archive.")
        if len(found) > 1:
            raise CheckpointError(
                f"'{path}' holds several '{FILES['generator']}': {[str(p) for p in found]}; give one."
            )
        path = found[0]
    if not path.is_file():
        raise CheckpointError(f"'{path}' does not exist; give the release's {FILES['generator']} or its folder.")
    files = {"generator": path}
    for role in ("pose", "appearance"):
        if (path.parent / FILES[role]).is_file():
            files[role] = path.parent / FILES[role]
    return files


def convert_official(path: str | Path, dataset: str, out: str | Path) -> dict[str, Any]:
    """Convert the release at ``path`` for ``dataset`` into the emca checkpoint ``out``; returns a summary."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset is {dataset!r}; expected one of {list(DATASETS)}.")
    files = release_files(Path(path))
    model, data = official_configs(dataset)
    with torch.device("meta"):  # shapes only; the converted tensors replace every parameter
        generator = build_generator(model)
        discriminators = build_discriminators(model)
    state = {
        f"generator.{name}": tensor
        for name, tensor in convert_state(
            official_state(files["generator"]), generator.state_dict(), GENERATOR_NAMES, files["generator"]
        ).items()
    }
    for role in ("pose", "appearance"):
        if role in files:
            judge = getattr(discriminators, role)
            converted = convert_state(official_state(files[role]), judge.state_dict(), DISCRIMINATOR_NAMES, files[role])
            state |= {f"discriminators.{role}.{name}": tensor for name, tensor in converted.items()}
    source = {role: {"file": str(file), "sha256": file_sha256(file)} for role, file in files.items()}
    checkpoint = {
        "state_dict": state,
        "hyper_parameters": {"model": model, "data": data, "converted_from": {"release": "xinggan", **source}},
        "global_step": 0,
    }
    atomic_torch_save(checkpoint, out)
    return {"out": str(out), "networks": sorted(files), "tensors": len(state)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="emca convert", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    official = commands.add_parser("xinggan-official", help="the official XingGAN release's latest_net_netG.pth")
    official.add_argument("path", type=Path, help="latest_net_netG.pth, or the folder of the unpacked archive")
    official.add_argument("--dataset", required=True, choices=DATASETS)
    official.add_argument("--out", required=True, type=Path, help="the emca checkpoint to write (.ckpt)")
    args = parser.parse_args(argv)
    with user_errors():
        summary = convert_official(args.path, args.dataset, args.out)
    networks = ", ".join(summary["networks"])
    print(f"wrote {summary['out']}: {summary['tensors']} tensors ({networks}); evaluate with emca eval ckpt={args.out}")


if __name__ == "__main__":
    main()
