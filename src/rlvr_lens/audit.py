"""Orchestration: run the selected analyses, cache each result, resume after interruption.

An audit is a list of :class:`AuditStep`. Each step names its inputs (checkpoint
fingerprints, data file hash, config) in ``key``; the result is cached in
``<out>/cache/<name>-<hash>.json`` and reused when the same step runs again with the same
inputs, so an interrupted audit resumes where it stopped and a changed config recomputes
only what it affects. A step that fails is reported (and the audit goes on with the
others); finished results are never lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rlvr_lens.errors import UserError
from rlvr_lens.results import Result

#: Files up to this size are fingerprinted by a hash of their bytes (configs, tokenizers, small
#: weights); larger ones by size, modification and change times (ns) and a hash of their first
#: and last MiB, so a 7B checkpoint is fingerprinted in milliseconds.
_FULL_HASH_BYTES = 16 << 20
_EDGE_BYTES = 1 << 20


def _file_identity(path: Path) -> list:
    """``[name, size, sha256]`` of a small file; ``[name, size, mtime_ns, ctime_ns, sha256 of its
    edges]`` of a large one. A file rewritten in place changes its ``ctime`` even when its
    size and ``mtime`` are restored."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if stat.st_size <= _FULL_HASH_BYTES:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return [path.name, stat.st_size, digest.hexdigest()]
        digest.update(handle.read(_EDGE_BYTES))
        handle.seek(-_EDGE_BYTES, os.SEEK_END)
        digest.update(handle.read(_EDGE_BYTES))
    return [path.name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, digest.hexdigest()]


def fingerprint_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The identity of a checkpoint directory: every file in it (weights, config, tokenizer,
    generation config), see :func:`_file_identity`. Hidden files are left out.

    Hub ids (no local directory) are fingerprinted by name only.
    """
    path = Path(path)
    if not path.is_dir():
        return {"source": str(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return {"source": str(path.resolve()), "files": [_file_identity(p) for p in files]}


def fingerprint_file(path: str | os.PathLike) -> str:
    """SHA-256 of a data file's bytes (directories: of their files' relative names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(f"{file.relative_to(path)}\0".encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def samples_hash(samples) -> str:
    """SHA-256 of the samples as the analyses see them (after field map, layout detection,
    skipped rows and ``--limit``): ids, prompts, answers, solutions and labels, in order."""
    text = json.dumps([s.to_dict() for s in samples], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def step_hash(name: str, key: dict[str, Any]) -> str:
    text = json.dumps({"step": name, **key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class AuditStep:
    """One analysis to run: ``run()`` returns a result of ``result_type``; ``key`` names its inputs."""

    name: str
    result_type: type[Result]
    key: dict[str, Any]
    run: Callable[[], Result]
    #: called with the step's result, computed or loaded from the cache (e.g. to hand the
    #: evaluation's sample groups to the steps after it)
    on_result: Callable[[Result], None] | None = None


@dataclass
class StepOutcome:
    name: str
    status: str  # "computed" | "cached" | "failed"
    cache_file: str | None = None
    error: str | None = None
    seconds: float | None = None  # wall time of the step (loading a cached result included)


@dataclass
class AuditOutcome:
    results: list[Result] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[StepOutcome]:
        return [s for s in self.steps if s.status == "failed"]


def run_steps(
    out_dir: str | os.PathLike,
    steps: list[AuditStep],
    *,
    on_step: Callable[[StepOutcome], None] | None = None,
    keep_going: bool = True,
) -> AuditOutcome:
    """Run (or load from cache) every step; see the module docstring.

    A :class:`UserError` in a step stops the audit (the input is wrong, the other steps
    would fail the same way) unless ``keep_going``; any other exception is recorded with
    its traceback's last line and the audit continues.
    """
    cache = Path(out_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    outcome = AuditOutcome()
    from rlvr_lens.distributed import barrier, is_main_process

    for step in steps:
        barrier()  # under a multi-process launcher every process sees the same cache when it decides
        start = time.perf_counter()
        path = cache / f"{step.name}-{step_hash(step.name, step.key)}.json"
        result: Result | None = None
        if path.exists():
            try:
                result = step.result_type.load(path)
                status = StepOutcome(step.name, "cached", str(path))
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                result = None  # unreadable cache entry (older version): recompute
        if result is None:
            try:
                result = step.run()
                if is_main_process():  # the other processes of a launcher hold the same result
                    result.save(path)
                status = StepOutcome(step.name, "computed", str(path))
            except UserError as error:
                if not keep_going:
                    raise
                status = StepOutcome(step.name, "failed", error=error.message)
            except Exception as error:  # a bug in one analysis must not lose the others
                last = traceback.format_exception_only(type(error), error)[-1].strip()
                status = StepOutcome(step.name, "failed", error=last)
        if result is not None and status.status != "failed":
            outcome.results.append(result)
            if step.on_result is not None:
                step.on_result(result)
        status.seconds = time.perf_counter() - start
        outcome.steps.append(status)
        if on_step is not None:
            on_step(status)
    return outcome


# ----------------------------------------------------------------------------- the audit

ANALYSES = ("perplexity", "contamination", "tokens", "weights", "evaluation", "circuits", "interventions", "scoreboard")
#: What an audit runs when no analysis is named: the interventions (one greedy decode of every
#: sample per layer window, part and mode, and per alpha) and the scoreboard are asked for by name.
DEFAULT_ANALYSES = ANALYSES[:6]


@dataclass
class AuditConfig:
    """What an audit runs, and how (every default is the CLI's).

    Attributes:
        analyses: which of :data:`ANALYSES` to run, in that order.
        template: prompt template for every analysis that prompts a model.
        batch_size: samples per forward pass / generation batch.
        dtype, device: how checkpoints are loaded (``auto`` = as stored / best device).
        fractions: prompt fractions of the contamination probe.
        answer_tokens: tokens generated after the prompt remainder by the probe.
        max_new_tokens: response length of the token-level analysis and cross-sampling.
        token_pairs: tuned checkpoints compared token by token with the base (default:
            every tuned checkpoint).
        cross_sampling: also run cross-sampling in the token-level analysis.
        weights_metrics: ``"all"`` or ``"cheap"`` (sparsity and norms only).
        eval_samples, eval_temperature, eval_seed: the evaluation step's rollouts (1 = greedy;
            N > 1 = "any of N correct" at that temperature); its response length is ``max_new_tokens``.
        circuits: the layer-localization step's :class:`~rlvr_lens.analyses.circuits.CircuitsConfig`
            (its template is the audit's).
        circuits_pairs: tuned checkpoints localized against the base (default: every tuned one).
        fields, limit: how the samples were read (``--fields``, ``--limit``); they are part of
            every cache key (the samples' hash covers them too).

    Every field is either part of the cache key of the steps it affects (:data:`COMMON_OPTIONS`,
    :data:`STEP_OPTIONS`) or only selects which steps run (:data:`SELECTION_OPTIONS`).
    """

    analyses: tuple[str, ...] = DEFAULT_ANALYSES
    template: str = "plain"
    batch_size: int = 8
    dtype: str = "auto"
    device: str = "auto"
    fractions: tuple[float, ...] = (0.4, 0.6, 0.8)
    answer_tokens: int = 64
    max_new_tokens: int = 128
    token_pairs: tuple[str, ...] | None = None
    cross_sampling: bool = True
    weights_metrics: str = "all"
    eval_samples: int = 1
    eval_temperature: float = 1.0
    eval_seed: int = 0
    circuits: Any = None  # a CircuitsConfig (None: its defaults)
    circuits_pairs: tuple[str, ...] | None = None
    fields: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown or not self.analyses:
            raise UserError(f"Unknown analysis {', '.join(unknown) or '(none)'}; choose from {', '.join(ANALYSES)}.")

    def check(self) -> None:
        """Validate every option (one sentence for the first bad one) before any work starts."""
        from rlvr_lens.data import apply_template
        from rlvr_lens.models import resolve_device, resolve_dtype

        resolve_dtype(self.dtype)
        resolve_device(self.device)
        apply_template("x", self.template)
        ranges = {"batch_size": (self.batch_size, 1), "max_new_tokens": (self.max_new_tokens, 1), "answer_tokens": (self.answer_tokens, 0)}
        for name, (value, minimum) in ranges.items():
            if not isinstance(value, int) or value < minimum:
                raise UserError(f"{name.replace('_', '-')} must be a whole number >= {minimum}; got {value!r}.")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be at least 1; got {self.limit}.")
        if not self.fractions or any(not 0.0 < f < 1.0 for f in self.fractions):
            raise UserError(f"Prompt fractions must lie strictly between 0 and 1; got {list(self.fractions)}.")
        if self.weights_metrics not in ("all", "cheap"):
            raise UserError(f"weights metrics must be all or cheap; got {self.weights_metrics!r}.")


#: AuditConfig fields in every model step's key (with the checkpoints, data and samples).
COMMON_OPTIONS = ("template", "batch_size", "dtype", "device", "fields", "limit")
#: AuditConfig fields each step's key adds to the common ones ("weights" uses none of the common ones).
STEP_OPTIONS: dict[str, tuple[str, ...]] = {
    "perplexity": (),
    "contamination": ("fractions", "answer_tokens"),
    "tokens": ("max_new_tokens",),
    "cross-sampling": ("max_new_tokens",),
    "weights": ("weights_metrics", "device"),
    "evaluation": ("max_new_tokens", "eval_samples", "eval_temperature", "eval_seed"),
    "circuits": ("max_new_tokens", "eval_samples", "eval_temperature", "eval_seed", "circuits"),
    "interventions": ("max_new_tokens", "eval_samples", "eval_temperature", "eval_seed"),
    # the scoreboard also scores the per-sample signals of every earlier step of the audit
    "scoreboard": ("max_new_tokens", "eval_samples", "eval_temperature", "eval_seed", "fractions", "answer_tokens", "circuits"),
}
#: AuditConfig fields that only choose which steps run (a step's own name / pair is in its key).
SELECTION_OPTIONS = ("analyses", "token_pairs", "cross_sampling", "circuits_pairs")


def _option_value(config: AuditConfig, name: str) -> Any:
    value = getattr(config, name)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if name == "device":  # "auto" means different devices on different machines
        from rlvr_lens.models import resolve_device

        return str(resolve_device(value))
    return list(value) if isinstance(value, tuple) else value


def common_key(specs, data_path: str | os.PathLike, samples, config: AuditConfig) -> dict[str, Any]:
    """The inputs every model step depends on: each checkpoint's files (weights, config and
    tokenizer), the data file's bytes, the samples as read (hash and count), and the
    :data:`COMMON_OPTIONS`. New steps build their key as ``step_key(common, config, ...)``."""
    return {
        "checkpoints": {s.name: fingerprint_checkpoint(s.source) for s in specs},
        "data": fingerprint_file(data_path),
        "samples": samples_hash(samples),
        "n": len(samples),
        **{name: _option_value(config, name) for name in COMMON_OPTIONS},
    }


def step_key(common: dict[str, Any], config: AuditConfig, options: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """``common`` plus the values of ``options`` (AuditConfig field names) and ``extra``."""
    return {**common, **{name: _option_value(config, name) for name in options}, **extra}


def check_audit_inputs(specs, config: AuditConfig):
    """Validate options and checkpoints once, before any step runs: every option's range, the
    dtype, device and template, every checkpoint's path, its weight files (not truncated), and
    that the checkpoints are comparable (architecture, shapes, tokenizer). Returns the checked
    :class:`~rlvr_lens.models.ModelSeries`."""
    from rlvr_lens.models import ModelSeries

    config.check()
    if "tokens" in config.analyses and config.token_pairs:
        names = [s.name for s in specs]
        missing = [n for n in config.token_pairs if n not in names[1:]]
        if missing:
            raise UserError(f"Token pair {missing[0]!r} is not a tuned checkpoint of this audit ({', '.join(names)}).")
    series = ModelSeries(list(specs), dtype=config.dtype, device=config.device)
    series.check()
    return series


def audit_steps(specs, data_path: str | os.PathLike, samples, config: AuditConfig, *, show_progress: bool = False) -> list[AuditStep]:
    """The steps of an audit of checkpoints ``specs`` (base first) on ``samples`` read from ``data_path``.

    Every input and option is validated first (:func:`check_audit_inputs`), so a bad one is
    one sentence before any work. Each step's ``key`` is :func:`common_key` plus its options.

    Models are loaded inside each step and freed after it, so at most two checkpoints are in
    memory at a time (the token-level analysis needs a pair).
    """
    from rlvr_lens.models import free_model, load_model

    series = check_audit_inputs(specs, config)
    common = common_key(specs, data_path, samples, config)
    steps: list[AuditStep] = []
    if "perplexity" in config.analyses:
        from rlvr_lens.analyses.perplexity import PerplexityResult, perplexity_paradox

        steps.append(
            AuditStep(
                "perplexity",
                PerplexityResult,
                step_key(common, config, STEP_OPTIONS["perplexity"]),
                lambda: perplexity_paradox(
                    series, samples, template=config.template, batch_size=config.batch_size, show_progress=show_progress
                ),
            )
        )
    if "contamination" in config.analyses:
        from rlvr_lens.analyses.contamination import ContaminationResult, partial_prompt_probe

        steps.append(
            AuditStep(
                "contamination",
                ContaminationResult,
                step_key(common, config, STEP_OPTIONS["contamination"]),
                lambda: partial_prompt_probe(
                    series,
                    samples,
                    fractions=config.fractions,
                    template=config.template,
                    answer_tokens=config.answer_tokens,
                    batch_size=config.batch_size,
                    show_progress=show_progress,
                ),
            )
        )
    if "tokens" in config.analyses:
        from rlvr_lens.analyses.tokens import (
            CrossSamplingConfig,
            CrossSamplingResult,
            TokenDivergenceConfig,
            TokenDivergenceResult,
            cross_sampling,
            token_divergence,
        )

        base_spec = specs[0]
        wanted = config.token_pairs or tuple(s.name for s in specs[1:])
        by_name = {s.name: s for s in specs}
        for name in wanted:
            tuned_spec = by_name[name]

            def run_on_pair(analysis, settings_type, tuned_spec=tuned_spec):
                """Load base and tuned, run ``analysis`` on them, and free both whatever happens."""
                base = tuned = None
                try:
                    base = load_model(base_spec.source, config.dtype, config.device, name=base_spec.name)
                    tuned = load_model(tuned_spec.source, config.dtype, config.device, name=tuned_spec.name)
                    settings = settings_type(
                        template=config.template, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
                    )
                    return analysis(base, tuned, samples, settings, show_progress=show_progress)
                finally:
                    free_model(base), free_model(tuned)

            pair = [base_spec.name, name]
            tokens_key = step_key(common, config, STEP_OPTIONS["tokens"], pair=pair)
            steps.append(
                AuditStep(f"tokens-{name}", TokenDivergenceResult, tokens_key, partial(run_on_pair, token_divergence, TokenDivergenceConfig))
            )
            if config.cross_sampling:
                cross_key = step_key(common, config, STEP_OPTIONS["cross-sampling"], pair=pair)
                steps.append(
                    AuditStep(
                        f"cross-sampling-{name}", CrossSamplingResult, cross_key, partial(run_on_pair, cross_sampling, CrossSamplingConfig)
                    )
                )
    if "weights" in config.analyses:
        from rlvr_lens.analyses.weights import WeightsConfig, WeightsResult, weight_forensics

        tuned_dirs = {s.name: s.source for s in specs[1:]}
        steps.append(
            AuditStep(
                "weights",
                WeightsResult,
                step_key({"checkpoints": common["checkpoints"]}, config, STEP_OPTIONS["weights"]),
                lambda: weight_forensics(
                    specs[0].source,
                    tuned_dirs,
                    WeightsConfig(metrics=config.weights_metrics, device="cpu" if config.device == "mps" else config.device),
                    base_name=specs[0].name,
                    show_progress=show_progress,
                ),
            )
        )
    needs_groups = {"evaluation", "circuits", "interventions", "scoreboard"} & set(config.analyses)
    if needs_groups:
        evaluation_step, evaluation = make_evaluation_step(series, samples, common, config, show_progress=show_progress)
        steps.append(evaluation_step)
    if "circuits" in config.analyses:
        steps += circuits_steps(specs, samples, common, config, evaluation, show_progress=show_progress)
    if {"interventions", "scoreboard"} & set(config.analyses):
        steps += _intervention_steps(specs, samples, common, config, evaluation, steps, show_progress=show_progress)
    return steps


def _intervention_steps(specs, samples, common: dict, config: AuditConfig, evaluation: StepValue, earlier: list[AuditStep], *, show_progress: bool = False) -> list[AuditStep]:
    """Reset/retain, neuron scaling and the scoreboard for each tuned checkpoint against the base,
    on the evaluation's groups; the scoreboard also scores the earlier steps' per-sample signals."""
    from rlvr_lens.analyses.evaluation import sample_groups
    from rlvr_lens.interventions_audit import intervention_steps

    finished: list[Result] = []
    for step in earlier:  # collect each earlier step's result as it finishes (cached or computed)
        step.on_result = _chained(step.on_result, finished.append)
    wanted = (("interventions", "interventions-steering") if "interventions" in config.analyses else ()) + (
        ("scoreboard",) if "scoreboard" in config.analyses else ()
    )
    out = []
    for tuned in specs[1:]:
        pair_steps = intervention_steps(
            [specs[0], tuned],
            samples,
            config,
            groups=lambda tuned=tuned: sample_groups(evaluation.get(), tuned.name, specs[0].name),
            steps=wanted,
            prior_results=lambda: list(finished),
            show_progress=show_progress,
        )
        for step in pair_steps:
            options = STEP_OPTIONS["scoreboard" if step.name == "scoreboard" else "interventions"]
            extra = {"analyses": list(config.analyses)} if step.name == "scoreboard" else {}
            step.key = step_key(common, config, options, pair=[specs[0].name, tuned.name], step_settings=step.key, **extra)
            step.name = f"{step.name}-{tuned.name}"
        out += pair_steps
    return out


def _chained(first: Callable[[Result], None] | None, second: Callable[[Result], None]) -> Callable[[Result], None]:
    def both(result: Result) -> None:
        if first is not None:
            first(result)
        second(result)

    return both


def circuits_steps(specs, samples, common: dict, config: AuditConfig, evaluation: StepValue, *, show_progress: bool = False) -> list[AuditStep]:
    """One layer-localization step per tuned checkpoint, on the evaluation step's sample groups."""
    from dataclasses import asdict, replace

    from rlvr_lens.analyses.circuits import CircuitsConfig, CircuitsResult, circuits
    from rlvr_lens.analyses.evaluation import sample_groups
    from rlvr_lens.models import free_model, load_model

    settings = replace(config.circuits or CircuitsConfig(), template=config.template)
    settings.check()
    base_spec = specs[0]
    by_name = {s.name: s for s in specs}
    wanted = config.circuits_pairs or tuple(s.name for s in specs[1:])
    missing = [n for n in wanted if n not in by_name or n == base_spec.name]
    if missing:
        raise UserError(f"Circuits pair {missing[0]!r} is not a tuned checkpoint of this audit ({', '.join(by_name)}).")
    steps = []
    for name in wanted:

        def run(name=name) -> Result:
            groups = sample_groups(evaluation.get(), name, base_spec.name)
            base = tuned = None
            try:
                base = load_model(base_spec.source, config.dtype, config.device, name=base_spec.name)
                tuned = load_model(by_name[name].source, config.dtype, config.device, name=name)
                return circuits(base, tuned, samples, groups, settings, show_progress=show_progress)
            finally:
                free_model(base), free_model(tuned)

        key = step_key(common, config, STEP_OPTIONS["circuits"], pair=[base_spec.name, name], settings=asdict(settings))
        steps.append(AuditStep(f"circuits-{name}", CircuitsResult, key, run))
    return steps


class StepValue:
    """The result of an earlier step, handed to later ones (set by the step's ``on_result``)."""

    def __init__(self, name: str):
        self.name = name
        self.value: Result | None = None
        self.key: dict[str, Any] = {}

    def set(self, value: Result) -> None:
        self.value = value

    def get(self) -> Result:
        if self.value is None:
            raise UserError(f"The {self.name} step did not produce a result, so the steps that need it cannot run.")
        return self.value


def make_evaluation_step(series, samples, common: dict, config: AuditConfig, *, show_progress: bool = False):
    """``(step, value)``: the shared evaluation step and the holder of its result (for the groups)."""
    from dataclasses import asdict

    from rlvr_lens.analyses.evaluation import EvaluationConfig, EvaluationResult, evaluate_models

    eval_config = EvaluationConfig(
        template=config.template,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        samples=config.eval_samples,
        temperature=config.eval_temperature,
        seed=config.eval_seed,
    )
    eval_config.check()
    value = StepValue("evaluation")
    step = AuditStep(
        "evaluation",
        EvaluationResult,
        step_key(common, config, STEP_OPTIONS["evaluation"], settings=asdict(eval_config)),
        lambda: evaluate_models(series, samples, eval_config, show_progress=show_progress),
        on_result=value.set,
    )
    value.key = step.key  # a step that reads the groups keys on the evaluation's inputs too
    return step, value
