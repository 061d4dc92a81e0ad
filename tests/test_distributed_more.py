"""More analyses sharded over 2 CPU processes (gloo, started by torchrun): weight forensics
(matrices), the interventions, the circuits analyses and cross-sampling give exactly the
single-process results (every per-sample or per-tensor number is computed on the same inputs,
and every statistic over samples on the gathered full set).

Starting 2 processes costs more than the analyses on tiny models, so the activation analyses
share one launch (``two_process_run``) and each test compares its own result with one process.
The memorizing pair's tuned model recites 4 of the 8 answers, so a sample put in the wrong
place changes a correctness list."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlvr_lens.analyses.ablation import AblationConfig
from rlvr_lens.analyses.circuits import CircuitsConfig
from rlvr_lens.analyses.evaluation import EvaluationConfig
from rlvr_lens.analyses.steering import SteeringConfig
from rlvr_lens.analyses.tokens import CrossSamplingConfig
from test_distributed import _launch
from test_weights import _base_tensors, _write

SCRIPT_HEAD = (
    "import json, sys\n"
    "from rlvr_lens.distributed import is_main_process, world_size\n"
    "from rlvr_lens.data import read_samples\n"
    "from rlvr_lens.models import load_model\n"
    "def dump(name, result):\n"
    "    if is_main_process():\n"
    "        assert world_size() == 2\n"
    "        open(sys.argv[1] + '.' + name, 'w').write(result.to_json())\n"
)
TIMES = ("seconds", "wall_time_s")  # wall-clock times differ between runs; every other number must not


def _two_processes(tmp_path: Path, body: str, names: tuple[str, ...]) -> dict[str, dict]:
    """Run ``SCRIPT_HEAD + body`` (which calls ``dump(name, result)``) in 2 processes; ``name -> result dict``."""
    script = tmp_path / "two.py"
    script.write_text(SCRIPT_HEAD + body)
    _launch([str(script), str(tmp_path / "two")], tmp_path)
    return {name: _without(json.loads((tmp_path / f"two.{name}").read_text()), *TIMES) for name in names}


def _without(d, *keys: str):
    """``d`` without ``keys``, at every depth."""
    if isinstance(d, dict):
        return {k: _without(v, *keys) for k, v in d.items() if k not in keys}
    if isinstance(d, list):
        return [_without(v, *keys) for v in d]
    return d


def _one(result) -> dict:
    return _without(json.loads(result.to_json()), *TIMES)


@pytest.mark.slow  # 12 s idle, 25-45 s on a loaded 2-core box: starting 2 processes dominates
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
    assert _without(two, *TIMES) == _without(one, *TIMES)  # rows in tensor order, sums exact


GROUPS = {"leaked": [0, 1, 2, 3], "clean": [4, 5, 6, 7]}
# batches of 2 samples everywhere (patching: 8 rows = 2 samples x 4 variants), so both processes work
ABLATION = AblationConfig(width=1, parts=("mlp",), modes=("retain", "noise"), max_new_tokens=16, batch_size=2)
STEERING = SteeringConfig(layers=(1,), alphas=(0.0, 1.0), selections=("study",), top_n=3, max_new_tokens=16,
                          batch_size=2, calibration_group="leaked", calibration_fraction=0.5)
EVALUATION = EvaluationConfig(max_new_tokens=16, batch_size=2)
CIRCUITS = CircuitsConfig(batch_size=2, max_rows=8, accuracy="held", max_new_tokens=8, n_boot=200)
CROSS = CrossSamplingConfig(max_new_tokens=16, batch_size=2, thresholds=(), top_fractions=(0.3,), directions=("forward",))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, memorizing_pair) -> dict[str, dict]:
    """Every activation analysis of this file, run once in 2 processes; ``name -> result dict`` (rank 0's)."""
    tmp_path = tmp_path_factory.mktemp("two")
    base_dir, tuned_dir, samples = memorizing_pair
    from rlvr_lens.data import write_samples

    data = write_samples(tmp_path / "d.jsonl", samples)
    return _two_processes(tmp_path, (  # a config's repr is its constructor call
        "from rlvr_lens.analyses.ablation import AblationConfig, reset_retain\n"
        "from rlvr_lens.analyses.circuits import CircuitsConfig, circuits\n"
        "from rlvr_lens.analyses.evaluation import EvaluationConfig, evaluate_models, sample_groups\n"
        "from rlvr_lens.analyses.steering import SteeringConfig, neuron_steering\n"
        "from rlvr_lens.analyses.tokens import CrossSamplingConfig, cross_sampling\n"
        "from rlvr_lens.models import ModelSeries, ModelSpec\n"
        f"series = ModelSeries([ModelSpec('base', {str(base_dir)!r}), ModelSpec('tuned', {str(tuned_dir)!r})], dtype='float32', device='cpu')\n"
        "base, tuned = series.load(0), series.load(1)\n"
        f"samples = read_samples({str(data)!r})\n"
        f"dump('ablation', reset_retain(base, tuned, samples, {GROUPS!r}, {ABLATION!r}))\n"
        f"dump('steering', neuron_steering(tuned, samples, {GROUPS!r}, {STEERING!r}))\n"
        f"evaluation = evaluate_models(series, samples, {EVALUATION!r})\n"
        "dump('evaluation', evaluation)\n"
        f"dump('circuits', circuits(base, tuned, samples, sample_groups(evaluation, 'tuned'), {CIRCUITS!r}))\n"
        f"dump('cross', cross_sampling(base, tuned, samples, {CROSS!r}))\n"
    ), ("ablation", "steering", "evaluation", "circuits", "cross"))


@pytest.fixture(scope="module")
def one_process_pair(memorizing_pair):
    from rlvr_lens.models import ModelSeries, ModelSpec

    base_dir, tuned_dir, samples = memorizing_pair
    series = ModelSeries([ModelSpec("base", str(base_dir)), ModelSpec("tuned", str(tuned_dir))], dtype="float32", device="cpu")
    return series, series.load(0), series.load(1), samples


@pytest.mark.slow  # shares one 2-process launch (~20 s idle, 60 s on a loaded 2-core box)
def test_two_process_ablation_equals_one_process(two_process_run, one_process_pair, single_thread):
    """Reset / retain / noise: every process applies every variant and decodes its share of the batches."""
    from rlvr_lens.analyses.ablation import reset_retain

    _, base, tuned, samples = one_process_pair
    one = reset_retain(base, tuned, samples, GROUPS, ABLATION)
    assert one.references[1].correct == [True] * 4 + [False] * 4  # the test can see a reordering
    assert two_process_run["ablation"] == _one(one)


@pytest.mark.slow  # shares one 2-process launch (~20 s idle, 60 s on a loaded 2-core box)
def test_two_process_steering_equals_one_process(two_process_run, one_process_pair, single_thread):
    """Neuron scaling: keys and gradients sharded by sample, sets chosen on the gathered set, decoding by batch."""
    from rlvr_lens.analyses.steering import neuron_steering

    _, _, tuned, samples = one_process_pair
    one = neuron_steering(tuned, samples, GROUPS, STEERING)
    assert len(one.scored) == 6 and any(any(c) for curve in one.curves for c in curve.correct)
    assert two_process_run["steering"] == _one(one)  # same shared sets, controls, accuracies and answer probabilities


@pytest.mark.slow  # shares one 2-process launch (~20 s idle, 60 s on a loaded 2-core box)
def test_two_process_evaluation_and_circuits_equal_one_process(two_process_run, one_process_pair, single_thread):
    """The evaluation step, then the circuits bundle (logit lens, patching with held decoding, MLP
    counterfactuals, and the bootstrap verdicts computed on the gathered samples)."""
    from rlvr_lens.analyses.circuits import circuits
    from rlvr_lens.analyses.evaluation import evaluate_models, sample_groups

    series, base, tuned, samples = one_process_pair
    evaluation = evaluate_models(series, samples, EVALUATION)
    assert evaluation.correct["tuned"] == [True] * 4 + [False] * 4  # a reordering would show
    assert two_process_run["evaluation"] == _one(evaluation)
    one = circuits(base, tuned, samples, sample_groups(evaluation, "tuned"), CIRCUITS)
    assert one.lens and one.patching and one.counterfactual and one.verdicts and one.patching.directions[0].correct
    assert two_process_run["circuits"] == _one(one)


@pytest.mark.slow  # shares one 2-process launch (~20 s idle, 60 s on a loaded 2-core box)
def test_two_process_cross_sampling_equals_one_process(two_process_run, one_process_pair, single_thread):
    """Forward cross-decoding, with a top-fraction threshold taken from the gathered JSDs."""
    from rlvr_lens.analyses.tokens import cross_sampling

    _, base, tuned, samples = one_process_pair
    one = cross_sampling(base, tuned, samples, CROSS)
    assert one.tuned_accuracy == 0.5 and len(one.points) == 2  # forward: plain, top 30 %
    assert next(p for p in one.points if p.top_fraction).share_replaced > 0  # the quantile threshold replaced tokens
    assert two_process_run["cross"] == _one(one)
