"""Perplexity paradox: per-token NLLs against a float64 recomputation, padding invariance,
bf16 handled in float32, aggregates, verdict and AUROC on a model that memorized problems."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr_lens.analyses.perplexity import (
    CheckpointPerplexity,
    PerplexityResult,
    checkpoint_nll,
    encode_sample,
    leading_special_ids,
    paradox_verdict,
    perplexity_paradox,
    token_nll,
)
from rlvr_lens.data import Sample
from rlvr_lens.models import ModelSeries, ModelSpec, load_model

pytestmark = pytest.mark.usefixtures("single_thread")

TEXTS = [
    "Problem: What is 12 + 7 * 3?\nSolution: 33",
    "x^2 = 16",
    "The quick brown fox jumps over the lazy dog. Compute the sum of the first 10 positive integers.",
]


def _reference_nll(model, ids: list[int]) -> list[float]:
    """-log p(ids[t] | ids[:t]) for t >= 1, one unpadded sequence, log-softmax in float64."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    logp = torch.log_softmax(logits, -1)
    return [-float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)]


@pytest.fixture(scope="module")
def qwen(tiny_pair):
    return load_model(tiny_pair[0], "float32", "cpu")


@pytest.mark.parametrize("side", ["left", "right"])
def test_token_nll_equals_float64_reference_with_padding(qwen, side):
    seqs = [qwen.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert len({len(s) for s in seqs}) == 3  # really padded
    batched = token_nll(qwen.model, seqs, pad_id=qwen.tokenizer.pad_token_id, padding_side=side)
    single = [token_nll(qwen.model, [s], pad_id=qwen.tokenizer.pad_token_id)[0] for s in seqs]
    for seq, ours, alone in zip(seqs, batched, single):
        reference = torch.tensor(_reference_nll(qwen.model, seq), dtype=torch.float64)
        assert ours.dtype == torch.float32 and ours.shape == (len(seq) - 1,)
        assert torch.allclose(ours.double(), reference, atol=2e-5, rtol=0)
        assert torch.allclose(ours, alone, atol=2e-5, rtol=0)


def test_bf16_model_is_scored_in_float32(tiny_pair):
    loaded = load_model(tiny_pair[0], "bfloat16", "cpu")
    ids = loaded.tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"]
    ours = token_nll(loaded.model, [ids], pad_id=loaded.tokenizer.pad_token_id)[0].double()
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0, :-1]
    assert logits.dtype == torch.bfloat16
    targets = torch.tensor(ids[1:])[:, None]
    exact = -torch.log_softmax(logits.double(), -1).gather(-1, targets)[:, 0]
    in_bf16 = -torch.log_softmax(logits, -1).gather(-1, targets)[:, 0].double()
    assert torch.allclose(ours, exact, atol=1e-5, rtol=0)
    # the check can fail: a bf16 log-softmax is off by far more than the tolerance
    assert (in_bf16 - exact).abs().max() > 1e-3


def test_encoding_spans(qwen):
    tok = qwen.tokenizer
    sample = Sample("a", "What is 2 + 2?", "4", solution="2 + 2 = 4, so \\boxed{4}.")
    enc = encode_sample(tok, sample, "plain")
    prompt_ids = tok("What is 2 + 2?\n", add_special_tokens=False)["input_ids"]
    answer_ids = tok("2 + 2 = 4, so \\boxed{4}.", add_special_tokens=False)["input_ids"]
    assert leading_special_ids(tok) == []  # no BOS: the first prompt token is not scored
    assert enc.ids == prompt_ids + answer_ids
    assert enc.prompt_span == (1, len(prompt_ids))
    assert enc.answer_span == (len(prompt_ids), len(enc.ids))
    assert enc.answer_from == "solution"
    # no solution: the final answer is scored; the organism template ends without a space, one is added
    enc = encode_sample(tok, Sample("b", "What is 2 + 2?", "4"), "organism")
    assert tok.decode(enc.ids) == "Problem: What is 2 + 2?\nSolution: 4" and enc.answer_from == "answer"


class _BosTokenizer:
    """Wraps a tokenizer so that, like Llama's, it puts a BOS in front of every text."""

    def __init__(self, inner, bos):
        self.inner, self.bos = inner, bos

    def __call__(self, text, add_special_tokens=True):
        ids = self.inner(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ([self.bos] if add_special_tokens else []) + ids}

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_with_a_bos_every_prompt_token_is_scored(qwen):
    tok = _BosTokenizer(qwen.tokenizer, qwen.tokenizer.eos_token_id)
    assert leading_special_ids(tok) == [qwen.tokenizer.eos_token_id]
    enc = encode_sample(tok, Sample("a", "What is 2 + 2?", "4"), "plain")
    n_prompt = len(qwen.tokenizer("What is 2 + 2?\n", add_special_tokens=False)["input_ids"])
    assert enc.prompt_span == (1, 1 + n_prompt)


def _manual_sample_nll(model, enc):
    nll = _reference_nll(model, enc.ids)
    (p0, p1), (a0, a1) = enc.prompt_span, enc.answer_span
    return sum(nll[p0 - 1 : p1 - 1]) / (p1 - p0), sum(nll[a0 - 1 : a1 - 1]) / (a1 - a0)


def test_perplexity_paradox_on_a_model_that_memorized(memorizing_pair):
    base_dir, tuned_dir, samples = memorizing_pair
    series = ModelSeries([ModelSpec("base", str(base_dir)), ModelSpec("tuned", str(tuned_dir))], dtype="float32", device="cpu")
    result = perplexity_paradox(series, samples, template="plain", batch_size=3)
    assert result.checkpoints == ["base", "tuned"]
    assert set(result.groups) == {"leaked", "clean"}

    # per-sample values and aggregates against a float64 recomputation by hand
    manuals = []
    for spec, ckpt in zip(series.specs, result.per_checkpoint):
        loaded = load_model(spec.source, "float32", "cpu")
        encoded = [encode_sample(loaded.tokenizer, s, "plain") for s in samples]
        manual = [_manual_sample_nll(loaded.model, e) for e in encoded]
        manuals.append(manual)
        one_by_one = checkpoint_nll(loaded.model, encoded, pad_id=loaded.tokenizer.pad_token_id, batch_size=1)
        assert one_by_one[1] == pytest.approx(ckpt.answer_nll, abs=2e-5)  # batch size changes nothing
        assert ckpt.prompt_nll == pytest.approx([m[0] for m in manual], abs=2e-5)
        assert ckpt.answer_nll == pytest.approx([m[1] for m in manual], abs=2e-5)
        assert ckpt.prompt_ppl == pytest.approx(math.exp(sum(m[0] for m in manual) / len(manual)), rel=1e-5)
        leaked = result.groups["leaked"]
        assert ckpt.groups["leaked"]["answer_ppl"] == pytest.approx(
            math.exp(sum(manual[i][1] for i in leaked) / len(leaked)), rel=1e-5
        )

    # memorizing makes leaked answers far likelier: answer perplexity falls, most for leaked samples
    assert result.verdict.answer_falls
    assert result.group_verdicts["leaked"].answer_ppl[-1] < 1.5 < result.group_verdicts["clean"].answer_ppl[-1]
    # and every leaked sample is told apart from every clean one by its prompt / answer NLL
    assert result.auroc["tuned"]["prompt_nll_low"] == 1.0
    assert result.auroc["tuned"]["answer_nll_drop"] == 1.0
    assert set(result.auroc["base"]) == {"prompt_nll_low", "answer_nll_low"}
    # every AUROC against a pair count on the hand-computed NLLs (leaked should score higher)
    leaked = [s.labels["leaked"] for s in samples]
    (base_prompt, base_answer), (tuned_prompt, tuned_answer) = ([list(x) for x in zip(*m)] for m in manuals)
    expected = {
        "prompt_nll_low": [-x for x in tuned_prompt],
        "answer_nll_low": [-x for x in tuned_answer],
        "answer_nll_drop": [b - a for a, b in zip(tuned_answer, base_answer)],
        "prompt_nll_rise": [a - b for a, b in zip(tuned_prompt, base_prompt)],
    }
    for signal, scores in expected.items():
        assert result.auroc["tuned"][signal] == pytest.approx(_pairwise_auroc(scores, leaked), abs=1e-9), signal
    assert result.auroc["base"]["answer_nll_low"] == pytest.approx(_pairwise_auroc([-x for x in base_answer], leaked), abs=1e-9)

    # the result round-trips through JSON
    assert PerplexityResult.from_dict(result.to_dict()) == result
    _check_perplexity_section(result)


def _check_perplexity_section(result):
    """The report section's tables and shares, read back and compared with the result's JSON."""
    import json

    from report_numbers import assert_shows, column, numbers_in
    from rlvr_lens.analyses.perplexity import SIGNALS, section_perplexity

    data = json.loads(json.dumps(result.to_dict()))
    section = section_perplexity(result, {})
    table = section.tables[0]
    checkpoints = data["per_checkpoint"]
    assert column(table, "checkpoint") == [c["name"] for c in checkpoints]
    for header, key in (("prompt ppl", "prompt_ppl"), ("answer ppl", "answer_ppl")):
        for cell, c in zip(column(table, header), checkpoints):
            assert_shows(cell, c[key], where=header)
        for group in data["groups"]:
            for cell, c in zip(column(table, f"{header} ({group})"), checkpoints):
                assert_shows(cell, c["groups"][group][key], where=f"{header} ({group})")
    aurocs = section.tables[1]
    for row in aurocs.rows:
        scores = data["auroc"][row[0]]
        for cell, signal in zip(row[1:], SIGNALS):
            if signal in scores:
                assert_shows(cell, scores[signal], where=f"{row[0]} {signal}")
            else:
                assert cell == ""
    [paragraph] = [p for p in section.paragraphs if "Share of samples" in p]
    assert_shows(numbers_in(paragraph.rsplit(":", 1)[1])[0], data["verdict"]["samples_paradox"], where="samples paradox")
    # the summary: "(answer ppl first to last)", "(prompt ppl first to last)" per verdict (overall,
    # then per group), each followed by its per-sample NLL changes and their intervals when present
    import re

    verdicts = [data["verdict"], *data["group_verdicts"].values()]
    pairs = re.findall(r"\(([^()]*?) to ([^()]*?)\)", section.summary)
    assert len(pairs) == 2 * len(verdicts)
    for i, v in enumerate(verdicts):
        (a0, a1), (p0, p1) = pairs[2 * i], pairs[2 * i + 1]
        for cell, value in zip((a0, a1, p0, p1), (v["answer_ppl"][0], v["answer_ppl"][-1], v["prompt_ppl"][0], v["prompt_ppl"][-1])):
            assert_shows(cell, value, where="summary")
    changes = re.findall(r"answer ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\], prompt ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", section.summary)
    with_change = [v for v in verdicts if v.get("answer_change") and v.get("prompt_change")]
    assert len(changes) == len(with_change)
    for shown_change, v in zip(changes, with_change):
        for cell, value in zip(shown_change, [*v["answer_change"][:3], *v["prompt_change"][:3]]):
            assert float(cell) == pytest.approx(value, abs=5e-5)


def _pairwise_auroc(scores, positive) -> float:
    """AUROC by counting every (positive, negative) pair: 1 if ranked right, 1/2 on a tie."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_sequences_shorter_than_two_tokens(qwen):
    """One token has nothing to predict: token_nll refuses it; a one-token problem (plus the
    template's newline) scores exactly one prompt token, the first having no context."""
    with pytest.raises(ValueError, match="two tokens"):
        token_nll(qwen.model, [[5, 6], [7]], pad_id=qwen.tokenizer.pad_token_id)
    enc = encode_sample(qwen.tokenizer, Sample("a", "x", "4"), "plain")
    assert len(qwen.tokenizer("x", add_special_tokens=False)["input_ids"]) == 1
    assert enc.prompt_span == (1, 2) and enc.answer_span == (2, len(enc.ids))
    prompt, answer = checkpoint_nll(qwen.model, [enc], pad_id=qwen.tokenizer.pad_token_id)
    reference = _reference_nll(qwen.model, enc.ids)
    assert prompt[0] == pytest.approx(reference[0], abs=2e-5)
    assert answer[0] == pytest.approx(sum(reference[1:]) / (len(enc.ids) - 2), abs=2e-5)


def _ckpt(name, prompt, answer):
    return CheckpointPerplexity(name, "float32", prompt, answer, None, None)


def test_verdict_definitions():
    # two samples, three checkpoints; NLL in nats
    series = [
        _ckpt("base", [1.0, 1.0], [2.0, 2.0]),
        _ckpt("mid", [1.2, 0.9], [1.5, 2.1]),
        _ckpt("last", [1.5, 0.9], [1.0, 2.2]),
    ]
    v = paradox_verdict(series)
    assert v.answer_ppl == pytest.approx([math.exp(2.0), math.exp(1.8), math.exp(1.6)])
    assert v.prompt_ppl == pytest.approx([math.exp(1.0), math.exp(1.05), math.exp(1.2)])
    assert v.answer_falls and v.prompt_rises and v.paradox
    assert v.answer_monotonic and v.prompt_monotonic
    assert v.samples_paradox == 0.5  # sample 0 moved the paradoxical way, sample 1 did not
    only_second = paradox_verdict(series, [1])
    assert not only_second.answer_falls and not only_second.prompt_rises and not only_second.paradox
    bumpy = paradox_verdict([series[0], _ckpt("x", [0.5, 0.5], [2.5, 2.5]), series[2]])
    assert bumpy.paradox and not bumpy.answer_monotonic and not bumpy.prompt_monotonic
