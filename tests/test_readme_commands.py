"""Every command line the README and docs/ show must parse as printed, in the current spellings.

`emca train` / `emca eval` (and their aliases `train.py` / `eval.py`) compose their configs (nothing is
trained); `emca infer` / `emca demo` / `emca animate` parse their options; every flag given to a file tool
(`emca data ...`, `emca export`, ...) must be one its `--help` lists. A doc whose commands drift from the code
fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from emca.animate import parse_options as parse_animate_options
from emca.cli import RENAMED, check_spellings
from emca.commands import COMMANDS
from emca.commands import main as emca_main
from emca.demo import parse_options as parse_demo_options
from emca.infer import parse_options as parse_infer_options

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "data" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# spellings that were renamed (emca.cli.RENAMED names the new ones) and the module-path entry points that the
# one `emca` command replaced in the docs
OLD_SPELLINGS = [
    *sorted({rf"\b{key}=" for renames in RENAMED.values() for key in renames}),
    r"--base-ckpt\b",
    r"python -m emca\b",
]


def command_lines(path: Path) -> list[str]:
    """Every command line inside a document's bash / sh / unlabelled fenced code blocks."""
    lines = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def emca_commands() -> list[tuple[str, str, list[str]]]:
    """(document, subcommand, arguments) of every `emca SUBCOMMAND ...`, `train.py ...` or `eval.py ...`."""
    found = []
    for path in DOCUMENTS:
        for line in command_lines(path):
            words = shlex.split(line)
            for index, word in enumerate(words):
                if Path(word).name == "emca" and index + 1 < len(words):
                    found.append((path.name, words[index + 1], words[index + 2 :]))
                    break
                if Path(word).name in ("train.py", "eval.py"):
                    found.append((path.name, Path(word).stem, words[index + 1 :]))
                    break
    return found


COMMAND_LINES = emca_commands()


def test_the_docs_show_commands_of_each_kind() -> None:
    shown = {name for _, name, _ in COMMAND_LINES}
    assert {"train", "eval", "infer", "demo", "data", "export"} <= shown
    assert ("README.md", "train", []) in COMMAND_LINES  # the quick start's main job


@pytest.mark.parametrize("path", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_docs_use_only_current_spellings(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    used = [pattern for pattern in OLD_SPELLINGS if re.search(pattern, text)]
    assert not used, f"{path.name} uses old spellings: {used}"


def flags_of(name: str, arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The `--help` text of `emca NAME`, or of its subcommand when the first argument names one."""

    def help_text(*words: str) -> str:
        with pytest.raises(SystemExit):
            emca_main([name, *words, "--help"])
        return capsys.readouterr().out

    text = help_text()
    subcommands = re.search(r"\{([\w,-]+)\}", text)
    if subcommands and arguments and arguments[0] in subcommands.group(1).split(","):
        return help_text(arguments[0])
    return text


@pytest.mark.parametrize(
    ("document", "name", "arguments"),
    COMMAND_LINES,
    ids=[f"{document}: {name} {' '.join(arguments)}"[:120] for document, name, arguments in COMMAND_LINES],
)
def test_doc_command_parses(document: str, name: str, arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert name in COMMANDS, f"{document}: `emca {name}` is not a command"
    if name in ("train", "eval"):
        check_spellings(name, arguments)
        overrides = [argument for argument in arguments if argument != "-m"]
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
            cfg = compose(name, overrides=overrides, return_hydra_config=True)
        assert cfg is not None
    elif name == "infer":
        parse_infer_options(arguments)
    elif name == "demo":
        parse_demo_options(arguments)
    elif name == "animate":
        parse_animate_options(arguments)
    else:
        known = flags_of(name, arguments, capsys)
        unknown = [word for word in arguments if word.startswith("--") and word.split("=")[0] not in known]
        assert not unknown, f"{document}: `emca {name}` has no flag {unknown}"
