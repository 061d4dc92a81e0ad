"""The one sample type every analysis consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One evaluation item.

    Attributes:
        id: stable identifier (unique within a data set).
        prompt: the problem text, *without* any template (templates are applied later).
        answer: the reference final answer (LaTeX or plain text), graded by equivalence.
        solution: optional worked reference solution (used as the "answer tokens" of the
            perplexity analysis when present).
        labels: optional ground truth about the sample, e.g. ``{"leaked": True}`` for the
            model organism, or ``{"subject": "Algebra", "level": 3}``.
    """

    id: str
    prompt: str
    answer: str
    solution: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "answer": self.answer, "solution": self.solution, "labels": self.labels}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        return cls(
            id=str(data["id"]),
            prompt=data["prompt"],
            answer=str(data["answer"]),
            solution=data.get("solution"),
            labels=dict(data.get("labels") or {}),
        )


def label_groups(samples: list[Sample], key: str = "leaked") -> dict[str, list[int]]:
    """Indices of samples per value of a boolean/categorical label (``"leaked"``/``"clean"`` for bools).

    Samples without the label are left out; returns ``{}`` when no sample has it.
    """
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if key not in sample.labels:
            continue
        value = sample.labels[key]
        if key == "leaked" and isinstance(value, bool):
            name = "leaked" if value else "clean"
        else:
            name = str(value)
        groups.setdefault(name, []).append(index)
    return groups
