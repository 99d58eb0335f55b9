"""The full-size models end to end, where only they reach: `emca train experiment=xinggan_deepfashion` (the official
XingGAN, ngf 64 and 9 blocks, with the official losses, VGG19 read from a fake weight file) for two iterations on
256x176 data, and `experiment=xinggan_deepfashion512` (the chunked backend, 512x352) for one, each followed by
`emca eval` on its checkpoint. The data is a small fake GFLA / PIDM release run through `emca data prepare` at both
sizes, as a user would. Both train with the precision `trainer=cpu` chooses (bf16 autocast where the CPU computes
it natively, else fp32). On the 2-core development machine they take about 20 s and a minute.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fake_data import random_image, write_fake_vgg19
from PIL import Image

from emca.checkpoint import load_generator
from emca.commands import main as emca_main
from emca.networks.attention import ChunkedAttention

RAW_HIGHRES = (330, 225)  # (H, W): the release's 1101x750 aspect, small
PEOPLE = {"train": ["id_00000080", "id_00000081"], "test": ["id_00000002"]}
OFFICIAL_GENERATOR_PARAMETERS = 44_844_634  # XingGAN's DeepFashion release


def write_gfla_release(raw: Path) -> None:
    """Two images per person under img/, their 256x256-frame pose files, the lists and all same-person pairs."""
    rng = np.random.default_rng(0)
    for split, people in PEOPLE.items():
        paths = []
        for person in people:
            views = [f"MEN/Denim/{person}/01_{view}.jpg" for view in ("1_front", "2_side")]
            for relative in views:
                (raw / "img" / relative).parent.mkdir(parents=True, exist_ok=True)
                random_image(rng, *RAW_HIGHRES).save(raw / "img" / relative)
                pose = (raw / "pose" / relative).with_suffix(".txt")
                pose.parent.mkdir(parents=True, exist_ok=True)
                x = rng.integers(45, 210, 18)  # inside the 256x176 crop of the 256x256 frame
                np.savetxt(pose, np.stack([x, rng.integers(5, 250, 18)], axis=1), fmt="%d")
            paths.append(views)
        (raw / f"{split}.lst").write_text("".join(f"img/{p}\n" for views in paths for p in views))
        (raw / f"{split}_pairs.txt").write_text("".join(f"img/{a},img/{b}\nimg/{b},img/{a}\n" for a, b in paths))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The prepared data; removed afterwards, as each run's two checkpoints take 1.2 GB and pytest keeps the
    temporary folders of its last three sessions."""
    workdir = tmp_path_factory.mktemp("full_size")
    write_gfla_release(workdir / "raw")
    for size in ("256x176", "512x352"):
        with pytest.raises(SystemExit) as exit_info:
            emca_main(["data", "prepare", "deepfashion", str(workdir / "raw"), str(workdir / size), "--size", size])
        assert exit_info.value.code == 0
    write_fake_vgg19(workdir / "torch_home")
    yield workdir
    shutil.rmtree(workdir)


def train_and_evaluate(workdir: Path, size: str, experiment: str, iterations: int, monkeypatch) -> Path:
    """`emca train` then `emca eval` as a user types them; returns the run folder."""
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch_home"))
    monkeypatch.delenv("EMCA_WEIGHTS_DIR", raising=False)
    run = workdir / f"run_{size}"
    with pytest.raises(SystemExit) as exit_info:
        emca_main([
            "train", f"experiment={experiment}", f"data.root={workdir / size}", f"hydra.run.dir={run}",
            "trainer.accelerator=cpu", "trainer.precision=${emca_cpu_precision:}", "data.batch_size=1",
            "data.num_workers=0", "data.pin_memory=false", "data.val_subset=1",
            f"model.optim.constant_iterations={iterations}", "model.optim.decay_iterations=0",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
        ])  # fmt: skip
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit) as exit_info:
        emca_main(["eval", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "metrics=[ssim,mask_ssim,l1,psnr]",
                   "max_pairs=1", f"out={run / 'eval'}", f"hydra.run.dir={run / 'eval_hydra'}"])  # fmt: skip
    assert exit_info.value.code == 0
    return run


def check_run(run: Path, height: int, width: int, iterations: int) -> None:
    logged = pd.read_csv(next(run.rglob("metrics.csv")))
    perceptual = logged["train/perceptual"].dropna()
    assert len(perceptual) == iterations and (perceptual > 0).all() and np.isfinite(perceptual).all()
    generator, hyper = load_generator(run / "checkpoints" / "last.ckpt")
    assert sum(p.numel() for p in generator.parameters()) == OFFICIAL_GENERATOR_PARAMETERS
    assert (hyper["data"]["height"], hyper["data"]["width"]) == (height, width)
    report = json.loads((run / "eval" / "metrics.json").read_text())
    assert {"ssim", "mask_ssim", "l1", "psnr"} <= set(report["metrics"])
    assert -1 <= report["metrics"]["ssim"] <= 1 and report["metrics"]["l1"] > 0
    images = sorted((run / "eval" / "images").glob("*.png"))
    assert len(images) == 1  # max_pairs=1
    with Image.open(images[0]) as image:
        assert image.size == (width, height)


@pytest.mark.slow
def test_official_xinggan_two_iterations_at_256x176_then_eval(prepared: Path, monkeypatch) -> None:
    run = train_and_evaluate(prepared, "256x176", "xinggan_deepfashion", 2, monkeypatch)
    check_run(run, 256, 176, 2)
    shutil.rmtree(run)  # before the 512x352 run writes its own 1.2 GB


@pytest.mark.slow
def test_xinggan_at_512x352_with_the_chunked_backend_then_eval(prepared: Path, monkeypatch) -> None:
    run = train_and_evaluate(prepared, "512x352", "xinggan_deepfashion512", 1, monkeypatch)
    check_run(run, 512, 352, 1)
    generator, _ = load_generator(run / "checkpoints" / "last.ckpt")
    assert any(isinstance(module, ChunkedAttention) for module in generator.modules())
    shutil.rmtree(run)
