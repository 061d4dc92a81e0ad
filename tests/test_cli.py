"""The command line as a user meets it: every command is listed, and help works."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlvr_lens.cli import COMMAND_MODULES, build_parser, main


def test_every_command_module_registers():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    registered = set(subparsers.choices)
    assert len(registered) == len(COMMAND_MODULES)


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: rlvr-lens" in capsys.readouterr().out


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_command_help_exits_0(module):
    name = module.rsplit(".", 1)[1]
    done = subprocess.run([sys.executable, "-m", "rlvr_lens.cli", name, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("command", ["weights", "tokens"])
def test_failed_command_leaves_no_empty_out_directory(tmp_path, capsys, tiny_pair, command):
    """The base and the data are fine, the tuned checkpoint is missing: the error comes after
    ``--out`` was created, and the directories the command created are removed again."""
    base, _ = tiny_pair
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "What is 2+2?", "answer": "4"}) + "\n")
    argv = [command, "--model", f"base={base}", "--model", f"tuned={tmp_path / 'absent'}", "--no-progress"]
    if command == "tokens":
        argv += ["--data", str(data)]
    out = tmp_path / "runs" / "new"
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: No checkpoint directory")
    assert not (tmp_path / "runs").exists()  # both directories it created are gone
    existing = tmp_path / "kept"
    existing.mkdir()
    assert main([*argv, "--out", str(existing)]) == 2
    assert existing.is_dir()  # a directory the user already had is never removed


@pytest.mark.parametrize("command", ["weights", "tokens"])
def test_repeated_model_names_are_a_user_error(tmp_path, capsys, tiny_pair, command):
    base, tuned = tiny_pair
    argv = [command, "--model", f"rl={base}", "--model", f"rl={tuned}", "--out", str(tmp_path / "o"), "--no-progress"]
    if command == "tokens":
        argv += ["--data", str(tmp_path / "unused.jsonl")]
    assert main(argv) == 2
    assert capsys.readouterr().err == "error: Give every --model a different NAME.\n"
    assert not (tmp_path / "o").exists()
