"""Neuron key scaling (steering): multiply a few MLP neuron activations by alpha and watch
the answers.

A gated MLP's neuron ``i`` of layer ``l`` has a *key* (its activation, the ``i``-th input
of ``down_proj``: ``act(gate x) * up x``, read with a forward pre-hook) and a *value* (its
output direction, column ``i`` of ``down_proj``'s weight). For each sample, every neuron is
scored at the last prompt position (the one that predicts the first answer token) by a
pluggable **selection** rule:

* ``"study"`` (*Spurious Rewards Paradox*): ``|key_i| * (1 + 10 * overlap_i)``, where
  ``overlap_i`` is the share of the answer's token ids found among the top-10 tokens of the
  neuron's output direction read through the final norm and the unembedding;
* ``"activation"``: ``|key_i|``;
* ``"grad_x_act"``: ``|key_i * d log p(answer text) / d key_i|``, the gradient of the
  teacher-forced log-probability of the sample's reference text (its solution when it has
  one, see :func:`rlvr_lens.analyses.perplexity.answer_text`) given its prompt.

Two **scopes**: ``"per_sample"`` scales each sample's own top-``n`` neurons (the study's
trajectory variant); ``"shared"`` scales one set, the top-``n`` of the mean per-sample
normalised score over a **calibration** split (``calibration_fraction`` of the
``calibration_group``, seeded) that is never scored. Every curve is reported on the same
scored samples (all the others). **Control**: for each selected neuron, a random unselected
neuron of about the same activation magnitude (drawn among the ``2 * control_window``
neighbours in the ranking by ``|key|``), so the control scales the same number of neurons
with matched activation norm (its ratio to the selected norm is reported).

The chosen activations are multiplied by every ``alpha`` in ``alphas`` during the whole
forward pass, prompt and every decoding step (a hook on ``down_proj``'s input;
``alpha = 1`` is the unmodified model, ``0`` ablates). Reported per alpha: greedy accuracy
overall and per group, and per sample the **answer probability**: the geometric mean
per-token probability ``exp(mean log p)`` of the reference text given the prompt.

Under ``accelerate launch`` / ``torchrun`` (see :mod:`rlvr_lens.distributed`) each process
computes the keys and gradients of its share of the samples; they are gathered, and every
process then chooses the same neuron sets (per sample, the shared set on the calibration
split, the seeded controls) from the full set, so the choice is that of one process. Greedy
decoding and answer probabilities under scaling are sharded by batches of the scored
samples, and accuracies are computed on the gathered correctness: the result equals a
single-process run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rlvr_lens.errors import UserError
from rlvr_lens.results import Result

SELECTIONS = ("study", "activation", "grad_x_act")
SCOPES = ("per_sample", "shared")
DEFAULT_ALPHAS = (0.0, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0)


@dataclass
class SteeringConfig:
    """Settings of :func:`neuron_steering` (every default is the CLI's).

    Attributes:
        layers: layers to steer (``None``: every layer).
        alphas: scaling factors of the chosen activations.
        selections: neuron scoring rules (see :data:`SELECTIONS`).
        scopes: ``"per_sample"`` and/or ``"shared"``.
        top_n: neurons scaled per sample (or shared).
        overlap_top: tokens of a neuron's output direction compared with the answer's.
        overlap_weight: the 10 of ``|key| * (1 + 10 * overlap)``.
        control: also scale random neurons of matched activation norm.
        control_window: the control draws among this many rank neighbours on each side.
        calibration_group: group whose calibration part chooses the shared set (all samples
            when the group is absent).
        calibration_fraction: share of that group held out for calibration (never scored).
        template, max_new_tokens, batch_size: decoding settings.
        seed: seed of the calibration split and of the control.
    """

    layers: tuple[int, ...] | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    selections: tuple[str, ...] = SELECTIONS
    scopes: tuple[str, ...] = SCOPES
    top_n: int = 10
    overlap_top: int = 10
    overlap_weight: float = 10.0
    control: bool = True
    control_window: int = 5
    calibration_group: str = "leakage"
    calibration_fraction: float = 0.3
    template: str = "plain"
    max_new_tokens: int = 256
    batch_size: int = 16
    seed: int = 0

    def check(self, num_layers: int | None = None, width: int | None = None) -> None:
        bad = [s for s in self.selections if s not in SELECTIONS] + [s for s in self.scopes if s not in SCOPES]
        if bad or not self.selections or not self.scopes:
            raise UserError(
                f"Unknown selection or scope {bad[0] if bad else '(none)'}; selections: {', '.join(SELECTIONS)}; "
                f"scopes: {', '.join(SCOPES)}."
            )
        if not self.alphas or any(not math.isfinite(a) or a < 0 for a in self.alphas):
            raise UserError(f"Alphas must be finite and >= 0; got {list(self.alphas)}.")
        if self.top_n < 1 or (width is not None and 2 * self.top_n > width):
            raise UserError(f"top_n must lie in 1..{(width or 2) // 2} (half the MLP width, for the control); got {self.top_n}.")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise UserError(f"The calibration fraction must lie strictly between 0 and 1; got {self.calibration_fraction}.")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise UserError("max_new_tokens and batch_size must be at least 1.")
        if num_layers is not None and self.layers is not None:
            wrong = [layer for layer in self.layers if not 0 <= layer < num_layers]
            if wrong:
                raise UserError(f"Layer {wrong[0]} does not exist: the model has {num_layers} decoder layers (0..{num_layers - 1}).")


@dataclass
class SteeringCurve:
    """One (layer, selection, scope, neurons) dose-response; per-alpha lists follow ``alphas``.

    ``answer_prob[a][j]`` and ``correct[a][j]`` are scored sample ``j``'s (see
    ``SteeringResult.scored``).
    """

    layer: int
    selection: str
    scope: str
    neurons: str  # "selected" | "random"
    accuracy: list[float]
    groups: dict[str, list[float | None]]
    answer_prob: list[list[float]]
    correct: list[list[bool]]
    norm_ratio: float  # mean |key| of the scaled neurons / of the selected ones (1 for the selected)
    shared_set: list[int] | None = None


@dataclass
class SteeringResult(Result):
    """Dose-response curves of neuron key scaling (see the module docstring)."""

    kind = "steering"

    config: dict
    model: str
    sample_ids: list[str]
    groups: dict[str, list[int]]
    calibration: list[int]
    scored: list[int]
    alphas: list[float]
    curves: list[SteeringCurve] = field(default_factory=list)


# ----------------------------------------------------------------------------- scaling hook


@contextlib.contextmanager
def scale_rows(model, layer: int, factors: torch.Tensor, adapter=None) -> Iterator[None]:
    """Multiply neuron activations of ``layer`` by ``factors`` ``[batch, intermediate]`` (row-wise), at every position."""
    from rlvr_lens.models.hooks import hook_name, patch

    def scale(activation: torch.Tensor) -> torch.Tensor:  # [batch, seq, intermediate]
        return activation * factors.to(device=activation.device, dtype=activation.dtype)[:, None, :]

    with patch(model, {hook_name("neurons", layer): scale}, adapter=adapter):
        yield


def factor_rows(neuron_sets: Sequence[Sequence[int]], width: int, alpha: float) -> torch.Tensor:
    """``[len(neuron_sets), width]`` ones, ``alpha`` at each row's neurons."""
    factors = torch.ones(len(neuron_sets), width)
    for row, neurons in enumerate(neuron_sets):
        factors[row, list(neurons)] = alpha
    return factors


# ----------------------------------------------------------------------------- neuron scores


@contextlib.contextmanager
def _frozen(model) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def keys_and_gradients(model, adapter, encoded, layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Key ``[intermediate]`` at the last prompt position, and the gradient there of the reference
    text's summed log-probability, for each layer, for one encoded sample (float32, CPU)."""
    from rlvr_lens.models.hooks import capture, hook_name

    device = next(model.parameters()).device
    ids = torch.tensor([encoded.ids], device=device)
    position = encoded.prompt_span[1] - 1
    start, end = encoded.answer_span
    with _frozen(model), torch.enable_grad():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with capture(model, ("neurons",), layers, adapter=adapter, detach=False) as cache:
            logits = model(inputs_embeds=embeds, use_cache=False).logits[0]
        for tensor in cache.values():
            tensor.retain_grad()
        logprobs = torch.log_softmax(logits[start - 1 : end - 1].float(), -1)
        total = logprobs.gather(-1, ids[0, start:end, None]).sum()
        total.backward()
    keys = {layer: cache[hook_name("neurons", layer)][0, position].detach().float().cpu() for layer in layers}
    grads = {layer: cache[hook_name("neurons", layer)].grad[0, position].float().cpu() for layer in layers}
    return keys, grads


@torch.no_grad()
def neuron_top_tokens(model, adapter, layer: int, top: int) -> torch.Tensor:
    """``[intermediate, top]`` token ids ranked highest by each neuron's output direction (final norm + unembedding)."""
    weight = adapter.layer_module(model, layer, adapter.down_module).weight  # [hidden, intermediate]
    logits = adapter.logits_from_residual(model, weight.T)  # [intermediate, vocab]
    return logits.topk(top, dim=-1).indices.cpu()


def answer_token_ids(tokenizer, answer: str) -> set[int]:
    """Token ids of the answer, tokenized alone and after a space (how it follows other text)."""
    return set(tokenizer(answer, add_special_tokens=False)["input_ids"]) | set(
        tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    )


def overlap(top_tokens: torch.Tensor, answer_ids: set[int]) -> torch.Tensor:
    """``[intermediate]``: share of ``answer_ids`` found among each neuron's top tokens."""
    if not answer_ids:
        return torch.zeros(top_tokens.shape[0])
    wanted = torch.tensor(sorted(answer_ids))
    # [intermediate, |answer ids|]: is answer id j among neuron i's top tokens?
    found = (top_tokens[:, None, :] == wanted[None, :, None]).any(-1)
    return found.float().mean(-1)


def neuron_scores(selection: str, key: torch.Tensor, grad: torch.Tensor, overlap_share: torch.Tensor, weight: float) -> torch.Tensor:
    """``[intermediate]`` score of every neuron under one selection rule (see the module docstring)."""
    if selection == "study":
        return key.abs() * (1 + weight * overlap_share)
    if selection == "activation":
        return key.abs()
    if selection == "grad_x_act":
        return (key * grad).abs()
    raise UserError(f"Unknown selection {selection!r}; use one of {', '.join(SELECTIONS)}.")


def top_neurons(scores: torch.Tensor, n: int) -> list[int]:
    return sorted(int(i) for i in torch.topk(scores, n).indices)


def matched_random(magnitude: torch.Tensor, chosen: Sequence[int], window: int, rng: np.random.Generator) -> list[int]:
    """For each chosen neuron, a random other neuron among its ``window`` rank neighbours (each side) by ``magnitude``."""
    order = torch.argsort(magnitude, descending=True).tolist()
    rank = {neuron: r for r, neuron in enumerate(order)}
    taken = set(chosen)
    picked = []
    for neuron in sorted(chosen, key=lambda i: rank[i]):
        r = rank[neuron]
        span = window
        while True:
            pool = [order[j] for j in range(max(0, r - span), min(len(order), r + span + 1)) if order[j] not in taken]
            if pool or span > len(order):
                break
            span *= 2
        choice = int(pool[rng.integers(len(pool))])
        taken.add(choice)
        picked.append(choice)
    return sorted(picked)


# ----------------------------------------------------------------------------- measuring


@torch.no_grad()
def _answer_probs(model, encoded, rows: Sequence[int], neuron_sets, layer, width, alpha, adapter, pad_id, batch_size) -> list[float]:
    from rlvr_lens.analyses.perplexity import token_nll
    from rlvr_lens.distributed import map_batches
    from rlvr_lens.generation import batches

    def probs(chunk: Sequence[int]) -> list[float]:
        with scale_rows(model, layer, factor_rows([neuron_sets[i] for i in chunk], width, alpha), adapter):
            nlls = token_nll(model, [encoded[i].ids for i in chunk], pad_id=pad_id)
        out = []
        for i, nll in zip(chunk, nlls):
            a, b = encoded[i].answer_span
            out.append(math.exp(-float(nll[a - 1 : b - 1].double().mean())) if b > a else float("nan"))
        return out

    return map_batches(probs, list(batches(list(rows), batch_size)))  # each process its share of the batches


def _greedy(model, tokenizer, samples, prompts, rows, neuron_sets, layer, width, alpha, adapter, config) -> list[bool]:
    from rlvr_lens.data.grading import grade
    from rlvr_lens.distributed import map_batches
    from rlvr_lens.generation import batches, generate

    def decode(chunk: Sequence[int]) -> list[bool]:
        with scale_rows(model, layer, factor_rows([neuron_sets[i] for i in chunk], width, alpha), adapter):
            outs = generate(model, tokenizer, [prompts[i] for i in chunk], max_new_tokens=config.max_new_tokens, batch_size=len(chunk))
        return [grade(o.text, samples[i].answer).correct for o, i in zip(outs, chunk)]

    return map_batches(decode, list(batches(list(rows), config.batch_size)))  # each process its share of the batches


def calibration_split(groups: Mapping[str, Sequence[int]], n: int, group: str, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(calibration, scored)``: ``ceil(fraction * |group|)`` seeded members of ``group`` (of all samples
    when the group is absent or empty) are held out; every other sample is scored."""
    pool = sorted(groups.get(group) or range(n))
    rng = np.random.default_rng(seed)
    shuffled = [int(i) for i in rng.permutation(np.asarray(pool, dtype=np.int64))]
    held = set(shuffled[: math.ceil(fraction * len(shuffled))])
    return sorted(held), [i for i in range(n) if i not in held]


def neuron_steering(
    loaded,
    samples,
    groups: Mapping[str, Sequence[int]],
    config: SteeringConfig | None = None,
    *,
    show_progress: bool = False,
) -> SteeringResult:
    """Dose-response of scaling selected (and control) neurons, per layer, selection and scope.

    Args:
        loaded: the :class:`~rlvr_lens.models.LoadedModel` to steer (usually the tuned one).
        samples: the samples; calibration ones choose the shared set and are never scored.
        groups: group name -> sample indices (accuracy is reported per group).
        config: see :class:`SteeringConfig`.
    """
    from rlvr_lens.analyses.perplexity import encode_sample, leading_special_ids
    from rlvr_lens.data.templates import apply_template
    from rlvr_lens.distributed import gather_dict, shard
    from rlvr_lens.progress import progress

    config = config or SteeringConfig()
    model, tokenizer, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    num_layers = adapter.num_layers(model)
    width = adapter.layer_module(model, 0, adapter.down_module).weight.shape[1]
    config.check(num_layers, width)
    if len(samples) < 2:
        raise UserError("Steering needs at least two samples (one to calibrate, one to score).")
    layers = list(config.layers) if config.layers is not None else list(range(num_layers))
    groups = {g: [int(i) for i in idx] for g, idx in groups.items()}
    n = len(samples)
    calibration, scored = calibration_split(groups, n, config.calibration_group, config.calibration_fraction, config.seed)
    leading = leading_special_ids(tokenizer)
    encoded = [encode_sample(tokenizer, s, config.template, leading=leading) for s in samples]
    prompts = [apply_template(s.prompt, config.template, tokenizer) for s in samples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = np.random.default_rng(config.seed)

    # each process of a launcher scores its share of the samples (one at a time, as in one process);
    # the neuron sets below are chosen on the gathered full set, identically in every process
    mine = {i: keys_and_gradients(model, adapter, encoded[i], layers)
            for i in progress(shard(range(n)), enabled=show_progress, desc="neuron scores", unit="sample")}
    every = gather_dict(mine)
    keys = {layer: [every[i][0][layer] for i in range(n)] for layer in layers}
    grads = {layer: [every[i][1][layer] for i in range(n)] for layer in layers}
    answers = [answer_token_ids(tokenizer, s.answer) for s in samples]

    scored_groups = {g: [j for j, i in enumerate(scored) if i in set(idx)] for g, idx in groups.items()}
    curves: list[SteeringCurve] = []
    jobs = [(layer, sel, scope) for layer in layers for sel in config.selections for scope in config.scopes]
    for layer, selection, scope in progress(jobs, enabled=show_progress, desc="steering", unit="curve"):
        top_tokens = neuron_top_tokens(model, adapter, layer, config.overlap_top)
        per_sample = [
            neuron_scores(selection, keys[layer][i], grads[layer][i], overlap(top_tokens, answers[i]), config.overlap_weight)
            for i in range(n)
        ]
        magnitude = [keys[layer][i].abs() for i in range(n)]
        if scope == "shared":
            normalised = torch.stack([per_sample[i] / per_sample[i].max().clamp(min=1e-12) for i in calibration])
            shared = top_neurons(normalised.mean(0), config.top_n)
            mean_magnitude = torch.stack([magnitude[i] for i in calibration]).mean(0)
            chosen = {i: shared for i in range(n)}
            random_set = matched_random(mean_magnitude, shared, config.control_window, rng)
            control = {i: random_set for i in range(n)}
        else:
            shared = None
            chosen = {i: top_neurons(per_sample[i], config.top_n) for i in range(n)}
            control = {i: matched_random(magnitude[i], chosen[i], config.control_window, rng) for i in range(n)}
        for kind, sets in (("selected", chosen), ("random", control)) if config.control else (("selected", chosen),):
            ratio = float(np.mean([float(magnitude[i][sets[i]].mean() / magnitude[i][chosen[i]].mean().clamp(min=1e-12)) for i in scored]))
            accuracy, group_acc, probs, corrects = [], {g: [] for g in groups}, [], []
            for alpha in config.alphas:
                correct = _greedy(model, tokenizer, samples, prompts, scored, sets, layer, width, alpha, adapter, config)
                probs.append(_answer_probs(model, encoded, scored, sets, layer, width, alpha, adapter, pad_id, config.batch_size))
                corrects.append(correct)
                accuracy.append(sum(correct) / len(correct))
                for g, idx in scored_groups.items():
                    group_acc[g].append(sum(correct[j] for j in idx) / len(idx) if idx else None)
            curves.append(
                SteeringCurve(layer, selection, scope, kind, accuracy, group_acc, probs, corrects, ratio,
                              shared if kind == "selected" else (control[0] if scope == "shared" else None))
            )
    settings = {
        "layers": layers,
        "alphas": list(config.alphas),
        "selections": list(config.selections),
        "scopes": list(config.scopes),
        "top_n": config.top_n,
        "overlap_top": config.overlap_top,
        "overlap_weight": config.overlap_weight,
        "control": config.control,
        "calibration_group": config.calibration_group,
        "calibration_fraction": config.calibration_fraction,
        "template": config.template,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
    }
    return SteeringResult(
        config=settings,
        model=loaded.name,
        sample_ids=[s.id for s in samples],
        groups=groups,
        calibration=calibration,
        scored=scored,
        alphas=[float(a) for a in config.alphas],
        curves=curves,
    )


def _register_report() -> None:
    from rlvr_lens.analyses.steering_report import register_entries

    register_entries()


_register_report()
