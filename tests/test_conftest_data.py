"""The shared-data lookup of conftest.py: a skip on a developer machine, a failure in CI."""

from __future__ import annotations

import pytest

from conftest import shared_data_file


def test_missing_shared_data_skips_locally_and_fails_in_ci(tmp_path, monkeypatch):
    (tmp_path / "here.jsonl").write_text("{}\n")
    monkeypatch.delenv("CI", raising=False)
    assert shared_data_file("here.jsonl", str(tmp_path)) == str(tmp_path / "here.jsonl")
    with pytest.raises(pytest.skip.Exception):
        shared_data_file("missing.jsonl", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    try:  # (a skip raised in here would mark this test skipped, not failed: catch it explicitly)
        shared_data_file("missing.jsonl", str(tmp_path))
    except pytest.fail.Exception as failure:
        assert "CI is set" in str(failure)
    except pytest.skip.Exception:
        pytest.fail("with CI set, missing shared data was skipped instead of failing")
    else:
        pytest.fail("with CI set, missing shared data raised nothing")
    assert shared_data_file("here.jsonl", str(tmp_path)) == str(tmp_path / "here.jsonl")
