"""Evaluate generated person images. `python eval.py` scores the newest training checkpoint (PATN protocol).

Examples:
    python eval.py ckpt_path=outputs/train/<run>/checkpoints/best.ckpt         # generate + score
    python eval.py ckpt_path=... eval=gfla data=deepfashion                     # GFLA protocol
    python eval.py generated_dir=results/ data=market data.root=/data/market   # any method's images
    python eval.py generated_dir=results/ metrics=[ssim,psnr]                   # no pretrained weights
    python eval.py ... fid_backbone=tf fid_reference=test resize=bicubic
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from emca.cli import user_errors


# absolute, so that the entry point also works when imported (tests run it in-process)
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent / "conf"), config_name="eval")
def main(cfg: DictConfig) -> None:
    # imported here, not at the top, so `python eval.py --help` answers without loading torch
    from emca.evaluate import evaluate

    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
