"""Sample groups for the commands that report per group (``steer``, ``scoreboard``).

Groups are ``name -> indices into the samples``: the data's labels (``leaked`` / ``clean``)
plus, from greedy correctness of the base and the tuned model, ``leakage`` (tuned right,
base wrong), ``stable`` (both right), ``lost`` (base right, tuned wrong) and ``never``. A
``--groups FILE`` gives them instead: a JSON mapping ``{name: [indices]}``, or a saved
evaluation result (``kind: "evaluation"``, with per-model ``correct`` lists).
"""

from __future__ import annotations

import json
from pathlib import Path

from rlvr_lens.errors import UserError


def correctness_groups(base_correct, tuned_correct) -> dict[str, list[int]]:
    """``leakage`` / ``stable`` / ``lost`` / ``never`` from two models' per-sample correctness."""
    groups: dict[str, list[int]] = {"leakage": [], "stable": [], "lost": [], "never": []}
    for index, (b, t) in enumerate(zip(base_correct, tuned_correct)):
        name = {(False, True): "leakage", (True, True): "stable", (True, False): "lost", (False, False): "never"}[(bool(b), bool(t))]
        groups[name].append(index)
    return groups


def read_groups(path: str, n: int, *, base: str | None = None, tuned: str | None = None) -> dict[str, list[int]]:
    """Groups from a JSON file (see the module docstring); indices are checked against ``n`` samples."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"Cannot read groups from {path}: {error}.") from None
    if isinstance(data, dict) and data.get("kind") == "evaluation":
        models = data["models"]
        b = base if base in models else models[0]
        t = tuned if tuned in models else models[-1]
        groups = correctness_groups(data["correct"][b], data["correct"][t])
        labels = data.get("labels") or []
        for name, value in (("leaked", True), ("clean", False)):
            members = [i for i, lab in enumerate(labels) if isinstance(lab, dict) and lab.get("leaked") is value]
            if members:
                groups[name] = members
    elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        groups = {str(k): [int(i) for i in v] for k, v in data.items()}
    else:
        raise UserError(f"{path} is neither a {{group: [indices]}} mapping nor an evaluation result.")
    bad = [i for idx in groups.values() for i in idx if not 0 <= i < n]
    if bad:
        raise UserError(f"Group index {bad[0]} in {path} is out of range for {n} samples.")
    return groups


def greedy_groups(base, tuned, samples, *, template: str, max_new_tokens: int, batch_size: int) -> tuple[dict[str, list[int]], dict]:
    """Label groups plus correctness groups from greedy decoding of both loaded models; also their accuracies."""
    from rlvr_lens.data.sample import label_groups
    from rlvr_lens.generation import accuracy

    # sharded: under accelerate launch / torchrun each process decodes its share of the batches
    acc_b, base_correct = accuracy(base.model, base.tokenizer, samples, template=template, max_new_tokens=max_new_tokens, batch_size=batch_size, sharded=True)
    acc_t, tuned_correct = accuracy(tuned.model, tuned.tokenizer, samples, template=template, max_new_tokens=max_new_tokens, batch_size=batch_size, sharded=True)
    groups = {**label_groups(list(samples)), **correctness_groups(base_correct, tuned_correct)}
    return groups, {base.name: acc_b, tuned.name: acc_t}


def restrict(samples, groups: dict[str, list[int]], keep: list[str], per_group: int | None = None) -> tuple[list, dict[str, list[int]]]:
    """Only the samples of groups ``keep`` (the first ``per_group`` of each when given, in their
    original order), with every group re-indexed onto them."""
    missing = [g for g in keep if g not in groups]
    if missing:
        raise UserError(f"Unknown group {missing[0]!r}; groups: {', '.join(groups)}.")
    kept = sorted({i for g in keep for i in groups[g][:per_group]})
    new_index = {old: new for new, old in enumerate(kept)}
    return [samples[i] for i in kept], {g: [new_index[i] for i in idx if i in new_index] for g, idx in groups.items()}
