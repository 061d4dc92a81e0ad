"""Token-level forensics ("Sparse but Critical"): where RLVR moved the next-token distribution,
and whether the few moved tokens alone carry the gain.

Two analyses of a base / tuned pair on evaluation prompts:

* :func:`token_divergence` generates responses (from the tuned model and from the base,
  greedy or sampled), teacher-forces *both* models on the same sequences, and compares
  their next-token distributions at every response position (JSD in nats, KL both ways,
  entropies, top-k overlap, rank of the tuned top token under the base, argmax change;
  definitions in :mod:`rlvr_lens.analyses.token_metrics`). Summaries: JSD percentile
  curve, share of tokens above 1e-3 / 1e-2 / 0.1, JSD against relative position, the most
  shifted tokens in context, and per-sample means with the samples' labels (leaked /
  clean) and an AUROC of the per-sample mean JSD when the labels are there.
* :func:`cross_sampling` decodes greedily with one model and takes the other's token
  where their JSD exceeds a threshold (forward: base drives, tuned replaces; reverse:
  tuned drives, base replaces), and reports accuracy against the share of replaced tokens
  (:mod:`rlvr_lens.analyses.cross_decode` holds the two-cache decoder).

Under ``accelerate launch`` / ``torchrun`` both analyses shard their batches over the processes
and gather the per-sample results before any summary (:mod:`rlvr_lens.distributed`); sampled
responses of :func:`token_divergence` are drawn in every process from one seeded stream.

Over-long prompts: a sample whose prompt tokens plus ``max_new_tokens`` (plus the closing
end-of-sequence token) exceed the base model's context window (``max_position_embeddings``)
is left out of both analyses; its id is listed in the result's ``settings["too_long"]``.
So every scored sequence fits the window and memory stays bounded by batch x window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from rlvr_lens.analyses.cross_decode import cross_decode
from rlvr_lens.analyses.scoring import auroc as scoring_auroc
from rlvr_lens.analyses.scoring import has_both_classes, leaked_labels
from rlvr_lens.analyses.token_metrics import METRICS, score_sequences
from rlvr_lens.data.grading import grade
from rlvr_lens.data.sample import Sample, label_groups
from rlvr_lens.data.templates import apply_template
from rlvr_lens.distributed import gather_dict, map_batches, shard, world_size
from rlvr_lens.errors import UserError
from rlvr_lens.generation import batches, generate
from rlvr_lens.progress import progress
from rlvr_lens.results import Result

#: JSD thresholds (nats) of the "share of tokens above" summary.
SHARE_THRESHOLDS = (1e-3, 1e-2, 0.1)
#: Percentiles (0-100) at which the JSD distribution over all tokens is reported.
PERCENTILES = [float(p) for p in range(0, 90, 5)] + [float(p) for p in range(90, 100)] + [99.5, 99.9, 100.0]


def threshold_key(value: float) -> str:
    """``1e-3 -> "0.001"``: the dictionary key of a threshold."""
    return f"{value:g}"


# ----------------------------------------------------------------------------- pair check
def check_comparable(base, tuned) -> None:
    """Raise a :class:`UserError` unless both models share one vocabulary (tokenizer and unembedding)."""
    base_rows = base.model.get_output_embeddings().weight.shape[0]
    tuned_rows = tuned.model.get_output_embeddings().weight.shape[0]
    if base_rows != tuned_rows:
        raise UserError(
            f"{tuned.name} and {base.name} cannot be compared token by token: their unembeddings have "
            f"{tuned_rows} and {base_rows} rows."
        )
    if base.tokenizer.get_vocab() != tuned.tokenizer.get_vocab():
        raise UserError(
            f"{tuned.name} and {base.name} cannot be compared token by token: their tokenizers have different "
            "vocabularies."
        )


def _prompt_ids(tokenizer, samples: Sequence[Sample], template: str) -> tuple[list[str], list[list[int]]]:
    prompts = [apply_template(s.prompt, template, tokenizer) for s in samples]
    return prompts, [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]


def _fitting(model, samples, prompts, prompt_ids, max_new_tokens: int):
    """Drop the samples whose prompt + ``max_new_tokens`` + 1 tokens exceed ``model``'s context
    window (see the module docstring); return the kept ``(samples, prompts, prompt_ids)`` and
    the dropped samples' ids."""
    from rlvr_lens.models.loading import context_window

    window = context_window(model)
    keep = [i for i, ids in enumerate(prompt_ids) if window is None or len(ids) + max_new_tokens + 1 <= window]
    if not keep:
        raise UserError(
            f"Every prompt is too long for the model's context window ({window} tokens) with {max_new_tokens} "
            "new tokens; use shorter samples or a smaller --max-new-tokens."
        )
    dropped = [samples[i].id for i in range(len(samples)) if i not in set(keep)]
    return [samples[i] for i in keep], [prompts[i] for i in keep], [prompt_ids[i] for i in keep], dropped


# ----------------------------------------------------------------------------- divergence
@dataclass
class TokenDivergenceConfig:
    """How :func:`token_divergence` runs.

    Attributes:
        template: prompt template (see :mod:`rlvr_lens.data.templates`).
        max_new_tokens: response length cap.
        batch_size: prompts per generation batch and sequences per teacher-forced pass.
        responses_from: whose responses are scored: ``"tuned"``, ``"base"`` or both.
        do_sample: sample responses (``temperature``, ``top_p``, ``seed``) instead of greedy.
        chunk_size: scored positions per unembedding chunk (peak memory ~ chunk x vocab);
            ``None`` or 0 computes all positions of a batch at once.
        position_bins: bins of the relative-position profile.
        top_tokens: how many of the most shifted tokens to keep (per response source).
        context_tokens: how many preceding tokens a shifted token's context shows.
        compile_metrics: fuse the metric kernels with ``torch.compile`` (on a GPU the eager
            metrics are bound by memory traffic; compiling costs time on first use).
    """

    template: str = "plain"
    max_new_tokens: int = 128
    batch_size: int = 8
    responses_from: tuple[str, ...] = ("tuned", "base")
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    chunk_size: int | None = 256
    position_bins: int = 10
    top_tokens: int = 20
    context_tokens: int = 16
    compile_metrics: bool = False

    def check(self) -> None:
        bad = [r for r in self.responses_from if r not in ("tuned", "base")]
        if bad or not self.responses_from:
            raise UserError(f"responses_from must name tuned and/or base; got {', '.join(bad) or 'nothing'}.")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.position_bins < 1:
            raise UserError("max_new_tokens, batch_size and position_bins must be at least 1.")


@dataclass
class ShiftedToken:
    """One of the most shifted response positions.

    ``position`` is the 0-based index in the response of the token the distributions predict
    (``relative_position`` = position / response length); ``token`` is the token the response
    actually has there (``"<eos>"`` for the end), ``base_top``/``tuned_top`` each model's most
    likely token, ``context`` the decoded text just before it.
    """

    sample_id: str
    position: int
    relative_position: float
    context: str
    token: str
    base_top: str
    tuned_top: str
    jsd: float
    tuned_top_rank: int


@dataclass
class SampleDivergence:
    """Per-response summary; ``labels`` are the sample's (e.g. ``{"leaked": true}``)."""

    sample_id: str
    labels: dict
    n_tokens: int
    mean_jsd: float
    max_jsd: float
    share_above: dict[str, float]
    correct: bool


@dataclass
class GroupDivergence:
    """Token and sample statistics of one label group (e.g. leaked or clean samples)."""

    n_samples: int
    n_tokens: int
    mean_jsd: float
    share_above: dict[str, float]
    accuracy: float


@dataclass
class ResponseDivergence:
    """Divergence along the responses of one model (``responses_from`` = ``"tuned"`` or ``"base"``).

    Attributes:
        means: mean of every per-token metric over all scored tokens.
        percentiles / jsd_percentiles: the JSD percentile curve (percent, nats).
        share_above: share of tokens with JSD above each of :data:`SHARE_THRESHOLDS`.
        position_edges: ``position_bins + 1`` edges of relative position in [0, 1];
            ``position_mean_jsd``, ``position_share_above`` (JSD > 0.1) and
            ``position_counts`` per bin (``None`` where a bin is empty).
        groups: per label group (``"leaked"``, ``"clean"``), when samples carry that label.
        auroc_mean_jsd: AUROC of the per-sample mean JSD for leaked vs clean (``None`` without labels).
    """

    responses_from: str
    n_responses: int
    n_tokens: int
    mean_length: float
    accuracy: float
    means: dict[str, float]
    percentiles: list[float]
    jsd_percentiles: list[float]
    share_above: dict[str, float]
    position_edges: list[float]
    position_mean_jsd: list[float | None]
    position_share_above: list[float | None]
    position_counts: list[int]
    top_tokens: list[ShiftedToken]
    samples: list[SampleDivergence]
    groups: dict[str, GroupDivergence] = field(default_factory=dict)
    auroc_mean_jsd: float | None = None


@dataclass
class TokenDivergenceResult(Result):
    """Token-level divergence between a base and a tuned model along generated responses."""

    kind: ClassVar[str] = "token_divergence"

    base: str
    tuned: str
    settings: dict
    responses: list[ResponseDivergence]


def _share_above(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {threshold_key(t): float("nan") for t in SHARE_THRESHOLDS}
    return {threshold_key(t): float((values > t).mean()) for t in SHARE_THRESHOLDS}


def _summarize(
    source: str,
    samples: Sequence[Sample],
    sequences: list[list[int]],
    starts: list[int],
    response_lengths: list[int],
    per_row: list[dict[str, torch.Tensor]],
    correct: list[bool],
    tokenizer,
    config: TokenDivergenceConfig,
) -> ResponseDivergence:
    eos_text = "<eos>"
    all_metrics = {name: np.concatenate([r[name].numpy() for r in per_row]) if per_row else np.zeros(0) for name in METRICS}
    jsd = all_metrics["jsd"].astype(np.float64)
    n = int(jsd.size)
    means = {name: float(values.mean()) if n else float("nan") for name, values in all_metrics.items()}
    changed = all_metrics["argmax_changed"] > 0.5
    means["tuned_top_rank_median_where_changed"] = (
        float(np.median(all_metrics["tuned_top_rank"][changed])) if changed.any() else float("nan")
    )
    edges = np.linspace(0.0, 1.0, config.position_bins + 1)
    relative = np.concatenate(
        [np.arange(len(r["jsd"])) / max(length, 1) for r, length in zip(per_row, response_lengths)]
    ) if per_row else np.zeros(0)
    bins = np.clip(np.digitize(relative, edges[1:-1]), 0, config.position_bins - 1)
    position_mean, position_share, position_counts = [], [], []
    for b in range(config.position_bins):
        in_bin = jsd[bins == b]
        position_counts.append(int(in_bin.size))
        position_mean.append(float(in_bin.mean()) if in_bin.size else None)
        position_share.append(float((in_bin > 0.1).mean()) if in_bin.size else None)

    # the most shifted tokens, decoded with their context
    offsets = np.cumsum([0] + [len(r["jsd"]) for r in per_row])
    order = np.argsort(-jsd, kind="stable")[: config.top_tokens]
    top: list[ShiftedToken] = []
    for flat in order.tolist():
        row = int(np.searchsorted(offsets, flat, side="right") - 1)
        position = flat - int(offsets[row])
        seq = sequences[row]
        token_index = starts[row] + position
        context_ids = seq[max(token_index - config.context_tokens, 0) : token_index]
        is_eos = position >= response_lengths[row]
        top.append(
            ShiftedToken(
                sample_id=samples[row].id,
                position=position,
                relative_position=position / max(response_lengths[row], 1),
                context=tokenizer.decode(context_ids),
                token=eos_text if is_eos else tokenizer.decode([seq[token_index]]),
                base_top=tokenizer.decode([int(per_row[row]["base_top"][position])]),
                tuned_top=tokenizer.decode([int(per_row[row]["tuned_top"][position])]),
                jsd=float(jsd[flat]),
                tuned_top_rank=int(all_metrics["tuned_top_rank"][flat]),
            )
        )

    per_sample = []
    for sample, row, ok in zip(samples, per_row, correct):
        values = row["jsd"].numpy().astype(np.float64)
        per_sample.append(
            SampleDivergence(
                sample_id=sample.id,
                labels=dict(sample.labels),
                n_tokens=int(values.size),
                mean_jsd=float(values.mean()) if values.size else 0.0,
                max_jsd=float(values.max()) if values.size else 0.0,
                share_above=_share_above(values),
                correct=bool(ok),
            )
        )
    groups = {}
    for name, indices in label_groups(list(samples)).items():
        values = np.concatenate([per_row[i]["jsd"].numpy() for i in indices]).astype(np.float64)
        groups[name] = GroupDivergence(
            n_samples=len(indices),
            n_tokens=int(values.size),
            mean_jsd=float(values.mean()) if values.size else float("nan"),
            share_above=_share_above(values),
            accuracy=float(np.mean([correct[i] for i in indices])),
        )
    labels = leaked_labels(samples)
    auroc = scoring_auroc([s.mean_jsd for s in per_sample], labels) if has_both_classes(labels) else None
    return ResponseDivergence(
        responses_from=source,
        n_responses=len(samples),
        n_tokens=n,
        mean_length=float(np.mean(response_lengths)) if response_lengths else 0.0,
        accuracy=float(np.mean(correct)) if correct else float("nan"),
        means=means,
        percentiles=list(PERCENTILES),
        jsd_percentiles=[float(v) for v in np.percentile(jsd, PERCENTILES)] if n else [],
        share_above=_share_above(jsd),
        position_edges=[float(e) for e in edges],
        position_mean_jsd=position_mean,
        position_share_above=position_share,
        position_counts=position_counts,
        top_tokens=top,
        samples=per_sample,
        groups=groups,
        auroc_mean_jsd=auroc,
    )


def token_divergence(
    base,
    tuned,
    samples: Sequence[Sample],
    config: TokenDivergenceConfig | None = None,
    *,
    show_progress: bool = False,
) -> TokenDivergenceResult:
    """Compare the base and tuned next-token distributions along generated responses.

    Args:
        base, tuned: :class:`~rlvr_lens.models.loading.LoadedModel` of one vocabulary.
        samples: evaluation samples (their ``labels`` are carried into the per-sample rows).
        config: see :class:`TokenDivergenceConfig`.
    Returns:
        a :class:`TokenDivergenceResult` with one :class:`ResponseDivergence` per response source.

    Each response is scored at every position that predicts one of its tokens, plus the
    end-of-sequence token when the response stopped before ``max_new_tokens``.
    """
    config = config or TokenDivergenceConfig()
    config.check()
    check_comparable(base, tuned)
    if not samples:
        raise UserError("The token-level analysis needs at least one sample.")
    tokenizer = base.tokenizer
    eos = tokenizer.eos_token_id
    prompts, prompt_ids = _prompt_ids(tokenizer, samples, config.template)
    samples, prompts, prompt_ids, too_long = _fitting(base.model, samples, prompts, prompt_ids, config.max_new_tokens)
    models = {"base": base, "tuned": tuned}
    responses = []
    for source in config.responses_from:
        generator = models[source]

        def respond(part: Sequence[str], generator=generator):
            return generate(
                generator.model,
                generator.tokenizer,
                part,
                max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size,
                do_sample=config.do_sample,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=config.seed,
                show_progress=show_progress,
            )

        if config.do_sample or world_size() == 1:  # sampled responses: one random stream, as in one process
            generations = respond(prompts)
        else:  # greedy under accelerate launch / torchrun: each process decodes its share of the batches
            chunks = list(batches(prompts, config.batch_size))
            mine = {k: respond(chunks[k]) for k in shard(range(len(chunks)))}
            generations = [g for _, part in sorted(gather_dict(mine).items()) for g in part]
        correct = [grade(g.text, s.answer).correct for g, s in zip(generations, samples)]
        sequences, starts, lengths = [], [], []
        for ids, gen in zip(prompt_ids, generations):
            ended = eos is not None and len(gen.token_ids) < config.max_new_tokens
            sequences.append(list(ids) + list(gen.token_ids) + ([eos] if ended else []))
            starts.append(len(ids))
            lengths.append(len(gen.token_ids))
        indices = list(range(len(samples)))
        chunks = list(batches(indices, config.batch_size))
        scored: dict[int, list[dict[str, torch.Tensor]]] = {}
        # under accelerate launch / torchrun each process scores its share of the batches (rlvr_lens.distributed)
        for k in progress(shard(range(len(chunks))), enabled=show_progress, desc=f"score {source} responses", unit="batch"):
            scored[k] = score_sequences(
                base,
                tuned,
                [sequences[i] for i in chunks[k]],
                [starts[i] for i in chunks[k]],
                pad_token_id=tokenizer.pad_token_id,
                chunk_size=config.chunk_size or None,
                compiled=config.compile_metrics,
            )
        per_row: list[dict[str, torch.Tensor]] = [row for _, rows in sorted(gather_dict(scored).items()) for row in rows]
        responses.append(_summarize(source, samples, sequences, starts, lengths, per_row, correct, tokenizer, config))
    settings = {
        "template": config.template,
        "max_new_tokens": config.max_new_tokens,
        "do_sample": config.do_sample,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "seed": config.seed,
        "chunk_size": config.chunk_size,
        "n_samples": len(samples),
        "too_long": too_long,
        "log_base": "e (nats)",
    }
    return TokenDivergenceResult(base=base.name, tuned=tuned.name, settings=settings, responses=responses)


# ----------------------------------------------------------------------------- cross-sampling
@dataclass
class CrossSamplingConfig:
    """How :func:`cross_sampling` runs.

    Attributes:
        template, max_new_tokens, batch_size: as for :class:`TokenDivergenceConfig`.
        thresholds: JSD thresholds (nats); at a step whose JSD exceeds one, the token comes
            from the other model. Plain decoding of each model (threshold infinity) is
            always run too.
        top_fractions: also replace the top x (fraction) of positions by JSD: the threshold
            is the (1 - x) quantile of the JSD along the driving model's own greedy responses.
        directions: ``"forward"`` (base drives, tuned's tokens are taken) and/or ``"reverse"``.
    """

    template: str = "plain"
    max_new_tokens: int = 128
    batch_size: int = 8
    thresholds: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01)
    top_fractions: tuple[float, ...] = ()
    directions: tuple[str, ...] = ("forward", "reverse")

    def check(self) -> None:
        bad = [d for d in self.directions if d not in ("forward", "reverse")]
        if bad or not self.directions:
            raise UserError(f"directions must name forward and/or reverse; got {', '.join(bad) or 'nothing'}.")
        if any(not t >= 0 for t in self.thresholds):
            raise UserError("Cross-sampling thresholds must be JSD values >= 0 (nats).")
        if any(not 0 < x <= 1 for x in self.top_fractions):
            raise UserError("Cross-sampling top fractions must lie in (0, 1].")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise UserError("max_new_tokens and batch_size must be at least 1.")


@dataclass
class CrossSamplingPoint:
    """One cross-decoding run.

    ``threshold`` is ``None`` for plain decoding of the driver (infinity); ``top_fraction`` is
    set when the threshold came from a quantile. ``share_replaced``: tokens taken from the
    other model / all generated tokens; ``replaced_per_response``: their mean count per
    response; ``changed_per_response``: how many of those differ from the driver's own
    greedy token. ``correct`` is aligned with the result's ``sample_ids``.
    """

    direction: str
    threshold: float | None
    top_fraction: float | None
    accuracy: float
    share_replaced: float
    replaced_per_response: float
    changed_per_response: float
    mean_length: float
    mean_jsd: float
    group_accuracy: dict[str, float]
    correct: list[bool]


@dataclass
class CrossSamplingResult(Result):
    """Forward / reverse cross-sampling accuracy against the share of tokens taken from the other model."""

    kind: ClassVar[str] = "cross_sampling"

    base: str
    tuned: str
    settings: dict
    sample_ids: list[str]
    labels: list[dict]
    base_accuracy: float
    tuned_accuracy: float
    points: list[CrossSamplingPoint]


def _run_cross(
    driver, other, samples, prompt_ids, threshold, config, direction, top_fraction, show_progress
) -> tuple[CrossSamplingPoint, list[float]]:
    tokenizer = driver.tokenizer
    indices = list(range(len(samples)))
    label = "plain" if math.isinf(threshold) else f"jsd>{threshold:.3g}"

    def decode(chunk: Sequence[int]) -> list[tuple]:
        out = cross_decode(
            driver.model,
            other.model,
            [prompt_ids[i] for i in chunk],
            threshold=threshold,
            max_new_tokens=config.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        return list(zip(out.token_ids, out.from_other, out.changed, out.jsd))

    def wrap(batch_indices):
        return progress(batch_indices, enabled=show_progress, desc=f"{direction} {label}", unit="batch")

    # under accelerate launch / torchrun each process decodes its share of the batches; every
    # statistic below (and the top-fraction quantiles of the caller) is over the gathered samples
    rows = map_batches(decode, list(batches(indices, config.batch_size)), wrap=wrap)
    tokens, from_other, changed, jsds = ([list(row[k]) for row in rows] for k in range(4))
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    correct = [grade(text, s.answer).correct for text, s in zip(texts, samples)]
    total = sum(len(t) for t in tokens)
    flat_jsd = [v for row in jsds for v in row]
    group_accuracy = {
        name: float(np.mean([correct[i] for i in members])) for name, members in label_groups(list(samples)).items()
    }
    point = CrossSamplingPoint(
        direction=direction,
        threshold=None if math.isinf(threshold) else float(threshold),
        top_fraction=top_fraction,
        accuracy=float(np.mean(correct)),
        share_replaced=sum(map(sum, from_other)) / total if total else 0.0,
        replaced_per_response=float(np.mean([sum(r) for r in from_other])),
        changed_per_response=float(np.mean([sum(r) for r in changed])),
        mean_length=total / len(tokens),
        mean_jsd=float(np.mean(flat_jsd)) if flat_jsd else 0.0,
        group_accuracy=group_accuracy,
        correct=correct,
    )
    return point, flat_jsd


def cross_sampling(
    base,
    tuned,
    samples: Sequence[Sample],
    config: CrossSamplingConfig | None = None,
    *,
    show_progress: bool = False,
) -> CrossSamplingResult:
    """Forward and reverse cross-sampling (greedy; see :mod:`rlvr_lens.analyses.cross_decode`).

    Forward: the base drives and the tuned model's token is taken where the JSD exceeds the
    threshold; reverse: the tuned model drives and the base's token is taken. Each response
    is graded against ``sample.answer``. Plain base and plain tuned accuracies come from the
    threshold-infinity runs of the two directions.
    """
    config = config or CrossSamplingConfig()
    config.check()
    check_comparable(base, tuned)
    if not samples:
        raise UserError("Cross-sampling needs at least one sample.")
    prompts, prompt_ids = _prompt_ids(base.tokenizer, samples, config.template)
    samples, _, prompt_ids, too_long = _fitting(base.model, samples, prompts, prompt_ids, config.max_new_tokens)
    roles = {"forward": (base, tuned), "reverse": (tuned, base)}
    points: list[CrossSamplingPoint] = []
    plain: dict[str, float] = {}
    for direction in ("forward", "reverse"):
        driver, other = roles[direction]
        run_plain, own_jsd = _run_cross(
            driver, other, samples, prompt_ids, math.inf, config, direction, None, show_progress
        )
        plain["base" if direction == "forward" else "tuned"] = run_plain.accuracy
        if direction not in config.directions:
            continue
        points.append(run_plain)
        thresholds = [(float(t), None) for t in sorted(set(config.thresholds), reverse=True)]
        for fraction in config.top_fractions:
            value = float(np.quantile(own_jsd, 1.0 - fraction)) if own_jsd else 0.0
            thresholds.append((value, float(fraction)))
        for threshold, fraction in thresholds:
            point, _ = _run_cross(driver, other, samples, prompt_ids, threshold, config, direction, fraction, show_progress)
            points.append(point)
    settings = {
        "template": config.template,
        "max_new_tokens": config.max_new_tokens,
        "thresholds": list(config.thresholds),
        "top_fractions": list(config.top_fractions),
        "directions": list(config.directions),
        "decoding": "greedy",
        "log_base": "e (nats)",
        "n_samples": len(samples),
        "too_long": too_long,
    }
    return CrossSamplingResult(
        base=base.name,
        tuned=tuned.name,
        settings=settings,
        sample_ids=[s.id for s in samples],
        labels=[dict(s.labels) for s in samples],
        base_accuracy=plain["base"],
        tuned_accuracy=plain["tuned"],
        points=points,
    )


def _register_report() -> None:
    from rlvr_lens.analyses.tokens_report import register_entries

    register_entries()


_register_report()
