"""The README's code: Python blocks run against a tiny trained run; shell commands use real flags."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from sidrec.cli import COMMANDS
from sidrec.cli import main as cli_main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^\s*```(\w+)\n(.*?)^\s*```", re.M | re.S)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(README.read_text()) if kind == lang]


def shell_commands() -> list[list[str]]:
    """Each `sidrec ...` command in the README's bash blocks, as argv (comments and continuations joined)."""
    out = []
    for body in blocks("bash"):
        text = re.sub(r"\\\n\s*", " ", body)
        for line in text.splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv[:1] == ["sidrec"]:
                    out.append(argv[1:])
    return out


def test_readme_has_the_two_setup_commands():
    bash = blocks("bash")
    assert any("sidrec quickstart" in b for b in bash)
    assert any("python -m pytest" in b for b in bash)


@pytest.mark.parametrize("argv", shell_commands(), ids=lambda a: " ".join(a[:2]))
def test_readme_commands_use_real_flags(argv, capsys):
    assert argv[0] in COMMANDS, f"README uses `sidrec {argv[0]}`, which the CLI does not have"
    with pytest.raises(SystemExit):
        cli_main([argv[0], "--help"])
    help_text = capsys.readouterr().out
    flags = [a.split("=")[0] for a in argv[1:] if a.startswith("-")]
    if argv[0] in ("tokenize", "train", "sasrec"):
        return  # these accept every config field as a flag; presets and fields are tested in test_configs.py
    for flag in flags:
        assert flag in help_text, f"`sidrec {argv[0]}` has no option {flag}"


def test_readme_python_blocks_run(trained_run, tmp_path, monkeypatch):
    code = blocks("python")
    assert code, "README has no Python example"
    run = tmp_path / "runs" / "quickstart"
    shutil.copytree(trained_run, run)
    monkeypatch.chdir(tmp_path)
    for body in code:
        exec(compile(body, str(README), "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "runs" / "release" / "catalog.jsonl").is_file()
