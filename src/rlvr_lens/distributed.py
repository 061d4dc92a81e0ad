"""Spreading an analysis' samples over processes started by ``accelerate launch`` or ``torchrun``.

Each process holds one replica of the model (on GPU ``LOCAL_RANK``, or the CPU) and works on
its share of the batches; the per-sample results are gathered so that every process ends
with all of them, and only the main process (rank 0) writes files and prints. Launchers
describe the processes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); a plain ``rlvr-lens`` run has none of them and every
function here is then a no-op, so single-process code paths are untouched.

Sharding is by whole batches (batch ``k`` goes to process ``k mod world_size``): each
batch is the same as in a single-process run, so every number is the same too.

The process group is created on first use: NCCL when the processes have GPUs, else gloo.
A model larger than one GPU keeps ``--device-map auto`` in one process; sharding samples
needs a replica per process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def world_size() -> int:
    """Number of processes of this run (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """The process that writes files and prints (rank 0)."""
    return rank() == 0


def _group() -> bool:
    """Create the process group if needed; ``False`` when running as a single process."""
    if world_size() <= 1:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
    return True


def local_device() -> str | None:
    """``cuda:LOCAL_RANK`` for a multi-process run on GPUs, else ``None`` (no opinion)."""
    if world_size() <= 1:
        return None
    import torch

    return f"cuda:{local_rank()}" if torch.cuda.is_available() else None


def shard(items: Sequence[T]) -> list[T]:
    """This process' share of ``items``: those at positions ``rank, rank + world_size, ...``."""
    return list(items[rank() :: world_size()]) if world_size() > 1 else list(items)


def gather_dict(local: dict[Any, Any]) -> dict[Any, Any]:
    """Merge the dicts of every process (keys are disjoint, e.g. sample indices); every process gets the union."""
    if not _group():
        return dict(local)
    import torch.distributed as dist

    parts: list[dict | None] = [None] * world_size()
    dist.all_gather_object(parts, local)
    merged: dict[Any, Any] = {}
    for part in parts:
        merged.update(part or {})
    return merged


def map_batches(
    fn: Callable[[T], Sequence[R]], chunks: Sequence[T], wrap: Callable[[Iterable[int]], Iterable[int]] | None = None
) -> list[R]:
    """``fn`` on this process' share of the batches ``chunks`` (:func:`shard`), gathered: every process
    gets every batch's results, concatenated in batch order, as a single process would compute them.

    ``wrap`` wraps the iteration over this process' batch indices (e.g. a progress bar).
    """
    indices: Iterable[int] = shard(range(len(chunks)))
    mine = {k: list(fn(chunks[k])) for k in (wrap(indices) if wrap else indices)}
    return [r for _, part in sorted(gather_dict(mine).items()) for r in part]


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if _group():
        import torch.distributed as dist

        dist.barrier()
