"""The shared evaluation step: which samples each checkpoint solves, and the sample groups.

Every checkpoint of a series generates a response to every sample's templated prompt and
the response is graded (:func:`rlvr_lens.data.grading.grade`, anchored extraction, no
last-number fallback). The per-sample correctness defines the groups the mechanistic
analyses (circuits, interventions, scoreboard) are reported on, so they all read one
cached evaluation instead of generating on their own.

* ``samples == 1`` (default): greedy decoding; ``correct`` is whether the greedy response
  is right.
* ``samples = N > 1``: N rollouts per prompt at ``temperature`` (seeded); ``correct`` is
  **any of N correct**, as the Spurious Rewards study counted a solved problem.

Groups (:func:`sample_groups`), as indices into the samples list, for a (base, tuned) pair:

* ``leakage``: tuned correct, base wrong (what the tuning made the model answer);
* ``stable``: both correct; ``lost``: base correct, tuned wrong; ``never``: neither;
* plus the data's own labels when present (the organism's ``leaked`` / ``clean``).

Under ``accelerate launch`` / ``torchrun`` greedy evaluation (``samples == 1``) is sharded by
batches of prompts and gathered (:func:`rlvr_lens.generation.generate` with ``sharded``), so
it equals a single-process run; sampled rollouts (``samples > 1``) draw from one random
stream seeded once per checkpoint, and every process decodes all of them (not sharded: a
split stream would draw other rollouts than one process does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rlvr_lens.data.grading import grade
from rlvr_lens.data.sample import Sample, label_groups
from rlvr_lens.data.templates import apply_template
from rlvr_lens.errors import UserError
from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register
from rlvr_lens.results import Result

GROUP_NAMES = ("leakage", "stable", "lost", "never")


@dataclass
class EvaluationConfig:
    """How every checkpoint is evaluated.

    Attributes:
        template: prompt template (see :mod:`rlvr_lens.data.templates`).
        max_new_tokens: response length limit.
        batch_size: prompts per generation batch.
        samples: rollouts per prompt; 1 = greedy, N > 1 = "any of N correct".
        temperature: sampling temperature, used only when ``samples > 1``.
        seed: torch seed of the sampled rollouts (each checkpoint starts from it).
    """

    template: str = "plain"
    max_new_tokens: int = 256
    batch_size: int = 16
    samples: int = 1
    temperature: float = 1.0
    seed: int = 0

    def check(self) -> None:
        apply_template("x", self.template)
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1; got {self.max_new_tokens}.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1; got {self.batch_size}.")
        if self.samples < 1:
            raise UserError(f"--samples must be at least 1; got {self.samples}.")
        if self.samples > 1 and not self.temperature > 0:
            raise UserError(f"--temperature must be positive when --samples > 1; got {self.temperature}.")

    @property
    def mode(self) -> str:
        return "greedy" if self.samples == 1 else f"any of {self.samples} rollouts at T={self.temperature:g}"


@dataclass
class EvaluationResult(Result):
    """Per-sample correctness of every checkpoint (see the module docstring).

    Attributes:
        config: the :class:`EvaluationConfig` as a dict.
        sample_ids: ids of the samples, in data order.
        labels: each sample's labels (e.g. ``{"leaked": true}``).
        models: checkpoint names, base first.
        correct: per model, per sample (greedy, or "any of N correct").
        response_tokens: per model, per sample: mean response length in tokens over the rollouts.
        accuracy: per model: share of samples correct.
    """

    kind = "evaluation"

    config: dict
    sample_ids: list[str]
    labels: list[dict]
    models: list[str]
    correct: dict[str, list[bool]]
    response_tokens: dict[str, list[float]]
    accuracy: dict[str, float]


def evaluate_loaded(loaded, samples: Sequence[Sample], config: EvaluationConfig, *, show_progress: bool = False):
    """``(correct, mean response tokens)`` per sample for one loaded checkpoint."""
    from rlvr_lens.generation import generate

    prompts = [apply_template(s.prompt, config.template, loaded.tokenizer) for s in samples]
    n = config.samples
    generations = generate(
        loaded.model,
        loaded.tokenizer,
        [p for p in prompts for _ in range(n)],  # rollouts of one prompt are adjacent
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        do_sample=n > 1,
        temperature=config.temperature,
        seed=config.seed if n > 1 else None,
        show_progress=show_progress,
        sharded=True,  # greedy: each process of a launcher decodes its share of the batches (sampled: never)
    )
    correct: list[bool] = []
    lengths: list[float] = []
    for index, sample in enumerate(samples):
        rollouts = generations[index * n : (index + 1) * n]
        correct.append(any(grade(g.text, sample.answer).correct for g in rollouts))
        lengths.append(sum(len(g.token_ids) for g in rollouts) / n)
    return correct, lengths


def evaluate_models(series, samples: Sequence[Sample], config: EvaluationConfig, *, show_progress: bool = False) -> EvaluationResult:
    """Generate and grade every sample with every checkpoint of ``series`` (loaded one at a time)."""
    config.check()
    if not samples:
        raise UserError("The data set has no samples to evaluate.")
    correct: dict[str, list[bool]] = {}
    lengths: dict[str, list[float]] = {}
    for loaded in series.iter_loaded():
        correct[loaded.name], lengths[loaded.name] = evaluate_loaded(loaded, samples, config, show_progress=show_progress)
    return EvaluationResult(
        config=asdict(config),
        sample_ids=[s.id for s in samples],
        labels=[dict(s.labels) for s in samples],
        models=list(series.names),
        correct=correct,
        response_tokens=lengths,
        accuracy={name: sum(c) / len(c) for name, c in correct.items()},
    )


def sample_groups(result: EvaluationResult, tuned: str, base: str | None = None) -> dict[str, list[int]]:
    """Indices of samples per group for the pair (``base``, ``tuned``); ``base`` defaults to the first model.

    Keys: ``leakage``, ``stable``, ``lost``, ``never`` (always present, possibly empty), plus the
    data's labels when present (``leaked`` / ``clean``).
    """
    base = base or result.models[0]
    for name in (base, tuned):
        if name not in result.correct:
            raise UserError(f"Checkpoint {name!r} was not evaluated; evaluated: {', '.join(result.models)}.")
    groups: dict[str, list[int]] = {g: [] for g in GROUP_NAMES}
    for index, (b, t) in enumerate(zip(result.correct[base], result.correct[tuned])):
        name = {(False, True): "leakage", (True, True): "stable", (True, False): "lost", (False, False): "never"}[(b, t)]
        groups[name].append(index)
    pseudo = [Sample(i, "", "", labels=labels) for i, labels in zip(result.sample_ids, result.labels)]
    for name, indices in label_groups(pseudo).items():
        groups.setdefault(name, indices)
    return groups


# ----------------------------------------------------------------------------- report


def plot_evaluation(result: EvaluationResult) -> dict:
    return {}


def section_evaluation(result: EvaluationResult, figures) -> Section:
    mode = EvaluationConfig(**result.config).mode
    rows = [[m, f"{result.accuracy[m]:.3f}", f"{sum(result.response_tokens[m]) / max(1, len(result.sample_ids)):.1f}"] for m in result.models]
    group_rows = []
    for tuned in result.models[1:]:
        groups = sample_groups(result, tuned)
        group_rows.append([f"{result.models[0]} -> {tuned}", *(str(len(groups.get(g, []))) for g in GROUP_NAMES)])
    return Section(
        anchor="evaluation",
        title="Evaluation and sample groups",
        summary=f"{len(result.sample_ids)} samples, {mode}: "
        + ", ".join(f"{m} {result.accuracy[m]:.1%}" for m in result.models)
        + ".",
        paragraphs=[
            "Every checkpoint answers every sample; correctness defines the groups the layer analyses are "
            "reported on: <b>leakage</b> = tuned correct and base wrong, <b>stable</b> = both correct, "
            "<b>lost</b> = base correct and tuned wrong, <b>never</b> = neither."
        ],
        tables=[
            Table(["checkpoint", "accuracy", "mean response tokens"], rows, caption=f"accuracy ({mode})"),
            Table(["pair", *GROUP_NAMES], group_rows, caption="samples per group"),
        ],
    )


register("evaluation", ReportEntry(plot=plot_evaluation, section=section_evaluation, order=15))
