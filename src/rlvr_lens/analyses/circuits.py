"""Layer localization of a base/tuned pair: logit lens, activation patching, MLP counterfactuals, verdict.

One call runs the three layer analyses on the samples of the given groups (each group
capped at ``max_per_group`` samples, the first ones in data order, so the cost is bounded)
and the localization verdict per group of interest. Groups are a plain mapping
``name -> indices into samples`` (usually the evaluation step's
:func:`~rlvr_lens.analyses.evaluation.sample_groups`); this module never evaluates.
See ``docs/circuits.md`` for every definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rlvr_lens.analyses.localization import LocalizationConfig, LocalizationVerdict, localize
from rlvr_lens.analyses.logit_lens import LogitLensConfig, LogitLensResult, logit_lens
from rlvr_lens.analyses.mlp_counterfactual import (
    MLPCounterfactualConfig,
    MLPCounterfactualResult,
    mlp_counterfactuals,
)
from rlvr_lens.analyses.patching import PatchingConfig, PatchingResult, activation_patching
from rlvr_lens.analyses.teacher_forcing import CONTEXTS
from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.errors import UserError
from rlvr_lens.results import Result

PARTS = ("lens", "patching", "counterfactual")


@dataclass
class CircuitsConfig:
    """Attributes:
    template, context: prompt template and answer context (:mod:`.teacher_forcing`).
    parts: which of ``lens``, ``patching``, ``counterfactual`` to run.
    batch_size: samples per forward pass (lens, counterfactuals); patching packs ``max_rows`` rows.
    width: patching window width (1-3 layers).
    accuracy: patched greedy accuracy: ``none``, ``held`` (patch kept through decoding), ``prompt``.
    max_new_tokens: response length of patched decoding.
    max_rows: rows (samples x variants) per patching forward pass.
    max_per_group: samples analysed per group (None: all).
    verdict_groups: groups that get a localization verdict (those present).
    n_boot, seed, min_samples, min_recovery: see :class:`~rlvr_lens.analyses.localization.LocalizationConfig`.
    """

    template: str = "plain"
    context: str = "direct"
    parts: tuple[str, ...] = PARTS
    batch_size: int = 8
    width: int = 1
    accuracy: str = "none"
    max_new_tokens: int = 32
    max_rows: int = 64
    max_per_group: int | None = 64
    verdict_groups: tuple[str, ...] = ("leakage", "leaked")
    n_boot: int = 1000
    seed: int = 0
    min_samples: int = 3
    min_recovery: float = 0.2

    def check(self) -> None:
        apply_template("x", self.template)
        if self.context not in CONTEXTS:
            raise UserError(f"Unknown answer context {self.context!r}; use one of {', '.join(CONTEXTS)}.")
        bad = [p for p in self.parts if p not in PARTS]
        if bad or not self.parts:
            raise UserError(f"Unknown circuits part {bad[0] if bad else '(none)'}; use {', '.join(PARTS)}.")
        if self.max_per_group is not None and self.max_per_group < 1:
            raise UserError(f"--max-per-group must be at least 1; got {self.max_per_group}.")
        self.patching().check()
        self.localization("leakage").check()

    def lens(self) -> LogitLensConfig:
        return LogitLensConfig(template=self.template, context=self.context, batch_size=self.batch_size)

    def patching(self) -> PatchingConfig:
        return PatchingConfig(
            template=self.template,
            context=self.context,
            width=self.width,
            accuracy=self.accuracy,
            max_new_tokens=self.max_new_tokens,
            max_rows=self.max_rows,
        )

    def counterfactual(self) -> MLPCounterfactualConfig:
        return MLPCounterfactualConfig(template=self.template, context=self.context, batch_size=self.batch_size, seed=self.seed)

    def localization(self, group: str) -> LocalizationConfig:
        return LocalizationConfig(group=group, n_boot=self.n_boot, seed=self.seed, min_samples=self.min_samples, min_recovery=self.min_recovery)


@dataclass
class CircuitsResult(Result):
    """The layer analyses of one pair on the selected samples; ``groups`` index ``sample_ids``."""

    kind = "circuits"

    config: dict
    base: str
    tuned: str
    num_layers: int
    sample_ids: list[str]
    groups: dict[str, list[int]]
    group_sizes: dict[str, int]  # sizes before capping at max_per_group
    lens: LogitLensResult | None = None
    patching: PatchingResult | None = None
    counterfactual: MLPCounterfactualResult | None = None
    verdicts: list[LocalizationVerdict] = field(default_factory=list)

    def per_sample_signals(self) -> dict[str, list[float | int | None]]:
        """Per-sample numbers the scoreboard can score as detectors, following ``sample_ids`` (every
        part runs on exactly these samples; ``None`` where a value is undefined). Directions are left
        to the calibration split.

        * ``lens_final_logprob``: the tuned model's answer log-probability at its last lens state
          (mean over answer tokens, nats); ``lens_logprob_gain``: the same minus the base's;
        * ``lens_emergence_layer`` / ``lens_largest_rise_layer``: the tuned model's first lens
          state whose top-1 is the answer, and the state of its largest log-probability rise;
        * ``mlp_direct_total``: the tuned model's summed direct MLP contribution to the answer
          logit (logit units);
        * ``patch_<component><layers>_recovery``: normalized recovery of each patching window,
          tuned activations into the base (``None`` where the endpoints coincide).
        """
        signals: dict[str, list[float | int | None]] = {}
        n = len(self.sample_ids)
        if self.lens is not None:
            models = {m.name: m for m in self.lens.models}
            tuned, base = models.get(self.tuned), models.get(self.base)
            if tuned is not None:
                final = [tuned.mean_logprob(i)[-1] for i in range(n)]
                signals["lens_final_logprob"] = final
                if base is not None:
                    signals["lens_logprob_gain"] = [f - base.mean_logprob(i)[-1] for i, f in enumerate(final)]
                signals["lens_emergence_layer"] = list(tuned.first_top1)
                signals["lens_largest_rise_layer"] = list(tuned.largest_rise)
                signals["mlp_direct_total"] = [sum(x) for x in tuned.mlp_direct]
        if self.patching is not None and any(d.direction == "tuned_into_base" for d in self.patching.directions):
            for v, variant in enumerate(self.patching.variants):
                layers = "-".join(str(layer) for layer in variant.layers)
                values = [self.patching.recovery("tuned_into_base", i, v) for i in range(n)]
                signals[f"patch_{variant.component}{layers}_recovery"] = values
        return signals


def select_samples(groups: Mapping[str, Sequence[int]], n_samples: int, cap: int | None) -> tuple[list[int], dict[str, list[int]]]:
    """``(selected indices into samples, groups re-indexed into the selection)``."""
    chosen: set[int] = set()
    for indices in groups.values():
        bad = [i for i in indices if not 0 <= i < n_samples]
        if bad:
            raise UserError(f"Group index {bad[0]} is outside the {n_samples} samples.")
        chosen.update(list(indices)[:cap] if cap else indices)
    selected = sorted(chosen)
    where = {index: position for position, index in enumerate(selected)}
    return selected, {name: [where[i] for i in list(indices)[:cap] if i in where] if cap else [where[i] for i in indices] for name, indices in groups.items()}


def circuits(
    base,
    tuned,
    samples: Sequence[Sample],
    groups: Mapping[str, Sequence[int]],
    config: CircuitsConfig,
    *,
    show_progress: bool = False,
) -> CircuitsResult:
    """Run the layer analyses of (``base``, ``tuned``), loaded models of the same depth, and the verdicts.

    ``groups``: name -> indices into ``samples``; with no groups every sample is analysed as group ``all``.
    """
    config.check()
    depth = base.adapter.num_layers(base.model)
    if tuned.adapter.num_layers(tuned.model) != depth:
        raise UserError(
            f"{base.name} has {depth} layers and {tuned.name} has {tuned.adapter.num_layers(tuned.model)}, so their layers cannot be compared."
        )
    if not samples:
        raise UserError("The layer analyses need at least one sample.")
    groups = dict(groups) if groups else {"all": list(range(len(samples)))}
    selected, local = select_samples(groups, len(samples), config.max_per_group)
    chosen = [samples[i] for i in selected]
    result = CircuitsResult(
        config={**vars(config), "parts": list(config.parts), "verdict_groups": list(config.verdict_groups)},
        base=base.name,
        tuned=tuned.name,
        num_layers=depth,
        sample_ids=[s.id for s in chosen],
        groups=local,
        group_sizes={name: len(indices) for name, indices in groups.items()},
    )
    if chosen:
        if "lens" in config.parts:
            result.lens = logit_lens([base, tuned], chosen, config.lens(), show_progress=show_progress)
        if "patching" in config.parts:
            result.patching = activation_patching(base, tuned, chosen, config.patching(), show_progress=show_progress)
        if "counterfactual" in config.parts:
            result.counterfactual = mlp_counterfactuals(base, tuned, chosen, config.counterfactual(), show_progress=show_progress)
    for group in config.verdict_groups:
        if group in local or group == "leakage":
            result.verdicts.append(
                localize(local, config.localization(group), lens=result.lens, patching=result.patching, counterfactual=result.counterfactual)
            )
    return result

