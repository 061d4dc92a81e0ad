"""Shared fixtures: a tiny offline tokenizer and tiny random checkpoints of every family."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from rlvr_lens.models.tiny import FAMILY_MODEL_TYPES, build_tokenizer, save_tiny_checkpoint  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tokenizer):
    """``family -> directory`` of a tiny sharded checkpoint, one per supported family."""
    root = tmp_path_factory.mktemp("tiny")
    return {f: save_tiny_checkpoint(root / f, f, tokenizer=tokenizer) for f in FAMILY_MODEL_TYPES}


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, tokenizer):
    """Two qwen2 checkpoints of the same shapes (different seeds): a comparable pair."""
    root = tmp_path_factory.mktemp("pair")
    base = save_tiny_checkpoint(root / "base", "qwen2", seed=0, tokenizer=tokenizer)
    tuned = save_tiny_checkpoint(root / "tuned", "qwen2", seed=1, tokenizer=tokenizer)
    return base, tuned


@pytest.fixture(scope="session")
def math500_path():
    path = os.path.abspath(os.path.join(SHARED_DATA, "math500.jsonl"))
    if not os.path.exists(path):
        pytest.skip("../shared/data/math500.jsonl is not present")
    return path
