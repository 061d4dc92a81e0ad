"""The command line as a user meets it: every command is listed, and help works."""

from __future__ import annotations

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
