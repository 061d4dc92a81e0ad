"""Samples sharded over 2 CPU processes (gloo, started by torchrun and by accelerate launch):
the perplexity analysis and the audit that uses it give exactly the single-process numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr_lens.data import Sample, write_samples
from rlvr_lens.distributed import gather_dict, is_main_process, shard, world_size

SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_single_process_is_a_no_op():
    assert world_size() == 1 and is_main_process()
    assert shard([1, 2, 3]) == [1, 2, 3] and gather_dict({1: "a"}) == {1: "a"}


def test_shard_takes_every_world_size_th_batch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert shard(list(range(8))) == [1, 4, 7] and not is_main_process()


def _launch(args: list[str], tmp_path: Path, processes: int = 2, launcher: str = "torchrun") -> subprocess.CompletedProcess:
    """Start ``args`` in ``processes`` CPU processes with torchrun or ``accelerate launch``."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HOME": str(tmp_path / "hf")}  # no accelerate config file of the user's
    if launcher == "accelerate":
        # --multi_gpu starts torch.distributed processes (gloo without GPUs); --cpu would start only one
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={processes}",
                   "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "--num_cpu_threads_per_process=1",
                   *(["-m", *args[1:]] if args[0] == "-m" else args)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _data(tmp_path: Path) -> Path:
    samples = [Sample(str(i), f"What is {i} + {2 * i}?" + " Think." * (i % 3), str(3 * i), solution=f"{i} + {2 * i} = {3 * i}")
               for i in range(9)]
    return write_samples(tmp_path / "d.jsonl", samples)


@pytest.mark.slow
def test_two_process_perplexity_and_audit_equal_one_process(tmp_path, tiny_pair, single_thread):
    base, tuned = tiny_pair
    data = _data(tmp_path)
    flags = ["--model", f"base={base}", "--model", f"rl={tuned}", "--data", str(data), "--analyses", "perplexity",
             "--batch-size", "2", "--dtype", "float32", "--device", "cpu", "--no-progress"]
    # 1. the analysis itself, through the library
    script = tmp_path / "ppl.py"
    script.write_text(
        "import json, sys\n"
        "from rlvr_lens.analyses.perplexity import perplexity_paradox\n"
        "from rlvr_lens.data import read_samples\n"
        "from rlvr_lens.distributed import is_main_process, world_size\n"
        "from rlvr_lens.models import ModelSeries, ModelSpec\n"
        f"series = ModelSeries([ModelSpec('base', {str(base)!r}), ModelSpec('rl', {str(tuned)!r})], dtype='float32', device='cpu')\n"
        f"result = perplexity_paradox(series, read_samples({str(data)!r}), batch_size=2)\n"
        "from rlvr_lens.analyses.contamination import partial_prompt_probe\n"
        f"probe = partial_prompt_probe(series, read_samples({str(data)!r}), fractions=(0.5,), answer_tokens=4, batch_size=2)\n"
        "from rlvr_lens.analyses.tokens import TokenDivergenceConfig, token_divergence\n"
        f"tokens = token_divergence(series.load(0), series.load(1), read_samples({str(data)!r}), TokenDivergenceConfig(max_new_tokens=6, batch_size=2))\n"
        "if is_main_process():\n"
        "    open(sys.argv[1], 'w').write(json.dumps({'world': world_size(), **result.to_dict()}))\n"
        "    open(sys.argv[1] + '.tokens', 'w').write(json.dumps(tokens.to_dict()))\n"
        "    open(sys.argv[1] + '.probe', 'w').write(json.dumps(probe.to_dict()))\n"
    )
    _launch([str(script), str(tmp_path / "two.json")], tmp_path)
    two = json.loads((tmp_path / "two.json").read_text())
    assert two.pop("world") == 2
    from rlvr_lens.analyses.perplexity import perplexity_paradox
    from rlvr_lens.data import read_samples
    from rlvr_lens.models import ModelSeries, ModelSpec

    series = ModelSeries([ModelSpec("base", str(base)), ModelSpec("rl", str(tuned))], dtype="float32", device="cpu")
    one = perplexity_paradox(series, read_samples(data), batch_size=2).to_dict()
    assert two == one  # exactly: every batch is the same batch as in one process
    from rlvr_lens.analyses.contamination import partial_prompt_probe

    probe = partial_prompt_probe(series, read_samples(data), fractions=(0.5,), answer_tokens=4, batch_size=2).to_dict()
    assert json.loads((tmp_path / "two.json.probe").read_text()) == probe
    from rlvr_lens.analyses.tokens import TokenDivergenceConfig, token_divergence

    tokens = token_divergence(series.load(0), series.load(1), read_samples(data), TokenDivergenceConfig(max_new_tokens=6, batch_size=2))
    assert json.loads((tmp_path / "two.json.tokens").read_text()) == json.loads(tokens.to_json())

    # 2. the audit command under the launcher: only rank 0 writes, results equal a 1-process audit
    done = _launch(["-m", "rlvr_lens.cli", "audit", *flags, "--out", str(tmp_path / "run2")], tmp_path, launcher="accelerate")
    assert done.stdout.count("report: ") == 1  # rank 1 printed nothing
    assert "<td>processes</td><td>2</td>" in (tmp_path / "run2" / "report.html").read_text()
    from rlvr_lens.cli import main

    assert main(["audit", *flags, "--out", str(tmp_path / "run1")]) == 0
    one_audit = json.loads((tmp_path / "run1" / "perplexity.json").read_text())
    two_audit = json.loads((tmp_path / "run2" / "perplexity.json").read_text())
    assert two_audit == one_audit == one


def test_device_map_under_a_launcher_is_one_sentence(monkeypatch, tiny_pair):
    from rlvr_lens.errors import UserError
    from rlvr_lens.models import load_model

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="cannot be combined with accelerate launch"):
        load_model(str(tiny_pair[0]), "float32", "cpu", device_map="auto")
