"""``emca``, the one command: ``emca COMMAND ...`` runs a subcommand, ``emca --help`` lists them.

One grammar: commands that compose a config (train, eval, infer, demo) take ``key=value`` overrides; file
tools take flags. The same thing has the same name everywhere: ``ckpt`` is any model input (checkpoint,
exported folder, ``hf://OWNER/NAME``), ``resume`` continues a run, ``data.root`` is a dataset's folder,
``out`` is what a command writes.

This module imports nothing heavy: a subcommand's module is imported only when it runs, so ``emca --help``
answers without loading torch.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # its main(argv) runs the command
    summary: str  # one line of `emca --help`


COMMANDS: dict[str, Command] = {
    "train": Command("emca.train", "train a model, or personalise one (experiment=personalize): key=value"),
    "eval": Command("emca.evaluate", "score a model or a folder of images under a protocol (PATN, GFLA): key=value"),
    "infer": Command("emca.infer", "pose transfer on your own photos: ckpt= source= target= out="),
    "demo": Command("emca.demo", "a web page: upload a photo, pick a pose, see the result: ckpt="),
    "animate": Command(
        "emca.animate", "a video of a photo's person moving as a driving video's: ckpt= source= driving="
    ),
    "data": Command("emca.data.__main__", "datasets: synthetic, prepare, pairs, openpose, validate, from-video"),
    "pose": Command("emca.pose.__main__", "keypoints of your photos with MediaPipe Pose: extract"),
    "personalize": Command("emca.personalize.__main__", "apply a MoA adapter: generate, router-maps"),
    "export": Command("emca.export", "write a model as safetensors, config and model card (the Hub layout)"),
    "convert": Command("emca.convert", "turn the official XingGAN release into an emca checkpoint"),
    "weights": Command("emca.weights", "pretrained weight files (VGG19, AlexNet, Inception): list, add, download"),
    "bench": Command("emca.bench.__main__", "speed and memory benchmarks, the GPU report"),
    "figures": Command("emca.figures", "attention and fusion-mask figures of one test pair"),
    "ablation": Command("emca.ablation", "the table and chart of an ablation sweep"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(
        [
            "usage: emca COMMAND [ARGUMENTS ...]",
            "",
            "Pose-guided person image generation: XingGAN, XingGAN++, MoA personalisation.",
            "",
            "commands:",
            *lines,
            "",
            "emca COMMAND --help describes one. With no arguments, `emca train` trains the embedded default",
            "(synthetic data, CPU).",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``emca`` with ``argv`` (``sys.argv[1:]`` when None); exits with the command's status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if arguments else 2)
    name, rest = arguments[0], arguments[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean `emca {close[0]}`?" if close else ""
        print(f"emca: '{name}' is not a command.{hint} `emca --help` lists them.", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[name].module)
    sys.exit(module.main(rest) or 0)


if __name__ == "__main__":
    main()
