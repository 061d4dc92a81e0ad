"""Partial-prompt contamination probe: can the model finish a problem it was only half shown?

A model that saw a benchmark problem in training can often recite the rest of its text
from a prefix, and then go on to state the reference answer without solving anything.
A model that never saw it cannot guess the exact wording. For each sample and each
fraction ``x`` this module keeps the first ``x`` of the problem's tokens, lets every
checkpoint continue greedily, and scores the continuation.

Definitions:

* **Prefix.** The templated prompt is split around the problem text: the template's text
  before the problem (e.g. ``Problem: `` or a chat header, with the tokenizer's leading
  special tokens) is kept whole, then the first ``k = round(x * n)`` of the problem's ``n``
  tokens (clamped to ``1 .. n - 1``). The template's text *after* the problem is not shown:
  the model has to produce the rest of the problem itself. Problems of fewer than two
  tokens are not probed (their scores are ``None``), nor are problems whose templated prompt
  fills the base model's context window (``max_position_embeddings``): they are listed in
  ``too_long``. Generation stops at the context window too.
* **Completion.** Greedy decoding (``transformers``' ``generate``, batched, left-padded) of
  ``n - k`` tokens (the length of the true remainder) plus ``answer_tokens`` more.
* **Exact match**: the first ``n - k`` completion tokens, decoded, equal the true remainder
  of the problem text up to whitespace.
* **ROUGE-L**: F1 of the longest common subsequence between that decoded continuation and
  the true remainder (``rouge-score``), on lower-cased word and symbol tokens (``x^2``
  is ``x ^ 2``: math symbols count, unlike the library's default tokenizer that drops
  them).
* **Answer produced**: the *whole* completion, graded against the sample's reference
  answer with :func:`rlvr_lens.data.grading.grade` (a boxed or explicitly stated answer;
  no last-number fallback).

Rates per checkpoint and fraction are means over probed samples (exact-match rate,
mean ROUGE-L, answer rate), overall and per label group; with ``leaked`` labels each
per-sample score is also scored as a leaked-vs-clean detector (AUROC).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlvr_lens.analyses.perplexity import leading_special_ids
from rlvr_lens.analyses.scoring import auroc, has_both_classes, leaked_labels
from rlvr_lens.data.grading import grade
from rlvr_lens.data.sample import Sample, label_groups
from rlvr_lens.data.templates import apply_template
from rlvr_lens.distributed import gather_dict, shard
from rlvr_lens.errors import UserError
from rlvr_lens.generation import batches, generate
from rlvr_lens.progress import progress
from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register
from rlvr_lens.results import Result

# ----------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class SplitPrompt:
    """A templated prompt as ``head_ids`` (template text before the problem, with leading
    special tokens) and ``problem_ids`` (the problem text's tokens)."""

    head_ids: list[int]
    problem_ids: list[int]


def split_prompt(tokenizer, sample: Sample, template: str = "plain", *, leading: list[int] | None = None) -> SplitPrompt:
    """Tokenize the template's head and the problem text separately (see the module docstring)."""
    leading = leading_special_ids(tokenizer) if leading is None else leading
    problem = sample.prompt.strip()
    rendered = apply_template(sample.prompt, template, tokenizer)
    position = rendered.find(problem)
    head = rendered[:position] if position >= 0 else ""
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
    if leading and head_ids[: len(leading)] != leading:
        head_ids = [*leading, *head_ids]
    return SplitPrompt(head_ids, tokenizer(problem, add_special_tokens=False)["input_ids"])


def kept_tokens(n: int, fraction: float) -> int | None:
    """How many of a problem's ``n`` tokens the prefix keeps: ``round(fraction * n)`` in ``1 .. n - 1``."""
    if n < 2:
        return None
    return min(n - 1, max(1, round(fraction * n)))


# ----------------------------------------------------------------------------- scores


class _MathTokenizer:
    """ROUGE tokens: lower-cased runs of word characters, and every other non-space symbol."""

    _TOKEN = re.compile(r"\w+|[^\w\s]")

    def tokenize(self, text: str) -> list[str]:
        return self._TOKEN.findall(text.lower())


_SCORER = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (``rouge-score``) between two texts, on word and symbol tokens."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_MathTokenizer())
    return float(_SCORER.score(reference, prediction)["rougeL"].fmeasure)


def exact_match(prediction: str, reference: str) -> bool:
    """Equal up to whitespace."""
    return prediction.split() == reference.split()


# ----------------------------------------------------------------------------- result


@dataclass
class ProbeRun:
    """One checkpoint probed at one prompt fraction; per-sample lists follow ``sample_ids``."""

    checkpoint: str
    fraction: float
    kept_tokens: list[int | None]  # problem tokens shown (None: not probed)
    exact_match: list[bool | None]
    rouge_l: list[float | None]
    answer_correct: list[bool | None]
    completions: list[str | None]  # the whole greedy completion
    exact_match_rate: float | None
    rouge_l_mean: float | None
    answer_rate: float | None
    groups: dict[str, dict[str, float | None]] = field(default_factory=dict)  # group -> the three rates
    auroc: dict[str, float | None] = field(default_factory=dict)  # score -> AUROC leaked vs clean


@dataclass
class ContaminationResult(Result):
    """Partial-prompt probe of every checkpoint at every fraction."""

    kind = "contamination"

    checkpoints: list[str]
    fractions: list[float]
    template: str
    answer_tokens: int
    sample_ids: list[str]
    problem_tokens: list[int]  # tokens of each problem text
    runs: list[ProbeRun]
    groups: dict[str, list[int]] = field(default_factory=dict)  # label group -> sample indices
    #: ids of the samples not probed: their templated prompt fills the model's context window
    too_long: list[str] = field(default_factory=list)

    def run(self, checkpoint: str, fraction: float) -> ProbeRun:
        return next(r for r in self.runs if r.checkpoint == checkpoint and abs(r.fraction - fraction) < 1e-9)


#: Per-sample scores (higher = "looks more leaked"), with how the report names them.
SCORES = {"exact_match": "exact match", "rouge_l": "ROUGE-L", "answer_correct": "answer produced"}


def _mean(values: Sequence, indices: Sequence[int] | None = None) -> float | None:
    picked = [values[i] for i in (range(len(values)) if indices is None else indices)]
    picked = [float(v) for v in picked if v is not None]
    return sum(picked) / len(picked) if picked else None


def _rates(run: ProbeRun, indices: Sequence[int] | None = None) -> dict[str, float | None]:
    return {
        "exact_match_rate": _mean(run.exact_match, indices),
        "rouge_l_mean": _mean(run.rouge_l, indices),
        "answer_rate": _mean(run.answer_correct, indices),
    }


def _scored(values: list) -> list[float | None]:
    return [None if v is None else float(v) for v in values]


# ----------------------------------------------------------------------------- analysis


def probe_checkpoint(
    model,
    tokenizer,
    samples: Sequence[Sample],
    prompts: Sequence[SplitPrompt],
    fraction: float,
    *,
    answer_tokens: int = 64,
    batch_size: int = 8,
    show_progress: bool = False,
    name: str = "",
    skip: frozenset[int] = frozenset(),
) -> ProbeRun:
    """Probe one loaded model at one fraction (rates and AUROCs are filled in by the caller);
    samples at indices ``skip`` are not probed (``None`` everywhere)."""
    n = len(samples)
    kept = [None if i in skip else kept_tokens(len(p.problem_ids), fraction) for i, p in enumerate(prompts)]
    exact: list[bool | None] = [None] * n
    rouge: list[float | None] = [None] * n
    correct: list[bool | None] = [None] * n
    completions: list[str | None] = [None] * n
    probed = [i for i in range(n) if kept[i] is not None]
    probed.sort(key=lambda i: -(len(prompts[i].problem_ids) - kept[i]))  # similar remainders batch together
    chunks = list(batches(probed, batch_size))
    scored: dict[int, tuple] = {}
    # under accelerate launch / torchrun each process probes its share of the batches (rlvr_lens.distributed)
    for chunk in progress(shard(chunks), enabled=show_progress, desc=f"probe {name} {fraction:.0%}", unit="batch"):
        inputs = [[*prompts[i].head_ids, *prompts[i].problem_ids[: kept[i]]] for i in chunk]
        remainders = [prompts[i].problem_ids[kept[i] :] for i in chunk]
        max_new = max(len(r) for r in remainders) + answer_tokens
        context = getattr(model.config, "max_position_embeddings", None)
        if context:  # never decode past the model's context window
            max_new = max(1, min(max_new, context - max(len(x) for x in inputs)))
        outputs = generate(model, tokenizer, inputs, max_new_tokens=max_new, batch_size=len(chunk))
        for i, remainder, out in zip(chunk, remainders, outputs):
            truth = tokenizer.decode(remainder, skip_special_tokens=True)
            continuation = tokenizer.decode(out.token_ids[: len(remainder)], skip_special_tokens=True)
            scored[i] = (exact_match(continuation, truth), rouge_l(continuation, truth), grade(out.text, samples[i].answer).correct, out.text)
    for i, (match, rouge_f1, answered, text) in gather_dict(scored).items():  # every process gets every sample
        exact[i], rouge[i], correct[i], completions[i] = match, rouge_f1, answered, text
    return ProbeRun(name, fraction, kept, exact, rouge, correct, completions, None, None, None)


def partial_prompt_probe(
    series,
    samples: list[Sample],
    *,
    fractions: Sequence[float] = (0.4, 0.6, 0.8),
    template: str = "plain",
    answer_tokens: int = 64,
    batch_size: int = 8,
    show_progress: bool = False,
) -> ContaminationResult:
    """Run the partial-prompt probe on every checkpoint of ``series`` (loaded one at a time).

    Args:
        series: a :class:`rlvr_lens.models.ModelSeries` (base first).
        samples: evaluation samples; a boolean ``leaked`` label enables the per-group rates
            and AUROC scores.
        fractions: shares of the problem's tokens shown, each in ``(0, 1)``.
        template: prompt template whose head (text before the problem) is shown whole.
        answer_tokens: tokens generated beyond the length of the true remainder.
        batch_size: prompts per generation batch.
        show_progress: progress bar per checkpoint and fraction.
    """
    if not samples:
        raise ValueError("partial_prompt_probe needs at least one sample")
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0.0 < f < 1.0 for f in fractions):
        raise UserError(f"Prompt fractions must lie strictly between 0 and 1; got {fractions}.")
    groups = label_groups(samples)
    labels = leaked_labels(samples)
    from rlvr_lens.models.loading import context_window

    prompts: list[SplitPrompt] | None = None
    too_long: frozenset[int] = frozenset()
    runs: list[ProbeRun] = []
    checkpoints: list[str] = []
    for loaded in series.iter_loaded():
        checkpoints.append(loaded.name)
        if prompts is None:  # the base tokenizer defines the token ids every checkpoint sees
            leading = leading_special_ids(loaded.tokenizer)
            prompts = [split_prompt(loaded.tokenizer, s, template, leading=leading) for s in samples]
            # a prompt that fills the context window leaves no room to continue it: not probed
            window = context_window(loaded.model)
            too_long = frozenset(
                i for i, p in enumerate(prompts) if window is not None and len(p.head_ids) + len(p.problem_ids) >= window
            )
            if len(too_long) == len(prompts):
                raise UserError(
                    f"Every sample's prompt fills the model's context window ({window} tokens); "
                    "use shorter samples or a model with a longer context."
                )
        for fraction in fractions:
            run = probe_checkpoint(
                loaded.model,
                loaded.tokenizer,
                samples,
                prompts,
                fraction,
                answer_tokens=answer_tokens,
                batch_size=batch_size,
                show_progress=show_progress,
                name=loaded.name,
                skip=too_long,
            )
            overall = _rates(run)
            run.exact_match_rate, run.rouge_l_mean, run.answer_rate = (
                overall["exact_match_rate"],
                overall["rouge_l_mean"],
                overall["answer_rate"],
            )
            run.groups = {g: _rates(run, idx) for g, idx in groups.items()}
            if has_both_classes(labels):
                run.auroc = {key: auroc(_scored(getattr(run, key)), labels) for key in SCORES}
            runs.append(run)
    assert prompts is not None
    return ContaminationResult(
        checkpoints=checkpoints,
        fractions=fractions,
        template=template,
        answer_tokens=answer_tokens,
        sample_ids=[s.id for s in samples],
        problem_tokens=[len(p.problem_ids) for p in prompts],
        runs=runs,
        groups=groups,
        too_long=[samples[i].id for i in sorted(too_long)],
    )


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


_METRICS = (("exact_match_rate", "exact-match rate"), ("rouge_l_mean", "mean ROUGE-L"), ("answer_rate", "answer produced"))


def plot_contamination(result: ContaminationResult) -> dict:
    """Rates against the prompt fraction, one line per checkpoint; per label group if labelled."""
    import matplotlib.pyplot as plt

    figures = {}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharex=True)
    for axis, (key, label) in zip(axes, _METRICS):
        for index, name in enumerate(result.checkpoints):
            ys = [getattr(result.run(name, f), key) for f in result.fractions]
            axis.plot(result.fractions, [float("nan") if y is None else y for y in ys], marker="o", color=f"C{index}", label=name)
        axis.set_title(label)
        axis.set_xlabel("share of the problem shown")
        axis.set_xticks(result.fractions, [f"{f:.0%}" for f in result.fractions])
        axis.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("mean over samples")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    figures["rates"] = fig
    if result.groups:
        fig, axes = plt.subplots(1, len(result.groups), figsize=(5 * len(result.groups), 3.6), sharey=True, squeeze=False)
        for axis, group in zip(axes[0], result.groups):
            for index, name in enumerate(result.checkpoints):
                ys = [result.run(name, f).groups[group]["rouge_l_mean"] for f in result.fractions]
                axis.plot(result.fractions, [float("nan") if y is None else y for y in ys], marker="o", color=f"C{index}", label=name)
            axis.set_title(f"mean ROUGE-L, {group} samples")
            axis.set_xlabel("share of the problem shown")
            axis.set_xticks(result.fractions, [f"{f:.0%}" for f in result.fractions])
            axis.set_ylim(-0.02, 1.02)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        figures["groups"] = fig
    return figures


def section_contamination(result: ContaminationResult, figures: dict[str, Path]) -> Section:
    middle = result.fractions[len(result.fractions) // 2]
    first, last = result.checkpoints[0], result.checkpoints[-1]
    a, b = result.run(first, middle), result.run(last, middle)
    summary = (
        f"Shown the first {middle:.0%} of each problem, {first} recites the rest exactly for {_fmt(a.exact_match_rate)} "
        f"of the samples (mean ROUGE-L {_fmt(a.rouge_l_mean)}) and {last} for {_fmt(b.exact_match_rate)} "
        f"(ROUGE-L {_fmt(b.rouge_l_mean)}); they go on to state the reference answer for {_fmt(a.answer_rate)} and "
        f"{_fmt(b.answer_rate)}."
    )
    if result.groups:
        parts = [
            f"{group} {_fmt(b.groups[group]['rouge_l_mean'])}" for group in result.groups
        ]
        summary += f" Mean ROUGE-L of {last} by group: {', '.join(parts)}."
    if result.too_long:
        summary += (
            f" {len(result.too_long)} of {len(result.sample_ids)} samples fill the model's context window and were not probed."
        )
    paragraphs = [
        "A model that saw a test problem during training can often finish its text from a prefix, word for word, "
        "and then state the answer without working it out; a model that never saw the problem cannot guess its "
        "exact wording. Each problem is cut after a share of its tokens, every checkpoint continues it greedily, "
        "and the continuation is compared with the true rest of the problem.",
        "<b>Exact match</b>: the continuation (as many tokens as the true remainder) equals the remainder up to "
        "whitespace. <b>ROUGE-L</b>: F1 of the longest common subsequence of word and symbol tokens (0 = nothing "
        "in common, 1 = identical). <b>Answer produced</b>: the whole continuation, up to "
        f"{result.answer_tokens} tokens past the remainder, states the reference final answer (graded with "
        "math-verify). High rates on a benchmark suggest it was in the training data; a rise from the base "
        "checkpoint to a tuned one suggests the tuning brought memorized text to the surface.",
    ]
    columns = ["checkpoint", "shown", "exact match", "ROUGE-L", "answer"]
    for group in result.groups:
        columns += [f"exact ({group})", f"ROUGE-L ({group})", f"answer ({group})"]
    rows = []
    for run in result.runs:
        row = [run.checkpoint, f"{run.fraction:.0%}", _fmt(run.exact_match_rate), _fmt(run.rouge_l_mean), _fmt(run.answer_rate)]
        for group in result.groups:
            g = run.groups[group]
            row += [_fmt(g["exact_match_rate"]), _fmt(g["rouge_l_mean"]), _fmt(g["answer_rate"])]
        rows.append(row)
    tables = [Table(columns, rows, "Rates per checkpoint and share of the problem shown")]
    if any(run.auroc for run in result.runs):
        tables.append(
            Table(
                ["checkpoint", "shown", *SCORES.values()],
                [
                    [run.checkpoint, f"{run.fraction:.0%}", *[_fmt(run.auroc.get(k)) for k in SCORES]]
                    for run in result.runs
                ],
                "How well each per-sample score separates leaked from clean samples (AUROC; 1 = perfectly, "
                "0.5 = chance)",
            )
        )
        paragraphs.append(
            "The samples carry ground truth (leaked into training or not), so each score is also rated as a "
            "contamination detector: the AUROC is the probability that a randomly chosen leaked sample scores "
            "higher than a randomly chosen clean one (ties count half)."
        )
    figs = []
    if "rates" in figures:
        figs.append(("Exact-match rate, mean ROUGE-L and answer rate against the share of the problem shown.", figures["rates"]))
    if "groups" in figures:
        figs.append(("Mean ROUGE-L per label group.", figures["groups"]))
    return Section("contamination", "Partial-prompt contamination probe", summary, paragraphs, tables, figs)


register("contamination", ReportEntry(plot=plot_contamination, section=section_contamination, order=30))
