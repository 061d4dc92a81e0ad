"""Per-position comparison of two next-token distributions, computed in chunks.

Definitions (natural log, so every divergence and entropy is in **nats**). With ``P`` the
base model's and ``Q`` the tuned model's next-token distribution at one position and
``M = (P + Q) / 2``:

=====================  ===========================================================
``jsd``                Jensen-Shannon *divergence* ``(KL(P||M) + KL(Q||M)) / 2``, in
                       ``[0, ln 2]``. (Not the JS *distance* ``sqrt(jsd)`` that the
                       source study's scripts report.)
``kl_base_tuned``      ``KL(P || Q)``
``kl_tuned_base``      ``KL(Q || P)``
``entropy_base``       ``H(P)``; ``entropy_tuned``: ``H(Q)``
``top{k}_overlap``     ``|top-k(P) ∩ top-k(Q)| / k`` for k = 1, 5, 10
``tuned_top_rank``     rank of the tuned model's most likely token under the base model,
                       1-based: 1 when the base ranks it first too (ties count in its favour)
``argmax_changed``     1.0 where the two most likely tokens differ
=====================  ===========================================================

Logits are converted to float32 and log-softmaxed before anything else (bf16 models
included). The JSD is summed over the vocabulary from per-entry terms that are each >= 0,
``p (ln 2 - softplus(lq - lp)) + q (ln 2 - softplus(lp - lq))`` (rearranged so that no large
numbers cancel; see :func:`compare_logits`): its float32 error is a few 1e-8 nats near 0 and
~1e-6 relative elsewhere (the ``H(M) - (H(P) + H(Q)) / 2`` form cancels to ~1e-6 absolute),
far below the thresholds (>= 1e-3) the summaries use.

Memory: :func:`score_sequences` runs each model's *body* once over the batch (hidden
states ``[batch, seq, hidden]``), gathers the hidden states of the positions to score into
``[n, hidden]``, and applies the final unembedding (with Gemma's soft-capping, through the
architecture adapter) to ``chunk_size`` positions at a time. Peak memory for the
vocabulary-sized tensors is therefore ``O(chunk_size x vocab)``, whatever the batch size
and response length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

TOP_K = (1, 5, 10)
LN2 = math.log(2.0)

#: Names of the per-position metrics, in the order :func:`compare_logits` returns them.
METRICS = (
    "jsd",
    "kl_base_tuned",
    "kl_tuned_base",
    "entropy_base",
    "entropy_tuned",
    *(f"top{k}_overlap" for k in TOP_K),
    "tuned_top_rank",
    "argmax_changed",
)


def _jsd(p: torch.Tensor, q: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """JSD from probabilities and ``diff = log p - log q`` (each summed term is >= 0)."""
    terms = p * (LN2 - F.softplus(-diff)) + q * (LN2 - F.softplus(diff))
    return (0.5 * terms.sum(-1)).clamp_min(0.0)


def jsd_from_logits(base_logits: torch.Tensor, tuned_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between rows of logits ``[..., vocab]`` -> ``[...]`` (float32)."""
    lp = torch.log_softmax(base_logits.float(), dim=-1)
    lq = torch.log_softmax(tuned_logits.float(), dim=-1)
    return _jsd(lp.exp(), lq.exp(), lp - lq)


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for ``[n, vocab]`` inputs without an ``[n, vocab]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _ranking_metrics(base_logits: torch.Tensor, tuned_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Top-k overlaps, rank of the tuned top token under the base, argmax change, top ids.

    Computed on the logits as given: log-softmax shifts each row by a constant, so the
    order (ties included: distinct bf16 values stay distinct in float32) is the same.
    """
    out: dict[str, torch.Tensor] = {}
    kmax = min(max(TOP_K), base_logits.shape[-1])
    top_base = base_logits.topk(kmax, dim=-1).indices
    top_tuned = tuned_logits.topk(kmax, dim=-1).indices
    for k in TOP_K:
        kk = min(k, kmax)
        shared = (top_base[:, :kk, None] == top_tuned[:, None, :kk]).any(-1).sum(-1)
        out[f"top{k}_overlap"] = shared.float() / kk
    base_top, tuned_top = top_base[:, 0], top_tuned[:, 0]
    changed = base_top != tuned_top
    rank = torch.ones(base_logits.shape[0], dtype=torch.float32, device=base_logits.device)
    rows = changed.nonzero().squeeze(1)
    if rows.numel():  # the rank is 1 wherever the argmax did not change; count only elsewhere
        sub = base_logits[rows]
        rank[rows] = (sub > sub.gather(-1, tuned_top[rows, None])).sum(-1).float() + 1.0
    out["tuned_top_rank"] = rank
    out["argmax_changed"] = changed.float()
    out["base_top"], out["tuned_top"] = base_top, tuned_top
    return out


def _divergences(base_logits: torch.Tensor, tuned_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(jsd, kl_base_tuned, kl_tuned_base, entropy_base, entropy_tuned)``, each ``[n]`` float32.

    Eager version written for memory traffic: at most five ``[n, vocab]`` float32 tensors are
    alive at once (row sums go through ``bmm``, differences are taken in place).
    """
    lp = torch.log_softmax(base_logits.float(), dim=-1)
    lq = torch.log_softmax(tuned_logits.float(), dim=-1)
    p, q = lp.exp(), lq.exp()
    entropy_base = _row_dot(p, lp).neg_()
    entropy_tuned = _row_dot(q, lq).neg_()
    diff = lp.sub_(lq)  # log p - log q, in place
    del lq
    kl_base_tuned = _row_dot(p, diff).clamp_min(0.0)
    kl_tuned_base = _row_dot(q, diff).neg_().clamp_min(0.0)
    # Per entry, with d = log p - log q and t = softplus(-|d|) in [0, ln 2]:
    #   p (ln2 - softplus(-d)) + q (ln2 - softplus(d)) = (p + q)(ln2 - t) - q max(d, 0) + p min(d, 0)
    # (every large |d| is multiplied by the smaller of p and q, so nothing large cancels).
    buffer = torch.clamp(diff, min=0.0)
    q_pos = _row_dot(q, buffer)
    torch.clamp(diff, max=0.0, out=buffer)
    p_neg = _row_dot(p, buffer)
    torch.abs(diff, out=buffer)
    del diff
    half_log_ratio = F.softplus(buffer.neg_()).neg_().add_(LN2)
    del buffer
    jsd = (0.5 * (_row_dot(p.add_(q), half_log_ratio) - q_pos + p_neg)).clamp_min(0.0)
    return jsd, kl_base_tuned, kl_tuned_base, entropy_base, entropy_tuned


def _divergences_fusable(base_logits: torch.Tensor, tuned_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same as :func:`_divergences`, written as plain element-wise ops and row sums so that
    ``torch.compile`` can fuse them into a few kernels that read the logits a few times."""
    lp = torch.log_softmax(base_logits.float(), dim=-1)
    lq = torch.log_softmax(tuned_logits.float(), dim=-1)
    p, q = lp.exp(), lq.exp()
    diff = lp - lq
    half_log_ratio = LN2 - F.softplus(-diff.abs())
    terms = (p + q) * half_log_ratio - q * diff.clamp_min(0.0) + p * diff.clamp_max(0.0)
    return (
        (0.5 * terms.sum(-1)).clamp_min(0.0),
        (p * diff).sum(-1).clamp_min(0.0),
        (-(q * diff).sum(-1)).clamp_min(0.0),
        -(p * lp).sum(-1),
        -(q * lq).sum(-1),
    )


_COMPILED: dict[str, object] = {}


def compare_logits(base_logits: torch.Tensor, tuned_logits: torch.Tensor, *, compiled: bool = False) -> dict[str, torch.Tensor]:
    """Every metric of the module docstring, per row.

    Args:
        base_logits, tuned_logits: ``[n, vocab]`` next-token logits (any float dtype).
        compiled: compute the divergences with a ``torch.compile``-fused kernel (worth it on a
            GPU, where the eager version is bound by memory traffic; compiling takes a while
            on first use).
    Returns:
        ``{name: [n] float32 tensor}`` for every name in :data:`METRICS`, plus ``base_top`` and
        ``tuned_top``: ``[n]`` int64 ids of each model's most likely token.
    """
    if compiled:
        if "divergences" not in _COMPILED:
            _COMPILED["divergences"] = torch.compile(_divergences_fusable, dynamic=True)
        divergences = _COMPILED["divergences"](base_logits, tuned_logits)
    else:
        divergences = _divergences(base_logits, tuned_logits)
    out = dict(zip(("jsd", "kl_base_tuned", "kl_tuned_base", "entropy_base", "entropy_tuned"), divergences))
    out.update(_ranking_metrics(base_logits, tuned_logits))
    return {name: out[name] for name in (*METRICS, "base_top", "tuned_top")}


def body_hidden_states(loaded, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final-normed hidden states ``[batch, seq, hidden]`` of the model body (no unembedding).

    Positions are ``cumsum(attention_mask) - 1``, so left- and right-padded rows both get
    the positions they would have unpadded.
    """
    body = loaded.adapter.base_model(loaded.model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


@torch.no_grad()
def score_sequences(
    base,
    tuned,
    sequences: Sequence[Sequence[int]],
    score_from: Sequence[int],
    *,
    pad_token_id: int,
    chunk_size: int | None = 256,
    compiled: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Teacher-force both models on token sequences and compare their next-token distributions.

    Args:
        base, tuned: :class:`~rlvr_lens.models.loading.LoadedModel` of the same vocabulary.
        sequences: token ids (prompt followed by response), one list per row.
        score_from: per row, the index of the first token whose *prediction* is scored: the
            distributions at positions ``score_from - 1 .. len - 2`` (those that predict tokens
            ``score_from .. len - 1``) are compared.
        pad_token_id: used for right padding (masked out).
        chunk_size: scored positions per unembedding chunk; ``None`` = all at once.
        compiled: fuse the divergence kernels with ``torch.compile`` (see :func:`compare_logits`).
    Returns:
        per row, ``{metric: [n_scored] CPU tensor}`` (the keys of :func:`compare_logits`).
    """
    lengths = [len(s) for s in sequences]
    width = max(lengths)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    rows, cols = [], []
    for row, (start, length) in enumerate(zip(score_from, lengths)):
        positions = list(range(max(start - 1, 0), length - 1))
        rows += [row] * len(positions)
        cols += positions
    index_rows = torch.tensor(rows, dtype=torch.long)
    index_cols = torch.tensor(cols, dtype=torch.long)
    hidden = []
    for loaded in (base, tuned):
        states = body_hidden_states(loaded, ids.to(loaded.device), mask.to(loaded.device))
        hidden.append(states[index_rows.to(states.device), index_cols.to(states.device)])  # [n, hidden]
        del states
    n = len(rows)
    step = chunk_size if chunk_size else n
    pieces: dict[str, list[torch.Tensor]] = {name: [] for name in (*METRICS, "base_top", "tuned_top")}
    for begin in range(0, n, max(step, 1)):
        end = min(begin + step, n)
        base_logits = base.adapter.logits_from_normed(base.model, hidden[0][begin:end])
        tuned_logits = tuned.adapter.logits_from_normed(tuned.model, hidden[1][begin:end])
        metrics = compare_logits(base_logits, tuned_logits.to(base_logits.device), compiled=compiled)
        del base_logits, tuned_logits
        for name, values in metrics.items():
            pieces[name].append(values.cpu())
    flat = {name: torch.cat(values) if values else torch.zeros(0) for name, values in pieces.items()}
    out, offset = [], 0
    for start, length in zip(score_from, lengths):
        count = len(range(max(start - 1, 0), length - 1))
        out.append({name: values[offset : offset + count] for name, values in flat.items()})
        offset += count
    return out
