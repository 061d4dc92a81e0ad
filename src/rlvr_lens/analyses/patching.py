"""Activation patching between a base and a tuned model, both directions, all windows in one batch.

Definitions (see ``docs/circuits.md``):

* A **variant** patches a window of ``width`` consecutive decoder layers' ``attn_out`` or
  ``mlp_out`` (what the block adds to the residual stream, see
  :mod:`rlvr_lens.models.adapters`) of the **receiver** with the **donor**'s value at the same
  hook point, computed by the donor on the *same input*. This is activation patching, not
  weight swapping (for that see :mod:`.mlp_counterfactual`).
* Directions: ``tuned_into_base`` (receiver base, donor tuned) and ``base_into_tuned``.
* **Metric** ``m``: the gold answer's teacher-forced log-probability, mean over its tokens
  (nats; :mod:`.teacher_forcing`). **Normalized recovery** of a variant:
  ``(m_patched - m_from) / (m_to - m_from)`` where ``m_from`` is the receiver's unpatched
  metric and ``m_to`` the donor's: 0 = the patch changed nothing, 1 = the receiver now scores
  the answer as the donor does. Per sample it is undefined when ``|m_to - m_from|`` is below
  ``min_gap``; a group's recovery is the ratio of its means,
  ``(mean m_patched - mean m_from) / (mean m_to - mean m_from)``, with a bootstrap interval
  over samples.
* **Patched greedy accuracy** (``accuracy`` = ``"held"`` or ``"prompt"``): greedy decoding of
  the templated prompt with the patch held during the prompt and kept at every generated
  token (``"held"``: the donor decodes the receiver's tokens alongside, with its own KV cache,
  to supply its activations), or applied to the prompt only (``"prompt"``, as the study did;
  generated tokens then attend to the patched prompt's keys and values).

All variants of a sample (and of several samples, up to ``max_rows`` rows) run as one batch:
the input is repeated along the batch dimension and each hook replaces only its own rows.

Under ``accelerate launch`` / ``torchrun`` each process runs its share of these batches (and
of the samples of the patched decoding) and the per-sample values are gathered in sample
order (:mod:`rlvr_lens.distributed`): the result, and every group recovery and bootstrap
computed from it, is the single-process one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from rlvr_lens.analyses.cross_decode import _cache_name, _returned_cache
from rlvr_lens.analyses.teacher_forcing import CONTEXTS, encode_all, read_index, right_padded
from rlvr_lens.data.grading import grade
from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.distributed import map_batches
from rlvr_lens.errors import UserError
from rlvr_lens.models.hooks import capture, hook_name, patch
from rlvr_lens.progress import progress
from rlvr_lens.results import Result

DIRECTIONS = ("tuned_into_base", "base_into_tuned")
COMPONENTS = ("attn", "mlp")
ACCURACY_MODES = ("none", "held", "prompt")


@dataclass
class PatchingConfig:
    """Attributes:
    template, context: prompt template and answer context (:mod:`.teacher_forcing`).
    width: layers per window (1-3).
    components: ``attn`` and/or ``mlp``.
    directions: ``tuned_into_base`` and/or ``base_into_tuned``.
    max_rows: batch rows per forward pass (samples x variants).
    accuracy: ``none``, ``held`` (patch kept through decoding) or ``prompt`` (prompt only).
    max_new_tokens: response length of the patched greedy decoding.
    min_gap: smallest ``|m_to - m_from|`` (nats) for which a per-sample recovery is defined.
    """

    template: str = "plain"
    context: str = "direct"
    width: int = 1
    components: tuple[str, ...] = COMPONENTS
    directions: tuple[str, ...] = DIRECTIONS
    max_rows: int = 64
    accuracy: str = "none"
    max_new_tokens: int = 32
    min_gap: float = 1e-3

    def check(self) -> None:
        apply_template("x", self.template)
        if self.context not in CONTEXTS:
            raise UserError(f"Unknown answer context {self.context!r}; use one of {', '.join(CONTEXTS)}.")
        if not 1 <= self.width <= 3:
            raise UserError(f"The patching window width must be 1, 2 or 3 layers; got {self.width}.")
        bad = [c for c in self.components if c not in COMPONENTS] + [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.components or not self.directions:
            raise UserError(f"Unknown patching component or direction {bad[0] if bad else '(none)'}; use {', '.join(COMPONENTS + DIRECTIONS)}.")
        if self.accuracy not in ACCURACY_MODES:
            raise UserError(f"Unknown patched-accuracy mode {self.accuracy!r}; use one of {', '.join(ACCURACY_MODES)}.")
        if self.max_rows < 1 or self.max_new_tokens < 1:
            raise UserError("max_rows and max_new_tokens must be at least 1.")


@dataclass
class Variant:
    component: str  # "attn" | "mlp"
    layers: list[int]

    @property
    def points(self) -> list[str]:
        return [hook_name(f"{self.component}_out", layer) for layer in self.layers]


def variants_for(num_layers: int, config: PatchingConfig) -> list[Variant]:
    """Every window of ``config.width`` consecutive layers, for each component."""
    if config.width > num_layers:
        raise UserError(f"A patching window of {config.width} layers does not fit in a {num_layers}-layer model.")
    return [
        Variant(component, list(range(start, start + config.width)))
        for component in config.components
        for start in range(num_layers - config.width + 1)
    ]


@dataclass
class DirectionResult:
    """One direction: ``m_patched[sample][variant]`` (nats), ``correct[sample][variant]`` when decoded."""

    direction: str
    receiver: str
    donor: str
    m_patched: list[list[float]]
    correct: list[list[bool]] = field(default_factory=list)
    unpatched_correct: list[bool] = field(default_factory=list)


@dataclass
class PatchingResult(Result):
    kind = "patching"

    config: dict
    num_layers: int
    base: str
    tuned: str
    sample_ids: list[str]
    variants: list[Variant]
    m_base: list[float]  # unpatched metric per sample
    m_tuned: list[float]
    directions: list[DirectionResult]
    groups: dict[str, list[int]] = field(default_factory=dict)

    def direction(self, name: str) -> DirectionResult:
        return next(d for d in self.directions if d.direction == name)

    def endpoints(self, name: str) -> tuple[list[float], list[float]]:
        """``(m_from, m_to)`` per sample for a direction."""
        return (self.m_base, self.m_tuned) if name == "tuned_into_base" else (self.m_tuned, self.m_base)

    def recovery(self, name: str, sample: int, variant: int) -> float | None:
        """Per-sample normalized recovery (``None`` when the endpoints are closer than ``min_gap``)."""
        m_from, m_to = (v[sample] for v in self.endpoints(name))
        gap = m_to - m_from
        if abs(gap) < self.config.get("min_gap", 1e-3):
            return None
        return (self.direction(name).m_patched[sample][variant] - m_from) / gap


def group_recovery(result: PatchingResult, direction: str, indices: Sequence[int]) -> list[float | None]:
    """Ratio-of-means recovery of a group, per variant (``None`` when the group's endpoints coincide)."""
    import numpy as np

    if not indices:
        return [None] * len(result.variants)
    m_from, m_to = (np.asarray(v, dtype=float)[list(indices)] for v in result.endpoints(direction))
    patched = np.asarray(result.direction(direction).m_patched, dtype=float)[list(indices)]
    gap = m_to.mean() - m_from.mean()
    if abs(gap) < result.config.get("min_gap", 1e-3):
        return [None] * len(result.variants)
    return [float(v) for v in (patched.mean(0) - m_from.mean()) / gap]


# ----------------------------------------------------------------------------- batched patching


def _row_patches(variants: Sequence[Variant], donor_cache: Mapping[str, torch.Tensor], *, unpatched_row: bool):
    """Replacement functions for every hook point any variant patches.

    Receiver rows are sample-major: row ``s * V + v`` is sample ``s`` under variant ``v``
    (with ``unpatched_row``, variant 0 is "no patch" and the variants follow). The donor's
    values have one row per sample (repeated to every variant row of that sample) or one
    row per receiver row (taken as they are). Each hook replaces only the rows whose
    variant covers its point.
    """
    per_sample = len(variants) + int(unpatched_row)
    offset = int(unpatched_row)
    replacements = {}
    for point in sorted({p for v in variants for p in v.points}):
        mask = torch.zeros(per_sample, dtype=torch.bool)
        for index, variant in enumerate(variants):
            mask[offset + index] = point in variant.points

        def replace(original: torch.Tensor, donor=donor_cache[point], mask=mask) -> torch.Tensor:
            rows = mask.to(original.device).repeat(original.shape[0] // per_sample)[:, None, None]
            value = donor.to(device=original.device, dtype=original.dtype)
            value = value.repeat_interleave(original.shape[0] // donor.shape[0], dim=0)
            return torch.where(rows, value, original)

        replacements[point] = replace
    return replacements


def _points(variants: Sequence[Variant]) -> tuple[list[str], list[int]]:
    """``(hook point kinds, layers)`` that cover every point any variant patches."""
    points = {p for v in variants for p in v.points}
    return sorted({p.rsplit(".", 1)[0] for p in points}), sorted({int(p.rsplit(".", 1)[1]) for p in points})


def _answer_logprob(loaded, ids: torch.Tensor, encodings, repeat: int) -> list[float]:
    """Mean teacher-forced log-prob of each row's answer (rows: each encoding repeated ``repeat`` times)."""
    from rlvr_lens.analyses.teacher_forcing import answer_logits, mean_per_row

    rows, positions, targets, counts = read_index(encodings, repeat)
    logits = answer_logits(loaded, ids, rows, positions)
    logprob = logits.gather(-1, targets.to(logits.device)[:, None])[:, 0] - torch.logsumexp(logits, -1)
    return mean_per_row(logprob, counts)


@torch.no_grad()
def _teacher_forced(receiver, donor, encodings, variants, config: PatchingConfig, pad: int, *, show_progress: bool):
    """``m_patched[sample][variant]`` for receiver <- donor."""
    kinds, layers = _points(variants)
    per_chunk = max(1, config.max_rows // len(variants))
    chunks = [encodings[i : i + per_chunk] for i in range(0, len(encodings), per_chunk)]

    def patch_batch(chunk) -> list[list[float]]:
        ids = right_padded(chunk, pad)
        with capture(donor.model, kinds, layers, adapter=donor.adapter) as cache:
            donor.adapter.base_model(donor.model)(input_ids=ids.to(donor.device), use_cache=False)
        replacements = _row_patches(variants, cache, unpatched_row=False)
        repeated = ids.repeat_interleave(len(variants), dim=0)
        with patch(receiver.model, replacements, adapter=receiver.adapter):
            values = _answer_logprob(receiver, repeated, chunk, len(variants))
        return [values[i * len(variants) : (i + 1) * len(variants)] for i in range(len(chunk))]

    def wrap(indices):
        return progress(indices, enabled=show_progress, desc=f"patch {donor.name} -> {receiver.name}", unit="batch")

    # under accelerate launch / torchrun each process patches its share of the batches (rlvr_lens.distributed)
    return map_batches(patch_batch, chunks, wrap=wrap)


# ----------------------------------------------------------------------------- patched decoding


@torch.no_grad()
def _greedy_patched(receiver, donor, prompt_ids: list[int], variants, config: PatchingConfig) -> list[list[int]]:
    """Greedy continuations of one prompt under each variant (row 0: unpatched). See the module docstring."""
    rows = len(variants) + 1
    kinds, layers = _points(variants)
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    eos = receiver.tokenizer.eos_token_id
    tokens = ids.repeat(rows, 1)
    donor_cache_kv = receiver_cache_kv = None
    generated = torch.empty(rows, 0, dtype=torch.long)
    done = torch.zeros(rows, dtype=torch.bool)
    held = config.accuracy == "held"
    for step in range(config.max_new_tokens):
        if step == 0 or held:
            with capture(donor.model, kinds, layers, adapter=donor.adapter) as acts:
                out = donor.model(input_ids=tokens.to(donor.device), use_cache=True, logits_to_keep=1, **{_cache_name(donor.model): donor_cache_kv})
            donor_cache_kv = _returned_cache(out)
            # the donor decodes each receiver row's own tokens: its values align row by row
            replacements = _row_patches(variants, acts, unpatched_row=True)
            context = patch(receiver.model, replacements, adapter=receiver.adapter)
        else:
            context = patch(receiver.model, {}, adapter=receiver.adapter)
        with context:
            out = receiver.model(
                input_ids=tokens.to(receiver.device), use_cache=True, logits_to_keep=1, **{_cache_name(receiver.model): receiver_cache_kv}
            )
        receiver_cache_kv = _returned_cache(out)
        next_tokens = out.logits[:, -1].float().argmax(-1).cpu()
        if eos is not None:
            next_tokens = torch.where(done, torch.full_like(next_tokens, eos), next_tokens)
            done |= next_tokens == eos
        generated = torch.cat([generated, next_tokens[:, None]], 1)
        tokens = next_tokens[:, None]
        if bool(done.all()):
            break
    result = []
    for row in generated.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        result.append(row)
    return result


# ----------------------------------------------------------------------------- entry point


def activation_patching(
    base,
    tuned,
    samples: Sequence[Sample],
    config: PatchingConfig,
    *,
    groups: Mapping[str, Sequence[int]] | None = None,
    show_progress: bool = False,
) -> PatchingResult:
    """Patch every window of ``tuned`` into ``base`` and back (loaded models of the same depth)."""
    config.check()
    if not samples:
        raise UserError("Activation patching needs at least one sample.")
    depth = base.adapter.num_layers(base.model)
    if tuned.adapter.num_layers(tuned.model) != depth:
        raise UserError(
            f"{base.name} has {depth} layers and {tuned.name} has {tuned.adapter.num_layers(tuned.model)}, so their layers cannot be patched into each other."
        )
    variants = variants_for(depth, config)
    encodings = encode_all(base.tokenizer, samples, config.template, config.context)
    pad = base.tokenizer.pad_token_id or 0
    m = {}
    chunks = [encodings[start : start + config.max_rows] for start in range(0, len(encodings), config.max_rows)]
    for loaded in (base, tuned):
        with torch.no_grad():  # each process of a launcher its share of the batches, gathered in order
            m[loaded.name] = map_batches(lambda chunk, loaded=loaded: _answer_logprob(loaded, right_padded(chunk, pad), chunk, 1), chunks)
    pairs = {"tuned_into_base": (base, tuned), "base_into_tuned": (tuned, base)}
    directions = []
    for name in config.directions:
        receiver, donor = pairs[name]
        result = DirectionResult(name, receiver.name, donor.name, _teacher_forced(receiver, donor, encodings, variants, config, pad, show_progress=show_progress))
        if config.accuracy != "none":

            def decode(sample: Sample, receiver=receiver, donor=donor) -> list[list[bool]]:
                prompt_ids = receiver.tokenizer(apply_template(sample.prompt, config.template, receiver.tokenizer), add_special_tokens=False)["input_ids"]
                rows = _greedy_patched(receiver, donor, prompt_ids, variants, config)
                return [[grade(receiver.tokenizer.decode(r, skip_special_tokens=True), sample.answer).correct for r in rows]]

            def wrap(indices, name=name):
                return progress(indices, enabled=show_progress, desc=f"patched decoding {name}", unit="sample")

            # one sample at a time, as in one process; each process of a launcher decodes its share
            for correct in map_batches(decode, list(samples), wrap=wrap):
                result.unpatched_correct.append(correct[0])
                result.correct.append(correct[1:])
        directions.append(result)
    return PatchingResult(
        config={**vars(config), "components": list(config.components), "directions": list(config.directions)},
        num_layers=depth,
        base=base.name,
        tuned=tuned.name,
        sample_ids=[s.id for s in samples],
        variants=variants,
        m_base=m[base.name],
        m_tuned=m[tuned.name],
        directions=directions,
        groups={k: list(v) for k, v in (groups or {}).items()},
    )
