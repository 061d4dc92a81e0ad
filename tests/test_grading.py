"""Grading: a hand-judged corpus of real-format completions, all of MATH-500, time limits."""

import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from rlvr_lens.data.grading import Grade, extract_answer, grade, grade_many, normalize_answer

CASES_PATH = Path(__file__).with_name("grading_cases.jsonl")
POWER_TOWER = "The answer is $\\boxed{9^{9^{9^{9}}}}$"


def _rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def cases():
    return _rows(CASES_PATH)


def test_the_corpus_is_big_varied_and_well_formed(cases):
    assert len(cases) >= 200
    assert len({c["id"] for c in cases}) == len(cases)
    families = {c["family"] for c in cases}
    assert {
        "issue",
        "qwen_boxed",
        "minerva",
        "r1_think",
        "gsm8k",
        "markdown",
        "revision",
        "phrase",
        "no_answer",
    } <= families
    assert all(isinstance(c["correct"], bool) and c["completion"] is not None for c in cases)
    # both judgments are well represented: a grader that always says yes or no fails
    assert 0.2 < sum(c["correct"] for c in cases) / len(cases) < 0.8


def test_every_case_named_in_issue_14_is_in_the_corpus(cases):
    pairs = {(c["completion"], c["reference"], c["correct"]) for c in cases}
    named = [
        ("Final Answer: The final answer is $42$. I hope it is correct.", "42", True),
        ("The answer is 42 dollars.", "42", True),
        ("The answer is 42, since 6*7=42.", "42", True),
        ("The answer is 42 (six times seven).", "42", True),
        ("The answer is **42**.", "42", True),
        ("Multiplying gives \\fbox{42}", "42", True),
        ("Multiplying gives\n\\framebox{42}", "42", True),
        ("The luminosity is $\\boxed{4.5e33}$ erg/s.", "4.5 \\times 10^{33}", True),
        ("The answer is $\\boxed{1000}$.", "1\\,000", True),
        ("So the count is \\boxed {42}.", "42", True),
    ]
    assert [n for n in named if n not in pairs] == []
    notes = " ".join(c.get("note", "") for c in cases if c["family"] == "issue")
    assert "headings are not GSM8K marks" in notes and "revision: last box" in notes


def test_corpus_graded_as_a_careful_human_would(cases):
    misses = [(c["id"], grade(c["completion"], c["reference"])) for c in cases]
    misses = [(i, g) for (i, g), c in zip(misses, cases) if g.correct != c["correct"]]
    # measured: 334 / 334 agree (100 %); the issue asks for >= 99 %
    assert misses == []


def test_every_math500_solution_grades_correct_against_its_own_answer(math500_path):
    rows = _rows(math500_path)
    assert len(rows) == 500
    wrong = [r["unique_id"] for r in rows if not grade(r["solution"], r["answer"]).correct]
    assert wrong == []  # measured: 500 / 500


def test_shuffled_math500_pairs_grade_incorrect(math500_path):
    rows = _rows(math500_path)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    pairs = [
        (rows[i]["solution"], rows[j]["answer"])
        for i, j in enumerate(order)
        if rows[i]["answer"] != rows[j]["answer"]
    ]
    assert len(pairs) == 492
    false_positives = [(s[-40:], a) for s, a in pairs if grade(s, a).correct]
    assert false_positives == []


def test_extraction_hands_math_verify_the_answer_alone():
    assert (
        extract_answer("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.")
        == "\\frac{1}{2}"
    )
    assert extract_answer("The answer is **42** dollars, since 6*7=42.") == "42"
    assert extract_answer("#### Step 1: add\n1+1=2") is None
    assert extract_answer("\\boxed{1}\nrethink\n\\boxed{2}") == "2"
    assert extract_answer("$\\boxed{2}$ and $\\boxed{3}$") == "2, 3"
    assert extract_answer("<think>\\boxed{1}</think>The answer is 2.") == "2"
    assert extract_answer("The answer is 3 hours and 20 minutes.") is None


def test_references_are_normalized_like_answers():
    assert normalize_answer("4.5e33") == "4.5\\times10^{33}"
    assert normalize_answer("3.0E-2") == "3.0\\times10^{-2}"
    assert normalize_answer("1\\,000") == "1000"
    assert normalize_answer("1\u2009000\u2009000") == "1000000"
    assert normalize_answer("$\\boxed{7}$") == "7"
    assert normalize_answer("0.\\overline{3}") == "\\frac{1}{3}"
    assert grade("\\boxed{45\\times 10^{32}}", "4.5e33").correct
    assert not grade("\\boxed{4.5 e}", "4.5e33").correct  # Euler's e is not e-notation


def test_equivalent_forms_and_no_last_number_fallback():
    assert grade("so we get \\boxed{\\frac{1}{2}}", "0.5").correct
    assert grade("Natalia sold 48 clips.\n#### 1,234", "1234").correct
    assert not grade("\\boxed{43}", "42").correct
    # The source study's scripts would grade these as correct; we do not.
    assert grade("I think it is 42", "42") == Grade(None, False)
    assert extract_answer("x = 3 so 7") is None
    assert extract_answer("\\boxed{7}") == "7"


def test_grade_keeps_its_old_shape():
    assert Grade("7", True) == Grade(extracted="7", correct=True, timed_out=False)
    assert grade("\\boxed{7}", "7") == Grade("7", True, False)


def test_timeout_on_the_main_thread():
    started = time.monotonic()
    result = grade(POWER_TOWER, "9", timeout=1.0)
    elapsed = time.monotonic() - started
    assert result == Grade("9^{9^{9^{9}}}", False, timed_out=True)
    assert elapsed < 3.0, elapsed


def test_timeout_restores_an_outer_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        grade("\\boxed{7}", "7")
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        assert 25.0 < remaining <= 30.0
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert fired == []


def test_timeout_off_the_main_thread():
    out = {}

    def work():
        out["warm"] = grade("\\boxed{7}", "7")  # starts the worker process (imports take a while)
        started = time.monotonic()
        out["tower"] = grade(POWER_TOWER, "9", timeout=1.0)
        out["elapsed"] = time.monotonic() - started
        out["after"] = grade("The answer is 8.", "8")  # a killed worker is replaced

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert out["warm"] == Grade("7", True)
    assert out["tower"] == Grade("9^{9^{9^{9}}}", False, timed_out=True)
    assert out["elapsed"] < 4.0, out["elapsed"]  # 1 s limit (+ 2 s kill backstop at most)
    assert out["after"] == Grade("8", True)


def test_grade_many_in_processes_matches_one_by_one(cases):
    # the pathological pair sits mid-queue: its worker is killed, the pairs queued behind it
    # go to another worker, and the order of the results is kept
    pairs = [(c["completion"], c["reference"]) for c in cases[:12]]
    pairs.insert(5, (POWER_TOWER, "9"))
    parallel = grade_many(pairs, processes=2, timeout=3.0)
    serial = grade_many(pairs, processes=1, timeout=3.0)
    assert parallel == serial
    assert [g.timed_out for g in parallel] == [i == 5 for i in range(len(pairs))]
    assert [g.correct for i, g in enumerate(parallel) if i != 5] == [c["correct"] for c in cases[:12]]


@pytest.mark.parametrize(
    "text",
    ["The answer is 5 " + "a" * 3000 + "1", "\\boxed{" * 3000, "\\boxed 1 " * 1000, "{" * 20000 + "\\boxed{1}"],
    ids=["unit-words", "open-boxes", "bare-boxes", "open-braces"],
)
def test_extraction_is_linear_on_adversarial_text(text):
    # before: "5 aaa...1" backtracked exponentially (24 letters took 23 s), 3,000 open boxes 15 s
    started = time.monotonic()
    extract_answer(text)
    assert time.monotonic() - started < 2.0
