"""Exporting a trained generator as a folder people can share: ``emca export CKPT --out DIR``.

The folder has the layout the Hugging Face Hub expects for a model repository:

- ``model.safetensors``: the generator's tensors (``generator.*``), and the EMA copy (``generator_ema.module.*``)
  when the run kept one. safetensors files hold tensors only, so loading one cannot run code;
- ``config.json``: ``format``, ``version``, and the ``model`` and ``data`` configs that rebuild the generator
  through emca's registry of architectures (nothing in it is instantiated);
- ``README.md``: the model card (architecture, data, training settings and, given ``--metrics``, an
  ``emca eval`` report), with ``samples.png``, the run's newest sample sheet, when there is one.

``emca eval ckpt=DIR``, ``emca infer ckpt=DIR`` and everything else that reads a checkpoint's
generator load the folder (emca.checkpoint.read_training_checkpoint). Upload it with the usual tools,
e.g. ``huggingface-cli upload USER/NAME DIR``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save as safetensors_bytes

from emca.checkpoint import (
    EMA_GENERATOR_PREFIX,
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    EXPORT_WEIGHTS,
    GENERATOR_PREFIX,
    load_generator,
    read_training_checkpoint,
)
from emca.cli import user_errors
from emca.errors import CheckpointError, DataError
from emca.io import atomic_directory


def _metric_rows(metrics_path: Path) -> list[str]:
    """The rows of the model card's metrics table from an ``emca eval`` metrics.json."""
    try:
        report = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"--metrics '{metrics_path}' is not an emca eval metrics.json ({err}).") from err
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise DataError(f"--metrics '{metrics_path}': no 'metrics' mapping; give the metrics.json emca eval wrote.")
    protocol = report.get("protocol", "?")
    return [
        f"| {name} | {value:.4f} | {protocol} |"
        for name, value in report["metrics"].items()
        if isinstance(value, float)
    ]


def model_card(hyper_parameters: dict[str, Any], parameters: int, ema: bool, metrics: Path | None) -> str:
    """The README.md of an exported model, from its checkpoint's configs."""
    model, data = hyper_parameters["model"], hyper_parameters["data"]
    generator, loss, optim = model.get("generator", {}), model.get("loss", {}), model.get("optim", {})
    architecture = generator.get("_target_", "?").rsplit(".", 1)[-1]
    lines = [
        "---",
        "library_name: emca",
        "tags: [pose-transfer, person-image-generation, gan, xinggan]",
        "---",
        "",
        f"# {model.get('name', architecture)}",
        "",
        "A pose-guided person image generator for emca: it redraws the person of a source photo in a target pose",
        "given as 18 keypoints.",
        "",
        "## Architecture",
        "",
        f"- `{architecture}`: ngf {generator.get('ngf')}, {generator.get('num_blocks')} blocks, "
        f"{generator.get('norm')} norm, {parameters:,} parameters",
        f"- attention backend at training: `{model.get('attention', {}).get('_target_', '?').rsplit('.', 1)[-1]}`",
        f"- weights: {'the EMA generator (and the raw one)' if ema else 'the generator'}",
        "",
        "## Data",
        "",
        f"- preset `{data.get('preset')}`, {data.get('height')}x{data.get('width')} images, pose maps sigma "
        f"{data.get('sigma')}",
        "",
        "## Training",
        "",
        *(
            [f"- converted from the official {source['release']} release: {source['generator']['sha256']}", ""]
            if (source := hyper_parameters.get("converted_from"))
            else []
        ),
        f"- GAN `{loss.get('gan_mode')}`, lambda L1 {loss.get('lambda_l1')}, perceptual "
        f"{loss.get('lambda_perceptual')}, GAN {loss.get('lambda_gan')}, image pool {loss.get('pool_size')}",
        f"- {optim.get('constant_iterations')} + {optim.get('decay_iterations')} iterations (constant, then linear "
        f"decay), Adam lr {optim.get('lr')}",
        "",
        "## Metrics",
        "",
    ]
    if metrics is None:
        lines += ["Not evaluated at export; score it with `emca eval ckpt=THIS_FOLDER`."]
    else:
        lines += ["| metric | value | protocol |", "|---|---|---|", *_metric_rows(metrics)]
    lines += [
        "",
        "## Use",
        "",
        "```",
        "emca infer ckpt=THIS_FOLDER source=photo.jpg target=pose.json out=result.png",
        "```",
    ]
    return "\n".join(lines) + "\n"


def newest_sample_sheet(ckpt: Path) -> Path | None:
    """The newest ``samples/iteration_*.png`` of the run a checkpoint (RUN/checkpoints/*.ckpt) belongs to."""
    sheets = sorted((ckpt.resolve().parent.parent / "samples").glob("iteration_*.png"))
    return sheets[-1] if sheets else None


def check_destination(out: Path) -> None:
    """``out`` may be new, an empty folder, or an earlier export (which is then replaced whole); anything else is
    refused, so that a mistyped --out cannot replace a folder of other files."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out '{out}' is a file; give a folder for the exported model.")
    if out.is_dir() and any(out.iterdir()):
        try:
            exported = json.loads((out / EXPORT_CONFIG).read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            exported = False
        if not exported:
            raise DataError(
                f"--out '{out}' is a folder of other files, not an earlier emca export; give a new or empty folder "
                "(an earlier export is replaced whole)."
            )


def export(ckpt: str | Path, out: str | Path, metrics: str | Path | None = None) -> list[Path]:
    """Write the shareable folder of ``ckpt`` into ``out``; returns the files written.

    Every input (checkpoint, metrics, sample sheet) is read and checked first; the folder is then written
    beside ``out`` and moved into place whole, so an interrupted or failed export leaves an earlier one intact.
    """
    ckpt, out = Path(ckpt), Path(out)
    check_destination(out)
    checkpoint, hyper_parameters = read_training_checkpoint(ckpt)
    generator, _ = load_generator(ckpt)  # the config must build, and the weights fit it, before anything is written
    data = hyper_parameters.get("data")
    if not isinstance(data, dict):
        raise CheckpointError(f"'{ckpt}' stores no data config (hyper_parameters.data); it cannot be exported.")
    tensors = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith((GENERATOR_PREFIX, EMA_GENERATOR_PREFIX))
    }
    ema = any(name.startswith(EMA_GENERATOR_PREFIX) for name in tensors)
    parameters = sum(parameter.numel() for parameter in generator.parameters())
    card = model_card(hyper_parameters, parameters, ema, Path(metrics) if metrics else None)
    config = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "model": hyper_parameters["model"], "data": data}
    sheet = newest_sample_sheet(ckpt)
    if sheet is not None:
        card += "\n## Samples\n\nsource | source pose | target pose | generated | target\n\n![samples](samples.png)\n"
    names = [EXPORT_WEIGHTS, EXPORT_CONFIG, *(["samples.png"] if sheet else []), "README.md"]
    try:
        with atomic_directory(out) as staging:
            (staging / EXPORT_WEIGHTS).write_bytes(safetensors_bytes(tensors, metadata={"format": "pt"}))
            (staging / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            if sheet is not None:
                shutil.copyfile(sheet, staging / "samples.png")
            (staging / "README.md").write_text(card, encoding="utf-8")
    except OSError as err:  # a read-only or full disk, a parent that is a file
        raise DataError(f"Cannot write the export beside '{out}': {err.strerror} ('{err.filename}').") from err
    return [out / name for name in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="emca export", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path, help="an emca checkpoint (best.ckpt, last.ckpt or a converted release)")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.add_argument("--metrics", type=Path, default=None, help="an emca eval metrics.json for the model card")
    args = parser.parse_args(argv)
    with user_errors():
        written = export(args.ckpt, args.out, args.metrics)
    print("wrote " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    main()
