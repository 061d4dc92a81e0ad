"""Published membership-inference (contamination) detectors, implemented from their papers.

Each detector gives one score per sample, oriented so that **higher = "looks more like
training data"**. Every detector reads the same token sequence as the perplexity analysis
(:func:`rlvr_lens.analyses.perplexity.encode_sample`: ``[leading specials] + prompt +
answer``, the answer being the reference solution when there is one), scored over the
part chosen by ``DetectorsConfig.text`` (``"full"``: prompt and answer tokens, as the
detectors score a whole text; ``"prompt"`` or ``"answer"``).

With ``log p_t = log p(x_t | x_<t)`` (natural log) over the ``n`` scored tokens:

* **loss** (Yeom et al. 2018; Carlini et al. 2021): ``mean_t log p_t`` (the negative
  loss, i.e. minus log-perplexity).
* **zlib** (Carlini et al. 2021, "Extracting training data from large language models"):
  ``mean_t log p_t / zlib_bytes`` where ``zlib_bytes = len(zlib.compress(text.encode()))``
  of the scored text: the likelihood relative to how compressible (generic) the text is.
* **Min-K% Prob** (Shi et al. 2024, ICLR): the mean of the ``ceil(k n)`` lowest ``log p_t``
  (at least one): a member text has few very surprising tokens.
* **Min-K%++** (Zhang et al. 2025, ICLR): the same mean over the ``ceil(k n)`` lowest
  standardized scores ``(log p_t - mu_t) / sigma_t``, where ``mu_t = sum_v p(v) log p(v)`` and
  ``sigma_t^2 = sum_v p(v) (log p(v))^2 - mu_t^2`` are the mean and variance of the log-
  probability of a token drawn from the model's own next-token distribution at ``t``
  (a member token sits at a local maximum of the likelihood).
* **reference ratio** (Carlini et al. 2021's reference-model comparison): ``loss`` under
  the tuned model minus ``loss`` under the base: the pairs the project compares give the
  reference for free.

Min-K% and Min-K%++ are computed for every ``k`` in ``DetectorsConfig.ks`` (default 0.1,
0.2, ..., 1.0) under names ``min_k@0.1`` ...; the scoreboard picks ``k`` on a calibration
split, never on the samples it scores. Log-probabilities are float32 ``log_softmax`` of one
row's logits at a time; ``mu``/``sigma`` are accumulated in float64 (the variance as the
centred moment ``sum_v p(v) (log p(v) - mu)^2``, which does not cancel on flat distributions).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.generation import batches
from rlvr_lens.progress import progress
from rlvr_lens.results import Result

TEXTS = ("full", "prompt", "answer")
DEFAULT_KS = tuple(round(0.1 * i, 1) for i in range(1, 11))

#: Detector families; ``min_k`` and ``min_k_pp`` appear once per k as ``<family>@<k>``.
DETECTORS = {
    "loss": "loss (mean token log-probability)",
    "zlib": "zlib ratio",
    "min_k": "Min-K% Prob",
    "min_k_pp": "Min-K%++",
    "ref_ratio": "reference ratio (tuned vs base log-likelihood)",
}


@dataclass
class DetectorsConfig:
    """Settings of :func:`detector_scores` (every default is the CLI's).

    Attributes:
        template: prompt template (see :mod:`rlvr_lens.data.templates`).
        text: which tokens are scored: ``"full"`` (prompt + answer), ``"prompt"`` or ``"answer"``.
        ks: the fractions ``k`` of Min-K% / Min-K%++, each in (0, 1].
        batch_size: sequences per forward pass.
    """

    template: str = "plain"
    text: str = "full"
    ks: tuple[float, ...] = DEFAULT_KS
    batch_size: int = 8

    def check(self) -> None:
        if self.text not in TEXTS:
            raise UserError(f"Detector text must be one of {', '.join(TEXTS)}; got {self.text!r}.")
        if not self.ks or any(not 0.0 < k <= 1.0 for k in self.ks):
            raise UserError(f"Min-K% fractions k must lie in (0, 1]; got {list(self.ks)}.")
        if self.batch_size < 1:
            raise UserError(f"Batch size must be at least 1; got {self.batch_size}.")


@dataclass
class TokenStats:
    """Per scored token of one sequence: ``log p_t`` and the ``mu_t``/``sigma_t`` of Min-K%++ (nats)."""

    logp: np.ndarray  # [n] float64
    mu: np.ndarray  # [n]
    sigma: np.ndarray  # [n]


@dataclass
class DetectorsResult(Result):
    """Per-sample scores of every detector (higher = looks more like training data).

    ``scores[model][name]`` follows ``sample_ids``; ``name`` is ``loss``, ``zlib``,
    ``min_k@<k>`` or ``min_k_pp@<k>``. ``ref_ratio`` is the tuned model's ``loss`` minus the
    base's (``None`` when no base was given).
    """

    kind = "detectors"

    config: dict
    sample_ids: list[str]
    target: str
    reference: str | None
    scored_tokens: list[int]
    scores: dict[str, dict[str, list[float | None]]]
    ref_ratio: list[float | None] | None = None
    groups: dict[str, list[int]] = field(default_factory=dict)

    def signals(self) -> dict[str, list[float | None]]:
        """The target model's detectors plus ``ref_ratio``, keyed by name (for the scoreboard)."""
        out = dict(self.scores[self.target])
        if self.ref_ratio is not None:
            out["ref_ratio"] = list(self.ref_ratio)
        return out


# ----------------------------------------------------------------------------- formulas


def min_k(values: np.ndarray, k: float) -> float:
    """Mean of the ``ceil(k * n)`` smallest of ``values`` (at least one)."""
    count = max(1, math.ceil(k * len(values) - 1e-9))
    return float(np.mean(np.sort(values)[:count]))


def sequence_scores(stats: TokenStats, text: str, ks: Sequence[float]) -> dict[str, float]:
    """Every detector of one sequence from its token statistics (see the module docstring)."""
    logp = stats.logp
    standardized = (logp - stats.mu) / np.maximum(stats.sigma, 1e-12)
    loss = float(np.mean(logp))
    out = {"loss": loss, "zlib": loss / len(zlib.compress(text.encode("utf-8")))}
    for k in ks:
        out[f"min_k@{k:g}"] = min_k(logp, k)
        out[f"min_k_pp@{k:g}"] = min_k(standardized, k)
    return out


@torch.no_grad()
def token_stats(model, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]], *, pad_id: int) -> list[TokenStats]:
    """``log p_t``, ``mu_t`` and ``sigma_t`` at target positions ``[start, end)`` of each sequence.

    One right-padded forward pass (a causal model never attends to the padding after a
    token); position ``t`` is predicted by the logits at ``t - 1``.
    """
    from rlvr_lens.analyses.perplexity import pad_batch

    device = next(model.parameters()).device
    input_ids, _, _ = pad_batch(sequences, pad_id, "right")
    logits = model(input_ids=input_ids.to(device), use_cache=False).logits  # [batch, seq, vocab]
    out = []
    for row, (start, end) in enumerate(spans):
        logprobs = torch.log_softmax(logits[row, start - 1 : end - 1].float(), dim=-1)  # [n, vocab]
        targets = input_ids[row, start:end].to(logprobs.device)
        logp = logprobs.gather(-1, targets[:, None])[:, 0].double()
        wide = logprobs.double()
        probs = wide.exp()
        mu = (probs * wide).sum(-1)
        # centred second moment: E[x^2] - mu^2 cancels badly when the distribution is flat
        var = (probs * (wide - mu[:, None]).square()).sum(-1)
        out.append(TokenStats(logp.cpu().numpy(), mu.cpu().numpy(), var.sqrt().cpu().numpy()))
    return out


def _span(encoded, text: str) -> tuple[int, int]:
    if text == "prompt":
        return encoded.prompt_span
    if text == "answer":
        return encoded.answer_span
    return encoded.prompt_span[0], encoded.answer_span[1]


def model_scores(model, tokenizer, samples: Sequence[Sample], config: DetectorsConfig, *, show_progress: bool = False, desc: str = "detectors"):
    """``(name -> per-sample scores, scored tokens per sample)`` of one model."""
    from rlvr_lens.analyses.perplexity import encode_sample, leading_special_ids

    leading = leading_special_ids(tokenizer)
    encoded = [encode_sample(tokenizer, s, config.template, leading=leading) for s in samples]
    spans = [_span(e, config.text) for e in encoded]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: dict[str, list[float | None]] = {}
    order = sorted(range(len(samples)), key=lambda i: -len(encoded[i].ids))
    for chunk in progress(list(batches(order, config.batch_size)), enabled=show_progress, desc=desc, unit="batch"):
        chunk = [i for i in chunk if spans[i][1] > spans[i][0]]
        if not chunk:
            continue
        stats = token_stats(model, [encoded[i].ids for i in chunk], [spans[i] for i in chunk], pad_id=pad_id)
        for i, st in zip(chunk, stats):
            text = tokenizer.decode(encoded[i].ids[spans[i][0] : spans[i][1]])
            for name, value in sequence_scores(st, text, config.ks).items():
                scores.setdefault(name, [None] * len(samples))[i] = value
    return scores, [end - start for start, end in spans]


def detector_scores(
    target,
    samples: Sequence[Sample],
    config: DetectorsConfig | None = None,
    *,
    reference=None,
    show_progress: bool = False,
) -> DetectorsResult:
    """Every detector's per-sample score under ``target`` (and ``reference``, for the ratio).

    Args:
        target: the :class:`~rlvr_lens.models.LoadedModel` under test (e.g. the RLVR checkpoint).
        samples: the samples to score.
        config: see :class:`DetectorsConfig`.
        reference: optional loaded reference model (the base); its detectors are stored
            too, and ``ref_ratio`` = target ``loss`` - reference ``loss``.
    """
    from rlvr_lens.data.sample import label_groups

    config = config or DetectorsConfig()
    config.check()
    if not samples:
        raise UserError("The detectors need at least one sample.")
    scores, tokens = {}, []
    for loaded in [target] + ([reference] if reference is not None else []):
        if loaded.name in scores:
            raise UserError(f"The target and the reference are both named {loaded.name!r}; give them different names.")
        # the target's tokenizer defines the ids both models score
        scores[loaded.name], tokens = model_scores(
            loaded.model, target.tokenizer, samples, config, show_progress=show_progress, desc=f"detectors {loaded.name}"
        )
    ratio = None
    if reference is not None:
        t, r = scores[target.name]["loss"], scores[reference.name]["loss"]
        ratio = [None if a is None or b is None else a - b for a, b in zip(t, r)]
    settings = {"template": config.template, "text": config.text, "ks": list(config.ks), "batch_size": config.batch_size}
    return DetectorsResult(
        config=settings,
        sample_ids=[s.id for s in samples],
        target=target.name,
        reference=reference.name if reference is not None else None,
        scored_tokens=tokens,
        scores=scores,
        ref_ratio=ratio,
        groups=label_groups(list(samples)),
    )


def _register_report() -> None:
    from rlvr_lens.analyses.scoreboard_report import register_entries

    register_entries()


_register_report()
