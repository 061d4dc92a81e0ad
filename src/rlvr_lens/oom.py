"""Out-of-memory retry for batched model calls: halve the batch, down to 1, then one sentence.

A batch that runs out of memory (CUDA ``OutOfMemoryError``, or a failed CPU allocation:
``MemoryError`` / "can't allocate memory") is split: the same items are retried in batches
of half the size, and that smaller size is kept for the rest of the loop (a size that ran
out of memory once will again). When even a single item runs out of memory the error is a
:class:`~rlvr_lens.errors.UserError` with one sentence of advice. Results are the same as
with a batch that fits, since every item is computed exactly once, in order (greedy
decoding and teacher-forced scoring do not depend on the batch; sampled decoding draws
its random numbers in a different order).

Usage, inside a loop over batches::

    retry = HalvingRetry("perplexity scoring")
    for chunk in chunks:
        outputs += retry(lambda part: score(model, part), chunk)
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import TypeVar

from rlvr_lens.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

_CPU_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a CUDA out-of-memory error or a failed CPU allocation."""
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _CPU_MESSAGES)


def free_memory() -> None:
    """Release what the failed batch held (Python garbage and the CUDA cache)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class HalvingRetry:
    """Run a batched function over a chunk of items, halving the batch on out-of-memory.

    Attributes:
        what: what is being computed (for the error sentence).
        size: the largest batch known to fit so far (``None`` until one ran out of memory).
        halvings: the batch sizes that ran out of memory, in order.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.size: int | None = None
        self.halvings: list[int] = []

    def __call__(self, run: Callable[[Sequence[T]], list[R]], chunk: Sequence[T]) -> list[R]:
        """``run`` over ``chunk`` (in parts of at most :attr:`size`); outputs concatenated in order."""
        outputs: list[R] = []
        start = 0
        while start < len(chunk):
            size = len(chunk) - start if self.size is None else min(self.size, len(chunk) - start)
            part = chunk[start : start + size]
            try:
                result = run(part)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                del error  # drop the traceback's references to the batch's tensors before freeing
                free_memory()
                self.halvings.append(size)
                if size == 1:
                    raise UserError(
                        f"Out of memory in {self.what} even with a batch of one sample; use a smaller model dtype "
                        "(--dtype bfloat16), a GPU with more memory, or --device-map auto to spread the model."
                    ) from None
                self.size = max(1, size // 2)
                continue
            outputs.extend(result)
            start += size
        return outputs
