"""The perplexity paradox: along RLVR, answer-token perplexity falls while prompt-token
perplexity rises.

A model that memorized a benchmark item finds both its prompt and its reference answer
unsurprising. The *Spurious Rewards Paradox* study reports that RLVR on a contaminated
model makes the memorized answers ever more likely (answer perplexity falls) while the
model's grip on the prompt text loosens (prompt perplexity rises): the tuning exploits a
memorized shortcut rather than reading the problem. This module measures both, for every
checkpoint of a series and every sample.

Definitions (natural log, nats):

* **Token sequence.** ``[leading specials] + prompt + answer`` where *prompt* is the
  templated prompt's tokens, *leading specials* are the tokens the tokenizer itself puts
  in front of a text (a BOS for Llama / Mistral / Gemma tokenizers, nothing for Qwen) and
  *answer* is the sample's reference **solution** when it has one, else its final
  **answer**, tokenized separately (so the prompt/answer boundary is exact) and joined
  with one space when neither side has whitespace at the boundary. Every checkpoint scores
  the same token ids, built with the base checkpoint's tokenizer.
* **Prompt NLL** of a sample: the mean, over prompt tokens, of ``-log p(token | tokens
  before it)``. The first token of the sequence has no context and is never scored: with a
  BOS every prompt token is scored, without one the first prompt token is skipped.
* **Answer NLL**: the same mean over the answer tokens, conditioned on the whole prompt.
* **Aggregate perplexity** of a checkpoint (or of a label group): ``exp`` of the mean over
  samples of the per-sample NLL, i.e. the geometric mean of per-sample perplexities. Every
  sample weighs the same whatever its length (a long solution does not dominate).
* **Over-long samples.** A sample whose token sequence is longer than the base model's
  context window (``max_position_embeddings``) is not scored by any checkpoint (its NLLs
  are ``None``, it is left out of every average) and is listed in ``too_long``: a model
  scores positions it was never trained on as garbage, and memory grows with the length.
* **Verdict** (base = first checkpoint, last = last one): *answer falls* when the last
  answer perplexity is below the base's, *prompt rises* when the last prompt perplexity
  is above the base's, *paradox* when both hold. *Monotonic* flags say whether each step
  of the series moved the same way (non-increasing answer, non-decreasing prompt). The
  share of samples for which both moved the paradoxical way is reported too.

Log-probabilities are computed as ``log_softmax`` of the logits cast to float32, one row
at a time (never a float32 copy of a whole ``[batch, seq, vocab]`` block), even for
bf16/fp16 models. Batches are right-padded (in a causal model a real token never attends
to the padding after it, so padding never changes a number).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlvr_lens.analyses.scoring import auroc, has_both_classes, leaked_labels
from rlvr_lens.data.sample import Sample, label_groups
from rlvr_lens.data.templates import apply_template
from rlvr_lens.distributed import gather_dict, shard
from rlvr_lens.generation import batches
from rlvr_lens.oom import HalvingRetry
from rlvr_lens.progress import progress
from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register
from rlvr_lens.results import Result

# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class EncodedSample:
    """Token ids of one sample and the positions of its scored parts.

    ``prompt_span`` and ``answer_span`` are ``[start, end)`` ranges of *target* positions in
    ``ids``: position ``t`` is scored as ``-log p(ids[t] | ids[:t])``.
    """

    ids: list[int]
    prompt_span: tuple[int, int]
    answer_span: tuple[int, int]
    answer_from: str  # "solution" or "answer"


def leading_special_ids(tokenizer) -> list[int]:
    """The token ids a tokenizer puts in front of any text (e.g. ``[bos]``; ``[]`` for Qwen)."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def answer_text(sample: Sample) -> tuple[str, str]:
    """The text scored as the answer: ``(solution, "solution")`` if present, else ``(answer, "answer")``."""
    if sample.solution and sample.solution.strip():
        return sample.solution, "solution"
    return sample.answer, "answer"


def encode_sample(tokenizer, sample: Sample, template: str = "plain", *, leading: list[int] | None = None) -> EncodedSample:
    """Tokenize ``sample`` as ``[leading specials] + prompt + answer`` (see the module docstring)."""
    leading = leading_special_ids(tokenizer) if leading is None else leading
    prompt = apply_template(sample.prompt, template, tokenizer)
    target, source = answer_text(sample)
    if prompt and target and not prompt[-1].isspace() and not target[0].isspace():
        target = " " + target
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if leading and prompt_ids[: len(leading)] == leading:
        leading = []  # the template already starts with them (e.g. a chat template's BOS)
    ids = [*leading, *prompt_ids, *answer_ids]
    prompt_end = len(leading) + len(prompt_ids)
    return EncodedSample(ids, (max(1, len(leading)), prompt_end), (prompt_end, len(ids)), source)


# ----------------------------------------------------------------------------- log-probabilities


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right"):
    """Pad token id lists into ``input_ids``, ``attention_mask`` and ``position_ids``, each ``[batch, seq]``.

    Position ids count real tokens only (``cumsum(mask) - 1``), so a left-padded row sees the
    same positions as an unpadded one.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(0, len(seq)) if padding_side == "right" else slice(width - len(seq), width)
        input_ids[row, cols] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, cols] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, mask, positions


@torch.no_grad()
def token_nll(model, sequences: Sequence[Sequence[int]], *, pad_id: int, padding_side: str = "right") -> list[torch.Tensor]:
    """Per-token negative log-likelihood of each sequence under ``model``, in one forward pass.

    Returns, per sequence of length ``n``, a float32 CPU tensor ``[n - 1]`` whose entry
    ``t - 1`` is ``-log p(ids[t] | ids[:t])`` in nats. The log-softmax (as a cross entropy)
    runs in float32 on one row's ``[seq, vocab]`` logits at a time, whatever the model's dtype.
    Right padding (the default) needs no attention mask in a causal model; left padding
    passes the mask and position ids that count real tokens only.
    """
    if any(len(s) < 2 for s in sequences):
        raise ValueError("every sequence needs at least two tokens")
    device = next(model.parameters()).device
    input_ids, mask, positions = pad_batch(sequences, pad_id, padding_side)
    if padding_side == "right":
        # Causal attention: a real token only attends to the real tokens before it, never to the
        # padding after it, and positions count from 0 anyway, so no mask is needed (and none
        # keeps attention on its fastest causal path).
        logits = model(input_ids=input_ids.to(device), use_cache=False).logits  # [batch, seq, vocab]
    else:
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
        ).logits
    width = input_ids.shape[1]
    out: list[torch.Tensor] = []
    for row, seq in enumerate(sequences):
        start = 0 if padding_side == "right" else width - len(seq)
        row_logits = logits[row, start : start + len(seq) - 1].float()  # [n - 1, vocab], predicts tokens 1..n-1
        targets = input_ids[row, start + 1 : start + len(seq)].to(row_logits.device)
        # cross entropy = -log_softmax(logits)[target], computed in float32
        out.append(torch.nn.functional.cross_entropy(row_logits, targets, reduction="none").cpu())
    return out


def _span_mean(nll: torch.Tensor, span: tuple[int, int]) -> float | None:
    """Mean of ``nll`` over target positions ``[start, end)`` (``nll[t - 1]`` scores position ``t``)."""
    start, end = span
    if end <= start:
        return None
    return float(nll[start - 1 : end - 1].double().mean())


# ----------------------------------------------------------------------------- result


@dataclass
class CheckpointPerplexity:
    """One checkpoint's numbers. NLLs in nats per token; perplexities = exp(mean NLL)."""

    name: str
    dtype: str
    prompt_nll: list[float | None]  # per sample (None: no prompt token could be scored)
    answer_nll: list[float | None]  # per sample
    prompt_ppl: float | None  # exp(mean over samples of prompt_nll)
    answer_ppl: float | None
    groups: dict[str, dict[str, float | None]] = field(default_factory=dict)  # group -> {prompt_ppl, answer_ppl}


@dataclass
class ParadoxVerdict:
    """Does answer perplexity fall while prompt perplexity rises, from the first to the last checkpoint?"""

    first: str
    last: str
    prompt_ppl: list[float | None]  # per checkpoint, in series order
    answer_ppl: list[float | None]
    answer_falls: bool
    prompt_rises: bool
    paradox: bool
    answer_monotonic: bool  # every step non-increasing
    prompt_monotonic: bool  # every step non-decreasing
    samples_paradox: float | None  # share of samples whose answer NLL fell and prompt NLL rose
    # mean per-sample NLL change last - first (nats/token) and its 95% paired bootstrap interval: [mean, low, high]
    answer_change: list[float] | None = None
    prompt_change: list[float] | None = None
    significant: bool | None = None  # both changes' intervals exclude 0 in the paradox's direction


@dataclass
class PerplexityResult(Result):
    """Prompt- and answer-token perplexity of every sample under every checkpoint."""

    kind = "perplexity"

    checkpoints: list[str]
    template: str
    sample_ids: list[str]
    prompt_tokens: list[int]  # scored prompt tokens per sample
    answer_tokens: list[int]
    answer_from: list[str]  # "solution" or "answer", per sample
    leading_specials: int  # tokens the tokenizer puts first (1 = BOS: every prompt token is scored)
    per_checkpoint: list[CheckpointPerplexity]
    verdict: ParadoxVerdict
    groups: dict[str, list[int]] = field(default_factory=dict)  # label group -> sample indices
    group_verdicts: dict[str, ParadoxVerdict] = field(default_factory=dict)
    #: ids of the samples not scored because they exceed the context window (see the module docstring)
    too_long: list[str] = field(default_factory=list)
    context_window: int | None = None
    #: checkpoint -> signal -> AUROC of leaked vs clean (see SIGNALS); empty without labels
    auroc: dict[str, dict[str, float | None]] = field(default_factory=dict)


#: Per-sample signals scored against the ``leaked`` label; higher = "looks more leaked".
SIGNALS = {
    "prompt_nll_low": "low prompt NLL (the prompt text is familiar)",
    "answer_nll_low": "low answer NLL (the reference answer is familiar)",
    "answer_nll_drop": "answer NLL drop from the base checkpoint",
    "prompt_nll_rise": "prompt NLL rise from the base checkpoint",
}


def aggregate_ppl(values: Sequence[float | None], indices: Sequence[int] | None = None) -> float | None:
    """``exp(mean)`` of the per-sample NLLs at ``indices`` (all by default), skipping ``None``."""
    picked = [values[i] for i in (range(len(values)) if indices is None else indices)]
    picked = [v for v in picked if v is not None]
    return math.exp(sum(picked) / len(picked)) if picked else None


def _non_increasing(values: list[float | None]) -> bool:
    return all(a is not None and b is not None and b <= a for a, b in zip(values, values[1:]))


def paradox_verdict(per_checkpoint: list[CheckpointPerplexity], indices: Sequence[int] | None = None) -> ParadoxVerdict:
    """The verdict over the samples at ``indices`` (all by default); see the module docstring."""
    n = len(per_checkpoint[0].prompt_nll)
    indices = list(range(n)) if indices is None else list(indices)
    prompt = [aggregate_ppl(c.prompt_nll, indices) for c in per_checkpoint]
    answer = [aggregate_ppl(c.answer_nll, indices) for c in per_checkpoint]
    first, last = per_checkpoint[0], per_checkpoint[-1]
    answer_falls = answer[0] is not None and answer[-1] is not None and answer[-1] < answer[0]
    prompt_rises = prompt[0] is not None and prompt[-1] is not None and prompt[-1] > prompt[0]
    moved = [
        last.answer_nll[i] < first.answer_nll[i] and last.prompt_nll[i] > first.prompt_nll[i]
        for i in indices
        if None not in (first.answer_nll[i], last.answer_nll[i], first.prompt_nll[i], last.prompt_nll[i])
    ]
    from rlvr_lens.analyses.stats import paired_bootstrap

    def change(values_of) -> list[float] | None:
        diffs = [None if values_of(last)[i] is None or values_of(first)[i] is None else values_of(last)[i] - values_of(first)[i] for i in indices]
        interval = paired_bootstrap(diffs)
        return None if interval is None else [interval.mean, interval.low, interval.high]

    answer_change, prompt_change = change(lambda c: c.answer_nll), change(lambda c: c.prompt_nll)
    significant = None
    if answer_change and prompt_change and len(per_checkpoint) > 1:
        significant = answer_change[2] < 0 and prompt_change[1] > 0
    return ParadoxVerdict(
        answer_change=answer_change,
        prompt_change=prompt_change,
        significant=significant,
        first=first.name,
        last=last.name,
        prompt_ppl=prompt,
        answer_ppl=answer,
        answer_falls=answer_falls,
        prompt_rises=prompt_rises,
        paradox=answer_falls and prompt_rises,
        answer_monotonic=_non_increasing(answer),
        prompt_monotonic=_non_increasing([-p if p is not None else None for p in prompt]),
        samples_paradox=sum(moved) / len(moved) if moved else None,
    )


def _neg(values: list[float | None]) -> list[float | None]:
    return [None if v is None else -v for v in values]


def _diff(a: list[float | None], b: list[float | None]) -> list[float | None]:
    """``a - b`` elementwise (None where either is None)."""
    return [None if x is None or y is None else x - y for x, y in zip(a, b)]


def signal_aurocs(per_checkpoint: list[CheckpointPerplexity], labels: list[bool | None]) -> dict[str, dict[str, float | None]]:
    """Checkpoint -> signal -> AUROC of leaked (True) vs clean (False); see :data:`SIGNALS`."""
    base = per_checkpoint[0]
    scores: dict[str, dict[str, float | None]] = {}
    for index, ckpt in enumerate(per_checkpoint):
        row = {
            "prompt_nll_low": auroc(_neg(ckpt.prompt_nll), labels),
            "answer_nll_low": auroc(_neg(ckpt.answer_nll), labels),
        }
        if index > 0:
            row["answer_nll_drop"] = auroc(_diff(base.answer_nll, ckpt.answer_nll), labels)
            row["prompt_nll_rise"] = auroc(_diff(ckpt.prompt_nll, base.prompt_nll), labels)
        scores[ckpt.name] = row
    return scores


# ----------------------------------------------------------------------------- analysis


def checkpoint_nll(
    model,
    encoded: list[EncodedSample],
    *,
    pad_id: int,
    batch_size: int = 8,
    show_progress: bool = False,
    desc: str = "perplexity",
    skip: frozenset[int] = frozenset(),
) -> tuple[list[float | None], list[float | None]]:
    """Per-sample (prompt NLL, answer NLL) lists under one model, batched longest first;
    samples at indices ``skip`` are not scored (``None``).

    Under ``accelerate launch`` / ``torchrun`` each process scores its share of the batches
    and every process returns all samples' numbers (see :mod:`rlvr_lens.distributed`).
    """
    order = sorted((i for i in range(len(encoded)) if i not in skip), key=lambda i: -len(encoded[i].ids))
    chunks = list(batches(order, batch_size))
    retry = HalvingRetry("perplexity scoring")  # a batch that runs out of memory is retried at half the size
    scored: dict[int, tuple[float | None, float | None]] = {}
    for chunk in progress(shard(chunks), enabled=show_progress, desc=desc, unit="batch"):
        nlls = retry(lambda part: token_nll(model, [encoded[i].ids for i in part], pad_id=pad_id), chunk)
        for i, nll in zip(chunk, nlls):
            scored[i] = (_span_mean(nll, encoded[i].prompt_span), _span_mean(nll, encoded[i].answer_span))
    scored = gather_dict(scored)  # every process gets every sample's numbers
    prompt: list[float | None] = [scored.get(i, (None, None))[0] for i in range(len(encoded))]
    answer: list[float | None] = [scored.get(i, (None, None))[1] for i in range(len(encoded))]
    return prompt, answer


def perplexity_paradox(
    series,
    samples: list[Sample],
    *,
    template: str = "plain",
    batch_size: int = 8,
    show_progress: bool = False,
) -> PerplexityResult:
    """Prompt- and answer-token perplexity of every sample under every checkpoint of ``series``.

    Args:
        series: a :class:`rlvr_lens.models.ModelSeries` (base first); checkpoints are
            loaded one at a time.
        samples: evaluation samples; a boolean ``leaked`` label enables the per-group
            numbers and the AUROC scores.
        template: prompt template (see :mod:`rlvr_lens.data.templates`).
        batch_size: sequences per forward pass.
        show_progress: show a progress bar per checkpoint.

    See the module docstring for the exact definitions.
    """
    if not samples:
        raise ValueError("perplexity_paradox needs at least one sample")
    from rlvr_lens.errors import UserError
    from rlvr_lens.models.loading import context_window

    encoded: list[EncodedSample] | None = None
    leading: list[int] = []
    too_long: frozenset[int] = frozenset()
    window: int | None = None
    per_checkpoint: list[CheckpointPerplexity] = []
    for loaded in series.iter_loaded():
        if encoded is None:  # the base tokenizer defines the token ids every checkpoint scores
            tokenizer = loaded.tokenizer
            leading = leading_special_ids(tokenizer)
            encoded = [encode_sample(tokenizer, s, template, leading=leading) for s in samples]
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            window = context_window(loaded.model)
            too_long = frozenset(i for i, e in enumerate(encoded) if window is not None and len(e.ids) > window)
            if len(too_long) == len(encoded):
                raise UserError(
                    f"Every sample is longer than the model's context window ({window} tokens); "
                    "use shorter samples or a model with a longer context."
                )
        prompt, answer = checkpoint_nll(
            loaded.model,
            encoded,
            pad_id=pad_id,
            batch_size=batch_size,
            show_progress=show_progress,
            desc=f"perplexity {loaded.name}",
            skip=too_long,
        )
        per_checkpoint.append(
            CheckpointPerplexity(
                name=loaded.name,
                dtype=str(loaded.dtype).replace("torch.", ""),
                prompt_nll=prompt,
                answer_nll=answer,
                prompt_ppl=aggregate_ppl(prompt),
                answer_ppl=aggregate_ppl(answer),
            )
        )
    assert encoded is not None
    groups = label_groups(samples)
    for ckpt in per_checkpoint:
        ckpt.groups = {
            g: {"prompt_ppl": aggregate_ppl(ckpt.prompt_nll, idx), "answer_ppl": aggregate_ppl(ckpt.answer_nll, idx)}
            for g, idx in groups.items()
        }
    labels = leaked_labels(samples)
    return PerplexityResult(
        checkpoints=[c.name for c in per_checkpoint],
        template=template,
        sample_ids=[s.id for s in samples],
        prompt_tokens=[e.prompt_span[1] - e.prompt_span[0] for e in encoded],
        answer_tokens=[e.answer_span[1] - e.answer_span[0] for e in encoded],
        answer_from=[e.answer_from for e in encoded],
        leading_specials=len(leading),
        per_checkpoint=per_checkpoint,
        verdict=paradox_verdict(per_checkpoint),
        groups=groups,
        group_verdicts={g: paradox_verdict(per_checkpoint, idx) for g, idx in groups.items()},
        auroc=signal_aurocs(per_checkpoint, labels) if has_both_classes(labels) else {},
        too_long=[samples[i].id for i in sorted(too_long)],
        context_window=window,
    )


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _group_values(result: PerplexityResult, group: str, part: str) -> list[float | None]:
    verdict = result.verdict if group == "all" else result.group_verdicts[group]
    return verdict.prompt_ppl if part == "prompt" else verdict.answer_ppl


def plot_perplexity(result: PerplexityResult) -> dict:
    """One figure: prompt and answer perplexity per checkpoint, overall and per label group."""
    import matplotlib.pyplot as plt

    groups = ["all", *result.groups]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    x = list(range(len(result.checkpoints)))
    styles = {"all": ("black", "-"), "leaked": ("tab:red", "--"), "clean": ("tab:blue", "--")}
    for axis, part in zip(axes, ("prompt", "answer")):
        for index, group in enumerate(groups):
            values = _group_values(result, group, part)
            color, line = styles.get(group, (f"C{index + 2}", ":"))
            ys = [float("nan") if v is None else v for v in values]
            axis.plot(x, ys, marker="o", color=color, linestyle=line, label=group)
        finite = [v for group in groups for v in _group_values(result, group, part) if v]
        if finite and max(finite) / min(finite) > 20:
            axis.set_yscale("log")
        axis.set_title(f"{part.capitalize()}-token perplexity")
        axis.set_ylabel("perplexity (exp mean NLL per sample)")
        axis.set_xticks(x, result.checkpoints, rotation=30, ha="right", fontsize=8)
        axis.legend(fontsize=8)
    fig.tight_layout()
    return {"lines": fig}


def _verdict_sentence(verdict: ParadoxVerdict) -> str:
    a0, a1 = verdict.answer_ppl[0], verdict.answer_ppl[-1]
    p0, p1 = verdict.prompt_ppl[0], verdict.prompt_ppl[-1]
    answer = "falls" if verdict.answer_falls else "does not fall"
    prompt = "rises" if verdict.prompt_rises else "does not rise"
    text = (
        f"answer perplexity {answer} ({_fmt(a0)} to {_fmt(a1)}) and prompt perplexity {prompt} "
        f"({_fmt(p0)} to {_fmt(p1)}) from {verdict.first} to {verdict.last}"
    )
    if verdict.answer_change and verdict.prompt_change:
        a, p = verdict.answer_change, verdict.prompt_change
        text += (
            f"; per-sample NLL change (nats/token, 95% paired bootstrap interval): answer {a[0]:+.4f} "
            f"[{a[1]:+.4f}, {a[2]:+.4f}], prompt {p[0]:+.4f} [{p[1]:+.4f}, {p[2]:+.4f}]"
        )
        if verdict.paradox and not verdict.significant:
            text += ", <b>not significant</b>"
    return text


def section_perplexity(result: PerplexityResult, figures: dict[str, Path]) -> Section:
    v = result.verdict
    finding = "<b>The perplexity paradox is present</b>: " if v.paradox else "No perplexity paradox over all samples: "
    summary = finding + _verdict_sentence(v) + "."
    for group, gv in result.group_verdicts.items():
        summary += f" {group.capitalize()} samples: {'paradox' if gv.paradox else 'no paradox'} ({_verdict_sentence(gv)})."
    if result.too_long:
        summary += (
            f" {len(result.too_long)} of {len(result.sample_ids)} samples are longer than the model's context window "
            f"({result.context_window} tokens) and were not scored."
        )
    n = len(result.sample_ids)
    n_solution = sum(1 for a in result.answer_from if a == "solution")
    paragraphs = [
        "A model that has memorized a test problem finds both its wording and its reference answer unsurprising. "
        "If reinforcement learning makes such a model lean on the memorized answer rather than on the problem, the "
        "reference answers become ever more likely (answer perplexity falls) while the problem text itself becomes "
        "less predictable to the model (prompt perplexity rises). This section measures both for each checkpoint.",
        f"<b>Prompt perplexity</b> scores the tokens of the prompt ({result.template!r} template) given the tokens "
        "before them; "
        + (
            "the tokenizer starts every text with a BOS token, so every prompt token is scored. "
            if result.leading_specials
            else "the tokenizer adds no BOS token, so the first prompt token (which has no context) is not scored. "
        )
        + "<b>Answer perplexity</b> scores the reference text given the whole prompt: "
        + (
            "the worked solution of every sample. "
            if n_solution == n
            else "the final answer of every sample (none has a worked solution). "
            if n_solution == 0
            else f"the worked solution for {n_solution} of the {n} samples, the final answer for the others. "
        )
        + "A checkpoint's perplexity is exp of the "
        "mean over samples of the per-sample mean negative log-likelihood (nats per token), so every sample weighs "
        "the same. Log-probabilities are computed in float32 even for bf16 models.",
        f"Monotonic along the series: answer perplexity {'yes' if v.answer_monotonic else 'no'}, "
        f"prompt perplexity {'yes' if v.prompt_monotonic else 'no'}. "
        f"Share of samples whose answer NLL fell while their prompt NLL rose from {v.first} to {v.last}: "
        f"{_fmt(v.samples_paradox, 2)}.",
    ]
    rows = []
    for ckpt in result.per_checkpoint:
        row = [ckpt.name, ckpt.dtype, _fmt(ckpt.prompt_ppl), _fmt(ckpt.answer_ppl)]
        for group in result.groups:
            row += [_fmt(ckpt.groups[group]["prompt_ppl"]), _fmt(ckpt.groups[group]["answer_ppl"])]
        rows.append(row)
    columns = ["checkpoint", "dtype", "prompt ppl", "answer ppl"]
    for group in result.groups:
        columns += [f"prompt ppl ({group})", f"answer ppl ({group})"]
    tables = [Table(columns, rows, "Perplexity per checkpoint (and per label group)")]
    if result.auroc:
        signals = list(SIGNALS)
        tables.append(
            Table(
                ["checkpoint", *[SIGNALS[s] for s in signals]],
                [[name, *[_fmt(scores.get(s), 2) if s in scores else "" for s in signals]] for name, scores in result.auroc.items()],
                "How well each per-sample signal separates leaked from clean samples (AUROC; 1 = perfectly, "
                "0.5 = chance, below 0.5 = the signal points the other way)",
            )
        )
        paragraphs.append(
            "The samples carry ground truth (leaked into training or not), so each signal is also scored: the "
            "AUROC is the probability that a randomly chosen leaked sample looks more leaked by that signal than a "
            "randomly chosen clean one."
        )
    figs = []
    if "lines" in figures:
        figs.append(
            ("Prompt (left) and answer (right) perplexity per checkpoint, over all samples and per label group.", figures["lines"])
        )
    return Section("perplexity", "Perplexity paradox", summary, paragraphs, tables, figs)


register("perplexity", ReportEntry(plot=plot_perplexity, section=section_perplexity, order=20))
