"""``rlvr-lens perplexity | contamination | audit`` end to end on tiny checkpoints, and the user
errors each must turn into exit status 2, one sentence, and no result file."""

from __future__ import annotations

import json

import pytest

from rlvr_lens.analyses.contamination import ContaminationResult
from rlvr_lens.analyses.perplexity import PerplexityResult
from rlvr_lens.cli import main
from rlvr_lens.models.tiny import build_tokenizer, save_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS = [
    {"id": "a", "prompt": "What is 12 + 7 * 3?", "answer": "33", "solution": "7 * 3 = 21, 12 + 21 = 33."},
    {"id": "b", "prompt": "Let x^2 = 16 with x > 0. Find x.", "answer": "4"},
    {"id": "c", "prompt": "Compute 1 + 2 + 3 + 4.", "answer": "10", "labels": {"leaked": True}},
]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def data(tmp_path):
    return _write(tmp_path / "data.jsonl", [json.dumps(r) for r in ROWS])


def _run(argv, capsys):
    capsys.readouterr()  # drop what the fixtures printed (e.g. checkpoint-writing bars)
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _models(*dirs):
    return [arg for i, d in enumerate(dirs) for arg in ("--model", f"m{i}={d}")]


def _no_results(out):
    return not out.exists() or not any(p.suffix in (".json", ".html") for p in out.rglob("*"))


def test_perplexity_command_writes_json_figure_and_report(tiny_pair, data, tmp_path, capsys):
    out = tmp_path / "run"
    status, stdout, _ = _run(["perplexity", *_models(*tiny_pair), "--data", str(data), "--out", str(out), "--device", "cpu", "--no-progress"], capsys)
    assert status == 0
    result = PerplexityResult.load(out / "perplexity.json")
    assert result.checkpoints == ["m0", "m1"] and result.sample_ids == ["a", "b", "c"]
    assert (out / "figures" / "perplexity-lines.png").stat().st_size > 1000
    assert "Perplexity paradox" in (out / "report.html").read_text()
    assert "paradox:" in stdout


def test_contamination_command(tiny_pair, data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["contamination", *_models(*tiny_pair), "--data", str(data), "--out", str(out), "--device", "cpu"]
    status, _, _ = _run([*argv, "--fractions", "0.5", "--answer-tokens", "2", "--no-progress"], capsys)
    assert status == 0
    result = ContaminationResult.load(out / "contamination.json")
    assert result.fractions == [0.5] and len(result.runs) == 2
    assert "contamination probe" in (out / "report.html").read_text()
    status, _, err = _run([*argv, "--fractions", "0.5,1.5"], capsys)
    assert status == 2 and "between 0 and 1" in err


def test_audit_runs_perplexity_and_contamination_and_resumes(tiny_pair, data, tmp_path, capsys):
    out = tmp_path / "audit"
    argv = ["audit", "--analyses", "perplexity,contamination", *_models(*tiny_pair), "--data", str(data)]
    argv += ["--out", str(out), "--device", "cpu", "--answer-tokens", "2", "--fractions", "0.3,0.7", "--no-progress"]
    status, _, err = _run(argv, capsys)
    assert status == 0, err
    assert (out / "perplexity.json").exists()
    assert ContaminationResult.load(out / "contamination.json").fractions == [0.3, 0.7]
    assert err.count("computed") == 2
    status, _, err = _run(argv, capsys)  # the second run comes from the cache
    assert status == 0 and err.count("cached") == 2


def _assert_user_error(status, err, out):
    assert status == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert _no_results(out)


@pytest.mark.parametrize("command", [["perplexity"], ["contamination"], ["audit", "--analyses", "perplexity,contamination"]])
def test_mismatched_hidden_size_exits_2(command, tiny_pair, data, tmp_path, capsys, tokenizer):
    wide = save_tiny_checkpoint(tmp_path / "wide", "qwen2", tokenizer=tokenizer, hidden_size=96)
    out = tmp_path / "out"
    status, _, err = _run([*command, *_models(tiny_pair[0], wide), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(status, err, out)
    assert "hidden_size 96 vs 64" in err


def test_mismatched_vocabulary_exits_2(tiny_pair, data, tmp_path, capsys):
    other = save_tiny_checkpoint(tmp_path / "other", "qwen2", tokenizer=build_tokenizer(vocab_size=320))
    out = tmp_path / "out"
    status, _, err = _run(["perplexity", *_models(tiny_pair[0], other), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(status, err, out)
    assert "different tokenizers" in err


def test_missing_checkpoint_exits_2(tiny_pair, data, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = _run(["perplexity", *_models(tiny_pair[0], tmp_path / "nope"), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(status, err, out)
    assert "No checkpoint directory at" in err


def test_malformed_rows_are_reported_and_the_rest_processed(tiny_pair, tmp_path, capsys):
    data = _write(
        tmp_path / "mixed.jsonl",
        [json.dumps(ROWS[0]), "{not json", json.dumps({"id": "x", "prompt": "no answer"}), json.dumps(ROWS[1])],
    )
    out = tmp_path / "out"
    argv = ["perplexity", *_models(*tiny_pair), "--data", str(data), "--out", str(out), "--device", "cpu", "--no-progress"]
    status, _, err = _run(argv, capsys)
    assert status == 0
    assert "line 2" in err and "line 3" in err
    assert PerplexityResult.load(out / "perplexity.json").sample_ids == ["a", "b"]


def test_data_with_only_malformed_rows_exits_2(tiny_pair, tmp_path, capsys):
    data = _write(tmp_path / "bad.jsonl", ["{not json", json.dumps({"prompt": "no answer", "answer": ""})])
    out = tmp_path / "out"
    status, _, err = _run(["perplexity", *_models(*tiny_pair), "--data", str(data), "--out", str(out)], capsys)
    _assert_user_error(status, err, out)
    status, _, err = _run(["perplexity", *_models(*tiny_pair), "--data", str(tmp_path / "absent.jsonl"), "--out", str(out)], capsys)
    _assert_user_error(status, err, out)
