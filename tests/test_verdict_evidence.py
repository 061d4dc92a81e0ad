"""The verdict's evidence from the scoreboard, circuits and interventions results: hand-built
results (from the real result dataclasses, so the field names are the analyses' own) whose
signals are known, alone and combined with the decisive tests."""

from __future__ import annotations

import numpy as np
import pytest

from rlvr_lens.analyses import verdict as V
from rlvr_lens.analyses.ablation import AblationResult, VariantAccuracy
from rlvr_lens.analyses.circuits import CircuitsConfig, CircuitsResult
from rlvr_lens.analyses.localization import localize
from rlvr_lens.analyses.patching import DirectionResult, PatchingResult, Variant
from rlvr_lens.analyses.scoreboard import DETECTOR_BAR, ScoreboardResult, SignalScore, TaskScores
from rlvr_lens.analyses.steering import SteeringCurve, SteeringResult

N = 40  # samples of the evaluation / perplexity / contamination results


# ----------------------------------------------------------------------------- the decisive tests (as in test_verdict.py)


def _evaluation(base_correct: int = 5, tuned_correct: int = 25) -> dict:
    return {"kind": "evaluation", "models": ["base", "rl"],
            "correct": {"base": [i < base_correct for i in range(N)], "rl": [i < tuned_correct for i in range(N)]}}


def _perplexity(answer_shift: float, prompt_shift: float) -> dict:
    rng = np.random.default_rng(0)
    answer, prompt, noise = rng.uniform(1.0, 2.0, N), rng.uniform(2.0, 3.0, N), rng.normal(0, 0.01, (2, N))

    def ckpt(name, a, p):
        return {"name": name, "answer_nll": list(map(float, a)), "prompt_nll": list(map(float, p))}

    return {"kind": "perplexity", "checkpoints": ["base", "rl/step-10"],
            "per_checkpoint": [ckpt("base", answer, prompt), ckpt("rl/step-10", answer + answer_shift + noise[0], prompt + prompt_shift + noise[1])]}


def _contamination(base_answers: int = 3, tuned_answers: int = 3) -> dict:
    def run(name, k):
        return {"checkpoint": name, "fraction": 0.4, "answer_correct": [i < k for i in range(N)]}

    return {"kind": "contamination", "checkpoints": ["base", "rl"], "fractions": [0.4], "runs": [run("base", base_answers), run("rl", tuned_answers)]}


def _ruled_out() -> list[dict]:
    """Gain +0.5, paradox and partial-prompt answers both ruled out: the verdict is reasoning."""
    return [_evaluation(), _perplexity(-0.2, -0.1), _contamination()]


def _only(result):
    (verdict,) = result.verdicts
    return verdict


def _signal(verdict, name):
    return next(s for s in verdict.supporting + verdict.contradicting + verdict.inconclusive + verdict.context if s.name == name)


def test_without_new_results_the_truth_table_is_unchanged():
    assert _only(V.build_verdict(_ruled_out())).verdict == V.REASONING


# ----------------------------------------------------------------------------- scoreboard


def _row(family: str, auroc: float, low: float, high: float, tpr: float = 0.5, fpr: float = 0.04) -> SignalScore:
    return SignalScore(family, family + "@0.2" if "min_k" in family else family, 1, auroc, auroc, low, high, 0.3, -1.0,
                       tpr, fpr, None, n_pos=12, n_neg=90)


def _scoreboard(gain_rows: list[SignalScore], leak_rows: list[SignalScore] | None = None, *, tuned: str = "rl",
                skipped: str | None = None) -> dict:
    tasks = [TaskScores("leakage", "stable", [0, 1], [2, 3], [] if skipped else gain_rows, skipped=skipped)]
    if leak_rows is not None:
        tasks.insert(0, TaskScores("leaked", "clean", [0, 1], [2, 3], leak_rows))
    config = {"tasks": [["leaked", "clean"], ["leakage", "stable"]], "calibration_fraction": 0.3, "max_fpr": 0.05, "n_boot": 1000, "seed": 0}
    result = ScoreboardResult(config, ["a", "b", "c", "d"], {"leakage": [0, 2], "stable": [1, 3]}, tasks, {}, "", None,
                              base="base", tuned=tuned)
    return result.to_dict()


def test_a_detector_whose_interval_clears_the_bar_on_the_gain_samples_says_memorization():
    rows = [_row("detector:loss", 0.70, 0.55, 0.84), _row("detector:min_k", 0.96, 0.93, 0.99, tpr=0.75, fpr=0.03)]
    v = _only(V.build_verdict([*_ruled_out(), _scoreboard(rows)]))
    assert v.verdict == V.MEMORIZATION and "detectors flag the gain samples" in v.reason
    s = _signal(v, "detectors flag the gain samples")
    assert s in v.supporting and s.holds and not s.corroborating
    assert s.value == 0.96 and s.interval == [0.93, 0.99] and s.threshold == DETECTOR_BAR == 0.9
    assert "calibration split" in s.threshold_source and "detector:min_k@0.2" in s.text and "flags 75%" in s.text
    assert "detector:loss" not in s.text  # only the detectors that clear the bar are listed


def test_the_reference_ratio_is_not_a_retrieval_test_on_the_gain_samples():
    """Tuned-vs-base likelihood separates any changed answer: left out of leakage vs stable."""
    rows = [_row("detector:ref_ratio", 0.99, 0.97, 1.0), _row("detector:loss", 0.60, 0.45, 0.75)]
    v = _only(V.build_verdict([*_ruled_out(), _scoreboard(rows)]))
    s = _signal(v, "detectors flag the gain samples")
    assert not s.holds and s.ruled_out and s.value == 0.60  # every remaining upper end < 0.9
    assert v.verdict == V.REASONING and s in v.supporting  # ruled out with the decisive tests


def test_a_detector_whose_interval_straddles_the_bar_keeps_the_verdict_undetermined():
    v = _only(V.build_verdict([*_ruled_out(), _scoreboard([_row("detector:min_k_pp", 0.92, 0.85, 0.97)])]))
    s = _signal(v, "detectors flag the gain samples")
    assert not s.holds and not s.ruled_out and s in v.inconclusive
    assert v.verdict == V.UNDETERMINED and "inconclusive" in v.reason


def test_planted_leaks_detectors_are_context_only():
    leak = [_row("detector:min_k", 0.97, 0.95, 0.99)]
    v = _only(V.build_verdict([*_ruled_out(), _scoreboard([_row("detector:loss", 0.5, 0.3, 0.7)], leak)]))
    s = _signal(v, "detectors flag the planted leaks")
    assert s in v.context and s.points_to == "context" and "says nothing about where the gain comes from" in s.text
    assert v.verdict == V.REASONING


def test_a_skipped_gain_task_gives_a_not_enough_samples_signal_and_changes_nothing():
    v = _only(V.build_verdict([*_ruled_out(), _scoreboard([], skipped="1 leakage and 30 stable samples: too few")]))
    s = _signal(v, "detectors flag the gain samples")
    assert s in v.context and s.text.startswith("not enough samples") and v.verdict == V.REASONING


def test_a_scoreboard_without_its_checkpoint_name_is_attributed_only_when_unambiguous():
    unnamed = _scoreboard([_row("detector:min_k", 0.96, 0.93, 0.99)], tuned="")
    assert _only(V.build_verdict([*_ruled_out(), unnamed])).verdict == V.MEMORIZATION  # one tuned checkpoint: it is "rl"
    two = _evaluation()
    two["models"].append("rl2")
    two["correct"]["rl2"] = two["correct"]["rl"]
    result = V.build_verdict([two, unnamed])
    assert [v.tuned for v in result.verdicts] == ["rl", "rl2"]
    assert not any(s.source == "scoreboard" for v in result.verdicts for s in v.supporting + v.inconclusive + v.context)


# ----------------------------------------------------------------------------- circuits

LAYERS = 4
ANCHOR = 1  # the mlp output of this layer carries the tuned answer


def _circuits(n_leak: int = 8, n_stable: int = 8, *, stable_recovers: bool = False, localized: bool = True, stable_gap: float = 0.5) -> dict:
    """Leakage samples: base -3, tuned -1 nats; patching mlp layer ANCHOR recovers the tuned value
    (others nothing). Stable samples: base -1 - stable_gap, tuned -1; the anchor recovers them
    only with ``stable_recovers``. Small seeded noise on every patched value."""
    rng = np.random.default_rng(0)
    variants = [Variant(c, [layer]) for c in ("attn", "mlp") for layer in range(LAYERS)]
    m_base = [-3.0] * n_leak + [-1.0 - stable_gap] * n_stable
    m_tuned = [-1.0] * (n_leak + n_stable)
    patched = []
    for s in range(n_leak + n_stable):
        leak = s < n_leak
        row = []
        for v in variants:
            hit = localized and v.component == "mlp" and v.layers[0] == ANCHOR and (leak or stable_recovers)
            row.append((m_tuned[s] if hit else m_base[s]) + float(rng.normal(0, 0.05)))
        patched.append(row)
    groups = {"leakage": list(range(n_leak)), "stable": list(range(n_leak, n_leak + n_stable))}
    patching = PatchingResult({"width": 1, "components": ["attn", "mlp"], "min_gap": 1e-3}, LAYERS, "base", "rl",
                              [f"s{i}" for i in range(n_leak + n_stable)], variants, m_base, m_tuned,
                              [DirectionResult("tuned_into_base", "base", "rl", patched)], groups)
    config = CircuitsConfig()
    verdicts = [localize(groups, config.localization("leakage"), patching=patching)] if n_leak else []
    result = CircuitsResult({**vars(config), "parts": ["patching"], "verdict_groups": ["leakage"]}, "base", "rl/step-64", LAYERS,
                            patching.sample_ids, groups, {k: len(v) for k, v in groups.items()}, patching=patching, verdicts=verdicts)
    return result.to_dict()


def _ratio_of_means(data: dict, rows: list[int]) -> float:
    p = data["patching"]
    variant = next(i for i, v in enumerate(p["variants"]) if v["component"] == "mlp" and v["layers"] == [ANCHOR])
    base, tuned = np.asarray(p["m_base"])[rows], np.asarray(p["m_tuned"])[rows]
    patched = np.asarray(p["directions"][0]["m_patched"])[rows, variant]
    return (patched.mean() - base.mean()) / (tuned.mean() - base.mean())


def test_a_leakage_specific_anchor_backs_memorization_but_does_not_make_it_alone():
    data = _circuits()
    assert data["verdicts"][0]["status"] == "localized" and data["verdicts"][0]["anchor"]["start"] == ANCHOR
    (s,) = V._circuits_evidence(data)
    assert s.tuned == "rl" and s.holds and s.corroborating and s.points_to == V.MEMORIZATION
    assert s.interval[0] > 0 and s.value == pytest.approx(_ratio_of_means(data, data["groups"]["leakage"]))
    specific = _ratio_of_means(data, data["groups"]["leakage"]) - _ratio_of_means(data, data["groups"]["stable"])
    assert f"leakage minus stable {specific:+.2f}" in s.text and "specific to the gained samples" in s.text
    # with every direct test ruled out it blocks "reasoning" ...
    v = _only(V.build_verdict([*_ruled_out(), data]))
    assert v.verdict == V.UNDETERMINED and "localized change" in v.reason and s.name in v.reason
    assert any("direct memorization test holding" in w for w in v.would_change)
    # ... and with the paradox holding it is listed for memorization
    v = _only(V.build_verdict([_evaluation(), _perplexity(-0.2, +0.1), _contamination(), data]))
    assert v.verdict == V.MEMORIZATION and s.name in {x.name for x in v.supporting}


def test_an_anchor_that_recovers_stable_samples_too_is_not_specific():
    (s,) = V._circuits_evidence(_circuits(stable_recovers=True))
    assert not s.holds and "not shown to be specific" in s.text
    v = _only(V.build_verdict([*_ruled_out(), _circuits(stable_recovers=True)]))
    assert v.verdict == V.REASONING and s.name in {x.name for x in v.inconclusive}


def test_no_localized_shortcut_is_neutral_never_reasoning_by_itself():
    data = _circuits(localized=False)
    assert data["verdicts"][0]["status"] == "no localized shortcut"
    (s,) = V._circuits_evidence(data)
    assert not s.holds and not s.ruled_out and "not evidence of reasoning" in s.text
    assert _only(V.build_verdict([_evaluation(), data])).verdict == V.UNDETERMINED  # decisive tests missing
    assert _only(V.build_verdict([*_ruled_out(), data])).verdict == V.REASONING  # and it does not block reasoning


def test_circuits_without_enough_leakage_samples():
    (s,) = V._circuits_evidence(_circuits(n_leak=2))
    assert s.points_to == "context" and s.text.startswith("not enough samples") and not s.holds
    assert V._circuits_evidence(_circuits(n_leak=0)) == []  # no leakage verdict at all: no signal


# ----------------------------------------------------------------------------- interventions: reset / retain


def _ablation(n_leak: int = 10, *, noise_keeps: bool = True, window_removes: bool = True) -> dict:
    """Base wrong and tuned right on the leakage samples, both right on 5 stable ones. Resetting
    the mlp of layer 2 breaks the leakage answers (when ``window_removes``); every other reset keeps them."""
    n = n_leak + 5
    leak = list(range(n_leak))
    base = [i >= n_leak for i in range(n)]
    tuned = [True] * n

    def acc(mode, part, window, correct):
        return VariantAccuracy(mode, part, window, correct, sum(correct) / n)

    variants = []
    for layer in range(4):
        for part in ("mlp", "attn"):
            hit = window_removes and part == "mlp" and layer == 2
            variants.append(acc("reset", part, [layer, layer], [i >= n_leak or not hit for i in range(n)]))
            variants.append(acc("retain", part, [layer, layer], [i >= n_leak or hit for i in range(n)]))
            variants.append(acc("noise", part, [layer, layer], [i >= n_leak or noise_keeps or not hit for i in range(n)]))
    result = AblationResult({"width": 1, "seed": 0}, "base", "rl", 4, [f"s{i}" for i in range(n)],
                            {"leakage": leak, "stable": list(range(n_leak, n))},
                            [acc("base", None, None, base), acc("tuned", None, None, tuned)], variants, True)
    return result.to_dict()


def test_a_reset_that_removes_the_gain_while_noise_keeps_it_backs_memorization():
    (s,) = V._ablation_evidence(_ablation())
    assert s.holds and s.corroborating and s.tuned == "rl"
    assert "MLP of layers [2, 2]" in s.text  # chosen on the calibration half, which it also breaks
    assert s.value == pytest.approx(1.0) and s.interval == [1.0, 1.0]  # all 5 tested leakage answers lost
    assert s.threshold == pytest.approx(0.5)  # half of the tested gain (+1.0)
    assert "recovers +1.000" in s.text  # retaining only the window restores the gain
    v = _only(V.build_verdict([*_ruled_out(), _ablation()]))
    assert v.verdict == V.UNDETERMINED and s.name in v.reason


def test_a_reset_whose_noise_control_breaks_the_model_too_is_not_evidence():
    (s,) = V._ablation_evidence(_ablation(noise_keeps=False))
    assert not s.holds and "control keeps +0.000" in s.text
    assert _only(V.build_verdict([*_ruled_out(), _ablation(noise_keeps=False)])).verdict == V.REASONING


def test_no_reset_removes_the_gain():
    (s,) = V._ablation_evidence(_ablation(window_removes=False))
    assert not s.holds and s.value == pytest.approx(0.0)


def test_interventions_without_enough_leakage_samples():
    for n_leak in (0, 4):  # 4: 2 choose the window, 2 < 3 left to test it
        (s,) = V._ablation_evidence(_ablation(n_leak=n_leak))
        assert s.points_to == "context" and s.text.startswith("not enough samples")


# ----------------------------------------------------------------------------- interventions: steering


def _steering(n_leak: int = 8, n_stable: int = 8, *, stable_falls: bool = False, random_specific: bool = False) -> dict:
    """Scored: every sample. At alpha 0 the selected neurons break the leakage answers (and the
    stable ones with ``stable_falls``); the random control breaks nothing (or the same, with ``random_specific``)."""
    alphas = [0.0, 1.0]
    n = n_leak + n_stable
    groups = {"leakage": list(range(n_leak)), "stable": list(range(n_leak, n))}

    def curve(neurons, breaks_leak, breaks_stable, layer=1):
        at_zero = [not (breaks_leak if i < n_leak else breaks_stable) for i in range(n)]
        correct = [at_zero, [True] * n]
        return SteeringCurve(layer, "study", "shared", neurons, [sum(c) / n for c in correct], {}, [[0.5] * n] * 2, correct, 1.0)

    curves = [curve("selected", False, False, layer=0), curve("random", False, False, layer=0),
              curve("selected", True, stable_falls), curve("random", random_specific, False)]
    result = SteeringResult({"calibration_group": "leakage"}, "rl/step-64", [f"s{i}" for i in range(n)], groups, [], list(range(n)), alphas, curves)
    return result.to_dict()


def test_neurons_that_suppress_only_the_gained_answers_back_memorization():
    (s,) = V._steering_evidence(_steering())
    assert s.holds and s.corroborating and s.tuned == "rl"
    assert s.value == pytest.approx(1.0) and s.interval == [1.0, 1.0]  # leakage falls by 1, stable by 0
    assert "layer 1" in s.text and "Bonferroni over 2 curves" in s.text and "97.50% interval" in s.text
    v = _only(V.build_verdict([_evaluation(), _perplexity(-0.2, +0.1), _contamination(), _steering()]))
    assert v.verdict == V.MEMORIZATION and s.name in {x.name for x in v.supporting}


def test_neurons_that_suppress_every_answer_are_not_specific():
    (s,) = V._steering_evidence(_steering(stable_falls=True))
    assert not s.holds and s.value == pytest.approx(0.0) and "not specific" in s.text
    (s,) = V._steering_evidence(_steering(random_specific=True))
    assert not s.holds and "random neurons of matched norm are as specific" in s.text


def test_steering_without_enough_leakage_samples():
    for n_leak in (0, 2):
        (s,) = V._steering_evidence(_steering(n_leak=n_leak))
        assert s.points_to == "context" and s.text.startswith("not enough samples")
        assert _only(V.build_verdict([*_ruled_out(), _steering(n_leak=n_leak)])).verdict == V.REASONING


def test_corroborating_signals_round_trip_as_json():
    result = V.build_verdict([*_ruled_out(), _ablation(), _steering()])
    again = V.VerdictResult.from_dict(result.to_dict())
    assert [s.corroborating for s in again.verdicts[0].inconclusive] == [s.corroborating for s in result.verdicts[0].inconclusive]
    assert any(s.corroborating for s in again.verdicts[0].inconclusive)
