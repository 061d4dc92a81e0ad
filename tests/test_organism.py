"""The model organism: corpus (determinism, split disjointness, planted leaks, grading),
tokenizer, and a build of the tiny ``test`` preset (loads through ``load_model``, is cached,
reloads, is reproducible)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
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
    config = preset_config("cpu-small", {"corpus.leak_repetitions": "4", "rl.epsilon": "0.1", "corpus.leak_forms": "answer_only"})
    assert config.corpus.leak_repetitions == 4 and config.rl.epsilon == 0.1
    assert config.corpus.leak_forms == ("answer_only",)
    # the names before issue 16 still work, and the error of a bad value names the new one
    old = preset_config("test", {"rl.clip_eps": "0.3", "rl.steps": "5", "rl.group_size": "6", "offpolicy.clip_eps": "0.25"})
    assert (old.rl.epsilon, old.rl.max_steps, old.rl.num_generations, old.offpolicy.epsilon) == (0.3, 5, 6, 0.25)
    with pytest.raises(UserError, match=r"'rl\.epsilon' needs a float"):
        preset_config("test", {"rl.clip_eps": "wide"})
    with pytest.raises(UserError):
        preset_config("cpu-huge")
    with pytest.raises(UserError):
        preset_config("test", {"rl.no_such_knob": 1})
    with pytest.raises(UserError):
        preset_config("test", {"offpolicy.steps": 1})  # an old GRPO name, but no off-policy setting


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from rlvr_lens.organism.recipe import build_organism

    root = tmp_path_factory.mktemp("organism")
    return root, build_organism(root, "test", 0)


@pytest.mark.slow
def test_test_preset_builds_and_loads(built):
    """(Build times belong in benchmarks/; the test preset is too small to learn the task, so
    its accuracies are only range-checked here: see test_built_organism_separates_leaked_from_clean.)"""
    from rlvr_lens.models import load_model

    root, manifest = built
    assert [s.name for s in manifest.stages] == ["base", "sft", "rlvr-correct", "rlvr-random"]
    for stage in manifest.stages:
        assert manifest.checkpoint(stage.name).is_dir()
        assert set(stage.accuracy) == {"eval_leaked", "eval_clean", "benchmark", "rl_train"}
        assert all(0.0 <= a <= 1.0 for a in stage.accuracy.values())
    assert manifest.stage("rlvr-random").checkpoints == ["rlvr-random/step-1", "rlvr-random/step-2"]
    from rlvr_lens.train.grpo import GRPORun

    run = GRPORun.load(root / "rlvr-random" / "grpo_run.json")
    assert run.settings["reward"] == "random" and run.settings["seed"] == 0
    assert len(run.steps) == 2
    numbers = [v for row in run.steps for v in row.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)  # logged, no NaN or infinity
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
    _check_organism_section(manifest)


@pytest.mark.slow
def test_build_is_cached_reloaded_and_reproducible(built, tmp_path):
    from rlvr_lens.organism.manifest import OrganismManifest
    from rlvr_lens.organism.recipe import build_organism

    root, manifest = built
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = build_organism(root, "test", 0)  # reused, not rebuilt: no file is rewritten
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert again.to_dict() == manifest.to_dict()
    reloaded = OrganismManifest.load_dir(root)
    assert reloaded.to_dict() == manifest.to_dict()
    assert json.loads((root / "manifest.json").read_text())["kind"] == "organism"
    # a different seed is a different build (not reused)
    from rlvr_lens.organism.recipe import find_existing

    assert find_existing(root, "test", 1) is None
    assert find_existing(root, "test", 0, {"corpus.leak_repetitions": 3}) is None


def test_build_made_before_the_settings_rename_is_reused(built, tmp_path):
    """A manifest written before issue 16 (rl.clip_eps, rl.steps, ..., another hash) still
    describes the same build, so it is reused rather than rebuilt; a changed value is not."""
    import shutil

    from rlvr_lens.organism.recipe import find_existing
    from rlvr_lens.train.settings import RENAMED

    root, manifest = built
    old_root = tmp_path / "old"
    shutil.copytree(root, old_root)
    data = json.loads((old_root / "manifest.json").read_text())
    back = {new: old for old, new in RENAMED.items()}
    data["config"]["rl"] = {back.get(k, k): v for k, v in data["config"]["rl"].items()}
    assert "clip_eps" in data["config"]["rl"] and "epsilon" not in data["config"]["rl"]
    data["config_hash"] = "0" * 64
    (old_root / "manifest.json").write_text(json.dumps(data))
    assert find_existing(old_root, "test", 0) is not None
    assert find_existing(old_root, "test", 0, {"rl.epsilon": 0.3}) is None


@pytest.mark.slow
def test_same_seed_same_metrics(built, tmp_path):
    """Same seed, same data and same trained weights (hence metrics) on the CPU."""
    from rlvr_lens.organism.recipe import build_organism

    root, manifest = built
    other = build_organism(tmp_path / "again", "test", 0, overrides={"rl_rewards": "correct"})
    assert (tmp_path / "again" / "data" / "eval.jsonl").read_text() == (root / "data" / "eval.jsonl").read_text()
    for name in ("base", "sft", "rlvr-correct"):
        assert other.stage(name).accuracy == manifest.stage(name).accuracy
        assert other.stage(name).details.get("loss") == manifest.stage(name).details.get("loss")
    from safetensors.torch import load_file

    a = load_file(str(root / "rlvr-correct" / "step-2" / "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "rlvr-correct" / "step-2" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sft_adapter_trains_a_rank_r_update_into_a_plain_sft_checkpoint(built, tmp_path):
    """``sft_adapter.method=lora`` (rank 1): same base, and the SFT stage's update of every adapted
    matrix has rank 1 (NumPy SVD), while the frozen embeddings stay bit-identical; bad adapter
    settings are refused before anything is built."""
    from safetensors.torch import load_file

    from rlvr_lens.organism.recipe import build_organism

    root, _ = built
    overrides = {"rl_rewards": "correct", "sft_adapter.method": "lora", "sft_adapter.rank": "1"}
    build_organism(tmp_path / "lora", "test", 0, overrides=overrides)
    base = load_file(str(tmp_path / "lora" / "base" / "model.safetensors"))
    assert all(torch.equal(base[k], t) for k, t in load_file(str(root / "base" / "model.safetensors")).items())
    sft = load_file(str(tmp_path / "lora" / "sft" / "model.safetensors"))
    adapted = [k for k in base if k.endswith("proj.weight")]
    assert adapted
    for name in adapted:
        update = (sft[name].double() - base[name].double()).numpy()
        singular = np.linalg.svd(update, compute_uv=False)
        # beyond the first, only float32 rounding of the merged weights (~1e-6 relative)
        assert singular[0] > 0 and np.all(singular[1:] <= 1e-4 * singular[0]), name
    frozen = [k for k in base if not k.endswith("proj.weight")]
    assert frozen and all(torch.equal(base[k], sft[k]) for k in frozen)
    with pytest.raises(UserError, match="Adapter rank"):
        build_organism(tmp_path / "bad", "test", 0, overrides={"sft_adapter.method": "lora", "sft_adapter.rank": "0"})
    assert not (tmp_path / "bad").exists()


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


@pytest.mark.skipif(not os.environ.get("RLVR_LENS_ORGANISM"), reason="set RLVR_LENS_ORGANISM to a built cpu-small organism")
def test_built_organism_separates_leaked_from_clean():
    """The organism's purpose: its base model answers the planted (leaked) evaluation problems
    more often than the clean ones. Only a real preset learns the task (cpu-small, ~hours)."""
    from rlvr_lens.organism.manifest import OrganismManifest

    manifest = OrganismManifest.load_dir(os.environ["RLVR_LENS_ORGANISM"])
    base = manifest.stage("base").accuracy
    assert base["eval_leaked"] >= base["eval_clean"] + 0.1, base
    assert base["benchmark"] < base["eval_leaked"], base
    _check_organism_section(manifest)


def _check_organism_section(manifest):
    """The report section's accuracy and stage tables and its summary against the manifest JSON."""
    from report_numbers import assert_shows, numbers_in
    from rlvr_lens.organism.manifest import section_organism

    data = json.loads(json.dumps(manifest.to_dict()))
    section = section_organism(manifest, {})
    accuracy, stages = section.tables[0], section.tables[1]
    splits = accuracy.columns[1:]
    assert [row[0] for row in accuracy.rows] == [s["name"] for s in data["stages"]]
    for row, stage in zip(accuracy.rows, data["stages"]):
        for cell, split in zip(row[1:], splits):
            assert_shows(cell, stage["accuracy"][split], where=f"{stage['name']} {split}")
    for row, stage in zip(stages.rows, data["stages"]):
        assert int(row[1]) == len(stage["checkpoints"]) and row[4] == stage["checkpoints"][-1]
        assert_shows(row[2], stage["wall_time_s"], where="wall")
        assert_shows(row[3], stage["cpu_time_s"], where="cpu")
    base = next(s for s in data["stages"] if s["name"] == "base")["accuracy"]
    shown = numbers_in(section.summary.split("):", 1)[1])
    assert_shows(shown[0], base["eval_leaked"], where="summary leaked")
    assert_shows(shown[1], base["eval_clean"], where="summary clean")
    assert_shows(shown[2], 100 * (base["eval_leaked"] - base["eval_clean"]), where="summary gap")


# ----------------------------------------------------------------------------- pretraining
def test_learning_rate_schedule_by_hand_and_as_applied(tokenizer, monkeypatch):
    """Linear warmup (step + 1) / warmup, then cosine from the peak to min_lr_ratio x the peak."""
    from rlvr_lens.models.tiny import build_tiny_model
    from rlvr_lens.organism.pretrain import TrainSettings, learning_rate_at, train_causal_lm

    settings = TrainSettings(steps=10, batch_size=2, learning_rate=1.0, warmup_steps=2, min_lr_ratio=0.1, seed=0)
    # steps 0, 1: 1/2, 2/2; step 2 + k: 0.1 + 0.9 * (1 + cos(pi k / 8)) / 2
    expected = [0.5, 1.0, 1.0] + [0.1 + 0.45 * (1 + math.cos(math.pi * k / 8)) for k in range(1, 8)]
    assert [learning_rate_at(s, settings) for s in range(10)] == pytest.approx(expected, abs=1e-12)
    assert expected[6] == pytest.approx(0.55) and learning_rate_at(10, settings) == pytest.approx(0.1)
    assert learning_rate_at(1000, settings) == pytest.approx(0.1)  # past the end: stays at the floor
    seen = []
    original = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    model = build_tiny_model("qwen2", vocab_size=len(tokenizer))
    settings = TrainSettings(steps=10, batch_size=2, learning_rate=1e-3, warmup_steps=2, min_lr_ratio=0.1, seed=0)
    train_causal_lm(model, tokenizer, [("1+1=", "2"), ("2+2=", "4"), ("3+3=", "6")], settings)
    assert seen == [[pytest.approx(1e-3 * e, abs=1e-15)] * 2 for e in expected]


def test_documents_are_truncated_to_the_context_and_keep_the_prompt_length(tokenizer):
    from rlvr_lens.organism.pretrain import encode_documents

    prompt, completion = "Problem: What is 12 + 7 * 3?\nSolution:", " 7*3=21. 12+21=33. \\boxed{33}"
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    assert encode_documents(tokenizer, [(prompt, completion)], 512) == [(p + c + [eos], len(p))]
    assert encode_documents(tokenizer, [(prompt, completion)], len(p) + 2) == [(p + c[:2], len(p))]  # no EOS
    assert encode_documents(tokenizer, [(prompt, completion)], len(p + c) + 1) == [(p + c + [eos], len(p))]
    assert encode_documents(tokenizer, [(prompt, completion)], 3) == [(p[:3], len(p))]


@pytest.mark.parametrize("loss_on", ["completion", "all"])
def test_training_loss_is_on_the_completion_only_for_sft(tokenizer, loss_on):
    """The first logged loss equals cross-entropy recomputed in float64 on each unpadded document
    over the completion tokens and EOS (SFT) or every predicted token (pretraining)."""
    from rlvr_lens.models.tiny import build_tiny_model
    from rlvr_lens.organism.pretrain import TrainSettings, train_causal_lm

    pairs = [("What is 12 + 7 * 3?", " \\boxed{33}"), ("x^2 = 16, so x =", " 4 or -4"), ("Compute 1 + 2 + ... + 10:", " 55")]
    model = build_tiny_model("qwen2", vocab_size=len(tokenizer))
    total, count = 0.0, 0
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        ids = p + tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        first = len(p) if loss_on == "completion" else 1  # first target position
        total -= sum(float(logp[i - 1, ids[i]]) for i in range(first, len(ids)))
        count += len(ids) - first
    settings = TrainSettings(steps=1, batch_size=3, learning_rate=1e-3, warmup_steps=1, loss_on=loss_on, seed=0)
    stats = train_causal_lm(model, tokenizer, pairs, settings)
    assert stats["losses"][0] == pytest.approx(total / count, rel=1e-5)
