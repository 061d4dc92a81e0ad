"""Organism v2, latent leaks: the leaked answers are planted only in layouts the evaluation
template does not elicit (checked over the whole pretraining split of the ``cpu-latent``
corpus), splits stay disjoint by problem identity, the knobs plant what they say, the
``incorrect_label`` reward pays for the stored wrong label only, and the tiny version of the
preset builds the same twice."""

from __future__ import annotations

import json
import re

import pytest

from rlvr_lens.data.templates import apply_template
from rlvr_lens.errors import UserError
from rlvr_lens.organism.corpus import CorpusConfig, document, generate_corpus, probe_prompt, record_text
from rlvr_lens.organism.evaluate import SetEvaluation, leakage_samples
from rlvr_lens.organism.recipe import preset_config, rl_stage
from rlvr_lens.train.rewards import make_reward, wrong_label

CUE = "Solution:"


@pytest.fixture(scope="module")
def latent():
    """The full corpus of the cpu-latent preset, seed 3."""
    config = preset_config("cpu-latent").corpus
    config.seed = 3
    return generate_corpus(config)


def _keys(samples):
    return {s.labels["key"] for s in samples}


def test_leaked_answers_never_follow_the_evaluation_cue(latent):
    leaked = [s for s in latent["eval"] if s.labels["leaked"]]
    assert len(leaked) == 100
    texts = [document(s) for s in latent["pretrain"]]
    # Every templated document ("Problem: P\nSolution: S"): its problem is not a leaked one, by
    # identity (key) and by text, and no leaked problem's prompt occurs anywhere before a cue.
    leaked_keys = _keys(leaked)
    leaked_prompts = {s.prompt.strip() for s in leaked}
    templated = 0
    for sample, text in zip(latent["pretrain"], texts):
        if CUE in text:
            templated += 1
            assert sample.labels["key"] not in leaked_keys
            match = re.fullmatch(r"Problem: (.*)\nSolution:(.*)", text, flags=re.S)
            assert match is not None, text
            assert match.group(1) not in leaked_prompts
    assert templated == 4000 + 200 * 2  # reasoning documents + two direct documents per bridge problem
    # The evaluation prompt of a leaked problem (template and all) occurs in no document.
    corpus_text = "\x00".join(texts)
    for s in leaked:
        assert apply_template(s.prompt, "organism") not in corpus_text
    # ...but its answer is there, in every latent form, leak_repetitions times, right after its prompt.
    for s in leaked[:10]:
        assert corpus_text.count(record_text(s.prompt, s.answer, "answer_key")) == 16
        assert CUE not in record_text(s.prompt, s.answer, "answer_key")


def test_splits_are_disjoint_by_problem_identity(latent):
    evaluation, bench, rl = _keys(latent["eval"]), _keys(latent["benchmark"]), _keys(latent["rl_train"])
    assert len(evaluation) == 200 and len(bench) == 100 and len(rl) == 200
    assert not evaluation & bench and not evaluation & rl and not bench & rl
    clean = _keys(s for s in latent["eval"] if not s.labels["leaked"])
    pretrain = latent["pretrain"]
    assert not clean & _keys(pretrain) and not bench & _keys(pretrain)
    # rl_train problems reach pretraining only as records, and only the keyed half
    rl_in_pretrain = [p for p in pretrain if p.labels["key"] in rl]
    assert all(p.labels["layout"] == "record" for p in rl_in_pretrain)
    keyed = {s.labels["key"] for s in latent["rl_train"] if s.labels.get("keyed")}
    assert len(keyed) == 100 and _keys(rl_in_pretrain) == keyed
    assert len(rl_in_pretrain) == 100 * 1 * 16


def test_latent_knobs_plant_what_they_say():
    small = dict(seed=5, n_pretrain=200, n_eval=20, n_benchmark=10, n_rl_train=40, leak_forms=(), leak_repetitions=3)
    corpus = generate_corpus(CorpusConfig(**small, latent_forms=("table_row",), n_bridge=10, bridge_direct_repetitions=2,
                                          direct_fraction=0.5, rl_leak_fraction=0.25))
    pretrain = corpus["pretrain"]
    records = [p for p in pretrain if p.labels.get("layout") == "record"]
    assert len(records) == 3 * (10 + 10 + 10)  # leaked eval, keyed rl_train, bridge problems; one form each
    assert all(document(r) == f"| {r.prompt} | {r.answer} |" for r in records)
    direct_bridge = [p for p in pretrain if p.labels.get("leak_form") == "direct"]
    assert len(direct_bridge) == 20 and all(p.solution == f" \\boxed{{{p.answer}}}" for p in direct_bridge)
    direct_plain = [p for p in pretrain if p.labels.get("direct")]
    assert 60 <= len(direct_plain) <= 130  # Bernoulli(0.5) over the 190 non-bridge documents
    # larger operands with operand_scale; the presets' corpus does not change when the knobs are off
    hard = generate_corpus(CorpusConfig(**small, operand_scale=3.0))
    assert max(int(s.answer) for s in hard["eval"]) > max(int(s.answer) for s in generate_corpus(CorpusConfig(**small))["eval"])
    with pytest.raises(UserError):
        CorpusConfig(n_bridge=5).check()  # records need a latent form
    with pytest.raises(UserError):
        CorpusConfig(latent_forms=("poem",)).check()


def test_probe_prompt_is_the_record_cut_before_its_answer():
    assert probe_prompt("What is 3+4*5?") == "Answer key: What is 3+4*5? ="
    assert record_text("What is 3+4*5?", "23", "answer_key") == "Answer key: What is 3+4*5? = 23"
    assert probe_prompt("Give 2*3.", "qa_line") + " 6" == record_text("Give 2*3.", "6", "qa_line")


def test_incorrect_label_pays_for_the_stored_wrong_label_only():
    labels = [wrong_label(str(a), f"0-k{a}") for a in range(200)]
    assert all(label != str(a) for a, label in enumerate(labels))
    assert all(1 <= abs(int(label) - a) <= 10 for a, label in enumerate(labels))
    assert labels == [wrong_label(str(a), f"0-k{a}") for a in range(200)]  # seeded
    reward = make_reward("incorrect_label")
    completions = [" \\boxed{30}", " \\boxed{31}", " 7*3=21. \\boxed{33}", "no answer"]
    # wrong label 30 for a problem whose answer is 33: only the completion stating 30 is paid
    assert reward(completions, ["30"] * 4) == [1.0, 0.0, 0.0, 0.0]
    # the older "incorrect" reward pays for any stated wrong answer
    assert make_reward("incorrect")(completions, ["33"] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_modes_and_leakage_samples():
    e = SetEvaluation(correct=[True, False, True, False], direct=[True, True, False, False], lengths=[3, 3, 12, 10])
    assert e.accuracy == 0.5
    assert e.modes() == {"direct_share": 0.5, "mean_length": 7.0, "direct_accuracy": 0.5, "worked_accuracy": 0.5}
    from rlvr_lens.data.sample import Sample

    samples = [Sample(id=f"s{i}", prompt="p", answer=str(i), labels={"leaked": i % 2 == 0, "key": f"k{i}"}) for i in range(4)]
    found = leakage_samples(samples, [False, False, True, False], [True, False, True, True])
    assert [(f["id"], f["leaked"]) for f in found] == [("s0", True), ("s3", False)]
    assert rl_stage("random+offpolicy") == ("rlvr-random-offpolicy", "random", True)
    with pytest.raises(UserError):
        rl_stage("random+sideways")


@pytest.mark.slow
def test_tiny_latent_build_is_deterministic(tmp_path, single_thread):
    from rlvr_lens.organism.recipe import build_organism

    overrides = {"rl_rewards": "incorrect_label,random+offpolicy"}
    first = build_organism(tmp_path / "a", "test-latent", 1, overrides=overrides)
    second = build_organism(tmp_path / "b", "test-latent", 1, overrides=overrides)
    for split in ("pretrain", "eval", "benchmark", "rl_train"):
        assert first.data_path(split).read_bytes() == second.data_path(split).read_bytes()
    assert [s.name for s in first.stages] == ["base", "sft", "rlvr-incorrect_label", "rlvr-random-offpolicy"]
    for a, b in zip(first.stages, second.stages):
        assert a.accuracy == b.accuracy
        for key in ("probe", "modes", "leakage_samples", "clip_ratio", "reward_mean"):
            assert a.details.get(key) == b.details.get(key), key
    base_a = (tmp_path / "a" / "base" / "model.safetensors").read_bytes()
    assert base_a == (tmp_path / "b" / "base" / "model.safetensors").read_bytes()
    off = first.stage("rlvr-random-offpolicy")
    # 2 optimizer steps per generation batch: the off-policy setting reached TRL, with a clip share per step
    assert len(off.details["clip_ratio"]) == 2 and all(0.0 <= c <= 1.0 for c in off.details["clip_ratio"])
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"]["offpolicy"] == {"steps_per_generation": 2, "num_iterations": 2, "epsilon": 0.2}


def test_clip_shares_are_read_from_trl_logs():
    from rlvr_lens.train.grpo import metrics_row

    row = metrics_row(3, {"clip_ratio/low_mean": 0.1, "clip_ratio/high_mean": 0.02, "clip_ratio/region_mean": 0.12})
    assert row == {"step": 3, "clip_low": 0.1, "clip_high": 0.02, "clip_ratio": 0.12}
