"""Pretrained weight files: where they come from, where emca looks for them, and how to get them.

Search order for a file: ``$EMCA_WEIGHTS_DIR`` (or the directory passed in), then
``$TORCH_HOME/hub/checkpoints`` (torch's own cache, default ``~/.cache/torch``). Nothing is
downloaded implicitly: a missing file raises :class:`WeightsError` naming the file, its URL and
where to put it. ``python -m emca.weights download`` fetches every file on a machine with internet,
so an offline cluster can copy the directory.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from emca.errors import WeightsError


@dataclass(frozen=True)
class WeightFile:
    filename: str
    url: str
    used_by: str


WEIGHT_FILES: dict[str, WeightFile] = {
    "vgg19": WeightFile(
        "vgg19-dcbb9e9d.pth",
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "perceptual loss (VGG19 relu1_2)",
    ),
    "alexnet": WeightFile(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "LPIPS (AlexNet backbone)",
    ),
    "vgg16": WeightFile(
        "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "LPIPS (VGG16 backbone)"
    ),
    "inception_torchvision": WeightFile(
        "inception_v3_google-0cc3c7bd.pth",
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        "FID / IS (torchvision Inception-v3, GFLA protocol)",
    ),
    "inception_tf": WeightFile(
        "weights-inception-2015-12-05-6726825d.pth",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        "FID / IS (TF-ported Inception, torch-fidelity)",
    ),
}


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    for candidate in (weights_dir, os.environ.get("EMCA_WEIGHTS_DIR")):
        if candidate:
            dirs.append(Path(candidate).expanduser())
    dirs.append(torch_hub_checkpoints())
    return dirs


def missing_message(name: str, weights_dir: str | os.PathLike | None = None, disable_hint: str = "") -> str:
    entry = WEIGHT_FILES[name]
    looked = ", ".join(f"'{d}'" for d in search_dirs(weights_dir))
    message = (
        f"Pretrained weights '{entry.filename}' for {entry.used_by} were not found (looked in {looked}). "
        f"Download it from {entry.url} (or run `python -m emca.weights download` on a machine with internet) "
        f"and put it in {torch_hub_checkpoints()} or in a directory named by EMCA_WEIGHTS_DIR / "
        f"weights_dir=..."
    )
    return message + (f" {disable_hint}" if disable_hint else "")


def resolve(name: str, weights_dir: str | os.PathLike | None = None, disable_hint: str = "") -> Path:
    """Path of the weight file ``name`` (a key of WEIGHT_FILES); raises WeightsError if absent."""
    if name not in WEIGHT_FILES:
        raise KeyError(f"unknown weight file '{name}'; known: {sorted(WEIGHT_FILES)}")
    for directory in search_dirs(weights_dir):
        path = directory / WEIGHT_FILES[name].filename
        if path.is_file():
            return path
    raise WeightsError(missing_message(name, weights_dir, disable_hint))


def load_state_dict(name: str, weights_dir: str | os.PathLike | None = None, disable_hint: str = "") -> dict:
    """Load a weight file safely (tensors only)."""
    path = resolve(name, weights_dir, disable_hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated download or a file of the wrong kind
        raise WeightsError(
            f"Cannot load pretrained weights '{path}' ({err}). Delete it and download it again from "
            f"{WEIGHT_FILES[name].url}."
        ) from err


def download(names: list[str], target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        entry = WEIGHT_FILES[name]
        destination = target_dir / entry.filename
        if destination.is_file():
            print(f"present  {destination}")
            continue
        print(f"fetching {entry.url}")
        # torch writes to a temporary file and renames it, and checks the hash prefix in the name
        hash_prefix = entry.filename.rsplit("-", 1)[-1].split(".")[0]
        torch.hub.download_url_to_file(entry.url, str(destination), hash_prefix=hash_prefix, progress=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emca.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("download", help="download weight files (default: all)")
    fetch.add_argument("names", nargs="*", choices=[[], *WEIGHT_FILES], default=[])
    fetch.add_argument("--dir", type=Path, default=None, help="target directory (default: torch hub cache)")
    sub.add_parser("list", help="show each file and whether it is found")
    args = parser.parse_args(argv)
    if args.command == "download":
        download(args.names or list(WEIGHT_FILES), args.dir or torch_hub_checkpoints())
    else:
        for name, entry in WEIGHT_FILES.items():
            try:
                where = str(resolve(name))
            except WeightsError:
                where = "MISSING"
            print(f"{name:24s} {entry.filename:45s} {where}")


if __name__ == "__main__":
    main()
