"""Hidden states per layer at chosen token positions, shared by the trajectory and the
representation analyses.

**States.** A model with ``L`` decoder layers gives ``L + 1`` residual-stream states per
token: state ``0`` is the input of decoder layer 0 (the token embeddings, scaled as the
model scales them), state ``l + 1`` is the output of decoder layer ``l`` (hook point
``resid_post.l``), *before* the final norm. ``transformers``' ``output_hidden_states``
returns the same ``L + 1`` tensors except that its last one is already final-normed; this
module replaces that last one by the captured ``resid_post.(L-1)`` so every state lives in
the same (un-normed) residual space. State ``l + 1`` minus state ``l`` is then exactly
what decoder layer ``l`` adds to the residual stream.

**Positions.** Every sample is tokenized exactly like the perplexity and logit-lens
analyses (:func:`rlvr_lens.analyses.perplexity.encode_sample`: leading specials +
templated prompt + reference answer), and read at

* ``"answer"``: the *answer position*, the last prompt token, i.e. the position whose
  next-token prediction is the first answer token (teacher forcing: the answer tokens
  themselves come after it and, the model being causal, never change it, so only the
  prompt is run);
* ``"prompt_mean"``: the mean over the templated prompt's tokens (leading special tokens
  such as a BOS, whose states are outliers, are left out).

Batches are right-padded; a causal model's real tokens never attend to the padding after
them, so padding changes no number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.generation import batches
from rlvr_lens.models.hooks import capture, hook_name
from rlvr_lens.progress import progress

POSITIONS = ("answer", "prompt_mean")


@dataclass(frozen=True)
class CaptureConfig:
    """How hidden states are read.

    Attributes:
        template: prompt template (see :mod:`rlvr_lens.data.templates`).
        position: ``"answer"`` or ``"prompt_mean"`` (see the module docstring).
        batch_size: prompts per forward pass.
    """

    template: str = "plain"
    position: str = "answer"
    batch_size: int = 8

    def check(self) -> None:
        if self.position not in POSITIONS:
            raise UserError(
                f"Unknown hidden-state position {self.position!r}; use one of {', '.join(POSITIONS)}."
            )
        if self.batch_size < 1:
            raise UserError("The batch size must be at least 1.")


def prompt_spans(tokenizer, samples: Sequence[Sample], template: str) -> list[tuple[list[int], int]]:
    """Per sample: ``(ids, first)`` where ``ids`` are the tokens up to and including the answer
    position and ``first`` is the index of the first templated-prompt token (after leading specials)."""
    from rlvr_lens.analyses.perplexity import encode_sample, leading_special_ids

    leading = leading_special_ids(tokenizer)
    out = []
    for sample in samples:
        encoded = encode_sample(tokenizer, sample, template, leading=leading)
        prompt_end = encoded.answer_span[0]
        if prompt_end < 1:
            raise UserError(f"Sample {sample.id!r} has an empty prompt after templating.")
        ids = encoded.ids[:prompt_end]
        first = len(leading) if leading and ids[: len(leading)] == leading else 0
        out.append((ids, min(first, prompt_end - 1)))
    return out


@torch.no_grad()
def capture_hidden_states(
    model,
    tokenizer,
    samples: Sequence[Sample],
    config: CaptureConfig,
    *,
    show_progress: bool = False,
    desc: str = "hidden states",
) -> np.ndarray:
    """Residual-stream states of every sample at ``config.position``.

    Returns a float32 NumPy array ``[n_samples, n_layers + 1, hidden]`` (state index as in
    the module docstring), on the CPU, in the order of ``samples``.
    """
    config.check()
    if not samples:
        raise UserError("Capturing hidden states needs at least one sample.")
    from rlvr_lens.models.adapters import adapter_for

    adapter = adapter_for(model)
    n_layers = adapter.num_layers(model)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    spans = prompt_spans(tokenizer, samples, config.template)
    order = sorted(range(len(spans)), key=lambda i: -len(spans[i][0]))  # similar lengths share a batch
    out: np.ndarray | None = None
    last_key = hook_name("resid_post", n_layers - 1)
    chunks = list(batches(order, config.batch_size))
    for chunk in progress(chunks, enabled=show_progress, desc=desc, unit="batch"):
        width = max(len(spans[i][0]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, index in enumerate(chunk):
            ids = spans[index][0]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        with capture(model, ("resid_post",), [n_layers - 1], adapter=adapter) as cache:
            outputs = model(input_ids=input_ids.to(device), output_hidden_states=True, use_cache=False)
        states = list(outputs.hidden_states[:n_layers]) + [cache[last_key]]  # L + 1 x [batch, seq, hidden]
        # weights [batch, seq] that pick (answer) or average (prompt_mean) each row's positions;
        # read state by state, so no [batch, L + 1, seq, hidden] copy is ever made
        weights = torch.zeros(len(chunk), width, dtype=torch.float32)
        for row, index in enumerate(chunk):
            ids, first = spans[index]
            if config.position == "answer":
                weights[row, len(ids) - 1] = 1.0
            else:
                weights[row, first : len(ids)] = 1.0 / (len(ids) - first)
        weights = weights.to(device)
        if config.position == "answer":  # plain indexing: exact, and blind to whatever the padding holds
            rows = torch.arange(len(chunk), device=device)
            last = weights.argmax(dim=1)
            picked = torch.stack([state[rows, last].float() for state in states], dim=1)
        else:
            picked = torch.stack(
                [torch.einsum("bs,bsh->bh", weights, state.float()) for state in states], dim=1
            )
        picked = picked.cpu().numpy()  # [batch, L + 1, hidden]
        if out is None:
            out = np.zeros((len(samples), n_layers + 1, picked.shape[-1]), dtype=np.float32)
        out[list(chunk)] = picked
    assert out is not None
    return out


def capture_series(
    series, samples: Sequence[Sample], config: CaptureConfig, *, show_progress: bool = False
) -> dict[str, np.ndarray]:
    """:func:`capture_hidden_states` for every checkpoint of a :class:`~rlvr_lens.models.ModelSeries`
    (loaded one at a time); ``name -> [n_samples, n_layers + 1, hidden]``. Every checkpoint reads
    the token ids built with the base checkpoint's tokenizer (the series is checked to share it)."""
    config.check()
    states: dict[str, np.ndarray] = {}
    tokenizer = None
    for loaded in series.iter_loaded():
        tokenizer = tokenizer or loaded.tokenizer
        states[loaded.name] = capture_hidden_states(
            loaded.model,
            tokenizer,
            samples,
            config,
            show_progress=show_progress,
            desc=f"hidden states {loaded.name}",
        )
    return states
