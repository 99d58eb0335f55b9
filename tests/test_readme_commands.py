"""Every `train.py`, `eval.py` and `emca.infer` command line the README shows must parse as printed.

The configs are composed (nothing is trained): a README whose overrides drift from `conf/` fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from emca.infer import parse_options

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[tuple[str, list[str]]]:
    """(program, arguments) of every command line inside the README's fenced code blocks."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            words = shlex.split(line) if line and not line.startswith("#") else []
            for index, word in enumerate(words):
                program = Path(word).name
                if program in ("train.py", "eval.py") or (program == "emca.infer" and words[index - 1] == "-m"):
                    commands.append((program, [w for w in words[index + 1 :] if w != "-m"]))
                    break
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_each_kind() -> None:
    assert {program for program, _ in COMMANDS} == {"train.py", "eval.py", "emca.infer"}
    assert ("train.py", []) in COMMANDS  # the quick start's main job


@pytest.mark.parametrize(("program", "arguments"), COMMANDS, ids=[" ".join(a) or p for p, a in COMMANDS])
def test_readme_command_parses(program: str, arguments: list[str]) -> None:
    if program == "emca.infer":
        parse_options(arguments)
        return
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(program.removesuffix(".py"), overrides=arguments, return_hydra_config=True)
    assert cfg is not None
