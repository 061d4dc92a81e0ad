"""Pretraining from scratch and supervised fine-tuning of the organism's Qwen2 model.

One plain PyTorch loop (:func:`train_causal_lm`) serves both stages; they differ only in
the data and in which tokens carry the loss:

* **pretraining** (``loss_on="all"``): next-token loss on every token of each document
  (prompt and solution), as a base model sees raw text -- so planted leaks are memorized
  prompt and all;
* **SFT** (``loss_on="completion"``): loss on the solution tokens only.

Documents are short (~40 tokens), so a batch is right-padded to its longest document and
no attention mask is needed: with causal attention a real token never attends to the
padding that follows it, and padded positions carry no loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rlvr_lens.progress import progress


@dataclass
class ModelShape:
    """Size of the organism's Qwen2 model."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 128
    tie_word_embeddings: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(shape: ModelShape, tokenizer: PreTrainedTokenizerFast, seed: int) -> Qwen2ForCausalLM:
    """A freshly initialized float32 Qwen2 causal LM of ``shape`` for ``tokenizer``'s vocabulary."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    return Qwen2ForCausalLM(config).float()


@dataclass
class TrainSettings:
    """One training stage: AdamW, linear warmup then cosine decay to ``min_lr_ratio`` x the peak."""

    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    loss_on: str = "all"  # "all" tokens or only the "completion"
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def encode_documents(
    tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[str, str]], max_length: int
) -> list[tuple[list[int], int]]:
    """Token ids of each ``(prompt, completion)`` document followed by EOS, and where its completion starts.

    Prompt and completion are tokenized separately, exactly as they are at generation time
    (the prompt is encoded alone, the model continues it).
    """
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    encoded = []
    for prompt_ids, completion_ids in zip(prompts, completions):
        ids = (prompt_ids + completion_ids + [tokenizer.eos_token_id])[:max_length]
        encoded.append((ids, len(prompt_ids)))
    return encoded


def _batch(encoded: list[tuple[list[int], int]], pad_id: int, loss_on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``labels`` ``[batch, longest]`` (labels -100 on padding and, for SFT, the prompt)."""
    longest = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), longest), -100, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        start = prompt_len if loss_on == "completion" else 0
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
    return input_ids, labels


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress_ = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))
    return settings.learning_rate * (settings.min_lr_ratio + (1 - settings.min_lr_ratio) * cosine)


def train_causal_lm(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    pairs: list[tuple[str, str]],
    settings: TrainSettings,
    *,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
    desc: str = "train",
    adapter=None,
) -> dict:
    """Train ``model`` in place on ``(prompt, completion)`` documents; returns loss curve and timings.

    Batches are drawn by shuffling the documents each epoch with a generator seeded from
    ``settings.seed``, so the same seed gives the same run (on the same device and threads).

    ``adapter`` (a :class:`rlvr_lens.train.peft_methods.AdapterConfig`, default full
    fine-tuning) trains a LoRA / PiSSA adapter or a sparse mask instead; the adapter is merged
    into ``model`` in place at the end, so ``model`` is a plain model either way.

    Returns ``{"losses": [mean loss (nats/token) per 1/20 of training], "final_loss",
    "wall_time_s", "cpu_time_s", "tokens"}``.
    """
    from rlvr_lens.train.peft_methods import apply_adapter

    if settings.loss_on not in ("all", "completion"):
        raise ValueError(f"loss_on must be 'all' or 'completion', got {settings.loss_on!r}")
    device = torch.device(device)
    model.to(device).train()
    adaptation = apply_adapter(model, adapter)
    trained = adaptation.model
    encoded = encode_documents(tokenizer, pairs, model.config.max_position_embeddings)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    params = [p for p in trained.parameters() if p.requires_grad]
    no_decay = [p for p in params if p.ndim < 2]
    decay = [p for p in params if p.ndim >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
        betas=(0.9, 0.98),
    )
    order: list[int] = []
    window: list[float] = []
    losses: list[float] = []
    every = max(1, settings.steps // 20)
    tokens = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in progress(range(settings.steps), enabled=show_progress, desc=desc, unit="step"):
        if len(order) < settings.batch_size:
            order += torch.randperm(len(encoded), generator=generator).tolist()
        chosen, order = order[: settings.batch_size], order[settings.batch_size :]
        input_ids, labels = _batch([encoded[i] for i in chosen], tokenizer.pad_token_id, settings.loss_on)
        input_ids, labels = input_ids.to(device), labels.to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, settings)
        loss = trained(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        adaptation.after_step()
        tokens += int((labels != -100).sum())
        window.append(float(loss.detach()))
        if len(window) == every or step == settings.steps - 1:
            losses.append(sum(window) / len(window))
            window = []
    model = adaptation.finish()
    model.eval()
    return {
        "losses": losses,
        "final_loss": losses[-1] if losses else float("nan"),
        "wall_time_s": time.perf_counter() - start,
        "cpu_time_s": time.process_time() - cpu_start,
        "tokens": tokens,
    }
