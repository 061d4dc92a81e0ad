"""Answer extraction and grading, through the maintained ``math-verify`` library.

Definitions (they differ from the source study's scripts, on purpose):

* **Extraction is anchored.** The final answer is the last ``\\boxed{...}`` in the
  completion; failing that, the expression after an explicit anchor ("the answer is",
  "final answer:", GSM8K's ``#### n``). There is **no last-number fallback**: a
  completion that never states an answer is graded wrong. (The study's scripts fall back
  to the last number in the text, which inflates accuracy.)
* **Equivalence is mathematical**, decided by ``math_verify.verify`` (SymPy): ``0.5``,
  ``\\frac{1}{2}`` and ``1/2`` are the same answer.

Our own code only rewrites GSM8K's ``####`` marker into ``\\boxed{}``, which
``math-verify`` does not know, and adds the anchor phrases above.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

_GSM8K_MARK = re.compile(r"####\s*([^\n]+)")
_ANCHOR = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|=|:)\s*:?\s*(.+?)(?:\.\s|\.?$|\n)", re.IGNORECASE
)
_STRICT = (
    LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
    ExprExtractionConfig(try_extract_without_anchor=False),
)
_GOLD = (LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=True), ExprExtractionConfig())


def _timeout() -> int | None:
    """math-verify's timeouts use SIGALRM, which only works in the main thread."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _normalize_markers(text: str) -> str:
    text = _GSM8K_MARK.sub(lambda m: f"\\boxed{{{m.group(1).strip().replace(',', '')}}}", text)
    return text


def _anchored_box(text: str) -> str | None:
    """Wrap the expression after the last answer anchor in ``\\boxed{}`` (None if no anchor)."""
    matches = list(_ANCHOR.finditer(text))
    if not matches:
        return None
    return "\\boxed{" + matches[-1].group(1).strip().strip("$").rstrip(".") + "}"


def extract_answer(completion: str) -> str | None:
    """The final answer stated in ``completion`` as a string, or ``None`` if it states none."""
    parsed = _parse_completion(completion)
    return parsed[1] if len(parsed) > 1 else None


@lru_cache(maxsize=65536)
def _parse_gold(answer: str):
    text = answer.strip()
    if "\\boxed" not in text:
        text = "\\boxed{" + text + "}"
    parsed = parse(text, extraction_config=_GOLD, parsing_timeout=_timeout())
    if not parsed:  # not LaTeX math: keep the plain string so string equality still works
        parsed = [answer.strip(), answer.strip()]
    return parsed


def _parse_completion(completion: str):
    text = _normalize_markers(completion)
    if "\\boxed" not in text and "\\fbox" not in text:
        anchored = _anchored_box(text)
        if anchored is None:
            return []
        text = anchored
    return parse(text, extraction_config=_STRICT, parsing_timeout=_timeout())


@dataclass(frozen=True)
class Grade:
    """Outcome of grading one completion: the extracted answer and whether it is correct."""

    extracted: str | None
    correct: bool


def grade(completion: str, reference: str) -> Grade:
    """Grade ``completion`` against the reference final answer ``reference``."""
    predicted = _parse_completion(completion)
    if not predicted:
        return Grade(None, False)
    gold = _parse_gold(reference)
    correct = bool(verify(gold, predicted, timeout_seconds=_timeout()))
    extracted = predicted[1] if len(predicted) > 1 else str(predicted[0])
    return Grade(str(extracted), correct)


def is_correct(completion: str, reference: str) -> bool:
    return grade(completion, reference).correct
