"""Audit steps of the interventions (reset/retain, neuron scaling) and the detection scoreboard.

:func:`intervention_steps` builds them so that wiring into ``audit.audit_steps`` is one call::

    steps += intervention_steps(specs, samples, config, groups=lambda: sample_groups(evaluation, tuned),
                                prior_results=lambda: outcome_so_far.results)

``groups`` (name -> sample indices) and ``prior_results`` may be callables, evaluated when
the step runs, because they come from steps that run earlier in the same audit. Each step
loads the base and the last (tuned) checkpoint and frees them when it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rlvr_lens.audit import AuditStep, fingerprint_checkpoint

Groups = Mapping[str, Sequence[int]] | Callable[[], Mapping[str, Sequence[int]]]


def _resolve(value):
    return value() if callable(value) else value


def intervention_steps(
    specs,
    samples,
    config,
    groups: Groups,
    *,
    steps: Sequence[str] = ("interventions", "interventions-steering", "scoreboard"),
    prior_results: Callable[[], list] | None = None,
    zero_leak_specs=None,
    ablation=None,
    steering=None,
    show_progress: bool = False,
) -> list[AuditStep]:
    """Steps ``"interventions"`` (:class:`AblationResult`), ``"interventions-steering"``
    (:class:`SteeringResult`) and ``"scoreboard"`` (:class:`ScoreboardResult`) for the pair
    (``specs[0]``, ``specs[-1]``).

    Args:
        config: the audit's config; ``template``, ``batch_size``, ``dtype``, ``device`` and
            ``max_new_tokens`` are read from it.
        groups: sample groups, or a callable returning them when the step runs.
        prior_results: callable returning finished results whose per-sample signals the
            scoreboard scores too (perplexity, contamination, token divergence, circuits).
        zero_leak_specs: (base, tuned) specs of a zero-leak organism for the false alarms.
        ablation, steering: an :class:`AblationConfig` / :class:`SteeringConfig` (default:
            their defaults with the audit's decoding settings).
    """
    from rlvr_lens.analyses.ablation import AblationConfig, AblationResult, reset_retain
    from rlvr_lens.analyses.detectors import DetectorsConfig
    from rlvr_lens.analyses.scoreboard import (
        ScoreboardConfig,
        ScoreboardResult,
        collect_signals,
        measure_signals,
        scoreboard,
    )
    from rlvr_lens.analyses.steering import SteeringConfig, SteeringResult, neuron_steering
    from rlvr_lens.models import free_model, load_model

    template = getattr(config, "template", "plain")
    batch_size = getattr(config, "batch_size", 8)
    dtype, device = getattr(config, "dtype", "auto"), getattr(config, "device", "auto")
    max_new = getattr(config, "max_new_tokens", 256)
    ablation = ablation or AblationConfig(template=template, max_new_tokens=max_new, batch_size=batch_size)
    steering = steering or SteeringConfig(template=template, max_new_tokens=max_new, batch_size=batch_size)
    base_spec, tuned_spec = specs[0], specs[-1]
    key = {
        "checkpoints": {s.name: fingerprint_checkpoint(s.source) for s in (base_spec, tuned_spec)},
        "samples": [s.id for s in samples],
        "dtype": dtype,
    }

    def with_pair(fn, pair=(base_spec, tuned_spec)):
        base = tuned = None
        try:
            base = load_model(pair[0].source, dtype, device, name=pair[0].name)
            tuned = load_model(pair[1].source, dtype, device, name=pair[1].name)
            return fn(base, tuned)
        finally:
            free_model(base), free_model(tuned)

    def run_scoreboard():
        detectors = DetectorsConfig(template=template, batch_size=batch_size)
        signals, _ = with_pair(lambda b, t: measure_signals(b, t, samples, detectors))
        signals.update(collect_signals(_resolve(prior_results) or [], [s.id for s in samples], tuned=tuned_spec.name))
        zero = None
        if zero_leak_specs is not None:
            zero, _ = with_pair(lambda b, t: measure_signals(b, t, samples, detectors), pair=tuple(zero_leak_specs))
        return scoreboard(
            signals, _resolve(groups), ScoreboardConfig(), sample_ids=[s.id for s in samples], zero_leak=zero,
            base=base_spec.name, tuned=tuned_spec.name,
        )

    out = []
    if "interventions" in steps:
        out.append(
            AuditStep(
                "interventions",
                AblationResult,
                {**key, "ablation": repr(ablation)},
                lambda: with_pair(lambda b, t: reset_retain(b, t, samples, _resolve(groups), ablation, show_progress=show_progress)),
            )
        )
    if "interventions-steering" in steps:
        out.append(
            AuditStep(
                "interventions-steering",
                SteeringResult,
                {**key, "steering": repr(steering)},
                lambda: with_pair(lambda b, t: neuron_steering(t, samples, _resolve(groups), steering, show_progress=show_progress)),
            )
        )
    if "scoreboard" in steps:
        zero_key = [fingerprint_checkpoint(s.source) for s in zero_leak_specs] if zero_leak_specs else None
        # version 2: results name their base and tuned checkpoints (the verdict attributes them)
        out.append(AuditStep("scoreboard", ScoreboardResult, {**key, "zero_leak": zero_key, "version": 2}, run_scoreboard))
    return out
