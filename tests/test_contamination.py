"""Partial-prompt probe: scores by hand, prompt splitting, and a model trained to memorize
a few problems completes them (scores near 1) but not unseen ones (near 0)."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr_lens.analyses.contamination import (
    ContaminationResult,
    exact_match,
    kept_tokens,
    partial_prompt_probe,
    rouge_l,
    split_prompt,
)
from rlvr_lens.data import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.models import ModelSeries, ModelSpec, load_tokenizer


def test_rouge_l_and_exact_match_by_hand():
    # tokens: reference [x ^ 2 = 16], prediction [x ^ 2 = 61]: LCS 4 of 5 each way -> F1 0.8
    assert rouge_l("x^2 = 61", "x^2 = 16") == pytest.approx(0.8)
    # reference [the answer is 4] vs [answer 4 is]: LCS "answer is" or "answer 4" = 2; P = 2/3, R = 2/4
    assert rouge_l("answer 4 is", "the answer is 4") == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert rouge_l("", "anything") == 0.0
    assert exact_match(" integers,  counted\none ", "integers, counted one")
    assert not exact_match("integers, counted", "integers counted")


def test_kept_tokens():
    assert kept_tokens(10, 0.4) == 4
    assert kept_tokens(3, 0.1) == 1 and kept_tokens(3, 0.99) == 2
    assert kept_tokens(1, 0.5) is None


def test_split_prompt_keeps_the_template_head(tiny_pair):
    tok = load_tokenizer(str(tiny_pair[0]))
    sample = Sample("a", "What is 2 + 2?  ", "4")
    plain = split_prompt(tok, sample, "plain")
    assert plain.head_ids == [] and tok.decode(plain.problem_ids) == "What is 2 + 2?"
    organism = split_prompt(tok, sample, "organism")
    assert tok.decode(organism.head_ids) == "Problem: " and organism.problem_ids == plain.problem_ids


@pytest.fixture(scope="module")
def probed(memorizing_pair):
    base_dir, tuned_dir, samples = memorizing_pair
    series = ModelSeries([ModelSpec("base", str(base_dir)), ModelSpec("tuned", str(tuned_dir))], dtype="float32", device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny decoding steps: one thread is far faster on a shared box
    try:
        result = partial_prompt_probe(series, samples, fractions=(0.4, 0.8), answer_tokens=16, batch_size=3)
    finally:
        torch.set_num_threads(threads)
    return result, samples, base_dir


def test_memorized_problems_are_completed_and_unseen_ones_are_not(probed):
    result, samples, base_dir = probed
    leaked, clean = result.groups["leaked"], result.groups["clean"]
    tuned = result.run("tuned", 0.4)
    assert all(tuned.exact_match[i] for i in leaked)
    assert min(tuned.rouge_l[i] for i in leaked) == 1.0
    assert all(tuned.answer_correct[i] for i in leaked)  # it goes on to recite the boxed answer
    assert max(tuned.rouge_l[i] for i in clean) < 0.3
    assert not any(tuned.exact_match[i] for i in clean)
    assert tuned.groups["leaked"]["rouge_l_mean"] == 1.0 and tuned.groups["clean"]["rouge_l_mean"] < 0.3
    assert tuned.auroc == {"exact_match": 1.0, "rouge_l": 1.0, "answer_correct": 1.0}
    # the random base model recites nothing
    base = result.run("base", 0.4)
    assert base.exact_match_rate == 0.0 and base.rouge_l_mean < 0.3 and base.answer_rate == 0.0
    # hand count: 4 of 8 recited exactly and answered; ROUGE-L mean = (4 x 1 + the clean ones) / 8
    assert tuned.exact_match_rate == 0.5 and tuned.answer_rate == 0.5
    assert tuned.rouge_l_mean == pytest.approx((4 + sum(tuned.rouge_l[i] for i in clean)) / 8)
    # kept tokens: the problem tokenized here, int(x n + 0.5) of its n tokens (no .5 ties at x = 0.4 or 0.8)
    tok = load_tokenizer(str(base_dir))
    n_tokens = [len(tok(s.prompt, add_special_tokens=False).input_ids) for s in samples]
    assert result.problem_tokens == n_tokens and min(n_tokens) > 5
    assert tuned.kept_tokens == [int(0.4 * n + 0.5) for n in n_tokens]
    # with 80 % of the prompt shown the memorized ones are still completed, the unseen ones still not
    late = result.run("tuned", 0.8)
    assert late.kept_tokens == [int(0.8 * n + 0.5) for n in n_tokens]
    assert [late.exact_match[i] for i in range(len(samples))] == [s.labels["leaked"] for s in samples]
    assert all(late.answer_correct[i] for i in leaked) and not any(late.answer_correct[i] for i in clean)
    assert late.exact_match_rate == 0.5 and late.answer_rate == 0.5
    assert late.auroc["exact_match"] == 1.0 and late.auroc["answer_correct"] == 1.0
    assert result.run("base", 0.8).exact_match_rate == 0.0 and result.run("base", 0.8).answer_rate == 0.0


def test_probe_result_round_trips_and_reports(probed, tmp_path):
    from rlvr_lens.report import write_run

    result, _, _ = probed
    assert ContaminationResult.from_dict(result.to_dict()) == result
    page = write_run(tmp_path, [result]).read_text()
    assert "Partial-prompt contamination probe" in page and "data:image/png;base64" in page
    assert (tmp_path / "contamination.json").exists()


def test_report_section_numbers_match_the_result(probed):
    from report_numbers import assert_shows, column, numbers_in
    from rlvr_lens.analyses.contamination import section_contamination

    result, _, _ = probed
    data = json.loads(json.dumps(result.to_dict()))
    section = section_contamination(result, {})
    runs = data["runs"]
    for table_index, keys in ((0, ("exact_match_rate", "rouge_l_mean", "answer_rate")),):
        table = section.tables[table_index]
        assert column(table, "checkpoint") == [r["checkpoint"] for r in runs]
        assert column(table, "shown") == [f"{round(100 * r['fraction'])}%" for r in runs]
        for header, key in zip(("exact match", "ROUGE-L", "answer"), keys):
            for cell, run in zip(column(table, header), runs):
                assert_shows(cell, run[key], where=header)
        for group in data["groups"]:
            for header, key in zip((f"exact ({group})", f"ROUGE-L ({group})", f"answer ({group})"), keys):
                for cell, run in zip(column(table, header), runs):
                    assert_shows(cell, run["groups"][group][key], where=header)
    auroc = section.tables[1]
    for row, run in zip(auroc.rows, runs):
        for cell, key in zip(row[2:], ("exact_match", "rouge_l", "answer_correct")):
            assert_shows(cell, run["auroc"][key], where=f"AUROC {key}")
    # summary: the middle fraction of the first and last checkpoints, then the last one by group
    middle = data["fractions"][len(data["fractions"]) // 2]
    first, last = (next(r for r in runs if r["checkpoint"] == c and r["fraction"] == middle) for c in ("base", "tuned"))
    shown = numbers_in(section.summary)
    assert int(shown[0]) == round(100 * middle)
    expected = [first["exact_match_rate"], first["rouge_l_mean"], last["exact_match_rate"], last["rouge_l_mean"],
                first["answer_rate"], last["answer_rate"], *[last["groups"][g]["rouge_l_mean"] for g in data["groups"]]]
    assert len(shown) == 1 + len(expected)
    for cell, value in zip(shown[1:], expected):
        assert_shows(cell, value, where="summary")


def test_bad_fractions_are_user_errors(tiny_pair):
    series = ModelSeries([ModelSpec("a", str(tiny_pair[0])), ModelSpec("b", str(tiny_pair[1]))])
    with pytest.raises(UserError, match="between 0 and 1"):
        partial_prompt_probe(series, [Sample("a", "x y z", "1")], fractions=(0.5, 1.0))


def test_probe_clamps_decoding_to_the_context_window_and_skips_one_token_problems(tmp_path, tokenizer, monkeypatch):
    """A model whose context holds the problem with 4 tokens to spare: a prompt of k shown tokens
    may decode context - k tokens at most, however long the remainder + answer budget; a
    one-token problem is not probed (None) and is left out of the rates. (A problem longer than
    the context is skipped altogether: tests/test_reliability.py.)"""
    from rlvr_lens.analyses import contamination
    from rlvr_lens.models.tiny import save_tiny_checkpoint

    requested = []
    real_generate = contamination.generate

    def spy(model, tok, inputs, *, max_new_tokens, **kwargs):
        requested.append((max(len(x) for x in inputs), max_new_tokens))
        return real_generate(model, tok, inputs, max_new_tokens=max_new_tokens, **kwargs)

    monkeypatch.setattr(contamination, "generate", spy)
    long = "Let x be a real number such that x squared equals sixteen. Find the largest x."
    samples = [Sample("long", long, "4"), Sample("one", "x", "4")]
    n = len(tokenizer(long, add_special_tokens=False).input_ids)
    context = n + 4
    path = save_tiny_checkpoint(tmp_path / "short", "qwen2", tokenizer=tokenizer, max_position_embeddings=context)
    assert len(tokenizer("x", add_special_tokens=False).input_ids) == 1
    series = ModelSeries([ModelSpec("a", str(path)), ModelSpec("b", str(path))], dtype="float32", device="cpu")
    result = partial_prompt_probe(series, samples, fractions=(0.5,), answer_tokens=64, batch_size=2)
    shown = int(0.5 * n + 0.5)
    assert requested == [(shown, context - shown)] * 2  # one call per checkpoint, only the long sample
    run = result.run("a", 0.5)
    assert run.kept_tokens == [shown, None]
    assert run.exact_match[1] is None and run.rouge_l[1] is None and run.answer_correct[1] is None
    assert run.exact_match_rate == float(run.exact_match[0]) and run.rouge_l_mean == run.rouge_l[0]
