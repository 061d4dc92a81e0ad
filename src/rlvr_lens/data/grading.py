"""Answer extraction and grading, through the maintained ``math-verify`` library.

Grading has two steps, and only the first is ours:

1. **Find the final answer** the completion states (this module): the text of the
   answer alone, e.g. ``42`` out of ``Final Answer: The final answer is $42$. I hope it
   is correct.``
2. **Decide equivalence** with ``math_verify.parse`` / ``math_verify.verify`` (SymPy):
   ``0.5``, ``\\frac{1}{2}`` and ``1/2`` are the same answer. The reference goes through
   the same normalization as the stated answer.

Recognized ways of stating the answer (the last one stated in the completion wins):

* ``\\boxed{...}``, ``\\boxed {...}``, ``\\fbox{...}``, ``\\framebox[..]{...}`` with
  balanced braces; several boxes in a row joined only by commas / "and" / "or" are one
  answer (``$\\boxed{2}$ and $\\boxed{3}$`` is ``2, 3``); boxes far apart are revisions,
  and the last one counts.
* An answer phrase: "the answer is", "the final answer is", "final answer:",
  "answer:", "the answers are" (also in bold, ``**Answer:** 42``, or with the answer on
  the next line after a "Final Answer" heading). What follows is trimmed to the answer:
  the first ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` span if it starts with one,
  otherwise the text up to a sentence end (``.``, ``;``), a trailing clause
  (``, since ...``, `` (six times seven)``, ``because ...``) or the first word that is
  not mathematics (units: ``42 dollars``, ``5 m/s``), with Markdown emphasis removed.
* GSM8K's ``#### 42``, only as a line of its own whose whole content is an answer (a
  Markdown heading ``#### Step 1: ...`` is not one).
* DeepSeek-R1-style ``<think>...</think>``: the answer after the last ``</think>`` if
  it states one, otherwise the last one stated anywhere.

Both sides are then normalized alike: e-notation ``4.5e33`` is ``4.5\\times10^{33}``;
thin spaces and ``\\,`` between digit groups are dropped (``1\\,000`` is 1000); ``°`` is
``^\\circ``; a money sign is dropped. There is **no last-number fallback**: a completion
that never states an answer is graded wrong (the source study's scripts fall back to the
last number in the text, which inflates accuracy).

**Timeouts.** Every call has a wall-clock limit (``timeout``, 5 s by default). On the
main thread it is a ``SIGALRM`` timer around the whole call; on any other thread the call
is handed to a worker process that is killed if it overruns. Either way an overrun comes
back as ``Grade(..., correct=False, timed_out=True)``. :func:`grade_many` grades in
parallel worker processes.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from multiprocessing.connection import wait
from pathlib import Path

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

#: Default wall-clock limit of one grading, in seconds.
DEFAULT_TIMEOUT_S = 5.0
#: Extra seconds a worker process gets past ``timeout`` before it is killed (its own
#: SIGALRM fires first; this is the backstop for a computation stuck in C code).
_KILL_GRACE_S = 2.0
#: Seconds a new worker process may take to start (import sympy and math-verify).
_START_LIMIT_S = 120.0
#: Pairs a worker process of :func:`grade_many` holds at once.
_PIPELINE_DEPTH = 4

_CONFIG = (
    LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=True),
    ExprExtractionConfig(),
)


class _Silence(logging.Filter):
    """Drop math-verify's "timeout is disabled" warning: this module enforces its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_Silence())


@dataclass(frozen=True)
class Grade:
    """Outcome of grading one completion.

    Attributes:
        extracted: the final answer the completion states (our extraction, before
            math-verify), or ``None`` if it states none.
        correct: whether it is mathematically equal to the reference.
        timed_out: grading ran past its time limit (then ``correct`` is ``False``).
    """

    extracted: str | None
    correct: bool
    timed_out: bool = False


# --------------------------------------------------------------------------------------
# Finding the stated answer
# --------------------------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox|framebox)\s*(?:\[[^\]\n]*\]\s*)*")
_BOX_TOKEN = re.compile(r"[^\s$\\{}]+")
_BOX_JOIN = re.compile(
    r"(?:[ \t$,;]|\\quad|\\qquad|\\[,;! ]|\\\(|\\\)|\band\b|\bor\b|\\text\{\s*(?:and|or|,)\s*\}|\\(?:text|mbox)\{\s*\}"
    r"|\b[A-Za-z](?:_\{?\d\}?)?\s*=)*"
)
_ANCHOR = re.compile(
    r"(?:\bfinal\s+answer[*_]*\s*(?:is\s*:?|:|=)"  # "final answer is", "Final Answer:"
    r"|\b(?:the|my|our)\s+(?:final\s+|correct\s+)?answers?(?:\s+to\s+(?:the|this|our)\s+(?:question|problem))?[*_]*\s*"
    r"(?:is\s*:?|are\s*:?|would\s+be|will\s+be|=)"  # "the answer is"
    r"|^[ \t>*_#-]*answers?[*_]*\s*(?:is\s*:?|[:.=]))",  # "Answer: 42" at the start of a line
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_HEADING = re.compile(r"^[#*_\s]*final\s+answer[*_\s]*:?[*_\s]*$", re.IGNORECASE | re.MULTILINE)
_GSM8K_LINE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_THINK_END = "</think>"

# Words a plain-text answer may contain; any other word ends the answer ("42 dollars").
_MATH_WORDS = frozenset(
    [
        "pi",
        "sqrt",
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "log",
        "ln",
        "exp",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "infty",
        "infinity",
        "inf",
        "oo",
        "mod",
        "gcd",
        "lcm",
        "max",
        "min",
        "i",
        "e",
    ]
)
_FILLER = re.compile(
    r"^(?:(?:therefore|thus|hence|then|so|simply|just|indeed|exactly|clearly|approximately|about|option|choice|"
    r"equal\s+to|given\s+by|as\s+follows)\b[\s:,]*)+",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(
    r"\.(?=\s|$)|[;!?](?=\s|$)|\s(?:because|since|as|which|where|when|if|so|but|for|from)\b", re.I
)
_CLAUSE = re.compile(r",\s*(?=[A-Za-z]{2,}\b)|\s\((?=[A-Za-z]{2,}[\s)])")
_WORD = re.compile(r"(?<![\\A-Za-z{])[A-Za-z]{2,}\b")
_NUMBER_UNIT = re.compile(
    r"^(?:[A-Za-z]\s*=\s*)?(\\?\$?\s*[-+−]?\s*\\?\$?\d[\d,]*(?:\.\d+)?)\s*"
    r"((?:°|%|\\%|percent|degrees?)?)(?:\s*+(?:[A-Za-z]++\.?|/|\^\s*\d|²|³))*+\s*$"  # possessive: linear time
)


def _brace_pairs(text: str) -> dict[int, int]:
    """``{index of "{": index just past its "}"}`` for every closed group (escaped braces skipped)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index + 1
        index += 1
    return pairs


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every complete box, in order of appearance."""
    found = []
    closing = None
    for match in _BOX.finditer(text):
        at = match.end()
        if found and found[-1][1] > match.start():  # a box inside the previous box
            continue
        if at < len(text) and text[at] == "{":
            closing = _brace_pairs(text) if closing is None else closing
            end = closing.get(at)
            if end is None:  # cut off mid-box: not a stated answer
                continue
            content = text[at + 1 : end - 1]
        else:  # "\boxed 42": LaTeX boxes one token, a model means the number
            token = _BOX_TOKEN.match(text, at)
            if token is None:
                continue
            end = token.end()
            content = token.group().rstrip(".,;")
        found.append((match.start(), end, _unbox(content)))
    return found


def _unbox(content: str) -> str:
    """``\\boxed{\\boxed{5}}`` -> ``5``."""
    inner = _boxes(content)
    if len(inner) == 1 and not content[: inner[0][0]].strip(" $") and not content[inner[0][1] :].strip(" $"):
        return inner[0][2]
    return content


def _last_boxed_answer(text: str) -> tuple[int, str] | None:
    """Position and content of the last box, joined with the boxes right before it."""
    boxes = [b for b in _boxes(text) if b[2].strip()]
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1] : group[0][0]]
        if "\n" in gap or not _BOX_JOIN.fullmatch(gap):
            break
        group.insert(0, box)
    return group[0][0], ", ".join(b[2].strip() for b in group)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` / ``\\fbox{}`` in ``text`` (boxes joined by "and" or
    commas count as one, ``2, 3``), or ``None``. Used to read a reference answer out of a
    worked solution."""
    box = _last_boxed_answer(text)
    return None if box is None else box[1].strip()


def _strip_emphasis(text: str) -> str:
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for mark in ("**", "__", "`", "*"):
            if text.startswith(mark):
                close = text.find(mark, len(mark))
                text = (
                    text[len(mark) : close] + " " + text[close + len(mark) :]
                    if close > 0
                    else text[len(mark) :]
                )
                text = text.strip()
                changed = True
    return text


def _math_span(text: str) -> str | None:
    """Content of the math span ``text`` starts with (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``)."""
    for opener, closer in (("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]"), ("$", "$")):
        if text.startswith(opener):
            close = text.find(closer, len(opener))
            while opener == "$" and close > 0 and text[close - 1] == "\\":  # "\$" inside math
                close = text.find(closer, close + 1)
            if close > len(opener):
                return text[len(opener) : close]
            return None
    return None


def _trim_plain(text: str) -> str:
    """The answer at the start of plain text: cut clauses, sentence ends, units and words.

    Returns ``""`` when no answer can be told apart (e.g. ``3 hours and 20 minutes``).
    """
    text = text.replace("\\$", "$").lstrip("# ")
    cut = _SENTENCE_END.search(text)
    if cut:
        text = text[: cut.start()]
    cut = _CLAUSE.search(text)
    if cut:
        text = text[: cut.start()]
    text = text.strip().rstrip(".,:;")
    text = re.sub(
        r"(?<![\d.])(\d{1,3})((?: \d{3})+)(?![\d.])", lambda m: m.group(1) + m.group(2).replace(" ", ""), text
    )
    unit = _NUMBER_UNIT.match(text)
    if unit and not any(w.lower() in _MATH_WORDS for w in re.findall(r"[A-Za-z]+", text[unit.end(1) :])):
        number = unit.group(1).replace("$", "").replace("\\", "").replace(" ", "")
        mark = unit.group(2).lower()
        if mark in {"%", "\\%", "percent"}:
            return number + "\\%"
        if mark in {"°", "degree", "degrees"}:
            return number + "^\\circ"
        return number
    if re.fullmatch(r"[A-Z][a-z]*|\([A-Z]\)", text):  # a word or an option letter: "Monday", "(B)"
        return text
    text = re.sub(r"\s+and\s+", ", ", text)
    for word in _WORD.finditer(text):
        if word.group().lower() not in _MATH_WORDS:
            if re.search(r"\d", text[word.end() :]):  # "3 hours, 20 minutes": no single answer
                return ""
            text = text[: word.start()]
            break
    return text.strip().rstrip(".,:;=").strip()


def _stated_after_anchor(rest: str, next_lines: str) -> str | None:
    """The answer in the text following an answer phrase (rest of its line)."""
    rest = _strip_emphasis(rest.strip().lstrip(":").strip())
    if not rest.strip(" *_:"):
        following = next((line for line in next_lines.split("\n") if line.strip()), "")
        rest = _strip_emphasis(following.strip())
    rest = _FILLER.sub("", rest).strip()
    rest = _strip_emphasis(rest)
    if rest.startswith("\\boxed") or rest.startswith("\\fbox"):
        return None  # the box itself is a candidate
    span = _math_span(rest)
    if span is not None:
        answer = span.strip()
    else:
        if rest.startswith("$") and not rest.startswith("$$"):
            rest = rest[1:]  # an unpaired "$" is a money sign
        answer = _trim_plain(rest)
        if not answer:  # "The number is $6$.": the one math span of the sentence
            sentence = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]
            spans = re.findall(r"(?<!\\)\$([^$]+)\$", sentence)
            answer = spans[0] if len(spans) == 1 and not re.search(r"\bnot\b", sentence) else ""
    answer = answer.strip().rstrip(".,;:*_`").strip()
    return answer or None


def _anchored_answers(text: str) -> list[tuple[int, str]]:
    found = []
    for match in _ANCHOR.finditer(text):
        line_end = text.find("\n", match.end())
        line_end = len(text) if line_end < 0 else line_end
        answer = _stated_after_anchor(text[match.end() : line_end], text[line_end : line_end + 400])
        if answer is not None:
            found.append((match.start(), answer))
    for match in _ANSWER_HEADING.finditer(text):
        answer = _stated_after_anchor("", text[match.end() : match.end() + 400])
        if answer is not None:
            found.append((match.start(), answer))
    return found


def _gsm8k_answers(text: str) -> list[tuple[int, str]]:
    """``#### 42`` lines whose whole content is an answer (not a Markdown heading)."""
    found = []
    for match in _GSM8K_LINE.finditer(text):
        content = _strip_emphasis(match.group(1)).rstrip(".").strip()
        if not content or ". " in content or ": " in content or content.startswith("#"):
            continue
        answer = _trim_plain(content) if _math_span(content) is None else _math_span(content)
        if not answer:
            continue
        words = [w for w in _WORD.findall(content) if w.lower() not in _MATH_WORDS]
        if words and not _NUMBER_UNIT.match(content):
            continue
        found.append(
            (match.start(), answer.replace(",", "") if re.fullmatch(r"[-\d,.]+", answer) else answer)
        )
    return found


def _final_answer(text: str) -> str | None:
    candidates = []
    box = _last_boxed_answer(text)
    if box is not None:
        candidates.append(box)
    candidates += _anchored_answers(text)
    candidates += _gsm8k_answers(text)
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


def extract_answer(completion: str) -> str | None:
    """The final answer stated in ``completion`` (see the module docstring), or ``None``.

    Example: ``extract_answer("So $x=7$. The answer is **7** apples.")`` is ``"7"``.
    """
    if _THINK_END in completion:
        after = completion.rsplit(_THINK_END, 1)[1]
        answer = _final_answer(after)
        if answer is not None:
            return answer
    return _final_answer(completion)


# --------------------------------------------------------------------------------------
# Normalizing an answer and deciding equivalence
# --------------------------------------------------------------------------------------

_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)\s*[eE]\s*([+-]?\d+)(?![\w.])")
_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\{(\d+)\}")
_ASCII_SQRT = re.compile(r"(?<![\\A-Za-z])sqrt\s*\(([^()]*)\)")
_ASCII_PI = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")
_TRAILING_UNIT = re.compile(  # "6\,\Omega", "5 \mathrm{m/s}" -> the number
    r"^([-+]?\d[\d.]*(?:\s*\\times\s*10\^\{?-?\d+\}?)?)\s*"
    r"(?:(?:\\[,;: ]|~)\s*[A-Za-z]{1,3}(?:/[A-Za-z]{1,3})?(?:\^\{?-?\d\}?)?"
    r"|(?:\\[,;: ]|~)?\s*(?:\\(?:mathrm|text|textrm|mbox|operatorname)\{[^{}]*\}|\\Omega|\\mu\s*\\?[A-Za-z]*)(?:\^\{?-?\d\}?)?)+\s*$"
)
_DIGIT_GROUP_SPACE = re.compile(r"(?<=\d)(?:\\,|\\!|\\ |~|\{,\}|[\u2009\u202f\u00a0\u2006])(?=\d{3}(?!\d))")


def _repeating_to_fraction(match: re.Match) -> str:
    """``0.1\\overline{6}`` -> ``\\frac{1}{6}`` (math-verify does not read repeating decimals)."""
    whole, fixed, period = match.groups()
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
    value += Fraction(int(period), 10 ** len(fixed) * (10 ** len(period) - 1))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def normalize_answer(answer: str) -> str:
    """The form of a stated or reference answer that is handed to math-verify.

    Examples: ``4.5e33`` -> ``4.5\\times10^{33}``; ``1\\,000`` -> ``1000``; ``45°`` ->
    ``45^\\circ``; ``\\$18.00`` -> ``18.00``; ``\\boxed{7}`` -> ``7``.
    """
    text = answer.strip()
    box = _last_boxed_answer(text)
    if box is not None:
        text = box[1]
    wrapped = re.fullmatch(r"\$+([^$]*)\$+|\\\((.*)\\\)|\\\[(.*)\\\]", text, re.DOTALL)
    if wrapped:  # "$42$" -> "42"
        text = next(group for group in wrapped.groups() if group is not None)
    text = (
        text.replace("−", "-")
        .replace("°", "^\\circ")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
    )
    text = _DIGIT_GROUP_SPACE.sub("", text)
    text = _REPEATING.sub(_repeating_to_fraction, text)
    text = _ASCII_PI.sub(r"\\pi", _ASCII_SQRT.sub(r"\\sqrt{\1}", text))
    text = _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times10^{{{int(m.group(2))}}}", text)
    text = re.sub(r"^\\?\$\s*(?=[-\d.])", "", text)
    text = _TRAILING_UNIT.sub(r"\1", text)
    return text.strip().rstrip(".").strip()


@lru_cache(maxsize=65536)
def _parsed(answer: str):
    """math-verify's parse of a normalized answer (``[]`` if it is not mathematics)."""
    return parse("\\boxed{" + answer + "}", extraction_config=_CONFIG, parsing_timeout=None)


def _plain(answer: str) -> str:
    text = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", answer)
    return re.sub(r"[\s$]", "", text).lower()


def _grade_now(completion: str, reference: str) -> Grade:
    """Grade without any time limit (the caller enforces one)."""
    stated = extract_answer(completion)
    if stated is None:
        return Grade(None, False)
    predicted, gold = normalize_answer(stated), normalize_answer(reference)
    parsed_predicted, parsed_gold = _parsed(predicted), _parsed(gold)
    if parsed_predicted and parsed_gold:
        correct = bool(verify(parsed_gold, parsed_predicted, timeout_seconds=None))
    else:  # not mathematics on one side (e.g. a word): compare the text
        correct = _plain(predicted) == _plain(gold) != ""
    return Grade(stated, correct)


# --------------------------------------------------------------------------------------
# Time limits: SIGALRM on the main thread, a killable worker process elsewhere
# --------------------------------------------------------------------------------------


class GradingTimeout(BaseException):
    """Raised inside a grading that ran past its limit (a ``BaseException`` so that the
    ``except Exception`` blocks of SymPy and math-verify do not swallow it)."""


@contextmanager
def _alarm(seconds: float):
    """Raise :class:`GradingTimeout` after ``seconds`` (main thread only)."""

    def on_alarm(signum, frame):
        raise GradingTimeout

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:  # someone else's timer was running: give it back what is left
            signal.setitimer(signal.ITIMER_REAL, max(previous_delay - (time.monotonic() - started), 0.001))


def _on_main_thread() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _grade_with_alarm(completion: str, reference: str, timeout: float) -> Grade:
    try:
        with _alarm(timeout):
            return _grade_now(completion, reference)
    except GradingTimeout:
        return Grade(extract_answer(completion), False, timed_out=True)


def serve_worker(requests, responses) -> None:
    """Body of a grading worker process: read JSON lines ``[completion, reference, timeout]``
    from ``requests``, write ``[extracted, correct, timed_out]`` lines to ``responses``
    (after a first line ``ready``, once SymPy's lazy imports are done: a cold first
    comparison can take a second, which would eat into the first pair's time limit)."""
    _grade_now("The answer is $\\frac{\\sqrt{2}}{2}$.", "(\\sqrt{2}/2)")
    _grade_now("\\boxed{[1, \\infty)}", "x \\ge 1")
    responses.write("ready\n")
    responses.flush()
    for line in requests:
        completion, reference, timeout = json.loads(line)
        result = _grade_with_alarm(completion, reference, timeout)
        responses.write(json.dumps([result.extracted, result.correct, result.timed_out]) + "\n")
        responses.flush()


class _Worker:
    """One grading process: ``python -m rlvr_lens.data._grading_worker`` talking JSON lines.

    A plain subprocess (not ``multiprocessing``) so that the caller's ``__main__`` is never
    re-imported and a process that runs threads can start it safely. Answers are read
    unbuffered (``os.read``) into our own buffer, so that waiting on the pipe never misses
    an answer already read.
    """

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlvr_lens.data._grading_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self.conn = self.process.stdout
        self.buffer = b""
        self.started = False
        self.deadline = 0.0

    def has_answer(self) -> bool:
        return b"\n" in self.buffer

    def poll(self, seconds: float) -> bool:
        return self.has_answer() or bool(wait([self.conn], timeout=max(seconds, 0.0)))

    def _line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = os.read(self.conn.fileno(), 1 << 16)
            if not chunk:
                raise RuntimeError(f"a grading worker process exited (code {self.process.wait()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8")

    def send(self, completion: str, reference: str, timeout: float) -> None:
        """Queue one pair (after waiting, the first time, for the worker to start)."""
        if not self.started:  # wait for the worker's imports (a second or more), once
            if not self.poll(_START_LIMIT_S) or self._line().strip() != "ready":
                self.kill()
                raise RuntimeError("a grading worker process did not start")
            self.started = True
        self.process.stdin.write((json.dumps([completion, reference, timeout]) + "\n").encode("utf-8"))

    def submit(self, completion: str, reference: str, timeout: float) -> None:
        """Send one pair and start its time limit."""
        self.send(completion, reference, timeout)
        self.deadline = time.monotonic() + timeout + _KILL_GRACE_S

    def receive(self) -> Grade:
        return Grade(*json.loads(self._line()))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.conn.close()

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(2.0)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.conn.close()


_IDLE_WORKERS: list[_Worker] = []
_IDLE_LOCK = threading.Lock()


@atexit.register
def _close_idle_workers() -> None:
    with _IDLE_LOCK:
        while _IDLE_WORKERS:
            _IDLE_WORKERS.pop().close()


def _grade_in_worker(completion: str, reference: str, timeout: float) -> Grade:
    """Grade in a (reused) worker process; kill it if it overruns ``timeout``."""
    with _IDLE_LOCK:
        worker = _IDLE_WORKERS.pop() if _IDLE_WORKERS else None
    if worker is None:
        worker = _Worker()
    worker.submit(completion, reference, timeout)
    if worker.poll(worker.deadline - time.monotonic()):
        result = worker.receive()
        with _IDLE_LOCK:
            _IDLE_WORKERS.append(worker)
        return result
    worker.kill()
    return Grade(extract_answer(completion), False, timed_out=True)


def grade(completion: str, reference: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> Grade:
    """Grade ``completion`` against the reference final answer ``reference``.

    Args:
        completion: the model's output text.
        reference: the reference final answer (LaTeX or plain text; a ``\\boxed{}`` in it
            is unwrapped).
        timeout: wall-clock limit in seconds, on any thread; an overrun is returned as
            ``Grade(extracted, False, timed_out=True)``.
    """
    if _on_main_thread():
        return _grade_with_alarm(completion, reference, timeout)
    return _grade_in_worker(completion, reference, timeout)


def grade_many(
    pairs: Iterable[tuple[str, str]], *, processes: int = 1, timeout: float = DEFAULT_TIMEOUT_S
) -> list[Grade]:
    """Grade ``(completion, reference)`` pairs, in ``processes`` worker processes.

    ``processes=1`` grades in this process (through :func:`grade`). With more, each pair
    goes to the next free worker, and a worker that overruns ``timeout`` is killed and
    replaced; the result order is the order of ``pairs``.
    """
    pairs = list(pairs)
    if processes <= 1 or len(pairs) <= 1:
        return [grade(completion, reference, timeout=timeout) for completion, reference in pairs]
    return _grade_in_workers(pairs, [_Worker() for _ in range(min(processes, len(pairs)))], timeout)


def _grade_in_workers(pairs: list[tuple[str, str]], workers: list[_Worker], timeout: float) -> list[Grade]:
    """:func:`grade_many` in the worker processes ``workers`` (closed at the end).

    Each worker holds up to :data:`_PIPELINE_DEPTH` pairs, so it never waits for the
    parent between two gradings; the time limit runs for the pair at the head of its queue
    (from the moment the previous answer came back).
    """
    results: list[Grade | None] = [None] * len(pairs)
    queues: dict[_Worker, deque[int]] = {worker: deque() for worker in workers}
    todo = deque(range(len(pairs)))
    try:
        while todo or any(queues.values()):
            for worker, queue in queues.items():
                while todo and len(queue) < _PIPELINE_DEPTH:
                    index = todo.popleft()
                    worker.send(*pairs[index], timeout)  # the first send waits for the worker's start
                    if not queue:
                        worker.deadline = time.monotonic() + timeout + _KILL_GRACE_S
                    queue.append(index)
            active = [w for w, q in queues.items() if q]
            ready = [w for w in active if w.has_answer()]
            if not ready:
                by_conn = {w.conn: w for w in active}
                left = max(min(w.deadline for w in active) - time.monotonic(), 0.0)
                ready = [by_conn[conn] for conn in wait(list(by_conn), timeout=left)]
            for worker in ready:
                results[queues[worker].popleft()] = worker.receive()
                while queues[worker] and worker.has_answer():
                    results[queues[worker].popleft()] = worker.receive()
                worker.deadline = time.monotonic() + timeout + _KILL_GRACE_S
            now = time.monotonic()
            for worker in [w for w in active if w.deadline <= now and w not in ready]:
                queue = queues.pop(worker)
                worker.kill()
                index = queue.popleft()
                results[index] = Grade(extract_answer(pairs[index][0]), False, timed_out=True)
                todo.extendleft(reversed(queue))  # the rest of its queue goes to another worker
                if todo:
                    queues[_Worker()] = deque()
    finally:
        for worker in queues:
            worker.close()
    return results  # type: ignore[return-value]


def is_correct(completion: str, reference: str) -> bool:
    return grade(completion, reference).correct


__all__: Sequence[str] = (
    "DEFAULT_TIMEOUT_S",
    "Grade",
    "GradingTimeout",
    "extract_answer",
    "grade",
    "grade_many",
    "is_correct",
    "last_boxed",
    "normalize_answer",
)
