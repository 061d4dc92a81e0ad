"""Reset / retain: which decoder layers carry what tuning changed?

Three interventions on a window of decoder layers ``[a, b]`` (inclusive) and a part of
each layer (``"mlp"``: the MLP block's parameters; ``"attn"``: the attention block's;
``"both"``: every parameter of the layer, norms included):

* **reset**: the tuned model with the window's parameters taken from the base.
* **retain**: the base model with only the window's parameters taken from the tuned model.
* **noise** (control): the tuned model with each window tensor moved by seeded Gaussian
  noise scaled to the norm of that tensor's reset displacement ``||W_base - W_tuned||``:
  the same amount of change as a reset, in a random direction. (Re-initialising the window
  with fresh noise would break any model and so control for nothing.)

The study's signature (*Spurious Rewards Paradox*): on leakage samples, retaining anchor
and adapter windows together restores the tuned accuracy, neither alone; resetting either
removes it.

No model is copied. A variant swaps parameter *tensors* in place (``param.data = other``:
a pointer swap, no copy; noise allocates the window's tensors only) and swaps them back
when its context exits, also on error; a checksum of every touched parameter taken before
is verified after each variant (:func:`parameter_checksum`). Both models must therefore
be loaded (same architecture, shapes, dtype and device), which any pair comparison needs.

Accuracy is greedy (:func:`rlvr_lens.generation.accuracy`) per sample group, groups given
as ``name -> sample indices`` (e.g. leakage / stable / clean from the evaluation step).

Under ``accelerate launch`` / ``torchrun`` every process applies every variant to its own
replica (the noise is seeded per variant, so it is the same tensor everywhere) and decodes
its share of the batches; the correctness of every sample is gathered before any accuracy
is computed, so the result is the single-process one (see :mod:`rlvr_lens.distributed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rlvr_lens.errors import UserError
from rlvr_lens.results import Result

PARTS = ("mlp", "attn", "both")
MODES = ("reset", "retain", "noise")

# parameter-name prefixes (relative to a decoder layer) of each part, per convention used by
# every supported family: the MLP and its sandwich norm, the attention block and its own norms
_PART_PREFIXES = {
    "mlp": ("mlp.", "post_feedforward_layernorm.", "pre_feedforward_layernorm."),
    "attn": ("self_attn.",),
}


@dataclass
class AblationConfig:
    """Settings of :func:`reset_retain` (every default is the CLI's).

    Attributes:
        width: width of the sliding windows (every ``[a, a + width - 1]``); 0 = none.
        windows: extra inclusive windows ``(a, b)``, e.g. the circuits analysis' anchor and
            adapter, and their union.
        parts: which parameters of a layer are swapped (see :data:`PARTS`).
        modes: which interventions run (see :data:`MODES`).
        template, max_new_tokens, batch_size: greedy decoding settings.
        seed: seed of the noise control.
    """

    width: int = 2
    windows: tuple[tuple[int, int], ...] = ()
    parts: tuple[str, ...] = PARTS
    modes: tuple[str, ...] = MODES
    template: str = "plain"
    max_new_tokens: int = 256
    batch_size: int = 16
    seed: int = 0

    def check(self, num_layers: int | None = None) -> None:
        bad = [p for p in self.parts if p not in PARTS] + [m for m in self.modes if m not in MODES]
        if bad or not self.parts or not self.modes:
            raise UserError(f"Unknown part or mode {bad[0] if bad else '(none)'}; parts: {', '.join(PARTS)}; modes: {', '.join(MODES)}.")
        if self.width < 0 or (self.width == 0 and not self.windows):
            raise UserError("Give a window width >= 1 or at least one window.")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise UserError("max_new_tokens and batch_size must be at least 1.")
        for a, b in self.windows:
            if a > b or a < 0 or (num_layers is not None and b >= num_layers):
                raise UserError(f"Window [{a}, {b}] is not a range of layers 0..{(num_layers or 0) - 1}.")
        if num_layers is not None and self.width > num_layers:
            raise UserError(f"Window width {self.width} exceeds the model's {num_layers} layers.")

    def all_windows(self, num_layers: int) -> list[tuple[int, int]]:
        """Every sliding window, then the extra ones (duplicates removed, order kept)."""
        sliding = [(a, a + self.width - 1) for a in range(num_layers - self.width + 1)] if self.width else []
        return list(dict.fromkeys([*sliding, *[tuple(w) for w in self.windows]]))


@dataclass
class VariantAccuracy:
    """Greedy accuracy of one model variant, overall and per group."""

    mode: str  # "reset" | "retain" | "noise" | "base" | "tuned"
    part: str | None
    window: list[int] | None  # [a, b] inclusive
    correct: list[bool]
    accuracy: float
    groups: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.window is None:
            return self.mode
        return f"{self.mode} {self.part} [{self.window[0]}, {self.window[1]}]"


@dataclass
class AblationResult(Result):
    """Reset / retain / noise accuracies per window and part, with the unmodified models for reference."""

    kind = "ablation"

    config: dict
    base: str
    tuned: str
    num_layers: int
    sample_ids: list[str]
    groups: dict[str, list[int]]
    references: list[VariantAccuracy]  # the base and the tuned model as loaded
    variants: list[VariantAccuracy]
    weights_verified: bool  # every touched parameter's checksum matched after every variant


# ----------------------------------------------------------------------------- parameters of a window


def window_parameter_names(model: nn.Module, layers: Sequence[int], part: str, adapter=None) -> list[str]:
    """Full names (as in ``model.named_parameters()``) of ``part``'s parameters in ``layers``."""
    from rlvr_lens.models.adapters import adapter_for

    adapter = adapter or adapter_for(model)
    n = adapter.num_layers(model)
    layer_modules = adapter.layers(model)
    prefix = {id(m): name for name, m in model.named_modules()}
    names = []
    for layer in layers:
        if not 0 <= layer < n:
            raise UserError(f"Layer {layer} does not exist: the model has {n} decoder layers (0..{n - 1}).")
        module = layer_modules[layer]
        for local, _ in module.named_parameters():
            if part == "both" or local.startswith(_PART_PREFIXES[part]):
                names.append(f"{prefix[id(module)]}.{local}")
    if not names:
        raise UserError(f"Layers {list(layers)} have no {part} parameters this analysis recognizes.")
    return names


def parameter_checksum(model: nn.Module, names: Sequence[str]) -> str:
    """BLAKE2b of the raw bytes of the named parameters, in order (any change of any bit changes it)."""
    params = dict(model.named_parameters())
    digest = hashlib.blake2b(digest_size=16)
    for name in names:
        tensor = params[name].detach().contiguous().cpu()
        digest.update(name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@contextlib.contextmanager
def swapped_parameters(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Run ``model`` with some parameters' data replaced by ``tensors`` (pointer swap, no copy); restored on exit."""
    params = dict(model.named_parameters())
    saved: dict[str, torch.Tensor] = {}
    try:
        for name, tensor in tensors.items():
            param = params[name]
            if tensor.shape != param.shape or tensor.dtype != param.dtype or tensor.device != param.device:
                raise UserError(f"Cannot swap {name}: {tuple(tensor.shape)} {tensor.dtype} vs {tuple(param.shape)} {param.dtype}.")
            saved[name] = param.data
            param.data = tensor
        yield model
    finally:
        for name, original in saved.items():
            params[name].data = original


def _noise_like(reference: torch.Tensor, displacement_norm: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(reference.shape, generator=generator, dtype=torch.float32)
    norm = float(noise.norm())
    scale = displacement_norm / norm if norm > 0 else 0.0
    return (reference.float().cpu() + noise * scale).to(dtype=reference.dtype, device=reference.device)


@contextlib.contextmanager
def variant(
    base: nn.Module,
    tuned: nn.Module,
    mode: str,
    layers: Sequence[int],
    part: str = "both",
    *,
    seed: int = 0,
    verify: bool = True,
) -> Iterator[nn.Module]:
    """Yield the model of one intervention (see the module docstring); weights are restored on exit.

    ``reset`` and ``noise`` yield ``tuned`` (modified), ``retain`` yields ``base``. With
    ``verify`` the touched parameters' checksum is compared after restoring, and a mismatch
    raises ``RuntimeError`` (it would mean a model was left modified).
    """
    if mode not in MODES:
        raise UserError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    names = window_parameter_names(tuned, layers, part)
    base_params, tuned_params = dict(base.named_parameters()), dict(tuned.named_parameters())
    target = base if mode == "retain" else tuned
    before = parameter_checksum(target, names) if verify else None
    if mode == "reset":
        tensors = {n: base_params[n].data for n in names}
    elif mode == "retain":
        tensors = {n: tuned_params[n].data for n in names}
    else:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            tensors = {
                n: _noise_like(tuned_params[n].data, float((base_params[n].float() - tuned_params[n].float()).norm()), generator)
                for n in names
            }
    try:
        with swapped_parameters(target, tensors):
            yield target
    finally:
        if verify and parameter_checksum(target, names) != before:
            raise RuntimeError(f"parameters of layers {list(layers)} ({part}) were not restored after {mode}")


# ----------------------------------------------------------------------------- the sweep


def _group_accuracy(correct: Sequence[bool], groups: Mapping[str, Sequence[int]]) -> dict[str, float | None]:
    return {g: (sum(correct[i] for i in idx) / len(idx) if idx else None) for g, idx in groups.items()}


def _measure(model, tokenizer, samples, groups, config: AblationConfig, mode, part, window) -> VariantAccuracy:
    from rlvr_lens.generation import accuracy

    start = time.perf_counter()
    overall, correct = accuracy(  # sharded: each process of a launcher decodes its share of the batches
        model, tokenizer, samples, template=config.template, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
        sharded=True,
    )
    return VariantAccuracy(
        mode, part, window, correct, overall, _group_accuracy(correct, groups), time.perf_counter() - start
    )


def reset_retain(
    base,
    tuned,
    samples,
    groups: Mapping[str, Sequence[int]],
    config: AblationConfig | None = None,
    *,
    show_progress: bool = False,
) -> AblationResult:
    """Greedy accuracy of every (mode, part, window) variant, per group.

    Args:
        base, tuned: loaded :class:`~rlvr_lens.models.LoadedModel` of the same architecture.
        samples: the samples decoded (restrict them to the groups of interest to save time).
        groups: group name -> indices into ``samples``.
        config: see :class:`AblationConfig`.
    """
    from rlvr_lens.progress import progress

    config = config or AblationConfig()
    num_layers = tuned.adapter.num_layers(tuned.model)
    config.check(num_layers)
    if base.adapter.num_layers(base.model) != num_layers:
        raise UserError("The base and the tuned model have different numbers of layers.")
    groups = {g: [int(i) for i in idx] for g, idx in groups.items()}
    tokenizer = tuned.tokenizer
    references = [
        _measure(base.model, tokenizer, samples, groups, config, "base", None, None),
        _measure(tuned.model, tokenizer, samples, groups, config, "tuned", None, None),
    ]
    jobs = [(m, p, w) for w in config.all_windows(num_layers) for p in config.parts for m in config.modes]
    variants = []
    for index, (mode, part, (a, b)) in enumerate(progress(jobs, enabled=show_progress, desc="reset/retain", unit="variant")):
        with variant(base.model, tuned.model, mode, range(a, b + 1), part, seed=config.seed + index) as model:
            variants.append(_measure(model, tokenizer, samples, groups, config, mode, part, [a, b]))
    settings = {
        "width": config.width,
        "windows": [list(w) for w in config.windows],
        "parts": list(config.parts),
        "modes": list(config.modes),
        "template": config.template,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
    }
    return AblationResult(
        config=settings,
        base=base.name,
        tuned=tuned.name,
        num_layers=num_layers,
        sample_ids=[s.id for s in samples],
        groups=groups,
        references=references,
        variants=variants,
        weights_verified=True,  # variant() raises otherwise
    )


def _register_report() -> None:
    from rlvr_lens.analyses.ablation_report import register_entries

    register_entries()


_register_report()
