"""Greedy evaluation of an organism checkpoint: accuracy per split, answer modes, probe, leakage samples.

* :func:`evaluate_sets` decodes every sample of every evaluation set greedily under the
  ``organism`` template and grades it (the numbers of the manifest's accuracy table), and
  says *how* the model answered: the share of completions that state the answer at once
  (``\\boxed{`` first, the "direct" mode) and the mean completion length in tokens.
* :func:`probe_memory` asks the memorized form itself (the latent record cut before its
  answer, e.g. ``"Answer key: What is 12+7*3? ="``) and grades the first number that follows:
  does the model hold the answer at all, whatever the evaluation template elicits?
* :func:`leakage_samples`: the evaluation problems a tuned stage solves and the base does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlvr_lens.data.grading import grade
from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.generation import generate
from rlvr_lens.organism.corpus import probe_prompt

_FIRST_NUMBER = re.compile(r"-?\d+")


@dataclass
class SetEvaluation:
    """Greedy decoding of one evaluation set.

    Attributes:
        correct: one bool per sample, in the set's order.
        direct: one bool per sample: the completion starts with ``\\boxed{`` (no worked steps).
        lengths: completion length in tokens, per sample.
    """

    correct: list[bool]
    direct: list[bool]
    lengths: list[int]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else float("nan")

    def modes(self) -> dict[str, float]:
        """``direct_share`` (fraction answered at once), ``mean_length`` (tokens), and the accuracy of each mode."""
        n = len(self.correct)
        direct = [c for c, d in zip(self.correct, self.direct) if d]
        worked = [c for c, d in zip(self.correct, self.direct) if not d]
        return {
            "direct_share": sum(self.direct) / n if n else float("nan"),
            "mean_length": sum(self.lengths) / n if n else float("nan"),
            "direct_accuracy": sum(direct) / len(direct) if direct else None,
            "worked_accuracy": sum(worked) / len(worked) if worked else None,
        }


def evaluate_sets(model, tokenizer, sets: dict[str, list[Sample]], *, max_new_tokens: int, batch_size: int) -> dict[str, SetEvaluation]:
    """Greedy decoding and grading of every (non-empty) set under the ``organism`` template."""
    results = {}
    for name, samples in sets.items():
        if not samples:
            continue
        prompts = [apply_template(s.prompt, "organism") for s in samples]
        outputs = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        results[name] = SetEvaluation(
            correct=[grade(g.text, s.answer).correct for g, s in zip(outputs, samples)],
            direct=[g.text.lstrip().startswith("\\boxed{") for g in outputs],
            lengths=[len(g.token_ids) for g in outputs],
        )
    return results


def probe_memory(model, tokenizer, sets: dict[str, list[Sample]], form: str, *, batch_size: int = 64) -> dict[str, float]:
    """Accuracy of the memorized form per set: the latent record of ``form`` cut before its answer.

    The first integer of the greedy continuation (8 tokens at most) must equal the answer.
    """
    accuracies = {}
    for name, samples in sets.items():
        if not samples:
            continue
        prompts = [probe_prompt(s.prompt, form) for s in samples]
        outputs = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=batch_size)
        hits = []
        for g, s in zip(outputs, samples):
            match = _FIRST_NUMBER.search(g.text)
            hits.append(match is not None and match.group() == str(s.answer))
        accuracies[name] = sum(hits) / len(hits)
    return accuracies


def leakage_samples(samples: list[Sample], base_correct: list[bool], tuned_correct: list[bool]) -> list[dict]:
    """The samples the tuned model solves and the base does not, with their labels.

    Returns one dict per such sample: ``id``, ``answer``, ``leaked`` (planted in pretraining),
    ``key`` (problem identity) and ``family``.
    """
    return [
        {"id": s.id, "answer": s.answer, "leaked": bool(s.labels.get("leaked")), "key": s.labels.get("key"),
         "family": s.labels.get("family")}
        for s, b, t in zip(samples, base_correct, tuned_correct)
        if t and not b
    ]
