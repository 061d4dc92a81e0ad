"""Orchestration: run the selected analyses, cache each result, resume after interruption.

An audit is a list of :class:`AuditStep`. Each step names its inputs (checkpoint
fingerprints, data file hash, config) in ``key``; the result is cached in
``<out>/cache/<name>-<hash>.json`` and reused when the same step runs again with the same
inputs, so an interrupted audit resumes where it stopped and a changed config recomputes
only what it affects. A step that fails is reported (and the audit goes on with the
others); finished results are never lost.
"""

from __future__ import annotations

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

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def fingerprint_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A cheap identity of a checkpoint directory: names, sizes and mtimes of its files.

    Hub ids (no local directory) are fingerprinted by name only.
    """
    path = Path(path)
    if not path.is_dir():
        return {"source": str(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return {
        "source": str(path.resolve()),
        "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files],
    }


def fingerprint_file(path: str | os.PathLike) -> str:
    """SHA-256 of a data file's bytes (directories: of their file names, sizes and mtimes)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                digest.update(f"{p.relative_to(path)}:{p.stat().st_size}:{int(p.stat().st_mtime)}".encode())
    else:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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
        status.seconds = time.perf_counter() - start
        outcome.steps.append(status)
        if on_step is not None:
            on_step(status)
    return outcome


# ----------------------------------------------------------------------------- the audit

ANALYSES = ("perplexity", "contamination", "tokens", "weights")


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
    """

    analyses: tuple[str, ...] = ANALYSES
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

    def __post_init__(self) -> None:
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown or not self.analyses:
            raise UserError(f"Unknown analysis {', '.join(unknown) or '(none)'}; choose from {', '.join(ANALYSES)}.")


def audit_steps(specs, data_path: str | os.PathLike, samples, config: AuditConfig, *, show_progress: bool = False) -> list[AuditStep]:
    """The steps of an audit of checkpoints ``specs`` (base first) on ``samples`` read from ``data_path``.

    Models are loaded inside each step and freed after it, so at most two checkpoints are in
    memory at a time (the token-level analysis needs a pair).
    """
    from rlvr_lens.models import ModelSeries, free_model, load_model

    fingerprints = {s.name: fingerprint_checkpoint(s.source) for s in specs}
    common = {"checkpoints": fingerprints, "data": fingerprint_file(data_path), "n": len(samples), "template": config.template}
    series = ModelSeries(list(specs), dtype=config.dtype, device=config.device)
    series.check()
    series._checked = True
    steps: list[AuditStep] = []
    if "perplexity" in config.analyses:
        from rlvr_lens.analyses.perplexity import PerplexityResult, perplexity_paradox

        steps.append(
            AuditStep(
                "perplexity",
                PerplexityResult,
                {**common, "dtype": config.dtype},
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
                {**common, "dtype": config.dtype, "fractions": list(config.fractions), "answer_tokens": config.answer_tokens},
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
        missing = [n for n in wanted if n not in by_name or n == base_spec.name]
        if missing:
            raise UserError(f"Token pair {missing[0]!r} is not a tuned checkpoint of this audit ({', '.join(by_name)}).")
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

            pair_key = {**common, "pair": [base_spec.name, name], "dtype": config.dtype, "max_new_tokens": config.max_new_tokens}
            steps.append(
                AuditStep(f"tokens-{name}", TokenDivergenceResult, pair_key, partial(run_on_pair, token_divergence, TokenDivergenceConfig))
            )
            if config.cross_sampling:
                steps.append(
                    AuditStep(
                        f"cross-sampling-{name}", CrossSamplingResult, pair_key, partial(run_on_pair, cross_sampling, CrossSamplingConfig)
                    )
                )
    if "weights" in config.analyses:
        from rlvr_lens.analyses.weights import WeightsConfig, WeightsResult, weight_forensics

        tuned_dirs = {s.name: s.source for s in specs[1:]}
        steps.append(
            AuditStep(
                "weights",
                WeightsResult,
                {"checkpoints": fingerprints, "metrics": config.weights_metrics},
                lambda: weight_forensics(
                    specs[0].source,
                    tuned_dirs,
                    WeightsConfig(metrics=config.weights_metrics),
                    base_name=specs[0].name,
                    show_progress=show_progress,
                ),
            )
        )
    return steps
