"""Batched generation and accuracy, shared by every analysis that decodes.

Prompts are left-padded (so every row's next token sits at the last position), decoded
with ``transformers``' own ``generate`` and cut at the end-of-sequence token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlvr_lens.data.grading import grade
from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.oom import HalvingRetry
from rlvr_lens.progress import progress


@dataclass
class Generation:
    """One decoded continuation: its text and token ids (without prompt, padding or EOS)."""

    text: str
    token_ids: list[int]


def batches(items: Sequence, size: int):
    """Consecutive slices of ``items`` of length ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    show_progress: bool = False,
    sharded: bool = False,
) -> list[Generation]:
    """Continue each prompt; greedy unless ``do_sample``. Returns one :class:`Generation` per prompt.

    A prompt is a text (tokenized without added special tokens) or a list of token ids
    (used as they are, e.g. a prompt cut after its first k tokens).

    ``sharded`` (greedy only): under ``accelerate launch`` / ``torchrun`` each process decodes
    its share of the batches and every process returns all generations
    (:func:`rlvr_lens.distributed.map_batches`); the batches are those of one process, so the
    generations are too. Sampled decoding draws from one random stream seeded once, so it is
    never sharded (each process decodes everything, as one process would). Callers that
    already work on their own share of the prompts leave it off.
    """
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    if seed is not None:
        torch.manual_seed(seed)
    outputs: list[Generation] = []
    retry = HalvingRetry("generation")  # a batch that runs out of memory is retried at half the size

    def decode(chunk) -> list[Generation]:
        if chunk and not isinstance(chunk[0], str):
            ids = {"input_ids": [list(p) for p in chunk]}
            encoded = tokenizer.pad(ids, padding=True, return_tensors="pt").to(device)
        else:
            encoded = tokenizer(list(chunk), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        if do_sample:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        sequences = model.generate(**encoded, **kwargs)
        decoded = []
        for row in sequences[:, encoded["input_ids"].shape[1] :].tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            row = [t for t in row if t != tokenizer.pad_token_id]
            decoded.append(Generation(tokenizer.decode(row, skip_special_tokens=True), row))
        return decoded

    try:
        chunks = list(batches(list(prompts), batch_size))
        if sharded and not do_sample:
            from rlvr_lens.distributed import map_batches

            outputs = map_batches(
                lambda chunk: retry(decode, chunk), chunks,
                wrap=lambda indices: progress(indices, enabled=show_progress, desc="generate", unit="batch"),
            )
        else:
            for chunk in progress(chunks, enabled=show_progress, desc="generate", unit="batch"):
                outputs += retry(decode, chunk)
    finally:
        tokenizer.padding_side = padding_side
    return outputs


def accuracy(
    model,
    tokenizer,
    samples: Sequence[Sample],
    *,
    template: str = "plain",
    max_new_tokens: int = 256,
    batch_size: int = 16,
    show_progress: bool = False,
    sharded: bool = False,
) -> tuple[float, list[bool]]:
    """Greedy accuracy on ``samples`` (graded with :func:`rlvr_lens.data.grading.grade`); ``sharded``: see :func:`generate`."""
    prompts = [apply_template(s.prompt, template, tokenizer) for s in samples]
    generations = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, show_progress=show_progress,
        sharded=sharded,
    )
    correct = [grade(g.text, s.answer).correct for g, s in zip(generations, samples)]
    return (sum(correct) / len(correct) if correct else float("nan")), correct
