"""Logit lens on the residual stream, teacher-forced on the gold answer, and direct logit attribution.

Definitions (natural log, nats; see ``docs/circuits.md``):

* **Lens state** ``i`` of a model with ``L`` decoder layers: ``i = 0`` is the embedding
  output, ``i = l + 1`` the residual stream after decoder layer ``l``. ``transformers``'
  ``output_hidden_states`` gives these ``L + 1`` states, except that the last one is
  already final-normed: ``lm_head(hidden_states[-1]) == logits``. The lens applies the
  model's own final norm to states ``0 .. L-1`` only, then the unembedding (and Gemma's
  soft-capping). So the lens after the last layer *is* the model's output.
* **Read position**: answer token ``j`` is read at the position before it (whose logits
  predict it), teacher-forced on the gold answer (:mod:`.teacher_forcing`).
* Per lens state and answer token: **log-probability** of the token (float32 log-softmax)
  and its **rank** (number of vocabulary tokens with a strictly larger logit; 0 = top-1).
* **Direct contribution** of a block to the answer logit, linearized through the final
  norm with its scale frozen at the final residual ``x_L``:
  ``c(o) = U[t] . (g * o) / rms(x_L)`` where ``o`` is what the block added to the residual
  stream (``attn_out`` / ``mlp_out``), ``g`` the final norm's effective weight and
  ``rms(x) = sqrt(mean(x^2) + eps)``. The embedding's and all blocks' contributions add up
  exactly to the answer token's logit before soft-capping (RMSNorm has no centring or bias).
* Per sample (mean over its answer tokens where a mean is needed): **first top-1 layer**,
  the first decoder layer after which *every* answer token is top-1 (``None``: never);
  **largest-rise layer**, the layer whose output raises the mean answer log-probability
  most over its input (lens state ``l + 1`` minus ``l``).

Under ``accelerate launch`` / ``torchrun`` each process reads its share of the batches and the
per-sample values are gathered in sample order (:mod:`rlvr_lens.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from rlvr_lens.analyses.teacher_forcing import CONTEXTS, encode_all, read_index, right_padded
from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.distributed import map_batches
from rlvr_lens.errors import UserError
from rlvr_lens.generation import batches
from rlvr_lens.models.hooks import capture, hook_name
from rlvr_lens.progress import progress
from rlvr_lens.results import Result


@dataclass
class LogitLensConfig:
    template: str = "plain"
    context: str = "direct"
    batch_size: int = 8

    def check(self) -> None:
        apply_template("x", self.template)
        if self.context not in CONTEXTS:
            raise UserError(f"Unknown answer context {self.context!r}; use one of {', '.join(CONTEXTS)}.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1; got {self.batch_size}.")


@dataclass
class ModelLens:
    """One model's lens over every sample. Lists are ``[sample][state][answer token]`` (states 0..L)
    or ``[sample][layer]`` (layers 0..L-1); contributions are in logit units."""

    name: str
    logprob: list[list[list[float]]]
    rank: list[list[list[int]]]
    embed_direct: list[float]
    attn_direct: list[list[float]]
    mlp_direct: list[list[float]]
    answer_logit: list[float]  # model's own answer logit (pre-softcap), mean over answer tokens
    first_top1: list[int | None]
    largest_rise: list[int]

    def mean_logprob(self, sample: int) -> list[float]:
        """Mean answer log-probability per lens state of one sample."""
        return [sum(tokens) / len(tokens) for tokens in self.logprob[sample]]


@dataclass
class LogitLensResult(Result):
    kind = "logit_lens"

    config: dict
    num_layers: int
    sample_ids: list[str]
    answer_tokens: list[int]  # per sample
    models: list[ModelLens]
    groups: dict[str, list[int]] = field(default_factory=dict)

    def model(self, name: str) -> ModelLens:
        return next(m for m in self.models if m.name == name)


def norm_gain_and_eps(norm: torch.nn.Module, hidden: int, device, dtype) -> tuple[torch.Tensor, float]:
    """``(g, eps)`` of an RMSNorm: its effective per-channel weight (``w`` or Gemma's ``1 + w``) and epsilon.

    ``g`` is read off the module itself: for a constant vector of ones ``rms = sqrt(1 + eps)``,
    so ``norm(ones) * sqrt(1 + eps) = g`` whatever the family's weight convention.
    """
    eps = getattr(norm, "variance_epsilon", None)
    eps = getattr(norm, "eps", 1e-6) if eps is None else eps
    with torch.no_grad():
        gain = norm(torch.ones(1, hidden, device=device, dtype=dtype)).float()[0] * math.sqrt(1.0 + eps)
    return gain, float(eps)


def _first_top1(rank: list[list[int]]) -> int | None:
    for state in range(1, len(rank)):
        if all(r == 0 for r in rank[state]):
            return state - 1
    return None


@torch.no_grad()
def lens_of_model(loaded, encodings, config: LogitLensConfig, *, show_progress: bool = False) -> ModelLens:
    """The logit lens and direct attribution of one loaded model over ``encodings``."""
    model, adapter = loaded.model, loaded.adapter
    n_layers = adapter.num_layers(model)
    norm = adapter.final_norm(model)
    unembed = adapter.unembedding(model).weight
    hidden = model.config.hidden_size
    gain, eps = norm_gain_and_eps(norm, hidden, loaded.device, loaded.dtype)
    pad = loaded.tokenizer.pad_token_id or 0

    def lens_of_batch(chunk) -> list[tuple]:
        """Per sample of ``chunk``: (logprob, rank, embed, attn, mlp, answer logit, first top-1, largest rise)."""
        ids = right_padded(chunk, pad).to(loaded.device)
        rows, positions, targets, counts = read_index(chunk)
        rows, positions, targets = rows.to(loaded.device), positions.to(loaded.device), targets.to(loaded.device)
        with capture(model, ("attn_out", "mlp_out", "resid_post"), adapter=adapter) as cache:
            states = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        logprobs, ranks = [], []
        for index, state in enumerate(states):  # L + 1 states
            picked = state[rows, positions]
            if index < n_layers:
                logits = adapter.logits_from_residual(model, picked).float()
            else:  # already final-normed by transformers
                logits = adapter.logits_from_normed(model, picked).float()
            target_logit = logits.gather(-1, targets[:, None])
            logprobs.append((target_logit[:, 0] - torch.logsumexp(logits, -1)).cpu())
            ranks.append((logits > target_logit).sum(-1).cpu())
        # direct attribution, final-norm scale frozen at the last residual
        final = cache[hook_name("resid_post", n_layers - 1)][rows, positions].float()
        scale = torch.sqrt(final.pow(2).mean(-1, keepdim=True) + eps)
        readout = unembed[targets].float() * gain / scale  # [n, hidden]

        def direct(values: torch.Tensor, rows=rows, positions=positions, readout=readout) -> torch.Tensor:
            return (values[rows, positions].float() * readout).sum(-1).cpu()

        embed = direct(states[0])
        attn = torch.stack([direct(cache[hook_name("attn_out", layer)]) for layer in range(n_layers)], -1)
        mlp = torch.stack([direct(cache[hook_name("mlp_out", layer)]) for layer in range(n_layers)], -1)
        own_logit = (final * readout).sum(-1).cpu()
        logprob = torch.stack(logprobs, -1)  # [n, L + 1]
        rank = torch.stack(ranks, -1)
        per_sample = []
        for lp, rk, e, a, m, own in zip(
            logprob.split(counts), rank.split(counts), embed.split(counts), attn.split(counts), mlp.split(counts), own_logit.split(counts)
        ):
            curve = lp.double().mean(0)  # [L + 1]
            per_sample.append((
                lp.T.double().tolist(), rk.T.tolist(), float(e.double().mean()), a.double().mean(0).tolist(),
                m.double().mean(0).tolist(), float(own.double().mean()), _first_top1(rk.T.tolist()),
                int(torch.argmax(curve[1:] - curve[:-1])),
            ))
        return per_sample

    # under accelerate launch / torchrun each process reads its share of the batches (rlvr_lens.distributed)
    chunks = list(batches(encodings, config.batch_size))

    def wrap(indices):
        return progress(indices, enabled=show_progress, desc=f"logit lens {loaded.name}", unit="batch")

    columns = list(zip(*map_batches(lens_of_batch, chunks, wrap=wrap))) or [()] * 8
    return ModelLens(loaded.name, *(list(column) for column in columns))


def logit_lens(
    models: Sequence,
    samples: Sequence[Sample],
    config: LogitLensConfig,
    *,
    groups: Mapping[str, Sequence[int]] | None = None,
    show_progress: bool = False,
) -> LogitLensResult:
    """Logit lens of every loaded model (``LoadedModel``, base first) on every sample's gold answer.

    ``groups`` (indices into ``samples``) are carried into the result for the report.
    """
    config.check()
    if not samples:
        raise UserError("The logit lens needs at least one sample.")
    depths = {m.adapter.num_layers(m.model) for m in models}
    if len(depths) > 1:
        raise UserError(f"The models have different depths ({', '.join(str(d) for d in sorted(depths))} layers), so their layers cannot be compared.")
    encodings = encode_all(models[0].tokenizer, samples, config.template, config.context)
    return LogitLensResult(
        config=vars(config).copy(),
        num_layers=depths.pop(),
        sample_ids=[s.id for s in samples],
        answer_tokens=[len(e.answer_ids) for e in encodings],
        models=[lens_of_model(m, encodings, config, show_progress=show_progress) for m in models],
        groups={k: list(v) for k, v in (groups or {}).items()},
    )
