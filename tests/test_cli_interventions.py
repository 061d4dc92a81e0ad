"""``rlvr-lens scoreboard`` and ``rlvr-lens steer`` end to end on the model that memorized problems."""

from __future__ import annotations

import json
import types

import pytest

from rlvr_lens.cli import main
from rlvr_lens.data import write_samples

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def data(tmp_path, memorizing_pair):
    path = tmp_path / "eval.jsonl"
    write_samples(path, memorizing_pair[2])
    return path


def test_scoreboard_cli_scores_the_memorized_problems(tmp_path, memorizing_pair, data, capsys):
    base, tuned, _ = memorizing_pair
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"leaked": [0, 1, 2, 3], "clean": [4, 5, 6, 7]}))
    out = tmp_path / "sb"
    argv = ["scoreboard", "--model", f"base={base}", "--model", f"tuned={tuned}", "--data", str(data), "--groups", str(groups)]
    argv += ["--zero-leak-model", f"base={base}", "--zero-leak-model", f"tuned={base}", "--n-boot", "50", "--calibration-fraction", "0.5"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "scoreboard.json").read_text())
    task = result["tasks"][0]
    rows = {r["family"]: r for r in task["rows"]}
    assert rows["detector:loss"]["auroc"] == 1.0 and rows["detector:min_k_pp"]["auroc"] == 1.0
    assert rows["detector:loss"]["false_alarm"] is not None
    assert result["tasks"][1]["skipped"]  # no leakage / stable groups in the file
    assert (out / "detectors.json").exists() and (out / "report.html").exists()
    assert "leaked vs clean: best" in capsys.readouterr().out


def test_scoreboard_cli_needs_both_zero_leak_models(tmp_path, memorizing_pair, data, capsys):
    base, tuned, _ = memorizing_pair
    out = tmp_path / "o"
    argv = ["scoreboard", "--model", f"base={base}", "--model", f"tuned={tuned}", "--data", str(data), "--zero-leak-model", f"b={base}"]
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: Give at least 2 checkpoints")
    assert not out.exists()


def test_steer_cli_nothing_to_do_is_a_user_error(tmp_path, memorizing_pair, data, capsys):
    base, tuned, _ = memorizing_pair
    out = tmp_path / "o"
    argv = ["steer", "--model", f"base={base}", "--model", f"tuned={tuned}", "--data", str(data), "--windows", "3-1"]
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: Window [3, 1]")
    assert not out.exists()


def test_audit_steps_run_and_cache(tmp_path, memorizing_pair):
    from rlvr_lens.analyses.ablation import AblationConfig
    from rlvr_lens.audit import AuditConfig, run_steps
    from rlvr_lens.interventions_audit import intervention_steps
    from rlvr_lens.models import ModelSpec

    base, tuned, samples = memorizing_pair
    specs = [ModelSpec("base", str(base)), ModelSpec("tuned", str(tuned))]
    groups = {"leaked": [0, 1, 2, 3], "clean": [4, 5, 6, 7], "leakage": [0, 1, 2, 3], "stable": []}
    ablation = AblationConfig(width=0, windows=((0, 1),), parts=("both",), modes=("reset",), max_new_tokens=12)
    weights_like = types.SimpleNamespace(kind="weights", sample_ids=None)  # an earlier step with nothing per sample
    steps = intervention_steps(
        specs, samples, AuditConfig(), lambda: groups, steps=("interventions", "scoreboard"), ablation=ablation,
        prior_results=lambda: [weights_like],
    )
    outcome = run_steps(tmp_path, steps)
    assert [s.status for s in outcome.steps] == ["computed", "computed"], outcome.steps
    ablation_result, board = outcome.results
    tuned_ref = ablation_result.references[1]
    assert tuned_ref.groups["leakage"] == 1.0  # the memorizing model recites its problems
    assert ablation_result.variants[0].groups["leakage"] < 1.0  # reset of every layer loses them
    assert board.tasks[0].rows
    assert (board.base, board.tuned) == ("base", "tuned")  # the verdict attributes the scoreboard by them
    from rlvr_lens.analyses.verdict import UNDETERMINED, build_verdict

    (verdict,) = build_verdict(outcome.results).verdicts
    assert verdict.tuned == "tuned" and verdict.verdict == UNDETERMINED  # no accuracy comparison: nothing to explain
    by_name = {s.name: s for s in verdict.inconclusive + verdict.context}
    assert by_name["reset removes the gain (interventions)"].text.startswith("not enough samples")  # 4 leakage: 2 + 2
    assert by_name["detectors flag the gain samples"].text.startswith("not enough samples")  # no stable samples
    leaks = by_name["detectors flag the planted leaks"]
    detectors = [r for r in board.tasks[0].rows if r.family.startswith("detector:") and r.ci_low is not None]
    best = max(detectors, key=lambda r: (r.ci_low, r.auroc))  # the leaked vs clean row with the highest lower end
    assert leaks.points_to == "context" and leaks.value == best.auroc and leaks.interval == [best.ci_low, best.ci_high]
    again = run_steps(tmp_path, intervention_steps(specs, samples, AuditConfig(), groups, steps=("interventions", "scoreboard"), ablation=ablation))
    assert [s.status for s in again.steps] == ["cached", "cached"]


def test_restrict_reindexes_every_group():
    from rlvr_lens.cli.groups import correctness_groups, restrict

    groups = {"leaked": [0, 1, 2, 5], "clean": [3, 4], **correctness_groups([0, 1, 0, 1, 1, 0], [1, 1, 1, 0, 1, 1])}
    assert groups["leakage"] == [0, 2, 5] and groups["stable"] == [1, 4] and groups["lost"] == [3]
    samples, new = restrict(list("abcdef"), groups, ["leakage", "stable"], per_group=2)
    assert samples == ["a", "b", "c", "e"]
    assert new["leakage"] == [0, 2] and new["stable"] == [1, 3] and new["clean"] == [3] and new["leaked"] == [0, 1, 2]


def test_groups_from_an_evaluation_result(tmp_path):
    from rlvr_lens.cli.groups import read_groups
    from rlvr_lens.errors import UserError

    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({
        "kind": "evaluation", "models": ["base", "rl"], "sample_ids": ["a", "b", "c"],
        "labels": [{"leaked": True}, {"leaked": False}, {}],
        "correct": {"base": [False, True, True], "rl": [True, True, False]},
    }))
    groups = read_groups(str(path), 3)
    assert groups["leakage"] == [0] and groups["stable"] == [1] and groups["lost"] == [2]
    assert groups["leaked"] == [0] and groups["clean"] == [1]
    with pytest.raises(UserError, match="out of range"):
        read_groups(str(path), 2)
