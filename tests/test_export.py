"""python -m emca.export: a shareable folder (safetensors, config.json, model card) that every loader accepts,
and that cannot make emca run code."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_training import tiny_checkpoint
from PIL import Image
from safetensors.torch import load_file, save_file

from emca.checkpoint import load_generator
from emca.data.synthetic import render_identity
from emca.errors import CheckpointError, DataError, OutputError
from emca.export import export, main
from emca.infer import main as infer_main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"), "model.ema_decay=0.5")


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exported") / "model"
    main([str(checkpoint), "--out", str(folder)])
    return folder


def test_folder_holds_the_generator_and_its_ema_and_loads_as_the_checkpoint(checkpoint: Path, exported: Path) -> None:
    assert {path.name for path in exported.iterdir()} == {
        "model.safetensors",
        "config.json",
        "README.md",
        "samples.png",
    }
    tensors = load_file(exported / "model.safetensors")
    assert any(name.startswith("generator.") for name in tensors)
    assert any(name.startswith("generator_ema.module.") for name in tensors)
    assert not any(name.startswith(("discriminators.", "loss.")) for name in tensors)
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == "emca-model" and config["version"] == 1
    assert config["model"]["generator"]["_target_"] == "emca.networks.generator.XingGenerator"

    from_checkpoint, hyper_parameters = load_generator(checkpoint)
    from_folder, folder_parameters = load_generator(exported)
    assert folder_parameters["data"] == hyper_parameters["data"]
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.rand(2, 3, 32, 16, generator=generator) * 2 - 1, *torch.rand(2, 2, 18, 32, 16, generator=generator))
    with torch.no_grad():
        assert torch.equal(from_folder(*inputs), from_checkpoint(*inputs))  # both the EMA generator
        raw, _ = load_generator(exported, prefer_ema=False)
        assert not torch.equal(raw(*inputs), from_folder(*inputs))

    card = (exported / "README.md").read_text()
    parameters = sum(p.numel() for p in from_checkpoint.parameters())
    assert f"{parameters:,} parameters" in card and "32x16 images" in card
    assert "Not evaluated at export" in card and "![samples](samples.png)" in card


def test_model_card_takes_the_eval_report(checkpoint: Path, tmp_path: Path) -> None:
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps({"protocol": "patn", "metrics": {"ssim": 0.5, "fid": 12.25}}))
    export(checkpoint, tmp_path / "model", metrics=report)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "| ssim | 0.5000 | patn |" in card and "| fid | 12.2500 | patn |" in card


def test_infer_runs_from_the_exported_folder(exported: Path, tmp_path: Path) -> None:
    (image, keypoints), (_, target) = render_identity(seed=3, identity=0, num_poses=2, height=32, width=16)
    Image.fromarray(image).save(tmp_path / "source.png")
    for name, points in (("source", keypoints), ("target", target)):
        xy = [[int(c), int(r)] if r >= 0 else None for r, c in points]
        (tmp_path / f"{name}.json").write_text(json.dumps({"keypoints": xy, "height": 32, "width": 16}))
    out = tmp_path / "result.png"
    infer_main(
        [
            f"ckpt={exported}",
            f"source={tmp_path / 'source.png'}",
            f"source_pose={tmp_path / 'source.json'}",
            f"target={tmp_path / 'target.json'}",
            f"out={out}",
        ]
    )
    with Image.open(out) as result:
        assert result.size == (16, 32) and np.asarray(result).std() > 0


def test_hostile_or_damaged_folders_are_refused(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    save_file(load_file(exported / "model.safetensors"), folder / "model.safetensors")
    config = json.loads((exported / "config.json").read_text())
    config["model"]["generator"]["_target_"] = "os.system"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model.generator._target_.*'os.system' is not one of emca's"):
        load_generator(folder)

    config["model"]["generator"]["_target_"] = "emca.networks.generator.XingGenerator"
    config["model"]["generator"]["ngf"] = {"_target_": "builtins.exec"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not allowed inside options"):
        load_generator(folder)

    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors' is not a readable safetensors file"):
        load_generator(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json' is not valid JSON"):
        load_generator(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="a directory without .config.json."):
        load_generator(folder)


def test_hub_repository_ids_download_only_the_safe_files(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hf://OWNER/NAME@REV asks huggingface_hub for the weights, config and card only, then loads the folder."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    asked = {}

    def snapshot_download(repo_id: str, revision: str | None, allow_patterns: list[str]) -> str:
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(exported)  # stands in for the download: the Hub is not reachable from the test machine

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    from_hub, _ = load_generator("hf://someone/xinggan-market@v1")
    assert asked == {
        "repo_id": "someone/xinggan-market",
        "revision": "v1",
        "allow_patterns": ["model.safetensors", "config.json", "README.md"],
    }
    from_folder, _ = load_generator(exported)
    for name, tensor in from_folder.state_dict().items():
        assert torch.equal(tensor, from_hub.state_dict()[name])

    def offline(**_: object) -> str:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"hf://someone/x': the download from the Hugging Face Hub failed"):
        load_generator("hf://someone/x")


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_an_export_killed_midway_leaves_the_previous_one_intact(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    export(checkpoint, out)
    before = digests(out)
    # the second export is killed (SIGKILL: no cleanup runs) after its weights are written, before its card
    script = (
        "import os, signal, sys\n"
        "import emca.export as export_module\n"
        "real_write = export_module.Path.write_bytes\n"
        "def write_then_die(self, data):\n"
        "    real_write(self, data)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "export_module.Path.write_bytes = write_then_die\n"
        "export_module.main(sys.argv[1:])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(checkpoint), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert digests(out) == before
    load_generator(out)  # still loads


def test_bad_inputs_and_destinations_are_refused_before_anything_is_written(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    export(checkpoint, out)
    before = digests(out)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="is not an emca eval metrics.json"):
        export(checkpoint, out, tmp_path / "metrics.json")
    assert digests(out) == before  # a mistyped --metrics replaced weights and config before
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DataError, match="is a file; give a folder"):
        export(checkpoint, tmp_path / "a_file")
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="a folder of other files, not an earlier emca export"):
        export(checkpoint, documents)
    assert (documents / "thesis.tex").read_text() == "years of work"


def test_an_unwritable_destination_is_a_message(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")  # unwritable even for root, which CI runs as
    with pytest.raises(OutputError, match="a_file' is a file, not a folder"):
        export(checkpoint, tmp_path / "a_file" / "model")
