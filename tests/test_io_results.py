"""Atomic writes and typed results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from rlvr_lens.io import atomic_write_json
from rlvr_lens.results import Result


@dataclass
class _Inner:
    name: str
    values: list[float]


@dataclass
class _Demo(Result):
    kind = "demo"
    score: float
    inner: list[_Inner] = field(default_factory=list)
    table: dict[str, float] = field(default_factory=dict)
    note: str | None = None


def test_result_round_trips_through_json(tmp_path):
    result = _Demo(0.5, [_Inner("a", [1.0, 2.0])], {"x": 3.0})
    path = result.save(tmp_path / "demo.json")
    data = json.loads(path.read_text())
    assert data["kind"] == "demo" and data["inner"][0]["values"] == [1.0, 2.0]
    assert _Demo.load(path) == result


def test_non_finite_floats_become_null(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.0]}


def test_a_failed_write_leaves_no_file(tmp_path):
    class Unserializable:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"a": Unserializable()})
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_survives_a_failed_overwrite(tmp_path):
    target = tmp_path / "keep.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"ok": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
