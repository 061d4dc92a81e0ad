"""Tiny offline checkpoints of every supported family, for tests, benchmarks and examples.

Nothing is downloaded: the tokenizer is a byte-level BPE trained with ``tokenizers`` on a
few built-in sentences, the models are random-weight ``transformers`` models built from a
config. Norm weights are randomized (``transformers`` initializes RMSNorm weights to
exactly 1, which would hide a missing or doubled norm in a test).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

FAMILY_MODEL_TYPES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "mistral": "mistral",
    "olmo2": "olmo2",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}

_TRAINING_TEXT = [
    "Problem: What is 12 + 7 * 3? Solution: 7 * 3 = 21. 12 + 21 = 33. The answer is \\boxed{33}.",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) { } \\frac \\boxed",
    "Let x be a real number such that x^2 = 16. Then x = 4 or x = -4.",
    "Compute the sum of the first 10 positive integers: 1 + 2 + ... + 10 = 55.",
]


def build_tokenizer(vocab_size: int = 384, texts: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A real byte-level BPE tokenizer, trained offline on ``texts`` (default: built-in math text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((texts or _TRAINING_TEXT) * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )


def tiny_config(family: str, vocab_size: int, **overrides):
    """A small config of ``family`` (2 layers, hidden 64, GQA with 4 query / 2 KV heads)."""
    model_type = FAMILY_MODEL_TYPES[family]
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
    )
    if family in ("gemma2", "gemma3"):
        kwargs.update(sliding_window=16, query_pre_attn_scalar=16)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def randomize_norms(model: PreTrainedModel, generator: torch.Generator) -> None:
    """Give every norm weight a random value (``1 + N(0, 0.1)``; Gemma's ``(1 + w)`` form too)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and param.ndim == 1:
                param.copy_(param + 0.1 * torch.randn(param.shape, generator=generator))


def build_tiny_model(family: str = "qwen2", seed: int = 0, vocab_size: int = 384, **overrides) -> PreTrainedModel:
    """A random-weight float32 model of ``family`` with randomized norms (eval mode)."""
    torch.manual_seed(seed)
    config = tiny_config(family, vocab_size, **overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize_norms(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def save_tiny_checkpoint(
    directory: str | os.PathLike,
    family: str = "qwen2",
    seed: int = 0,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    max_shard_size: str | None = "100KB",
    **overrides,
) -> Path:
    """Write a tiny checkpoint (sharded safetensors with an index, plus tokenizer) to ``directory``."""
    directory = Path(directory)
    tokenizer = tokenizer or build_tokenizer()
    model = build_tiny_model(family, seed, vocab_size=len(tokenizer), **overrides)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    tokenizer.save_pretrained(directory)
    return directory
