"""Audit caching: a finished step is reused, a changed key recomputes, a failure loses nothing."""

from __future__ import annotations

from dataclasses import dataclass

from rlvr_lens.audit import AuditStep, fingerprint_checkpoint, fingerprint_file, run_steps
from rlvr_lens.results import Result


@dataclass
class _Count(Result):
    kind = "count"
    value: int


def test_cached_steps_are_not_recomputed_and_failures_are_isolated(tmp_path):
    calls = []

    def make(value):
        def run():
            calls.append(value)
            return _Count(value)

        return run

    def broken():
        raise RuntimeError("analysis bug")

    steps = [AuditStep("a", _Count, {"v": 1}, make(1)), AuditStep("b", _Count, {}, broken), AuditStep("c", _Count, {"v": 3}, make(3))]
    first = run_steps(tmp_path, steps)
    assert [s.status for s in first.steps] == ["computed", "failed", "computed"]
    assert "analysis bug" in first.steps[1].error
    assert [r.value for r in first.results] == [1, 3]
    second = run_steps(tmp_path, steps)
    assert [s.status for s in second.steps] == ["cached", "failed", "cached"]
    assert calls == [1, 3]
    changed = run_steps(tmp_path, [AuditStep("a", _Count, {"v": 2}, make(2))])
    assert changed.steps[0].status == "computed" and calls == [1, 3, 2]


def test_fingerprints_change_with_content(tmp_path, tiny_pair):
    data = tmp_path / "d.jsonl"
    data.write_text("a\n")
    before = fingerprint_file(data)
    data.write_text("b\n")
    assert fingerprint_file(data) != before
    assert fingerprint_checkpoint(tiny_pair[0]) != fingerprint_checkpoint(tiny_pair[1])
    assert fingerprint_checkpoint("org/model") == {"source": "org/model"}


# ----------------------------------------------------------------------------- fingerprints and keys (issue 15)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_middle_in_place(path):
    """Flip bytes in the middle of ``path`` (same size), then restore its mtime to the nanosecond."""
    import os

    stat = path.stat()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    with open(path, "r+b") as handle:  # in place: same inode
        handle.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_checkpoint_rewritten_in_place_changes_its_fingerprint(tmp_path, tiny_pair):
    ckpt = _copy(tiny_pair[0], tmp_path / "ckpt")
    weights = sorted(ckpt.glob("*.safetensors"))[0]
    before = fingerprint_checkpoint(ckpt)
    _rewrite_middle_in_place(weights)
    assert fingerprint_checkpoint(ckpt) != before  # small file: hashed whole


def test_large_file_rewritten_in_place_changes_its_fingerprint(tmp_path, tiny_pair, monkeypatch):
    """Files above the full-hash size are identified by size, mtime, ctime and their edges: a
    change in the middle with size and mtime restored is still seen (through the ctime)."""
    import rlvr_lens.audit as audit

    monkeypatch.setattr(audit, "_FULL_HASH_BYTES", 0)
    monkeypatch.setattr(audit, "_EDGE_BYTES", 16)
    ckpt = _copy(tiny_pair[0], tmp_path / "ckpt")
    weights = sorted(ckpt.glob("*.safetensors"))[0]
    before = fingerprint_checkpoint(ckpt)
    assert fingerprint_checkpoint(ckpt) == before  # stable when nothing changed
    _rewrite_middle_in_place(weights)
    assert fingerprint_checkpoint(ckpt) != before


def _keys(specs, data, samples, config):
    from rlvr_lens.audit import audit_steps, step_hash

    return {s.name: step_hash(s.name, s.key) for s in audit_steps(specs, data, samples, config)}


def test_every_audit_config_field_is_keyed_or_selects_steps():
    """A new AuditConfig field must enter the cache key of the steps it affects (or be declared
    a step selector), or an audit would return cached results computed with another value."""
    import dataclasses

    from rlvr_lens.audit import COMMON_OPTIONS, SELECTION_OPTIONS, STEP_OPTIONS, AuditConfig

    keyed = set(COMMON_OPTIONS) | set(SELECTION_OPTIONS) | {o for opts in STEP_OPTIONS.values() for o in opts}
    assert {f.name for f in dataclasses.fields(AuditConfig)} <= keyed


def test_cache_key_changes_with_every_input(tmp_path, tiny_pair):
    """Vary each input of an audit alone: the key of every step it affects changes, the others stay."""
    import dataclasses
    import json

    from rlvr_lens.analyses.circuits import CircuitsConfig
    from rlvr_lens.audit import COMMON_OPTIONS, STEP_OPTIONS, AuditConfig
    from rlvr_lens.data import parse_field_map, read_samples
    from rlvr_lens.models import ModelSpec

    base = _copy(tiny_pair[0], tmp_path / "base")
    tuned = _copy(tiny_pair[1], tmp_path / "tuned")
    specs = [ModelSpec("base", str(base)), ModelSpec("tuned", str(tuned))]
    data = tmp_path / "d.jsonl"
    rows = [{"id": f"s{i}", "q1": f"What is {i} + 1?", "q2": f"What is {i} + 2?", "a": str(i + 1)} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = "prompt=q1,answer=a,id=id"
    samples = read_samples(data, parse_field_map(fields))
    config = AuditConfig(fields=fields)
    reference = _keys(specs, data, samples, config)
    model_steps = {"perplexity", "contamination", "tokens-tuned", "cross-sampling-tuned", "evaluation", "circuits-tuned"}
    assert set(reference) == model_steps | {"weights"}

    def changed(keys):
        return {name for name in reference if keys[name] != reference[name]}

    # the field map: other samples (their hash) and another --fields value
    other = "prompt=q2,answer=a,id=id"
    assert changed(_keys(specs, data, read_samples(data, parse_field_map(other)), dataclasses.replace(config, fields=other))) == model_steps
    # the field map's text alone (same samples) and the limit alone
    assert changed(_keys(specs, data, samples, dataclasses.replace(config, fields=fields + ",solution=a"))) == model_steps
    assert changed(_keys(specs, data, samples[:2], dataclasses.replace(config, limit=2))) == model_steps
    # the samples' hash alone: same count, one answer edited after reading
    edited = [dataclasses.replace(samples[0], answer="99"), *samples[1:]]
    assert changed(_keys(specs, data, edited, config)) == model_steps
    # the data file's bytes
    data.write_text(data.read_text() + "\n")
    assert changed(_keys(specs, data, samples, config)) == model_steps
    reference = _keys(specs, data, samples, config)
    # tokenizer files and weights of one checkpoint
    tok = tuned / "tokenizer_config.json"
    tok.write_text(tok.read_text().rstrip() + " \n")
    assert changed(_keys(specs, data, samples, config)) == model_steps | {"weights"}
    reference = _keys(specs, data, samples, config)
    _rewrite_middle_in_place(sorted(tuned.glob("*.safetensors"))[0])
    assert changed(_keys(specs, data, samples, config)) == model_steps | {"weights"}
    reference = _keys(specs, data, samples, config)
    # every option
    variants = {
        "template": "boxed",
        "batch_size": 3,
        "dtype": "float32",
        "device": "meta",
        "fractions": (0.5,),
        "answer_tokens": 3,
        "max_new_tokens": 5,
        "weights_metrics": "cheap",
        "fields": fields + ",labels=x",
        "limit": 3,
        "eval_samples": 4,
        "eval_temperature": 0.7,
        "eval_seed": 1,
        "circuits": CircuitsConfig(width=2),
    }
    assert set(variants) == set(COMMON_OPTIONS) | {o for opts in STEP_OPTIONS.values() for o in opts}
    by_step = {
        "perplexity": "perplexity",
        "contamination": "contamination",
        "tokens-tuned": "tokens",
        "cross-sampling-tuned": "cross-sampling",
        "weights": "weights",
        "evaluation": "evaluation",
        "circuits-tuned": "circuits",
    }
    for option, value in variants.items():
        expected = {name for name, step in by_step.items() if option in STEP_OPTIONS[step] or (option in COMMON_OPTIONS and step != "weights")}
        assert expected, option
        assert changed(_keys(specs, data, samples, dataclasses.replace(config, **{option: value}))) == expected, option
