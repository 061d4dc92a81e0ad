"""Teacher forcing on a sample's gold answer: the token sequence and the positions the layer analyses read.

The layer analyses (logit lens, patching, MLP counterfactuals) all ask how strongly a model
predicts the **gold final answer's tokens** in a fixed context. Two contexts:

* ``"direct"`` (default): ``prompt + " \\boxed{" + answer``. The answer follows the prompt
  with no worked solution in between, so predicting it means *retrieving* it (what a
  memorization shortcut does); the ``\\boxed{`` cue is how MATH-style and organism
  solutions state a final answer, so the next token is the answer under any template.
* ``"solution"``: ``prompt + solution`` up to the last occurrence of the answer in the
  sample's worked solution, then the answer (samples without a solution, or whose
  solution does not state the answer, fall back to ``"direct"``).

The context and the answer are tokenized **separately** and concatenated (so the answer's
token span is exact even where a joint tokenization would merge across the boundary).
Leading special tokens the tokenizer puts in front of a text (a BOS) come first.

Answer token ``j`` sits at position ``answer_start + j`` and is *read* at the position
before it, ``answer_start + j - 1`` (the logits there predict it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.errors import UserError

CONTEXTS = ("direct", "solution")


@dataclass(frozen=True)
class AnswerEncoding:
    """One sample, teacher-forced: ``ids`` = context + answer; the answer is ``ids[answer_start:]``."""

    ids: list[int]
    answer_start: int

    @property
    def answer_ids(self) -> list[int]:
        return self.ids[self.answer_start :]

    @property
    def read_positions(self) -> list[int]:
        """Positions whose next-token logits predict each answer token."""
        return list(range(self.answer_start - 1, len(self.ids) - 1))


def _leading_specials(tokenizer) -> list[int]:
    from rlvr_lens.analyses.perplexity import leading_special_ids  # one definition of the BOS prefix

    return leading_special_ids(tokenizer)


def encode_answer(tokenizer, sample: Sample, template: str = "plain", context: str = "direct") -> AnswerEncoding:
    """Tokenize ``sample`` for teacher forcing on its answer (see the module docstring).

    Raises a :class:`UserError` when the answer tokenizes to nothing.
    """
    if context not in CONTEXTS:
        raise UserError(f"Unknown answer context {context!r}; use one of {', '.join(CONTEXTS)}.")
    prompt = apply_template(sample.prompt, template, tokenizer)
    answer = sample.answer.strip()
    prefix = None
    if context == "solution" and sample.solution and answer:
        cut = sample.solution.rfind(answer)
        if cut >= 0:
            prefix = prompt + sample.solution[:cut]
    if prefix is None:
        prefix = prompt + ("" if prompt[-1:].isspace() else " ") + "\\boxed{"
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
    if not answer_ids:
        raise UserError(f"The answer of sample {sample.id!r} ({sample.answer!r}) tokenizes to no tokens, so it cannot be teacher-forced.")
    leading = _leading_specials(tokenizer)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    if leading and prefix_ids[: len(leading)] == leading:
        leading = []
    ids = [*leading, *prefix_ids, *answer_ids]
    if len(ids) - len(answer_ids) < 1:
        raise UserError(f"Sample {sample.id!r} has an empty prompt, so its answer has no context to be predicted from.")
    return AnswerEncoding(ids, len(ids) - len(answer_ids))


def encode_all(tokenizer, samples: Sequence[Sample], template: str, context: str) -> list[AnswerEncoding]:
    return [encode_answer(tokenizer, s, template, context) for s in samples]


def right_padded(encodings: Sequence[AnswerEncoding], pad_id: int, repeat: int = 1) -> torch.Tensor:
    """``input_ids [len(encodings) * repeat, seq]``, right-padded; each encoding's rows are adjacent.

    Right padding needs no attention mask in a causal model (a real token never attends to
    the padding after it) and keeps every row's positions as in an unpadded run.
    """
    width = max(len(e.ids) for e in encodings)
    ids = torch.full((len(encodings) * repeat, width), pad_id, dtype=torch.long)
    for index, encoding in enumerate(encodings):
        ids[index * repeat : (index + 1) * repeat, : len(encoding.ids)] = torch.tensor(encoding.ids)
    return ids


def read_index(encodings: Sequence[AnswerEncoding], repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Flattened read positions of a :func:`right_padded` batch.

    Returns ``(rows, positions, targets, counts)``: ``rows``/``positions`` index the
    ``[batch, seq]`` grid at every answer token's read position, ``targets`` are the answer
    token ids, ``counts[i]`` the number of read positions of batch row ``i``.
    """
    rows, positions, targets, counts = [], [], [], []
    for index, encoding in enumerate(encodings):
        for r in range(repeat):
            row = index * repeat + r
            rows += [row] * len(encoding.answer_ids)
            positions += encoding.read_positions
            targets += encoding.answer_ids
            counts.append(len(encoding.answer_ids))
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return as_long(rows), as_long(positions), as_long(targets), counts


def final_hidden(loaded, input_ids: torch.Tensor) -> torch.Tensor:
    """Final-normed hidden states ``[batch, seq, hidden]`` (no unembedding of every position)."""
    body = loaded.adapter.base_model(loaded.model)
    return body(input_ids=input_ids.to(loaded.device), use_cache=False).last_hidden_state


def answer_logits(loaded, input_ids: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits ``[n, vocab]`` (float32) at the read positions only: one forward of the model's body,
    then the unembedding (and soft-capping) of the ``n`` read positions, never of the whole grid."""
    hidden = final_hidden(loaded, input_ids)
    picked = hidden[rows.to(hidden.device), positions.to(hidden.device)]
    return loaded.adapter.logits_from_normed(loaded.model, picked).float()


def mean_per_row(values: torch.Tensor, counts: Sequence[int]) -> list[float]:
    """Mean of ``values`` (flattened over rows' read positions) per row, in float64."""
    return [float(chunk.double().mean()) for chunk in torch.split(values.detach().cpu(), list(counts))]
