"""The command line starts fast: parsing (and ``--help``) imports neither torch, transformers nor TRL,
and progress is plain lines when stderr is not a terminal."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys

import pytest

from rlvr_lens.cli import COMMAND_MODULES
from rlvr_lens.cli.defaults import dataclass_defaults, module_constant
from rlvr_lens.progress import format_seconds, progress

HEAVY = ("torch", "transformers", "trl", "math_verify", "sympy", "matplotlib", "numpy", "tqdm")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_building_the_parser_imports_nothing_heavy():
    """Build the full parser and the parser of every command in a fresh interpreter, then list
    the heavy modules it loaded (must be none)."""
    code = (
        "import sys, json, rlvr_lens.cli as cli\n"
        "parser = cli.build_parser()\n"
        "for action in parser._subparsers._group_actions:\n"
        "    for name, sub in action.choices.items(): sub.format_help()\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("command", [m.rsplit(".", 1)[1] for m in COMMAND_MODULES])
def test_command_help_runs_without_heavy_imports(command):
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['rlvr-lens', {command!r}, '--help']\n"
        "try:\n    runpy.run_module('rlvr_lens.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert "usage: rlvr-lens" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("rlvr_lens.analyses.tokens", "TokenDivergenceConfig"),
        ("rlvr_lens.analyses.tokens", "CrossSamplingConfig"),
        ("rlvr_lens.analyses.weights", "WeightsConfig"),
    ],
)
def test_defaults_read_from_source_equal_the_dataclass(module, name):
    import importlib

    cls = getattr(importlib.import_module(module), name)
    expected = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    assert vars(dataclass_defaults(module, name)) == expected


def test_module_constant_equals_the_imported_one():
    from rlvr_lens.analyses.ablation import MODES, PARTS

    assert module_constant("rlvr_lens.analyses.ablation", "PARTS") == PARTS
    assert module_constant("rlvr_lens.analyses.ablation", "MODES") == MODES


def test_settings_module_imports_nothing_heavy():
    """``train`` builds its flags from GRPOSettings itself (no source reading), so its module
    and the flag generator must stay torch-free."""
    code = (
        "import sys, json\n"
        "import rlvr_lens.train.settings, rlvr_lens.cli.dataclass_args\n"
        "from rlvr_lens.train import GRPOSettings\n"
        "GRPOSettings.from_dict({'clip_eps': 0.1})\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_progress_off_a_terminal_writes_one_line_per_loop():
    stream = io.StringIO()  # not a terminal
    assert list(progress(range(5), enabled=True, desc="score base", unit="batch", stream=stream)) == [0, 1, 2, 3, 4]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("score base: 5 batches in ") and "\r" not in stream.getvalue()


def test_progress_of_stages_writes_one_line_per_stage_even_when_left_early():
    stream = io.StringIO()
    bar = progress(["data", "base", "sft"], enabled=True, desc="organism", unit="stage", stream=stream)
    assert next(bar) == "data"
    assert next(bar) == "base"
    bar.close()  # the caller stops after the second stage
    lines = stream.getvalue().splitlines()
    assert [line.split(" done in ")[0] for line in lines] == ["organism: data", "organism: base"]


def test_progress_disabled_writes_nothing():
    stream = io.StringIO()
    assert list(progress([1, 2], enabled=False, stream=stream)) == [1, 2]
    assert stream.getvalue() == ""


def test_format_seconds():
    assert format_seconds(0.421) == "0.42 s"
    assert format_seconds(12.34) == "12.3 s"
    assert format_seconds(245) == "4 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"
