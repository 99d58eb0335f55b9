"""Hostile and damaged checkpoint / adapter files: refused with one paragraph, nothing run, no file touched.

A checkpoint made only of tensors and plain dicts passes ``weights_only=True``; what it names in its stored
configs must still never be called. Every surface that reads a checkpoint is driven with each kind of hostile
config (a ``_target_`` that loads a pickle payload, opens a file for writing, saves an array, writes text; a
``_target_`` nested inside options), and the test asserts the refusal names the file and the field, that no
traceback is printed, and that no file under the test folder appeared or changed.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_training import REPO, moved_adapter
from hydra import compose, initialize_config_dir

from emca.cli import user_errors
from emca.io import safe_torch_load


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def base(tiny_run_checkpoint: Path) -> Path:
    return tiny_run_checkpoint


@pytest.fixture()
def bait(tmp_path: Path) -> dict[str, Path]:
    """Files a payload would create or change, and a pickle payload that a nested torch.load would run."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    marker = tmp_path / "payload_ran"
    payload = tmp_path / "payload.ckpt"
    torch.save({"payload": _RunsCode(marker)}, payload)
    return {"victim": victim, "marker": marker, "payload": payload, "array": tmp_path / "written.npy"}


def hostile_configs(bait: dict[str, Path]) -> dict[str, tuple[str, str, Any]]:
    """name -> (config section, the field the refusal must name, the hostile value)."""
    return {
        "torch_load_payload": (
            "model.attention",
            "model.attention._target_",
            {"_target_": "torch.load", "f": str(bait["payload"]), "weights_only": False},
        ),
        "open_for_writing": (
            "model.generator",
            "model.generator._target_",
            {"_target_": "builtins.open", "file": str(bait["victim"]), "mode": "w"},
        ),
        "numpy_save": ("data", "data._target_", {"_target_": "numpy.save", "file": str(bait["array"]), "arr": [1]}),
        "path_write_text": (
            "data",
            "data._target_",
            {"_target_": "pathlib.Path.write_text", "_args_": [str(bait["victim"]), "pwned"]},
        ),
        "nested_target": (
            "model.generator.norm",
            "model.generator.norm._target_",
            {"_target_": "builtins.open", "file": str(bait["victim"]), "mode": "w"},
        ),
    }


def with_hostile(checkpoint: dict[str, Any], section: str, value: Any) -> dict[str, Any]:
    hostile = copy.deepcopy(checkpoint)
    *parents, leaf = section.split(".")
    container = hostile["hyper_parameters"]
    for name in parents:
        container = container[name]
    container[leaf] = value
    return hostile


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def refusal(call: Callable[[], Any], capsys: pytest.CaptureFixture) -> str:
    """Run ``call`` as the command-line tools do; it must exit 2 with one message and no traceback."""
    with pytest.raises(SystemExit) as exit_info, user_errors():
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def eval_call(checkpoint: Path, out_dir: Path) -> Callable[[], Any]:
    from emca.evaluate import evaluate

    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("eval", overrides=[f"ckpt={checkpoint}", f"out={out_dir}", "metrics=[ssim]"])
    return lambda: evaluate(cfg)


def infer_call(checkpoint: Path, out_dir: Path) -> Callable[[], Any]:
    from emca.infer import main

    return lambda: main([f"ckpt={checkpoint}", "source=none.png", "target=none.json", f"out={out_dir / 'r.png'}"])


def figures_call(checkpoint: Path, out_dir: Path) -> Callable[[], Any]:
    from emca.figures import main

    return lambda: main(["--ckpt", str(checkpoint), "--out", str(out_dir)])


def personalize_call(checkpoint: Path, out_dir: Path) -> Callable[[], Any]:
    from emca.personalize.module import PersonalizationModule

    model = {
        "base_ckpt": str(checkpoint),
        "moa": {"token_grid": [2, 2], "router_hidden": 8, "router_init_prior": 0.9},
        "loss": {"lambda_l1": 1.0, "lambda_perceptual": 0.0, "lambda_router": 1.0, "lambda_gan": 1.0},
    }
    return lambda: PersonalizationModule(model=model)


SURFACES = {"eval": eval_call, "infer": infer_call, "figures": figures_call, "personalize": personalize_call}
# the data config is read by the tools that load a test pair from the checkpoint's dataset
DATA_READERS = {"eval", "figures"}
MODEL_HOSTILE = ["torch_load_payload", "open_for_writing", "nested_target"]
DATA_HOSTILE = ["numpy_save", "path_write_text"]
CASES = [(surface, hostile) for surface in sorted(SURFACES) for hostile in MODEL_HOSTILE] + [
    (surface, hostile) for surface in sorted(DATA_READERS) for hostile in DATA_HOSTILE
]


@pytest.mark.parametrize(("surface", "hostile"), CASES)
def test_hostile_checkpoint_is_refused_and_touches_nothing(
    surface: str, hostile: str, base: Path, bait: dict[str, Path], tmp_path: Path, capsys
) -> None:
    section, field, value = hostile_configs(bait)[hostile]
    evil = tmp_path / "evil.ckpt"
    torch.save(with_hostile(safe_torch_load(base), section, value), evil)
    before = snapshot(tmp_path)
    message = refusal(SURFACES[surface](evil, tmp_path / "out"), capsys)
    assert str(evil) in message and field in message
    assert "registry" in message
    assert not bait["marker"].exists() and not bait["array"].exists()
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before


def test_hostile_checkpoint_through_the_command_line_prints_no_traceback(
    base: Path, bait: dict[str, Path], tmp_path: Path
) -> None:
    section, field, value = hostile_configs(bait)["torch_load_payload"]
    evil = tmp_path / "evil.ckpt"
    torch.save(with_hostile(safe_torch_load(base), section, value), evil)
    result = subprocess.run(
        [sys.executable, "-m", "emca.infer", f"ckpt={evil}", "source=a.png", "target=b.json", "out=r.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert field in result.stderr and "Traceback" not in result.stderr
    assert not bait["marker"].exists()


def test_unknown_option_and_injected_argument_are_refused(base: Path, tmp_path: Path, capsys) -> None:
    checkpoint = safe_torch_load(base)
    for section, value, expected in (
        ("model.generator.colour", 3, "model.generator.colour"),
        ("model.generator.attention_factory", "os.system", "emca sets it itself"),
        ("model.generator.ngf", [1, {"x": torch.ones(1)}], "'model.generator.ngf[1].x': expected a plain value"),
    ):
        evil = tmp_path / "evil.ckpt"
        torch.save(with_hostile(checkpoint, section, value), evil)
        assert expected in refusal(infer_call(evil, tmp_path), capsys)


def test_adapter_with_a_payload_or_hostile_base_config_runs_nothing(
    base: Path, bait: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from emca.personalize.adapter import load_personalized_generator

    adapter = moved_adapter(base, tmp_path / "adapter.pt")
    content = safe_torch_load(adapter)
    content["payload"] = _RunsCode(bait["marker"])
    evil = tmp_path / "evil_adapter.pt"
    torch.save(content, evil)
    assert "could run code" in refusal(lambda: load_personalized_generator(base, evil), capsys)

    # the adapter's record of its base is compared, never built
    content = safe_torch_load(adapter)
    content["base"]["model"]["attention"] = hostile_configs(bait)["torch_load_payload"][2]
    hostile_record = tmp_path / "hostile_record.pt"
    torch.save(content, hostile_record)
    before = snapshot(tmp_path)
    load_personalized_generator(base, hostile_record)
    assert snapshot(tmp_path) == before and not bait["marker"].exists()


def _damaged(base: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say)."""
    data = base.read_bytes()
    files = {
        "empty": (b"", "empty (0 bytes)"),
        "random_bytes": (os.urandom(4096), "damaged or truncated"),
        # a pickle opcode on an empty stack: the unpickler fails with IndexError, as some random files do
        "bad_pickle_stream": (b"\x80\x02s.", "damaged or truncated"),
        "truncated_half": (data[: len(data) // 2], "damaged or truncated"),
        "truncated_tail": (data[:-10], "damaged or truncated"),
    }
    written = {}
    for name, (content, expected) in files.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(content)
        written[name] = (path, expected)
    return written


@pytest.mark.parametrize("name", ["empty", "random_bytes", "bad_pickle_stream", "truncated_half", "truncated_tail"])
def test_damaged_checkpoint_is_named_as_damaged(name: str, base: Path, tmp_path: Path, capsys) -> None:
    path, expected = _damaged(base, tmp_path)[name]
    message = refusal(infer_call(path, tmp_path), capsys)
    assert str(path) in message and expected in message
    assert "could run code" not in message


def test_damaged_adapter_is_named(base: Path, tmp_path: Path, capsys) -> None:
    from emca.personalize.adapter import load_personalized_generator

    adapter = moved_adapter(base, tmp_path / "adapter.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(adapter.read_bytes()[:-10])
    message = refusal(lambda: load_personalized_generator(base, truncated), capsys)
    assert "truncated.pt" in message and "damaged or truncated" in message


def test_checkpoint_that_is_a_directory(base: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "folder.ckpt").mkdir()
    assert "is a directory" in refusal(infer_call(tmp_path / "folder.ckpt", tmp_path), capsys)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.pop("state_dict"), "field 'state_dict'"),
        (lambda c: c.__setitem__("state_dict", {"generator.x": "not a tensor"}), "field 'state_dict'"),
        (lambda c: c.pop("hyper_parameters"), "hyper_parameters.model"),
        (lambda c: c["hyper_parameters"].__setitem__("data", "market"), "hyper_parameters.data"),
        (
            lambda c: c.__setitem__("state_dict", {k: v for k, v in c["state_dict"].items() if "generator" not in k}),
            "no generator weights",
        ),
    ],
    ids=["no_state_dict", "state_dict_not_tensors", "no_hyper_parameters", "data_not_a_dict", "no_generator"],
)
def test_checkpoint_missing_a_field_is_named(change, expected: str, base: Path, tmp_path: Path, capsys) -> None:
    content = safe_torch_load(base)
    change(content)
    path = tmp_path / "incomplete.ckpt"
    torch.save(content, path)
    message = refusal(infer_call(path, tmp_path), capsys)
    assert str(path) in message and expected in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base", None),
        ("moa.router_hidden", "wide"),
        ("moa.token_grid", [2]),
        ("moa.router_init_prior", 2.0),
        ("state", {"x": 1}),
    ],
)
def test_adapter_with_a_bad_field_is_named(field: str, value: Any, base: Path, tmp_path: Path, capsys) -> None:
    from emca.personalize.adapter import load_personalized_generator

    content = safe_torch_load(moved_adapter(base, tmp_path / "adapter.pt"))
    *parents, leaf = field.split(".")
    container = content
    for name in parents:
        container = container[name]
    if value is None:
        del container[leaf]
    else:
        container[leaf] = value
    path = tmp_path / "bad_adapter.pt"
    torch.save(content, path)
    message = refusal(lambda: load_personalized_generator(base, path), capsys)
    assert str(path) in message and f"field '{field}'" in message
