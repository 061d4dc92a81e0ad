"""How a GRPO run (:class:`rlvr_lens.train.grpo.GRPORun`) appears in the report.

Two figures: reward and accuracy (training batches, and greedy accuracy on every
evaluation set) against the optimizer step; KL from the starting model and policy entropy
against the step. :mod:`rlvr_lens.train.grpo` registers this entry for ``grpo_run``.
"""

from __future__ import annotations

from pathlib import Path

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry

_REWARD_TEXT = {
    "correct": "1 when the stated final answer equals the reference, else 0 (the true, verifiable reward)",
    "random": "a coin flip with probability p, independent of the completion (a spurious reward)",
    "format": "1 when the completion states a final answer in the expected format, right or wrong",
    "incorrect": "1 only when the completion states a wrong answer (rewards being wrong)",
    "accuracy_format": "correctness plus 0.01 for stating an answer in the expected format",
}


def _series(steps: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(row["step"], row[key]) for row in steps if row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _eval_names(steps: list[dict]) -> list[str]:
    names: list[str] = []
    for row in steps:
        for key in row:
            if key.startswith("eval/") and key[5:] not in names:
                names.append(key[5:])
    return names


def plot_grpo_run(run) -> dict:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figures = {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    x, y = _series(run.steps, "reward_mean")
    left.plot(x, y, marker=".", label=f"training reward ({run.settings.get('reward')})")
    x, y = _series(run.steps, "accuracy")
    left.plot(x, y, marker=".", label="train-batch accuracy (true reward)")
    left.set_xlabel("optimizer step")
    left.set_ylabel("mean over the generation batch")
    left.legend(fontsize=8)
    left.set_title("Reward and sampled accuracy")
    for name in _eval_names(run.steps):
        x, y = _series(run.steps, f"eval/{name}")
        right.plot(x, y, marker="o", label=name)
    right.set_xlabel("optimizer step")
    right.set_ylabel("greedy accuracy")
    right.set_ylim(-0.02, 1.02)
    right.set_title("Evaluation sets")
    if _eval_names(run.steps):
        right.legend(fontsize=8)
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    figures["curves"] = fig

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    x, y = _series(run.steps, "kl")
    left.plot(x, y, marker=".", color="tab:red")
    left.set_xlabel("optimizer step")
    left.set_ylabel("nats per token")
    left.set_title("KL(policy || starting model) on sampled tokens")
    x, y = _series(run.steps, "entropy")
    right.plot(x, y, marker=".", color="tab:purple")
    right.set_xlabel("optimizer step")
    right.set_ylabel("nats per token")
    right.set_title("Policy entropy on sampled completions")
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    figures["kl_entropy"] = fig
    return figures


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _first_last(steps: list[dict], key: str) -> tuple[float | None, float | None]:
    _, values = _series(steps, key)
    return (values[0], values[-1]) if values else (None, None)


def section_grpo_run(run, figures: dict[str, Path]) -> Section:
    from rlvr_lens.train.settings import upgrade_settings_dict

    s = upgrade_settings_dict(run.settings)  # a run saved before issue 16 has the old names
    reward = s.get("reward", "?")
    first_acc, last_acc = _first_last(run.steps, "accuracy")
    _, last_kl = _first_last(run.steps, "kl")
    evals = _eval_names(run.steps)
    rows = []
    for name in evals:
        first, last = _first_last(run.steps, f"eval/{name}")
        delta = None if first is None or last is None else last - first
        rows.append([name, str(run.eval_sizes.get(name, "")), _fmt(first), _fmt(last), _fmt(delta)])
    summary = (
        f"GRPO with the <b>{reward}</b> reward for {s.get('max_steps')} optimizer steps: sampled accuracy under the "
        f"true reward went from {_fmt(first_acc)} to {_fmt(last_acc)}, and the policy ended {_fmt(last_kl)} nats per "
        f"token (KL) away from its starting model."
    )
    if rows:
        moves = ", ".join(f"{r[0]} {r[2]} to {r[3]}" for r in rows)
        summary += f" Greedy accuracy: {moves}."
    off_policy = s.get("steps_per_generation", 1) > 1 or s.get("num_iterations", 1) > 1
    paragraphs = [
        f"Reward: {_REWARD_TEXT.get(reward, reward)}. Each generation batch holds {s.get('prompts_per_step')} prompts "
        f"x {s.get('num_generations')} sampled completions (temperature {s.get('temperature')}); a completion's advantage "
        "is its reward minus its group's mean, divided by the group's standard deviation.",
        "The <i>train-batch accuracy</i> grades the same sampled completions with the true reward, whatever the "
        "training reward was, so a run on a spurious reward still shows whether the model got better at the task.",
        (
            f"Each batch was used for {s.get('steps_per_generation')} optimizer step(s) x {s.get('num_iterations')} "
            "pass(es): the later steps are off-policy, and the clipped probability ratio "
            f"(epsilon {s.get('epsilon')}) then biases the update towards what the model already prefers. This "
            "clipping bias is how a random reward, whose expected gradient is zero, can still change the model."
            if off_policy
            else "Each batch was used for one on-policy optimizer step, so the probability ratio is 1 and clipping "
            "cannot act: with a random reward the expected update is zero."
        ),
    ]
    if s.get("divergence_weighting"):
        paragraphs.append(
            "Advantages were re-weighted per token by the policy's divergence from the starting model (mean weight 1): "
            "tokens where RL has moved the distribution most get the largest share of the update."
        )
    tables = []
    if rows:
        tables.append(
            Table(["evaluation set", "samples", "at step 0", "at the end", "change"], rows, "Greedy accuracy")
        )
    tables.append(
        Table(
            ["setting", "value"],
            [
                [k, str(s.get(k))]
                for k in (
                    "reward",
                    "max_steps",
                    "learning_rate",
                    "beta",
                    "epsilon",
                    "steps_per_generation",
                    "num_iterations",
                    "max_completion_length",
                    "seed",
                )
            ]
            + [["wall time (s)", f"{run.wall_time_s:.1f}"], ["final checkpoint", run.final_dir]],
            "Run settings",
        )
    )
    figs = []
    if "curves" in figures:
        figs.append(
            (
                "Training reward, sampled accuracy and greedy evaluation accuracy per optimizer step.",
                figures["curves"],
            )
        )
    if "kl_entropy" in figures:
        figs.append(
            ("KL from the starting model and policy entropy per optimizer step.", figures["kl_entropy"])
        )
    return Section("grpo_run", f"GRPO training ({reward} reward)", summary, paragraphs, tables, figs)


ENTRY = ReportEntry(plot=plot_grpo_run, section=section_grpo_run, order=5)
