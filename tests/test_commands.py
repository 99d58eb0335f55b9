"""The ``emca`` command: one entry point whose help lists every subcommand, each of which answers ``--help``;
old spellings fail naming the new one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emca.commands import COMMANDS, main


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``emca ARGUMENTS`` in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(arguments))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_help_lists_every_command_without_loading_torch() -> None:
    # a fresh interpreter: whether torch is loaded is what makes `emca --help` answer at once
    script = "import sys\nfrom emca.commands import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    script += "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)
    assert result.stdout.rstrip().endswith("torch not loaded")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, name, "--help")
    assert status == 0, err
    assert f"emca {name}" in out, out[:500]


def test_no_command_prints_the_list_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys)
    assert status == 2 and "commands:" in out


def test_a_mistyped_command_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "trian")
    assert status == 2 and "'trian' is not a command" in err and "emca train" in err


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (("train", "ckpt_path=run/last.ckpt"), "use resume="),
        (("train", "+init_ckpt=model.ckpt"), "use ckpt="),
        (("train", "experiment=personalize", "base_ckpt=base.ckpt"), "use ckpt="),
        (("train", "subject_dir=me/"), "use data.root="),
        (("eval", "ckpt_path=best.ckpt"), "use ckpt="),
        (("eval", "out_dir=results"), "use out="),
    ],
)
def test_old_spellings_fail_naming_the_new_one(
    arguments: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, *arguments)
    old = arguments[-1].split("=")[0].lstrip("+")
    assert status == 2 and f"'{old}=' was renamed" in err and expected in err, err
    assert "Traceback" not in err


def test_an_old_flag_fails_naming_the_new_one(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "personalize", "generate", "--base-ckpt", "base.ckpt")
    assert status == 2 and "--base-ckpt was renamed; use --ckpt" in err
