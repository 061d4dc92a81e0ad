"""Greedy decoding driven by one model that takes the other model's token where they disagree.

At every step both models see the same prefix and give a next-token distribution; the
Jensen-Shannon divergence between them (nats, :mod:`~rlvr_lens.analyses.token_metrics`)
decides whose greedy token is appended: the *other* model's where ``jsd > threshold``,
the *driving* model's elsewhere. ``threshold = inf`` is plain greedy decoding of the
driver; ``threshold = 0`` follows the other model wherever the two differ at all.

KV caches: each model keeps its own ``transformers`` cache (``DynamicCache``, created by
the model at the prefill step) over the shared prefix. The prompt is encoded once
(prefill, left-padded batch with ``attention_mask`` and explicit ``position_ids =
cumsum(mask) - 1``), then every step feeds only the one new token per row to each model.
Finished rows (EOS emitted) are fed the pad token until the batch ends, as
``transformers.generate`` does; their tokens are not recorded. ``use_cache=False``
re-encodes the whole prefix every step (the reference the tests compare against).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlvr_lens.analyses.token_metrics import jsd_from_logits


@dataclass
class CrossDecoding:
    """Outcome of one cross-decoding batch, per row (lists are aligned with the prompts).

    Attributes:
        token_ids: generated tokens (no prompt, padding or EOS).
        from_other: per generated token, whether it was taken from the other model.
        changed: per generated token, whether the taken token differs from the driver's greedy token.
        jsd: per generated token, the JSD (nats) between the two models at that step.
    """

    token_ids: list[list[int]]
    from_other: list[list[bool]]
    changed: list[list[bool]]
    jsd: list[list[float]]


def _cache_name(model) -> str:
    """The keyword under which this ``transformers`` version passes a KV cache."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


class _Stepper:
    """One model decoding a left-padded batch step by step, with or without a KV cache."""

    def __init__(self, model, use_cache: bool):
        self.model = model
        self.use_cache = use_cache
        self.cache_name = _cache_name(model)
        self.cache = None
        self.ids: torch.Tensor | None = None

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode the prompts ``[batch, prompt]``; return the next-token logits ``[batch, vocab]``."""
        self.ids = ids
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=self.use_cache, logits_to_keep=1)
        self.cache = _returned_cache(out) if self.use_cache else None
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Append ``tokens [batch]`` (``mask`` already covers them); return the next logits ``[batch, vocab]``."""
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        if not self.use_cache:
            out = self.model(input_ids=self.ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1)
            return out.logits[:, -1]
        kwargs = {self.cache_name: self.cache}
        out = self.model(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, -1:], use_cache=True, **kwargs
        )
        self.cache = _returned_cache(out)
        return out.logits[:, -1]


@torch.no_grad()
def cross_decode(
    driver,
    other,
    prompts: Sequence[Sequence[int]],
    *,
    threshold: float,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int | None,
    use_cache: bool = True,
) -> CrossDecoding:
    """Greedy cross-decoding of a batch of tokenized prompts (see the module docstring).

    Args:
        driver, other: ``transformers`` causal LMs of the same vocabulary, on one device.
        prompts: token ids per prompt (left-padded here into one batch).
        threshold: JSD (nats) above which the other model's token is taken; ``math.inf`` = never.
        use_cache: keep a KV cache per model (``False`` re-encodes the prefix every step).
    """
    device = next(driver.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    steppers = [_Stepper(driver, use_cache), _Stepper(other, use_cache)]
    logits = [s.prefill(ids, mask) for s in steppers]
    batch = len(prompts)
    out = CrossDecoding([[] for _ in range(batch)], [[] for _ in range(batch)], [[] for _ in range(batch)], [[] for _ in range(batch)])
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        driver_logits, other_logits = logits[0], logits[1].to(device)
        jsd = jsd_from_logits(driver_logits, other_logits)
        driver_top, other_top = driver_logits.argmax(-1), other_logits.argmax(-1)
        take_other = jsd > threshold if not math.isinf(threshold) else torch.zeros_like(finished)
        tokens = torch.where(take_other, other_top, driver_top)
        tokens = torch.where(finished, torch.full_like(tokens, pad_token_id), tokens)
        for row, (token, took, changed, value, done) in enumerate(
            zip(tokens.tolist(), take_other.tolist(), (tokens != driver_top).tolist(), jsd.tolist(), finished.tolist())
        ):
            if done or token == eos_token_id:
                continue
            out.token_ids[row].append(token)
            out.from_other[row].append(took)
            out.changed[row].append(changed)
            out.jsd[row].append(value)
        if eos_token_id is not None:
            finished |= tokens == eos_token_id
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
        logits = [s.step(tokens.to(next(s.model.parameters()).device), mask.to(next(s.model.parameters()).device)) for s in steppers]
    return out
