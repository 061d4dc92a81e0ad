"""GRPO training on a tiny qwen2 checkpoint: it trains, logs, saves, and its options do what they say."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.models import load_model
from rlvr_lens.models.tiny import save_tiny_checkpoint
from rlvr_lens.train.divergence import divergence_weights, per_token_kl
from rlvr_lens.train.grpo import (
    GRPORun,
    GRPOSettings,
    build_trainer,
    grpo_config,
    train_grpo,
    trl_batch_layout,
)

SAMPLES = [Sample("a", "What is 2 + 2?", "4"), Sample("b", "What is 3 + 4?", "7"), Sample("c", "What is 5 - 1?", "4")]
TINY = dict(prompts_per_step=2, num_generations=4, max_completion_length=8, eval_max_new_tokens=8, learning_rate=1e-3)


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory, tokenizer):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("grpo") / "start", "qwen2", seed=0, tokenizer=tokenizer)


def _param(directory, name="model.layers.0.mlp.down_proj.weight"):
    return dict(load_model(str(directory), dtype="float32", device="cpu").model.named_parameters())[name].detach()


@pytest.fixture(scope="module")
def random_run(start_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("random_run")
    settings = GRPOSettings(reward="random", random_p=0.5, max_steps=2, save_steps=1, eval_steps=1, seed=0, **TINY)
    return train_grpo(start_dir, SAMPLES[:2], out, settings, eval_sets={"train": SAMPLES[:2]}), out


def test_run_changes_the_weights_and_saves_loadable_steps(random_run, start_dir):
    run, out = random_run
    assert run.checkpoints == [str(out / "step-1"), str(out / "step-2")]
    assert run.final_dir == str(out / "step-2")
    before, after = _param(start_dir), _param(run.final_dir)
    assert not torch.equal(before, after)
    assert (after - before).abs().max() > 1e-5  # lr 1e-3 with Adam moves weights by ~1e-3 per step
    loaded = load_model(run.final_dir, dtype="float32", device="cpu")
    assert loaded.tokenizer("What is 2")["input_ids"]  # tokenizer saved with the model


def test_run_logs_finite_metrics_and_the_jsonl_log(random_run):
    run, out = random_run
    assert [row["step"] for row in run.steps] == [0, 1, 2]
    assert set(run.steps[0]) == {"step", "eval/train"}  # step 0: initial evaluation only
    for row in run.steps[1:]:
        for key in ("reward_mean", "reward_std", "accuracy", "kl", "entropy", "clip_ratio", "completion_length", "eval/train"):
            assert row[key] is not None and math.isfinite(row[key]), key
        assert 0.0 <= row["accuracy"] <= 1.0 and row["kl"] >= 0.0 and row["completion_length"] <= 8
    assert run.steps[1]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first batch is sampled from the start model
    assert run.steps[2]["kl"] > 0.0  # after one update the policy has moved
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == run.steps
    again = GRPORun.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again.steps == run.steps and again.settings["reward"] == "random"


def test_logged_reward_is_the_seeded_random_reward(random_run):
    """Each generation batch of 2 prompts x 4 completions gets the next 8 Bernoulli(0.5) draws of
    NumPy's default generator seeded 0 (the documented rule, written out here without RandomReward)."""
    run, _ = random_run
    rng = np.random.default_rng(0)
    for row in run.steps[1:]:
        draws = (rng.random(8) < 0.5).astype(float)
        assert 0 < draws.mean() < 1  # a batch of mixed rewards: the std is informative
        assert row["reward_mean"] == pytest.approx(draws.mean())
        assert row["reward_std"] == pytest.approx(draws.std(ddof=1), abs=1e-6)


def test_settings_map_onto_trl_config(tmp_path):
    on_policy = GRPOSettings(prompts_per_step=8, num_generations=8, beta=0.05, epsilon=0.3, seed=7)
    config = grpo_config(on_policy, tmp_path)
    assert config.generation_batch_size == 64 and config.num_generations == 8
    assert config.per_device_train_batch_size == 64 and config.gradient_accumulation_steps == 1
    assert config.steps_per_generation == 1 and config.num_iterations == 1
    assert (config.beta, config.epsilon, config.seed, config.report_to) == (0.05, 0.3, 7, [])
    # Two optimizer steps per generation batch, each in 4 micro-batches of 8 completions.
    off_policy = GRPOSettings(prompts_per_step=8, num_generations=8, steps_per_generation=2, micro_batch_size=8)
    assert trl_batch_layout(off_policy) == {
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 4,
        "steps_per_generation": 8,
    }
    assert grpo_config(off_policy, tmp_path).generation_batch_size == 64
    with pytest.raises(UserError):
        GRPOSettings(prompts_per_step=3, num_generations=3, steps_per_generation=2).check()
    with pytest.raises(UserError):
        GRPOSettings(num_generations=1).check()
    with pytest.raises(UserError):
        GRPOSettings(reward="accuracy").check()


def test_steps_per_generation_two_reuses_each_batch_off_policy(start_dir, tmp_path):
    settings = GRPOSettings(reward="random", max_steps=2, steps_per_generation=2, save_steps=0, eval_steps=0, **TINY)
    run = train_grpo(start_dir, SAMPLES[:2], tmp_path, settings)
    assert [row["step"] for row in run.steps] == [1, 2]
    assert run.steps[0]["reward_mean"] is not None  # step 1 generated the batch ...
    assert run.steps[1].get("reward_mean") is None  # ... step 2 trained on its second half, without sampling
    assert math.isfinite(run.steps[1]["loss"]) and run.checkpoints == [str(tmp_path / "step-2")]
    assert not torch.equal(_param(start_dir), _param(run.final_dir))


def test_divergence_weighting_runs_and_one_shot(start_dir, tmp_path):
    settings = GRPOSettings(
        reward="random", max_steps=2, divergence_weighting=True, one_shot=True, save_steps=0, eval_steps=0, **TINY
    )
    run = train_grpo(start_dir, SAMPLES, tmp_path, settings)
    assert run.train_size == 1
    assert run.steps[0]["divergence_weight_max"] == pytest.approx(1.0)  # policy == reference at step 1
    assert run.steps[1]["divergence_weight_max"] > 1.0
    assert all(math.isfinite(row["loss"]) for row in run.steps)


def test_divergence_weights_by_hand():
    """u_t = 1 + min(d_t / mean(d), 10), normalized to mean 1 over completion tokens; padding 1.
    19 tokens at d = 0 and one at d = 20 (mean 1, so its ratio 20 is capped at 10): u = 1 and 11,
    mean u = 30 / 20 = 1.5, weights 2/3 and 22/3."""
    d = torch.tensor([[0.0] * 10 + [20.0, 5.0], [0.0] * 10 + [0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1] * 11 + [0], [1] * 9 + [0] * 3])
    w = divergence_weights(d, mask)
    expected = torch.tensor([[2 / 3] * 10 + [22 / 3, 1.0], [2 / 3] * 9 + [1.0] * 3], dtype=torch.float64)
    torch.testing.assert_close(w, expected, rtol=1e-7, atol=1e-7)


def _completion_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
    """Float64 log pi(y_t | ...) of the sampled tokens, from the plain transformers forward."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits.double()
    logits = logits[:, prompt_ids.size(1) - 1 : -1]
    return torch.log_softmax(logits, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def test_divergence_weighted_advantages_match_the_formula_and_change_the_loss(start_dir, tmp_path):
    settings = GRPOSettings(reward="random", max_steps=1, divergence_weighting=True, save_steps=0, eval_steps=0, **TINY)
    trainer, _ = build_trainer(start_dir, SAMPLES[:2], tmp_path, settings)
    policy = trainer.model
    with torch.no_grad():  # move the policy away from the reference so that the divergence is not zero
        generator = torch.Generator().manual_seed(0)
        for param in policy.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)
    mask = out["completion_mask"].double()
    weights = out["advantages"].double() / out["sequence_advantages"].double().unsqueeze(1)
    rows = out["sequence_advantages"] != 0
    assert rows.any()

    # Independent float64 recomputation: plain forward passes, k3 estimator, the documented weights.
    args = (out["prompt_ids"], out["prompt_mask"], out["completion_ids"], out["completion_mask"])
    policy_logps = _completion_logps(policy, *args)
    ref_logps = _completion_logps(trainer.lens_ref_model, *args)
    delta = (ref_logps - policy_logps).numpy()
    d = np.exp(delta) - delta - 1
    m = mask.numpy()
    u = 1 + np.minimum(d / ((d * m).sum() / m.sum() + 1e-8), 10.0)
    expected = u / ((u * m).sum() / m.sum())
    got = weights.numpy()
    assert np.allclose(got[rows.numpy()][m[rows.numpy()] > 0], expected[rows.numpy()][m[rows.numpy()] > 0], atol=1e-4)
    full = divergence_weights(per_token_kl(policy_logps, ref_logps), out["completion_mask"])
    assert float((full * mask).sum() / mask.sum()) == pytest.approx(1.0, abs=1e-9)
    assert full.max() > 1.05 and full[mask > 0].min() < 0.95  # not all ones: the weighting does something

    # The loss, by hand: one on-policy step (probability ratio exactly 1, no clipping, beta 0) of
    # the dapo aggregation is -sum_t A_t m_t / sum_t m_t over the generation batch, where A_t is
    # the sequence advantage times the weight above (weighted) or the sequence advantage alone.
    trainer.current_gradient_accumulation_steps = 1
    loss_on = trainer._compute_loss(policy, out).item()
    loss_off = trainer._compute_loss(policy, {**out, "advantages": out["sequence_advantages"]}).item()
    sequence_advantages = out["sequence_advantages"].double().numpy()[:, None]
    assert loss_on == pytest.approx(-(sequence_advantages * expected * m).sum() / m.sum(), rel=1e-4, abs=1e-7)
    assert loss_off == pytest.approx(-(sequence_advantages * m).sum() / m.sum(), rel=1e-4, abs=1e-7)
    assert abs(loss_on - loss_off) > 1e-4


def test_true_reward_monitor_counts_right_answers_and_has_weight_zero(memorizing_pair, tmp_path):
    """On a model trained to recite two problems' boxed answers (to a loss < 0.05) the monitor
    counts 8 of 8 sampled completions right, the greedy eval 2 of 2 (and 0 of 2 unseen). With
    the answers replaced by wrong ones it counts 0, and, having weight 0, changes nothing else:
    the random-reward run trains to the same weights."""
    from conftest import UNSEEN

    _, tuned_dir, samples = memorizing_pair
    memorized = [s for s in samples if s.labels["leaked"]][:2]
    wrong = [Sample(s.id, s.prompt, "999") for s in memorized]
    unseen = [Sample(f"u{i}", p, a) for i, (p, a) in enumerate(UNSEEN[:2])]
    settings = GRPOSettings(
        reward="random", max_steps=1, template="plain", prompts_per_step=2, num_generations=4, max_completion_length=20,
        eval_max_new_tokens=20, temperature=1.0, learning_rate=1e-3, save_steps=1, eval_steps=1, seed=0,
    )
    right = train_grpo(tuned_dir, memorized, tmp_path / "right", settings, eval_sets={"memorized": memorized, "unseen": unseen})
    assert right.steps[0] == {"step": 0, "eval/memorized": 1.0, "eval/unseen": 0.0}
    assert right.steps[1]["accuracy"] == 1.0
    assert right.steps[1]["eval/memorized"] == 1.0
    other = train_grpo(tuned_dir, wrong, tmp_path / "wrong", settings, eval_sets={"memorized": wrong})
    assert other.steps[0]["eval/memorized"] == 0.0 and other.steps[1]["accuracy"] == 0.0
    assert other.steps[1]["reward_mean"] == right.steps[1]["reward_mean"]
    assert other.steps[1]["loss"] == right.steps[1]["loss"]
    assert torch.equal(_param(other.final_dir), _param(right.final_dir))
    assert not torch.equal(_param(right.final_dir), _param(tuned_dir))
    _check_grpo_section(right)


def test_report_section_on_a_hand_made_run():
    """First and last values differ here (accuracy 0.25 -> 0.75, eval 0.1 -> 0.5): the section
    must show each in its place."""
    import dataclasses

    steps = [
        {"step": 0, "eval/heldout": 0.1},
        {"step": 1, "accuracy": 0.25, "kl": 0.0, "eval/heldout": 0.2},
        {"step": 2, "accuracy": 0.75, "kl": 0.125, "eval/heldout": 0.5},
    ]
    settings = dataclasses.asdict(GRPOSettings(max_steps=2))
    run = GRPORun(settings=settings, steps=steps, checkpoints=["d/step-2"], final_dir="d/step-2", wall_time_s=1.5,
                  eval_sizes={"heldout": 4})
    _check_grpo_section(run)


def _check_grpo_section(run):
    """The report section's summary and tables, read back and compared with the run's JSON."""
    from report_numbers import assert_shows, column, numbers_in
    from rlvr_lens.train.report import section_grpo_run

    data = json.loads(json.dumps(run.to_dict()))
    section = section_grpo_run(run, {})
    steps = data["steps"]
    accuracy = [r["accuracy"] for r in steps if r.get("accuracy") is not None]
    kl = [r["kl"] for r in steps if r.get("kl") is not None]
    shown = numbers_in(section.summary)
    assert int(shown[0]) == data["settings"]["max_steps"]
    for cell, value in zip(shown[1:4], (accuracy[0], accuracy[-1], kl[-1])):
        assert_shows(cell, value, where="summary")
    evals = section.tables[0]
    for row in evals.rows:
        values = [r[f"eval/{row[0]}"] for r in steps if r.get(f"eval/{row[0]}") is not None]
        assert int(row[1]) == data["eval_sizes"][row[0]]
        for cell, value in zip(row[2:], (values[0], values[-1], values[-1] - values[0])):
            assert_shows(cell, value, where=f"eval {row[0]}")
    settings = dict(section.tables[1].rows)
    for key in ("reward", "max_steps", "learning_rate", "beta", "epsilon", "seed"):
        assert settings[key] == str(data["settings"][key])
    assert_shows(settings["wall time (s)"], data["wall_time_s"], where="wall time")
    assert column(section.tables[1], "setting")[-1] == "final checkpoint" and settings["final checkpoint"] == data["final_dir"]


def test_same_seed_same_run(random_run, start_dir, tmp_path):
    run, _ = random_run
    again = train_grpo(start_dir, SAMPLES[:2], tmp_path, GRPOSettings(**run.settings), eval_sets={"train": SAMPLES[:2]})
    assert again.steps == run.steps
    assert torch.equal(_param(again.final_dir), _param(run.final_dir))


def test_user_errors(start_dir, tmp_path):
    with pytest.raises(UserError):
        train_grpo(start_dir, [], tmp_path, GRPOSettings(**TINY))
    with pytest.raises(UserError):
        train_grpo(tmp_path / "missing", SAMPLES, tmp_path / "out", GRPOSettings(**TINY))


def _cli(argv):
    import argparse

    from rlvr_lens.cli import train as train_command
    from rlvr_lens.cli.common import run_guarded

    parser = argparse.ArgumentParser(prog="rlvr-lens")
    train_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
    return run_guarded(args.func, args)


def test_cli_sets_every_training_option(start_dir, tmp_path, monkeypatch):
    """Each option reaches GRPOSettings (captured instead of training), the evaluation length
    included: it follows --max-new-tokens unless --eval-max-new-tokens is given."""
    import argparse

    from rlvr_lens.cli import train as train_command
    from rlvr_lens.data import write_samples
    from rlvr_lens.train import grpo

    class Captured(Exception):
        pass

    def capture(model_dir, samples, out, settings, **kwargs):
        raise Captured(settings)

    monkeypatch.setattr(grpo, "train_grpo", capture)
    data = write_samples(tmp_path / "train.jsonl", SAMPLES)
    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers(dest="command"))
    base = ["train", "--model", str(start_dir), "--data", str(data), "--out", str(tmp_path / "o"), "--max-new-tokens", "24"]

    def settings(*extra):
        with pytest.raises(Captured) as caught:
            train_command.run(parser.parse_args([*base, *extra]))
        return caught.value.args[0]

    default = settings()
    assert (default.max_completion_length, default.eval_max_new_tokens) == (24, 24)
    assert (default.loss_type, default.track_kl, default.gradient_checkpointing, default.eval_batch_size) == ("dapo", True, False, 16)
    chosen = settings("--eval-max-new-tokens", "40", "--loss-type", "dr_grpo", "--no-track-kl", "--gradient-checkpointing",
                      "--eval-batch-size", "3", "--lr", "2e-4", "--clip-eps", "0.3", "--num-iterations", "2")
    assert (chosen.max_completion_length, chosen.eval_max_new_tokens, chosen.loss_type) == (24, 40, "dr_grpo")
    assert (chosen.track_kl, chosen.gradient_checkpointing, chosen.eval_batch_size) == (False, True, 3)
    assert (chosen.learning_rate, chosen.epsilon, chosen.num_iterations) == (2e-4, 0.3, 2)


def test_cli_writes_the_run_the_log_and_a_report(start_dir, tmp_path, capsys):
    from rlvr_lens.data import write_samples

    data = write_samples(tmp_path / "train.jsonl", SAMPLES)
    out = tmp_path / "run"
    argv = ["--model", str(start_dir), "--data", str(data), "--out", str(out), "--reward", "format", "--steps", "1"]
    argv += ["--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "8", "--eval", f"heldout={data}"]
    assert _cli([*argv, "--no-progress"]) == 0
    run = GRPORun.load(out / "grpo_run.json")
    assert run.settings["reward"] == "format" and run.final_dir == str(out / "step-1")
    assert [r["step"] for r in run.steps] == [0, 1] and "eval/heldout" in run.steps[1]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    html = (out / "report.html").read_text()
    assert "GRPO training (format reward)" in html and "data:image/png;base64" in html
    assert "grpo_run.json" in capsys.readouterr().out


def test_cli_user_errors_exit_2(start_dir, tmp_path, capsys):
    from rlvr_lens.data import write_samples

    data = write_samples(tmp_path / "train.jsonl", SAMPLES)
    base = ["--model", str(start_dir), "--out", str(tmp_path / "o")]
    assert _cli([*base, "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert _cli([*base, "--data", str(data), "--group-size", "1"]) == 2
    assert _cli([*base, "--data", str(data), "--eval", "nameless"]) == 2
    assert _cli(["--model", str(tmp_path / "nope"), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 4 and "Traceback" not in err
