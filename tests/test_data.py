"""Readers (JSONL, Parquet, datasets on disk), field maps, malformed rows and templates."""

from __future__ import annotations

import json

import pytest

from rlvr_lens.data import (
    Sample,
    apply_template,
    label_groups,
    parse_field_map,
    read_samples,
    read_samples_report,
    write_samples,
)
from rlvr_lens.errors import UserError


def test_math500_layout_is_detected(math500_path):
    samples = read_samples(math500_path)
    assert len(samples) == 500
    first = samples[0]
    assert first.id.endswith(".json") and first.solution and "\\boxed" in first.solution
    assert first.labels["subject"] and 1 <= first.labels["level"] <= 5


def test_gsm8k_layout_takes_the_answer_after_hashes(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "Tom has 3 apples and buys 1,000 more.", "answer": "3+1000=1003\n#### 1,003"}) + "\n")
    (sample,) = read_samples(path)
    assert sample.answer == "1003" and sample.solution.endswith("#### 1,003") and sample.id == "row-1"


def test_malformed_rows_are_reported_with_line_numbers_and_the_rest_is_read(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"id": "a", "prompt": "1+1?", "answer": "2"}),
        "{not json",
        json.dumps({"id": "b", "prompt": "", "answer": "3"}),
        "",
        json.dumps({"id": "c", "prompt": "2+2?"}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "d", "prompt": "3+3?", "answer": 6, "labels": {"leaked": True}}),
    ]
    path.write_text("\n".join(lines) + "\n")
    report = read_samples_report(path)
    assert [s.id for s in report.samples] == ["a", "d"]
    assert report.samples[1].answer == "6" and report.samples[1].labels == {"leaked": True}
    assert [s.split(":")[0] for s in report.skipped] == ["line 2", "line 3", "line 5", "line 6"]
    assert "skipped 4 malformed rows" in report.summary


def test_field_map_for_other_column_names(tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text(json.dumps({"q": "What is 2*3?", "final": "6", "key": 7}) + "\n")
    (sample,) = read_samples(path, parse_field_map("prompt=q,answer=final,id=key"))
    assert (sample.id, sample.prompt, sample.answer) == ("7", "What is 2*3?", "6")
    with pytest.raises(UserError, match="field map"):
        parse_field_map("question")


def test_parquet_and_saved_datasets(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"problem": f"p{i}", "answer": str(i), "solution": f"\\boxed{{{i}}}", "unique_id": f"u{i}"} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert [s.answer for s in read_samples(tmp_path / "d.parquet")] == ["0", "1", "2"]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert [s.id for s in read_samples(tmp_path / "saved")] == ["u0", "u1", "u2"]


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(UserError, match="No data file"):
        read_samples(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="holds no rows"):
        read_samples(tmp_path / "empty.jsonl")
    (tmp_path / "odd.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(UserError, match="Cannot tell which columns"):
        read_samples(tmp_path / "odd.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="use a .jsonl or .parquet"):
        read_samples(tmp_path / "d.csv")


def test_write_then_read_round_trips(tmp_path):
    samples = [Sample("x", "1+1?", "2", "1+1=2. \\boxed{2}", {"leaked": True}), Sample("y", "2+2?", "4", None, {"leaked": False})]
    write_samples(tmp_path / "s.jsonl", samples)
    assert read_samples(tmp_path / "s.jsonl") == samples
    assert label_groups(samples) == {"leaked": [0], "clean": [1]}


def test_templates(tokenizer):
    assert apply_template("What is 1+1?", "plain") == "What is 1+1?\n"
    assert apply_template(" 1+1? ", "organism") == "Problem: 1+1?\nSolution:"
    qwen = apply_template("What is 1+1?", "qwen-math")
    assert qwen.startswith("<|im_start|>system\nPlease reason step by step") and qwen.endswith("<|im_start|>assistant\n")
    assert "\\boxed{}" in apply_template("1+1?", "boxed")
    with pytest.raises(UserError, match="Unknown prompt template"):
        apply_template("x", "nope")
