"""Broken inputs a new user meets (issue 15): each fixture builds one, runs the command, and
checks the exit status, the one sentence on stderr, and what is left on disk."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from rlvr_lens.analyses.perplexity import PerplexityResult
from rlvr_lens.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS = [
    {"id": "a", "q1": "What is 12 + 7 * 3?", "q2": "Compute 5 * 5 - 1.", "answer": "33"},
    {"id": "b", "q1": "Let x^2 = 16 with x > 0. Find x.", "q2": "What is 9 - 3?", "answer": "4"},
    {"id": "c", "q1": "Compute 1 + 2 + 3 + 4.", "q2": "Compute 2 * 2 * 2.", "answer": "10"},
]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["q1"], **r}) + "\n" for r in ROWS))
    return path


def _run(argv, capsys):
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse rejects an option value
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _models(*dirs):
    return [arg for i, d in enumerate(dirs) for arg in ("--model", f"m{i}={d}")]


def _one_sentence(status, err):
    """Exit 2 and exactly one ``error:`` line (argparse adds its usage line before it)."""
    assert status == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def _left(out):
    """Files left under ``out`` (relative names); None when ``out`` does not exist."""
    return None if not out.exists() else sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _shard_with(ckpt, name):
    """The safetensors file of ``ckpt`` that stores tensor ``name``."""
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        return ckpt / json.loads(index.read_text())["weight_map"][name]
    return ckpt / "model.safetensors"


PERPLEXITY = ["perplexity", "--device", "cpu", "--no-progress"]


# ----------------------------------------------------------------------------- 1. cache keys


def test_audit_with_another_field_map_recomputes(tiny_pair, data, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["audit", *_models(*tiny_pair), "--data", data, "--out", out, "--analyses", "perplexity", "--device", "cpu", "--no-progress"]
    status, _, err = _run([*common, "--fields", "prompt=q1,answer=answer,id=id"], capsys)
    assert status == 0 and "computed" in err
    first = PerplexityResult.load(out / "perplexity.json")
    status, _, err = _run([*common, "--fields", "prompt=q2,answer=answer,id=id"], capsys)
    assert status == 0 and "computed" in err and "cached" not in err
    second = PerplexityResult.load(out / "perplexity.json")
    assert first.per_checkpoint[0].prompt_nll != second.per_checkpoint[0].prompt_nll
    status, _, err = _run([*common, "--fields", "prompt=q2,answer=answer,id=id"], capsys)
    assert status == 0 and "cached" in err  # the same inputs again: reused


# ----------------------------------------------------------------------------- 2. over-long prompts


@pytest.fixture
def long_data(tmp_path):
    """Three samples, the second 50,000 characters long (far beyond the tiny models' 512 positions)."""
    rows = [dict(ROWS[0]), {**ROWS[1], "q1": "x " * 25_000}, dict(ROWS[2])]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["q1"], "answer": r["answer"], "id": r["id"]}) + "\n" for r in rows))
    return path


def test_over_long_sample_is_skipped_and_counted_by_perplexity(tiny_pair, long_data, tmp_path, capsys):
    out = tmp_path / "run"
    status, _, err = _run([*PERPLEXITY, *_models(*tiny_pair), "--data", long_data, "--out", out], capsys)
    assert status == 0, err
    result = PerplexityResult.load(out / "perplexity.json")
    assert result.too_long == ["b"] and result.context_window == 512
    for ckpt in result.per_checkpoint:
        assert ckpt.prompt_nll[1] is None and ckpt.answer_nll[1] is None
        assert ckpt.prompt_nll[0] is not None and ckpt.prompt_nll[2] is not None
    assert "longer than the model's context window" in (out / "report.html").read_text()


def test_over_long_sample_is_skipped_by_contamination_and_tokens(tiny_pair, long_data):
    from rlvr_lens.analyses.contamination import partial_prompt_probe
    from rlvr_lens.analyses.tokens import (
        CrossSamplingConfig,
        TokenDivergenceConfig,
        cross_sampling,
        token_divergence,
    )
    from rlvr_lens.data import read_samples
    from rlvr_lens.models import ModelSeries, load_model

    samples = read_samples(long_data)
    series = ModelSeries.from_strings([f"base={tiny_pair[0]}", f"tuned={tiny_pair[1]}"], device="cpu")
    probe = partial_prompt_probe(series, samples, fractions=(0.5,), answer_tokens=2)
    assert probe.too_long == ["b"]
    assert all(run.rouge_l[1] is None and run.rouge_l[0] is not None for run in probe.runs)
    base, tuned = load_model(str(tiny_pair[0]), device="cpu"), load_model(str(tiny_pair[1]), device="cpu")
    divergence = token_divergence(base, tuned, samples, TokenDivergenceConfig(max_new_tokens=4, responses_from=("tuned",)))
    assert divergence.settings["too_long"] == ["b"]
    assert [s.sample_id for s in divergence.responses[0].samples] == ["a", "c"]
    cross = cross_sampling(base, tuned, samples, CrossSamplingConfig(max_new_tokens=3, thresholds=(0.1,), directions=("forward",)))
    assert cross.settings["too_long"] == ["b"] and cross.sample_ids == ["a", "c"]


@pytest.mark.parametrize(
    "error",
    [RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried to allocate 23 GB"), MemoryError()],
)
def test_cpu_allocation_failure_is_one_sentence(error, tmp_path, capsys, monkeypatch):
    import rlvr_lens.cli.perplexity as command

    def allocate(args):
        (tmp_path / "out").mkdir()
        raise error

    monkeypatch.setattr(command, "run", allocate)
    out = tmp_path / "out"
    status, _, err = _run(["perplexity", "--model", "a=x", "--model", "b=y", "--data", "d.jsonl", "--out", out], capsys)
    assert "out of CPU memory" in _one_sentence(status, err)
    assert _left(out) is None  # the empty --out it created is removed


def test_other_runtime_errors_still_raise(monkeypatch):
    import rlvr_lens.cli.perplexity as command

    monkeypatch.setattr(command, "run", lambda args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["perplexity", "--model", "a=x", "--model", "b=y", "--data", "d.jsonl", "--out", "/nonexistent/o"])


# ----------------------------------------------------------------------------- 3, 4. broken checkpoints


@pytest.fixture
def missing_tensor(tiny_pair, tmp_path):
    """The tuned checkpoint without one of its layers' weights (index updated to match)."""
    ckpt = _copy(tiny_pair[1], tmp_path / "missing")
    name = "model.layers.1.mlp.down_proj.weight"
    shard = _shard_with(ckpt, name)
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard, metadata={"format": "pt"})
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        content = json.loads(index.read_text())
        del content["weight_map"][name]
        index.write_text(json.dumps(content))
    return ckpt, name


def test_missing_tensor_is_a_user_error_naming_it(tiny_pair, missing_tensor, data, tmp_path, capsys):
    ckpt, name = missing_tensor
    out = tmp_path / "out"
    status, _, err = _run([*PERPLEXITY, *_models(tiny_pair[0], ckpt), "--data", data, "--out", out], capsys)
    line = _one_sentence(status, err)
    assert name in line and "lacks 1 weight tensor" in line
    assert _left(out) is None


def test_wrong_shape_tensor_is_a_user_error_naming_it(tiny_pair, data, tmp_path, capsys):
    ckpt = _copy(tiny_pair[1], tmp_path / "shape")
    name = "model.layers.0.self_attn.q_proj.weight"
    shard = _shard_with(ckpt, name)
    tensors = load_file(shard)
    tensors[name] = torch.zeros(3, 5)
    save_file(tensors, shard, metadata={"format": "pt"})
    out = tmp_path / "out"
    status, _, err = _run([*PERPLEXITY, *_models(tiny_pair[0], ckpt), "--data", data, "--out", out], capsys)
    line = _one_sentence(status, err)
    assert name in line and "[3, 5]" in line
    assert _left(out) is None


@pytest.fixture
def truncated(tiny_pair, tmp_path):
    ckpt = _copy(tiny_pair[1], tmp_path / "truncated")
    shard = sorted(ckpt.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return ckpt, shard


@pytest.mark.parametrize("command", [PERPLEXITY, ["weights", "--no-progress"], ["audit", "--no-progress", "--device", "cpu"]])
def test_truncated_safetensors_is_a_user_error_before_any_work(command, tiny_pair, truncated, data, tmp_path, capsys):
    ckpt, shard = truncated
    out = tmp_path / "out"
    extra = [] if command[0] == "weights" else ["--data", data]
    status, _, err = _run([*command, *_models(tiny_pair[0], ckpt), *extra, "--out", out], capsys)
    line = _one_sentence(status, err)
    assert shard.name in line and "truncated" in line
    assert _left(out) is None


def test_both_tokenizers_missing(tiny_pair, data, tmp_path, capsys):
    dirs = []
    for i, src in enumerate(tiny_pair):
        ckpt = _copy(src, tmp_path / f"notok{i}")
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (ckpt / name).unlink(missing_ok=True)
        dirs.append(ckpt)
    out = tmp_path / "out"
    status, _, err = _run([*PERPLEXITY, *_models(*dirs), "--data", data, "--out", out], capsys)
    line = _one_sentence(status, err)
    assert "holds no tokenizer" in line and "different tokenizers" not in line
    assert _left(out) is None


def test_directory_with_only_config_json(tiny_pair, data, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_pair[1] / "config.json", bare / "config.json")
    status, _, err = _run([*PERPLEXITY, *_models(tiny_pair[0], bare), "--data", data, "--out", tmp_path / "out"], capsys)
    line = _one_sentence(status, err)
    assert "holds no tokenizer" in line and "vocabulary sizes" not in line


def test_missing_relative_path_is_not_taken_for_a_hub_id(tiny_pair, data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    status, _, err = _run([*PERPLEXITY, *_models(tiny_pair[0], "runs/rlvr-step100"), "--data", data, "--out", "out"], capsys)
    assert "No checkpoint directory at runs/rlvr-step100" in _one_sentence(status, err)
    assert _left(tmp_path / "out") is None


def _read_only_dir(tmp_path):
    """A directory this process cannot write to (permission bits, or /sys when running as root)."""
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    try:
        (path / "probe").write_text("x")
    except OSError:
        return path
    (path / "probe").unlink()
    if os.path.isdir("/sys"):
        try:
            os.mkdir("/sys/rlvr-lens-probe")
        except OSError:
            return "/sys/rlvr-lens-probe"
        os.rmdir("/sys/rlvr-lens-probe")
    pytest.skip("no read-only directory available")


@pytest.mark.parametrize("command", [PERPLEXITY, ["weights", "--no-progress"]])
def test_read_only_out_is_refused_before_any_work(command, tiny_pair, data, tmp_path, capsys, monkeypatch):
    import rlvr_lens.analyses.perplexity as perplexity
    import rlvr_lens.analyses.weights as weights

    def never(*args, **kwargs):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(perplexity, "perplexity_paradox", never)
    monkeypatch.setattr(weights, "weight_forensics", never)
    out = _read_only_dir(tmp_path)
    extra = [] if command[0] == "weights" else ["--data", data]
    status, _, err = _run([*command, *_models(*tiny_pair), *extra, "--out", out], capsys)
    assert "Cannot write to --out" in _one_sentence(status, err)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["tokens", "--sample", "--temperature", "-1"], "--temperature: must be > 0"),
        (["tokens", "--top-p", "0"], "--top-p: must be > 0"),
        (["tokens", "--chunk-size", "-3"], "--chunk-size: must be at least 0"),
        (["perplexity", "--limit", "0"], "--limit: must be at least 1"),
        (["perplexity", "--limit", "-2"], "--limit: must be at least 1"),
        (["contamination", "--answer-tokens", "-1"], "--answer-tokens: must be at least 0"),
        (["audit", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
        (["audit", "--batch-size", "0"], "--batch-size: must be at least 1"),
        (["audit", "--threads", "0"], "--threads: must be at least 1"),
    ],
)
def test_option_out_of_range_exits_2(argv, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = _run([*argv, "--model", "a=x", "--model", "b=y", "--data", "d.jsonl", "--out", out], capsys)
    assert fragment in _one_sentence(status, err)
    assert _left(out) is None


def test_weights_option_out_of_range_exits_2(tmp_path, capsys):
    for option, value, fragment in [("--k-fraction", "0", "must be > 0"), ("--tol", "-1", "must be >= 0"), ("--chunk-mb", "0", "must be > 0")]:
        status, _, err = _run(["weights", "--model", "a=x", "--model", "b=y", "--out", tmp_path / "o", option, value], capsys)
        assert fragment in _one_sentence(status, err)


# ----------------------------------------------------------------------------- 5. the audit validates first


@pytest.mark.parametrize(
    "option, fragment",
    [
        (["--dtype", "float8"], "Unknown dtype"),
        (["--device", "tpu"], "Unknown device"),
        (["--template", "nope"], "template"),
        (["--fractions", "0.5,1.5"], "between 0 and 1"),
    ],
)
def test_audit_rejects_a_bad_option_before_any_step(option, fragment, tiny_pair, data, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = _run(["audit", *_models(*tiny_pair), "--data", data, "--out", out, "--no-progress", *option], capsys)
    assert fragment in _one_sentence(status, err)
    assert "computed" not in err and "failed" not in err
    assert _left(out) is None


def test_audit_stops_at_a_nan_weight_with_one_sentence(tiny_pair, data, tmp_path, capsys, monkeypatch):
    ckpt = _copy(tiny_pair[1], tmp_path / "nan")
    name = "model.layers.0.mlp.up_proj.weight"
    shard = _shard_with(ckpt, name)
    tensors = load_file(shard)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, shard, metadata={"format": "pt"})
    import rlvr_lens.analyses.weights as weights

    monkeypatch.setattr(weights, "weight_forensics", lambda *a, **k: pytest.fail("the weights step ran after a user error"))
    out = tmp_path / "out"
    argv = ["audit", *_models(tiny_pair[0], ckpt), "--data", data, "--out", out, "--no-progress", "--device", "cpu", "--analyses", "perplexity,weights"]
    status, _, err = _run(argv, capsys)
    assert name in _one_sentence(status, err) and "non-finite" in err
    assert not (out / "report.html").exists()
    assert _left(out) in (None, [".rlvr-lens.lock"])


def test_audit_weights_step_honours_device(tiny_pair, data, tmp_path):
    from rlvr_lens.audit import AuditConfig, audit_steps
    from rlvr_lens.data import read_samples
    from rlvr_lens.models import ModelSpec

    seen = {}
    import rlvr_lens.analyses.weights as weights

    original = weights.weight_forensics

    def spy(base, tuned, config, **kwargs):
        seen["device"] = config.device
        return original(base, tuned, config, **kwargs)

    weights.weight_forensics = spy
    try:
        specs = [ModelSpec("b", str(tiny_pair[0])), ModelSpec("t", str(tiny_pair[1]))]
        (step,) = audit_steps(specs, data, read_samples(data), AuditConfig(analyses=("weights",), device="cpu", weights_metrics="cheap"))
        step.run()
    finally:
        weights.weight_forensics = original
    assert seen["device"] == "cpu"


# ----------------------------------------------------------------------------- 7. misleading messages (data)


def test_json_array_of_samples_is_read(tmp_path):
    from rlvr_lens.data import read_samples

    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"prompt": r["q1"], "answer": r["answer"], "id": r["id"]} for r in ROWS]))
    assert [s.id for s in read_samples(path)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"data": [{"prompt": "p", "answer": "1"}]}, "holds one JSON object, not a list of samples (its key 'data'"),
        ([[1, 2], [3, 4]], "holds no JSON objects (its rows are lists)"),
    ],
)
def test_json_that_is_not_a_list_of_objects_is_one_sentence(content, fragment, tmp_path):
    from rlvr_lens.data import read_samples
    from rlvr_lens.errors import UserError

    path = tmp_path / "data.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=r"holds") as caught:
        read_samples(path)
    assert fragment in caught.value.message


# ----------------------------------------------------------------------------- 8. run-directory hygiene


def test_rerun_cleans_temp_files_and_stale_results_and_writes_with_umask(tiny_pair, data, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "figures").mkdir(parents=True)
    (out / ".perplexity.json.k3j2x9.tmp").write_text("{half")  # left by a killed writer
    (out / "figures" / ".old.png.a8s7d6.tmp").write_bytes(b"x")
    (out / "contamination.json").write_text(json.dumps({"kind": "contamination"}))  # an earlier run's result
    (out / "figures" / "contamination-rates.png").write_bytes(b"png")
    (out / "notes.txt").write_text("mine")  # not ours: kept
    old = os.umask(0o022)
    try:
        status, _, err = _run([*PERPLEXITY, *_models(*tiny_pair), "--data", data, "--out", out], capsys)
    finally:
        os.umask(old)
    assert status == 0, err
    left = _left(out)
    assert not [name for name in left if name.endswith(".tmp")]
    assert "contamination.json" not in left and "figures/contamination-rates.png" not in left
    assert {"perplexity.json", "report.html", "notes.txt", "figures/perplexity-lines.png"} <= set(left)
    for name in ("perplexity.json", "report.html", "figures/perplexity-lines.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_second_job_on_a_locked_out_is_refused(tiny_pair, data, tmp_path, capsys):
    from rlvr_lens.io import run_dir_lock

    out = tmp_path / "run"
    out.mkdir()
    with run_dir_lock(out):  # another job holds it (flock: per open file, so this process counts as another)
        status, _, err = _run([*PERPLEXITY, *_models(*tiny_pair), "--data", data, "--out", out], capsys)
        line = _one_sentence(status, err)
    assert "in use by another rlvr-lens job" in line and str(os.getpid()) in line
    assert _left(out) == [".rlvr-lens.lock"]
    status, _, _ = _run([*PERPLEXITY, *_models(*tiny_pair), "--data", data, "--out", out], capsys)
    assert status == 0  # released with the job


# ----------------------------------------------------------------------------- 9. threads


def test_default_threads_share_the_cores(monkeypatch):
    import rlvr_lens.cli.common as common

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(common, "_other_jobs", lambda: 0)
    assert common.default_threads() == 8
    monkeypatch.setattr(common, "_other_jobs", lambda: 1)
    assert common.default_threads() == 4
    monkeypatch.setattr(common, "_other_jobs", lambda: 9)
    assert common.default_threads() == 1
    monkeypatch.setattr(common, "_other_jobs", lambda: 0)
    monkeypatch.setattr(os, "getloadavg", lambda: (8.5, 8.0, 8.0))  # saturated by anything
    assert common.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert common.default_threads() == 3


def test_threads_option_sets_torch_threads(monkeypatch, capsys):
    import rlvr_lens.cli.perplexity as command

    seen = {}

    def record(args):
        seen["threads"] = torch.get_num_threads()
        return 0

    monkeypatch.setattr(command, "run", record)
    before = torch.get_num_threads()
    try:
        assert main(["perplexity", "--model", "a=x", "--model", "b=y", "--data", "d", "--out", "/nonexistent/o", "--threads", "3"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 3


def test_refresh_threads_follows_other_jobs_unless_fixed(monkeypatch):
    import rlvr_lens.cli.common as common

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(common, "_other_jobs", lambda: 0)
        assert common.configure_threads(None) == 4
        monkeypatch.setattr(common, "_other_jobs", lambda: 1)  # a second job started
        assert common.refresh_threads() == 2
        common.configure_threads(3)  # --threads 3
        assert common.refresh_threads() == 3
    finally:
        common.configure_threads(before)
