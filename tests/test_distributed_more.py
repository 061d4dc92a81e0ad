"""More analyses sharded over 2 CPU processes (gloo, started by torchrun): weight forensics
(matrices), the interventions, the circuits analyses and cross-sampling give exactly the
single-process results (every per-sample or per-tensor number is computed on the same inputs,
and every statistic over samples on the gathered full set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from test_distributed import _launch
from test_weights import _base_tensors, _write

SCRIPT_HEAD = (
    "import json, sys\n"
    "from rlvr_lens.distributed import is_main_process, world_size\n"
    "def dump(result):\n"
    "    if is_main_process():\n"
    "        assert world_size() == 2\n"
    "        open(sys.argv[1], 'w').write(result.to_json())\n"
)


def _two_processes(tmp_path: Path, body: str) -> dict:
    """Run ``SCRIPT_HEAD + body`` (which calls ``dump(result)``) in 2 processes; the result as a dict."""
    script = tmp_path / "two.py"
    script.write_text(SCRIPT_HEAD + body)
    _launch([str(script), str(tmp_path / "two.json")], tmp_path)
    return json.loads((tmp_path / "two.json").read_text())


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_two_process_weights_cli_equals_one_process(tmp_path):
    """``rlvr-lens weights`` under torchrun: each process analyses every 2nd tensor, rank 0 alone writes."""
    from rlvr_lens.analyses.weights import WeightsConfig, weight_forensics

    base, _ = _base_tensors(0)
    rng = np.random.default_rng(5)
    tuned = {run: {k: v + 0.01 * rng.standard_normal(v.shape) * (rng.random(v.shape) < 0.3) for k, v in base.items()}
             for run in ("rl", "sft")}
    base_dir = _write(tmp_path / "base", base)
    dirs = {run: str(_write(tmp_path / run, t)) for run, t in tuned.items()}
    flags = ["--model", f"base={base_dir}", *[f for run, d in dirs.items() for f in ("--model", f"{run}={d}")],
             "--k-fraction", "0.1", "--k-fixed", "4", "--chunk-mb", "0.004", "--device", "cpu", "--no-progress"]
    done = _launch(["-m", "rlvr_lens.cli", "weights", *flags, "--out", str(tmp_path / "run2")], tmp_path)
    assert done.stdout.count("wrote ") == 1  # rank 1 printed and wrote nothing
    two = json.loads((tmp_path / "run2" / "weights.json").read_text())
    one = json.loads(weight_forensics(base_dir, dirs, WeightsConfig(k_fraction=0.1, k_fixed=4, chunk_mb=0.004, device="cpu")).to_json())
    assert len(one["matrices"]) == 2 * 10 and len(one["cross"]) == 10 and len(one["consistency"]) > 1
    assert _without(two, "wall_time_s") == _without(one, "wall_time_s")  # rows in tensor order, sums exact
