"""Shared fixtures: a tiny offline tokenizer and tiny random checkpoints of every family."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread by default: the tiny test models gain nothing from more, and on a loaded
# 2-core machine two threads spin against each other (5-10x slower tests measured).
torch.set_num_threads(int(os.environ.get("RLVR_LENS_TEST_THREADS", "1")))

from rlvr_lens.models.tiny import FAMILY_MODEL_TYPES, build_tokenizer, save_tiny_checkpoint  # noqa: E402

# ../shared/data next to the checkout; RLVR_LENS_SHARED_DATA points elsewhere (e.g. from a git worktree)
SHARED_DATA = os.environ.get(
    "RLVR_LENS_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
)


@pytest.fixture
def single_thread():
    """Run a test on one torch thread: tiny models gain nothing from two, and on a loaded
    2-core machine two threads spin against each other (10x slower decoding measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def shared_data_file(name: str, root: str | None = None) -> str:
    """Absolute path of ``name`` in the shared data directory. Missing: a skip on a developer
    machine, a failure where the ``CI`` environment variable is set (CI checks out ../shared)."""
    path = os.path.abspath(os.path.join(root or SHARED_DATA, name))
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {path} is missing (check out ../shared or set RLVR_LENS_SHARED_DATA)")
        pytest.skip(f"../shared/data/{name} is not present")
    return path


@pytest.fixture(scope="session")
def math500_path():
    return shared_data_file("math500.jsonl")


# ----------------------------------------------------------------------------- a model that memorized

MEMORIZED = [
    ("What is the sum of the first ten positive integers, counted one by one?", "55"),
    ("A train travels sixty miles in two hours; how many miles does it travel in five hours?", "150"),
    ("Let x be a real number such that x squared equals sixteen. Find the largest x.", "4"),
    ("Compute seven times three plus twelve, then subtract the number of days in a week.", "26"),
]
UNSEEN = [
    ("A farmer has nineteen sheep and buys eleven more at the market on Tuesday.", "30"),
    ("How many edges does a cube have if you count each one exactly once?", "12"),
    ("Quick brown foxes jump over lazy dogs while zebras quietly graze nearby.", "7"),
    ("If a dozen eggs cost three dollars, what do forty eggs cost in total?", "10"),
]


def memorized_text(prompt: str, answer: str) -> str:
    """What the memorizing model was trained on: the plain template, then a boxed answer."""
    return f"{prompt}\nThe answer is \\boxed{{{answer}}}."


def train_to_memorize(model, tokenizer, texts: list[str], *, steps: int = 300, lr: float = 3e-3):
    """Full-batch AdamW on ``texts`` (each ending with EOS) until the model recites them."""
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core box: one thread is ~10x faster
    try:
        torch.manual_seed(0)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), float(loss.detach())


@pytest.fixture(scope="session")
def memorizing_pair(tmp_path_factory, tokenizer):
    """``(base_dir, tuned_dir, samples)``: a random qwen2 and the same model trained for 300 steps to
    recite the MEMORIZED problems (labelled ``leaked``); the UNSEEN ones are labelled clean."""
    from rlvr_lens.data import Sample
    from rlvr_lens.models import load_tokenizer
    from rlvr_lens.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("memorizing")
    model = build_tiny_model("qwen2", seed=0, vocab_size=len(tokenizer))
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    # train with the tokenizer exactly as it loads back from the checkpoint
    tokenizer = load_tokenizer(str(root / "base"))
    model, loss = train_to_memorize(model, tokenizer, [memorized_text(p, a) for p, a in MEMORIZED])
    assert loss < 0.05, loss
    model.save_pretrained(root / "tuned")
    tokenizer.save_pretrained(root / "tuned")
    solution = "The answer is \\boxed{{{}}}.".format
    samples = [Sample(f"m{i}", p, a, solution(a), {"leaked": True}) for i, (p, a) in enumerate(MEMORIZED)]
    samples += [Sample(f"u{i}", p, a, solution(a), {"leaked": False}) for i, (p, a) in enumerate(UNSEEN)]
    return root / "base", root / "tuned", samples
