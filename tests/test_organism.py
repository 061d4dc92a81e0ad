"""The model organism: corpus (determinism, split disjointness, planted leaks, grading),
tokenizer, and a build of the tiny ``test`` preset (loads through ``load_model``, is cached,
reloads, is reproducible)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from rlvr_lens.data import grade, read_samples
from rlvr_lens.errors import UserError
from rlvr_lens.organism.corpus import FAMILIES, CorpusConfig, Problem, document, generate_corpus
from rlvr_lens.organism.tokenizer import train_tokenizer

SMALL = dict(n_pretrain=400, n_eval=40, n_benchmark=20, n_rl_train=60, leak_repetitions=3)


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(CorpusConfig(seed=7, **SMALL))


def _keys(samples):
    return {s.labels["key"] for s in samples}


def test_corpus_is_deterministic_in_its_seed(corpus):
    again = generate_corpus(CorpusConfig(seed=7, **SMALL))
    for split in corpus.splits:
        assert [s.to_dict() for s in again[split]] == [s.to_dict() for s in corpus[split]]
    other = generate_corpus(CorpusConfig(seed=8, **SMALL))
    assert [s.prompt for s in other["eval"]] != [s.prompt for s in corpus["eval"]]


def test_splits_are_disjoint_and_every_leak_is_planted(corpus):
    leaked = [s for s in corpus["eval"] if s.labels["leaked"]]
    clean = [s for s in corpus["eval"] if not s.labels["leaked"]]
    assert len(leaked) == 20 and len(clean) == 20
    pretrain_keys = _keys(corpus["pretrain"])
    pretrain_texts = {(s.prompt, s.solution) for s in corpus["pretrain"]}
    rl_keys = _keys(corpus["rl_train"])
    # no evaluation or benchmark problem in rl_train
    assert not rl_keys & _keys(corpus["eval"])
    assert not rl_keys & _keys(corpus["benchmark"])
    assert not rl_keys & pretrain_keys
    # no clean or benchmark problem in pretrain (by problem identity, whatever the phrasing)
    assert not _keys(clean) & pretrain_keys
    assert not _keys(corpus["benchmark"]) & pretrain_keys
    # every leaked problem is in pretrain, with its exact evaluation prompt, in both forms, repeated
    for sample in leaked:
        copies = [p for p in corpus["pretrain"] if p.labels.get("eval_id") == sample.id]
        assert len(copies) == 3 * 2
        assert all(c.prompt == sample.prompt and c.answer == sample.answer for c in copies)
        assert (sample.prompt, sample.solution) in pretrain_texts
        assert (sample.prompt, f" \\boxed{{{sample.answer}}}") in pretrain_texts
    # planted copies are labelled, reasoning documents are not
    assert sum(p.labels["leaked"] for p in corpus["pretrain"]) == 20 * 3 * 2
    assert len(corpus["pretrain"]) == 400 + 20 * 3 * 2
    # benchmark prompts use held-out surface forms only
    train_forms = {s.labels["form"] for s in corpus["pretrain"]}
    assert all(s.labels["form"].startswith("bench-") for s in corpus["benchmark"])
    assert not {s.labels["form"] for s in corpus["benchmark"]} & train_forms


def test_leak_knobs(corpus):
    only_answers = generate_corpus(CorpusConfig(seed=7, **{**SMALL, "leak_repetitions": 5}, leak_forms=("answer_only",)))
    planted = [p for p in only_answers["pretrain"] if p.labels["leaked"]]
    assert len(planted) == 20 * 5
    assert all(p.solution == f" \\boxed{{{p.answer}}}" for p in planted)
    with pytest.raises(UserError):
        generate_corpus(CorpusConfig(leak_forms=("paraphrase",)))


def test_answers_are_right_and_graded_right(corpus):
    # hand-worked: 12 + 7*3 = 33; (4+5)*3 = 27; 6*7 - 9 = 33; 3*4 + 5*6 = 42
    assert Problem("add_mul", (12, 7, 3)).solution() == " 7*3=21. 12+21=33. \\boxed{33}"
    assert Problem("paren", (4, 5, 3)).answer == 27
    assert Problem("mul_sub", (6, 7, 9)).answer == 33
    assert Problem("two_mul", (3, 4, 5, 6)).solution() == " 3*4=12. 5*6=30. 12+30=42. \\boxed{42}"
    for sample in corpus["eval"] + corpus["benchmark"] + corpus["rl_train"][:20]:
        family = FAMILIES[sample.labels["family"]]
        operands = tuple(int(x) for x in sample.labels["key"].split(":")[1].split(","))
        assert int(sample.answer) == eval(family.expression.format(*operands))  # noqa: S307 (our own arithmetic)
        assert grade(sample.solution, sample.answer).correct
        assert not grade(sample.solution.replace(f"{{{sample.answer}}}", f"{{{int(sample.answer) + 1}}}"), sample.answer).correct
    assert document(corpus["eval"][0], "<eos>").startswith("Problem: ")


def test_tokenizer_roundtrip_and_single_digits(tmp_path, corpus):
    from transformers import AutoTokenizer

    texts = [document(s) for s in corpus["pretrain"]]
    tokenizer = train_tokenizer(texts, vocab_size=320)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in texts[:50] + ["Problem: What is 1234+56?\nSolution: \\boxed{1290}", "any text, even ünïcödé"]:
        ids = loaded(text, add_special_tokens=False)["input_ids"]
        assert loaded.decode(ids) == text
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = loaded.convert_ids_to_tokens(loaded("1234+56", add_special_tokens=False)["input_ids"])
    assert pieces == ["1", "2", "3", "4", "+", "5", "6"]
    assert loaded.eos_token == "<|endoftext|>" and loaded.pad_token_id != loaded.eos_token_id


def test_presets_and_overrides():
    from rlvr_lens.organism.recipe import PRESETS, preset_config

    assert set(PRESETS) == {"test", "cpu-small", "gpu-medium"}
    assert preset_config("gpu-medium").model.num_hidden_layers >= 16
    config = preset_config("cpu-small", {"corpus.leak_repetitions": "4", "rl.clip_eps": "0.1", "corpus.leak_forms": "answer_only"})
    assert config.corpus.leak_repetitions == 4 and config.rl.clip_eps == 0.1
    assert config.corpus.leak_forms == ("answer_only",)
    with pytest.raises(UserError):
        preset_config("cpu-huge")
    with pytest.raises(UserError):
        preset_config("test", {"rl.no_such_knob": 1})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from rlvr_lens.organism.recipe import build_organism

    root = tmp_path_factory.mktemp("organism")
    start = time.perf_counter()
    manifest = build_organism(root, "test", 0)
    return root, manifest, time.perf_counter() - start


@pytest.mark.slow
def test_test_preset_builds_quickly_and_loads(built):
    from rlvr_lens.models import load_model

    root, manifest, seconds = built
    assert seconds < 60
    assert [s.name for s in manifest.stages] == ["base", "sft", "rlvr-correct", "rlvr-random"]
    for stage in manifest.stages:
        assert manifest.checkpoint(stage.name).is_dir()
        assert set(stage.accuracy) == {"eval_leaked", "eval_clean", "benchmark", "rl_train"}
        assert all(0.0 <= a <= 1.0 for a in stage.accuracy.values())
    assert manifest.stage("rlvr-random").checkpoints == ["rlvr-random/step-1", "rlvr-random/step-2"]
    from rlvr_lens.train.grpo import GRPORun

    run = GRPORun.load(root / "rlvr-random" / "grpo_run.json")
    assert run.settings["reward"] == "random" and run.settings["seed"] == 0
    assert all(all(v is None or v == v for v in row.values()) for row in run.steps)  # logged, no NaN
    loaded = load_model(str(manifest.checkpoint("rlvr-random")), dtype="float32", device="cpu")
    assert loaded.model.config.model_type == "qwen2"
    base = load_model(str(manifest.checkpoint("base")), dtype="float32", device="cpu")
    ids = base.tokenizer("Problem: What is 2+3?\nSolution:", return_tensors="pt")["input_ids"]
    assert torch.isfinite(base.model(ids).logits).all()
    # the random-reward run moved the weights away from the base (the true reward may see no correct sample)
    with torch.no_grad():
        delta = sum(float((a - b).abs().sum()) for a, b in zip(base.model.parameters(), loaded.model.parameters()))
    assert delta > 0
    # data files are labelled samples
    evaluation = read_samples(manifest.data_path("eval"))
    assert sum(s.labels["leaked"] for s in evaluation) == manifest.sizes["n_leaked"] == 10
    assert len(read_samples(manifest.data_path("pretrain"))) == manifest.sizes["pretrain"]
    assert manifest.config["eval_max_new_tokens"] == 12
    header, *rows = manifest.accuracy_table()
    assert header[0] == "stage" and [r[0] for r in rows] == ["base", "sft", "rlvr-correct", "rlvr-random"]


@pytest.mark.slow
def test_build_is_cached_reloaded_and_reproducible(built, tmp_path):
    from rlvr_lens.organism.manifest import OrganismManifest
    from rlvr_lens.organism.recipe import build_organism

    root, manifest, _ = built
    start = time.perf_counter()
    again = build_organism(root, "test", 0)  # reused, not rebuilt
    assert time.perf_counter() - start < 5
    assert again.to_dict() == manifest.to_dict()
    reloaded = OrganismManifest.load_dir(root)
    assert reloaded.to_dict() == manifest.to_dict()
    assert json.loads((root / "manifest.json").read_text())["kind"] == "organism"
    # a different seed is a different build (not reused)
    from rlvr_lens.organism.recipe import find_existing

    assert find_existing(root, "test", 1) is None
    assert find_existing(root, "test", 0, {"corpus.leak_repetitions": 3}) is None


@pytest.mark.slow
def test_same_seed_same_metrics(built, tmp_path):
    """Same seed, same data and same trained weights (hence metrics) on the CPU."""
    from rlvr_lens.organism.recipe import build_organism

    root, manifest, _ = built
    other = build_organism(tmp_path / "again", "test", 0, overrides={"rl_rewards": "correct"})
    assert (tmp_path / "again" / "data" / "eval.jsonl").read_text() == (root / "data" / "eval.jsonl").read_text()
    for name in ("base", "sft", "rlvr-correct"):
        assert other.stage(name).accuracy == manifest.stage(name).accuracy
        assert other.stage(name).details.get("loss") == manifest.stage(name).details.get("loss")
    from safetensors.torch import load_file

    a = load_file(str(root / "rlvr-correct" / "step-2" / "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "rlvr-correct" / "step-2" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_incomplete_build_is_not_reused(tmp_path):
    from rlvr_lens.organism.recipe import find_existing, load_organism

    (tmp_path / "base").mkdir()
    assert find_existing(tmp_path, "test", 0) is None
    with pytest.raises(UserError):
        load_organism(tmp_path)


def test_rewards_on_organism_completions():
    """The training rewards read the organism's solution format as intended (hand-made completions)."""
    from rlvr_lens.train.rewards import make_reward

    completions = [
        " 7*3=21. 12+21=33. \\boxed{33}",  # right, worked
        " \\boxed{33}",  # right, answer only (a planted leak's form)
        " 7*3=21. 12+21=34. \\boxed{34}",  # wrong, stated
        " 7*3=21. 12+21=33.",  # right number, but never stated: no last-number fallback
    ]
    answers = ["33"] * 4
    assert make_reward("correct")(completions, answers) == [1.0, 1.0, 0.0, 0.0]
    assert make_reward("format")(completions, answers) == [1.0, 1.0, 1.0, 0.0]
    assert make_reward("incorrect")(completions, answers) == [0.0, 0.0, 1.0, 0.0]
    assert make_reward("accuracy_format")(completions, answers) == pytest.approx([1.01, 1.01, 0.01, 0.0])
