"""The organism's tokenizer: a byte-level BPE trained offline on the corpus, digits kept single.

Every digit is its own token (``tokenizers``' ``Digits(individual_digits=True)``
pre-tokenizer runs before the byte-level split), so the model sees numbers digit by digit,
which makes multi-digit arithmetic learnable for a small model; words and the
``\\boxed{`` marker are merged into a few tokens each. The result is a
``PreTrainedTokenizerFast``; :func:`save_tokenizer` writes it so that
``AutoTokenizer.from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE with single-digit numbers, trained on ``texts`` (deterministic in ``texts``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=PAD,
        padding_side="right",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike) -> None:
    """Save so that ``AutoTokenizer.from_pretrained(directory)`` gives the same tokenizer."""
    tokenizer.save_pretrained(str(directory))
