"""Counterfactual MLP sub-components: which layer's W_gate / W_up / W_down matters for the answer.

Two interventions (see ``docs/circuits.md``), each scored by the **Jensen-Shannon
divergence** (nats, the divergence, not its square root) between the model's normal and
counterfactual next-token distributions at the answer's read positions
(:mod:`.teacher_forcing`), averaged over a sample's answer tokens:

* **Weight restore** (across models): run the *tuned* model with one layer's ``W_gate``,
  ``W_up``, ``W_down`` or whole MLP (every parameter under the layer's ``mlp``) set back to
  the *base*'s values, with ``torch.func.functional_call`` (:func:`rlvr_lens.models.hooks.run_with_weights`):
  no model copy and no mutation. A large JSD means that layer's update to that matrix matters.
* **Mean ablation** (within one model, the study's counterfactual): ``gate_mean`` / ``up_mean``
  replace the input of ``gate_proj`` / ``up_proj`` of one layer by its mean over the
  sequence's real positions (as in the study, the mean includes later positions);
  ``down_random`` replaces ``W_down`` by a Gaussian matrix with the same Frobenius norm,
  drawn from ``seed`` (per layer: ``seed + layer``).

Under ``accelerate launch`` / ``torchrun`` each process scores its share of the batches and the
per-sample values are gathered in sample order (:mod:`rlvr_lens.distributed`); the random
``W_down`` depends on the layer only, so every process draws the same one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from rlvr_lens.analyses.teacher_forcing import CONTEXTS, encode_all, mean_per_row, read_index, right_padded
from rlvr_lens.analyses.token_metrics import jsd_from_logits
from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.distributed import map_batches
from rlvr_lens.errors import UserError
from rlvr_lens.generation import batches
from rlvr_lens.models.hooks import run_with_weights
from rlvr_lens.progress import progress
from rlvr_lens.results import Result

RESTORE_COMPONENTS = ("gate", "up", "down", "mlp")
ABLATIONS = ("gate_mean", "up_mean", "down_random")


@dataclass
class MLPCounterfactualConfig:
    template: str = "plain"
    context: str = "direct"
    batch_size: int = 8
    restore: tuple[str, ...] = RESTORE_COMPONENTS
    ablations: tuple[str, ...] = ABLATIONS
    seed: int = 0

    def check(self) -> None:
        apply_template("x", self.template)
        if self.context not in CONTEXTS:
            raise UserError(f"Unknown answer context {self.context!r}; use one of {', '.join(CONTEXTS)}.")
        bad = [c for c in self.restore if c not in RESTORE_COMPONENTS] + [a for a in self.ablations if a not in ABLATIONS]
        if bad:
            raise UserError(f"Unknown MLP counterfactual {bad[0]!r}; use {', '.join(RESTORE_COMPONENTS + ABLATIONS)}.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1; got {self.batch_size}.")


@dataclass
class MLPCounterfactualResult(Result):
    """``restore_jsd[sample][layer][component]`` (tuned with base weights restored) and
    ``ablation_jsd[model][sample][layer][ablation]``, in nats."""

    kind = "mlp_counterfactual"

    config: dict
    num_layers: int
    base: str
    tuned: str
    sample_ids: list[str]
    restore: list[str]
    ablations: list[str]
    restore_jsd: list[list[list[float]]]
    ablation_jsd: dict[str, list[list[list[float]]]]
    groups: dict[str, list[int]] = field(default_factory=dict)


def _body_name(loaded, module: torch.nn.Module) -> dict[str, str]:
    """Parameter names (relative to the model's body) of ``module``'s parameters."""
    body = loaded.adapter.base_model(loaded.model)
    ids = {id(p): n for n, p in body.named_parameters()}
    return {ids[id(p)]: n for n, p in module.named_parameters()}


def restore_weights(tuned, base, layer: int, component: str) -> dict[str, torch.Tensor]:
    """Body parameter name -> the base's tensor, for one layer's ``component`` (``gate``/``up``/``down``/``mlp``)."""
    adapter = tuned.adapter
    path = {"gate": adapter.gate_module, "up": adapter.up_module, "down": adapter.down_module, "mlp": adapter.gate_module.rsplit(".", 1)[0]}[component]
    names = _body_name(tuned, adapter.layer_module(tuned.model, layer, path))
    base_params = dict(base.adapter.base_model(base.model).named_parameters())
    return {name: base_params[name].detach().to(tuned.device) for name in names}


@contextlib.contextmanager
def mean_input(module: torch.nn.Module, mask: torch.Tensor):
    """Replace ``module``'s input ``[batch, seq, width]`` by its mean over each row's real positions (``mask`` ``[batch, seq]``)."""

    def pre_hook(m, args):
        x = args[0]
        weights = mask.to(device=x.device, dtype=x.dtype)[:, :, None]
        mean = (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        return (mean.expand_as(x), *args[1:])

    handle = module.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


def random_like_norm(weight: torch.Tensor, seed: int) -> torch.Tensor:
    """A Gaussian matrix of ``weight``'s shape with the same Frobenius norm, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
    random = random * (weight.float().norm().cpu() / random.norm())
    return random.to(device=weight.device, dtype=weight.dtype)


def _logits(loaded, ids, rows, positions, weights=None) -> torch.Tensor:
    body = loaded.adapter.base_model(loaded.model)
    ids = ids.to(loaded.device)
    if weights:
        hidden = run_with_weights(body, weights, input_ids=ids, use_cache=False).last_hidden_state
    else:
        hidden = body(input_ids=ids, use_cache=False).last_hidden_state
    picked = hidden[rows.to(hidden.device), positions.to(hidden.device)]
    return loaded.adapter.logits_from_normed(loaded.model, picked).float()


@torch.no_grad()
def _scores(loaded, encodings, config: MLPCounterfactualConfig, variants, *, show_progress: bool, label: str) -> list[list[list[float]]]:
    """``[sample][layer][variant]`` JSD of each ``variant(layer, ids, mask) -> (weights, context)`` vs the normal run."""
    n_layers = loaded.adapter.num_layers(loaded.model)
    pad = loaded.tokenizer.pad_token_id or 0

    def scores_of_batch(chunk) -> list[list[list[float]]]:
        ids = right_padded(chunk, pad)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for row, encoding in enumerate(chunk):
            mask[row, : len(encoding.ids)] = True
        rows, positions, _, counts = read_index(chunk)
        normal = _logits(loaded, ids, rows, positions)
        grid = [[[0.0] * len(variants) for _ in range(n_layers)] for _ in chunk]
        for layer in range(n_layers):
            for v, variant in enumerate(variants):
                weights, context = variant(layer, mask)
                with context:
                    counterfactual = _logits(loaded, ids, rows, positions, weights)
                for row, value in enumerate(mean_per_row(jsd_from_logits(normal, counterfactual), counts)):
                    grid[row][layer][v] = value
        return grid

    def wrap(indices):
        return progress(indices, enabled=show_progress, desc=label, unit="batch")

    # under accelerate launch / torchrun each process scores its share of the batches (rlvr_lens.distributed);
    # the random W_down of a layer is drawn from seed + layer, the same tensor in every process
    return map_batches(scores_of_batch, list(batches(encodings, config.batch_size)), wrap=wrap)


def _ablation_variant(loaded, name: str, seed: int):
    adapter = loaded.adapter

    def variant(layer: int, mask: torch.Tensor):
        if name in ("gate_mean", "up_mean"):
            path = adapter.gate_module if name == "gate_mean" else adapter.up_module
            return None, mean_input(adapter.layer_module(loaded.model, layer, path), mask)
        down = adapter.layer_module(loaded.model, layer, adapter.down_module)
        (weight_name,) = [n for n in _body_name(loaded, down) if n.endswith("weight")]
        return {weight_name: random_like_norm(down.weight, seed + layer)}, contextlib.nullcontext()

    return variant


def mlp_counterfactuals(
    base,
    tuned,
    samples: Sequence[Sample],
    config: MLPCounterfactualConfig,
    *,
    groups: Mapping[str, Sequence[int]] | None = None,
    show_progress: bool = False,
) -> MLPCounterfactualResult:
    """Weight restore (tuned <- base, per layer and component) and mean ablation (each model)."""
    config.check()
    if not samples:
        raise UserError("The MLP counterfactuals need at least one sample.")
    depth = base.adapter.num_layers(base.model)
    if tuned.adapter.num_layers(tuned.model) != depth:
        raise UserError(f"{base.name} and {tuned.name} have different depths, so their layers cannot be restored into each other.")
    encodings = encode_all(base.tokenizer, samples, config.template, config.context)

    def restore_variant(component):
        return lambda layer, mask: (restore_weights(tuned, base, layer, component), contextlib.nullcontext())

    restore = _scores(tuned, encodings, config, [restore_variant(c) for c in config.restore], show_progress=show_progress, label="weight restore") if config.restore else [[[] for _ in range(depth)] for _ in samples]
    ablation = {}
    if config.ablations:
        for loaded in (base, tuned):
            variants = [_ablation_variant(loaded, a, config.seed) for a in config.ablations]
            ablation[loaded.name] = _scores(loaded, encodings, config, variants, show_progress=show_progress, label=f"mean ablation {loaded.name}")
    return MLPCounterfactualResult(
        config={**vars(config), "restore": list(config.restore), "ablations": list(config.ablations)},
        num_layers=depth,
        base=base.name,
        tuned=tuned.name,
        sample_ids=[s.id for s in samples],
        restore=list(config.restore),
        ablations=list(config.ablations),
        restore_jsd=restore,
        ablation_jsd=ablation,
        groups={k: list(v) for k, v in (groups or {}).items()},
    )
