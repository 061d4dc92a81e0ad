"""AUROC against hand-worked examples."""

import math

import pytest

from rlvr_lens.analyses.scoring import auroc, has_both_classes


def test_auroc_hand_worked():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: of the 4 (pos, neg) pairs the
    # positive wins 3 (0.35>0.1, 0.8>0.1, 0.8>0.4) and loses 1 (0.35<0.4): 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)


def test_auroc_ties_count_half_and_direction():
    # pairs: (1 vs 1) tie = 1/2, (1 vs 0) win = 1 -> 1.5 / 2
    assert auroc([1.0, 1.0, 0.0], [True, False, False]) == pytest.approx(0.75)
    assert auroc([3, 2, 1], [True, True, False]) == 1.0
    assert auroc([3, 2, 1], [False, False, True]) == 0.0
    assert auroc([5, 5, 5, 5], [True, False, True, False]) == 0.5


def test_auroc_skips_missing_and_is_undefined_for_one_class():
    assert auroc([0.9, None, math.nan, 0.1], [True, False, True, False]) == 1.0
    assert auroc([0.9, 0.1, 0.3], [True, None, True]) is None
    assert auroc([], []) is None
    assert not has_both_classes([True, None]) and has_both_classes([True, False])
    with pytest.raises(ValueError):
        auroc([1.0], [True, False])
