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
from rlvr_lens.data.grading import grade
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


def test_a_line_with_bad_bytes_is_a_skipped_reported_row(tmp_path):
    path = tmp_path / "data.jsonl"
    good = [json.dumps({"id": i, "prompt": f"{i}+1?", "answer": str(i + 1)}).encode() for i in range(3)]
    bad = b'{"id": 9, "prompt": "caf\xe9?", "answer": "1"}'  # Latin-1, not UTF-8
    path.write_bytes(b"\xef\xbb\xbf" + good[0] + b"\n" + bad + b"\n" + good[1] + b"\n" + good[2] + b"\n")
    report = read_samples_report(path)
    assert [s.id for s in report.samples] == ["0", "1", "2"]
    assert report.skipped == ["line 2: not valid UTF-8 (byte 0xe9 at column 25)"]  # 24 bytes precede it
    path.write_bytes(bad + b"\n")
    with pytest.raises(UserError, match="No usable rows .* line 1: not valid UTF-8"):
        read_samples(path)


def test_math_files_with_the_answer_only_in_the_solution_load_without_a_map(tmp_path, math500_path):
    with open(math500_path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    path = tmp_path / "math_no_answer.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answer"}) + "\n" for r in rows))
    samples = read_samples(path)
    assert [s.id for s in samples] == [r["unique_id"] for r in rows]
    assert samples[0].labels == {"subject": rows[0]["subject"], "level": rows[0]["level"]}
    # the last box of each solution; one solution boxes two forms of its answer
    differ = [(s.answer, r["answer"]) for s, r in zip(samples, rows) if s.answer != r["answer"]]
    assert differ == [("15\\frac{39}{40}, \\frac{639}{40}", "\\frac{639}{40}")]
    assert all(grade("\\boxed{" + s.answer + "}", r["answer"]).correct for s, r in zip(samples, rows))


def test_solution_only_rows_without_a_box_are_skipped(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [
        {"question": "1+1?", "solution": "1+1 = $\\boxed{2}$."},
        {"question": "2+2?", "solution": "It is 4."},
        {"question": "x?", "solution": "$\\boxed{3}$ and $\\boxed{4}$"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = read_samples_report(path)
    assert [(s.id, s.prompt, s.answer) for s in report.samples] == [("row-1", "1+1?", "2"), ("row-3", "x?", "3, 4")]
    assert report.skipped == ["line 2: no answer column and no \\boxed{} answer in 'solution'"]


@pytest.mark.parametrize("column", ["id", "idx", "unique_id", "problem_id", "question_id", "uid"])
def test_common_id_columns_are_recognized(tmp_path, column):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({column: f"q{i}", "question": f"{i}?", "answer": f"#### {i}"}) + "\n" for i in range(2)))
    assert [s.id for s in read_samples(path)] == ["q0", "q1"]
    # with a field map that names no id column too
    assert [s.id for s in read_samples(path, parse_field_map("prompt=question,answer=answer"))] == ["q0", "q1"]


def test_id_column_preference(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"idx": 5, "id": "a", "prompt": "1?", "answer": "1"}) + "\n")
    assert read_samples(path)[0].id == "a"


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
