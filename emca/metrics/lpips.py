"""LPIPS (Zhang et al. 2018) from the ``lpips`` package, built without any download.

``lpips.LPIPS`` normally asks torchvision for the ImageNet backbone, which downloads it. Here the
trunk is built randomly initialised (``pnet_rand=True``), the calibrated linear heads come from the
lpips wheel itself, and the torchvision backbone file (``alexnet-owt-7be5be79.pth`` or
``vgg16-397923af.pth``) is loaded through :mod:`emca.weights`, which names the file, its URL and
where to put it when it is missing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lpips
import torch

from emca import weights
from emca.errors import WeightsError

# lpips trunk name -> emca.weights entry of the torchvision backbone it slices
BACKBONE_WEIGHTS = {"alex": "alexnet", "vgg": "vgg16"}


def load_lpips(
    net: str = "alex",
    version: str = "0.1",
    weights_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    disable_hint: str = "",
) -> lpips.LPIPS:
    """An eval-mode ``lpips.LPIPS`` whose trunk holds the torchvision ImageNet weights; its ``weight_file``
    names the files it was built from, for reports.

    Raises:
        WeightsError: the backbone file is missing or unreadable.
    """
    assert net in BACKBONE_WEIGHTS, net  # checked with the protocol (emca.protocol)
    trunk_path = weights.resolve(BACKBONE_WEIGHTS[net], weights_dir, disable_hint)
    backbone = weights.load_state_dict(BACKBONE_WEIGHTS[net], weights_dir, disable_hint)
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version=version, pnet_rand=True, verbose=False)
    # the trunk's slices keep torchvision's layer indices: net.slice<k>.<index>.<param> = features.<index>.<param>
    trunk = {}
    for name in model.net.state_dict():
        _slice, index, param = name.split(".")
        source = f"features.{index}.{param}"
        if source not in backbone:
            raise WeightsError(
                f"The {BACKBONE_WEIGHTS[net]} weight file has no '{source}' tensor needed by LPIPS ({net}); "
                f"it is not the torchvision file {weights.WEIGHT_FILES[BACKBONE_WEIGHTS[net]].filename}."
            )
        trunk[name] = backbone[source]
    try:
        model.net.load_state_dict(trunk)
    except RuntimeError as err:
        raise WeightsError(f"The {BACKBONE_WEIGHTS[net]} weight file does not fit LPIPS ({net}): {err}") from err
    # what the report names: the trunk file and where it was found, and the linear layers the lpips package ships
    model.weight_file = {
        "weights_file": str(trunk_path),
        "weights_sha256": weights.file_sha256(trunk_path),
        "linear_layers_file": str(Path(lpips.__file__).parent / "weights" / f"v{version}" / f"{net}.pth"),
    }
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def lpips_distance(model: lpips.LPIPS, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """LPIPS of each pair of uint8 (B, 3, H, W) images (scaled to [-1, 1] as GFLA does) -> (B,) float64."""
    device = next(model.parameters()).device
    generated = generated.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    reference = reference.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    return model(generated, reference).flatten().to(torch.float64)
