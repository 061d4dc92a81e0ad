"""Grading through math-verify, checked on all of MATH-500."""

import json
import random

from rlvr_lens.data.grading import extract_answer, grade


def _rows(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_every_math500_solution_grades_correct_against_its_own_answer(math500_path):
    rows = _rows(math500_path)
    assert len(rows) == 500
    correct = [grade(r["solution"], r["answer"]).correct for r in rows]
    rate = sum(correct) / len(rows)
    # measured: 500 / 500 = 100% (the issue asks for >= 99%)
    assert rate >= 0.99, rate


def test_shuffled_math500_pairs_grade_incorrect(math500_path):
    rows = _rows(math500_path)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    pairs = [(rows[i]["solution"], rows[j]["answer"]) for i, j in enumerate(order) if rows[i]["answer"] != rows[j]["answer"]]
    false_positives = sum(grade(solution, answer).correct for solution, answer in pairs)
    assert len(pairs) > 450
    assert false_positives <= 0.01 * len(pairs), false_positives


def test_equivalent_forms_and_anchors():
    assert grade("so we get \\boxed{\\frac{1}{2}}", "0.5").correct
    assert grade("The answer is 42.", "42").correct
    assert grade("Natalia sold 48 clips.\n#### 1,234", "1234").correct
    assert not grade("\\boxed{43}", "42").correct


def test_no_last_number_fallback():
    # The source study's scripts would grade these as correct; we do not.
    assert not grade("I think it is 42", "42").correct
    assert extract_answer("x = 3 so 7") is None
    assert extract_answer("\\boxed{7}") == "7"
