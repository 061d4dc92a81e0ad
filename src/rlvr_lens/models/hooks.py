"""Interventions as plain PyTorch forward hooks on the Hugging Face modules.

Each intervention is a context manager that registers its hooks on entry and removes
them on exit, also when the body raises. No module is replaced and no weight is copied,
so outside these contexts the model is exactly the ``transformers`` model.

Three interventions:

* :func:`capture` records activations at hook points (see
  :mod:`rlvr_lens.models.adapters` for what each point means).
* :func:`patch` replaces the value at hook points with given tensors (activation
  patching: the values usually come from a *different* model or input). This is not
  weight swapping; for that, run ``torch.func.functional_call`` with the other model's
  parameters (see :func:`run_with_weights`).
* :func:`scale_neurons` multiplies chosen MLP neuron activations (input of
  ``down_proj``) by ``alpha`` (> 1 amplifies, < 1 suppresses, 0 ablates).

Tensors are ``[batch, seq, width]`` and follow the batch's padding (left or right): a
captured tensor of a padded batch can be patched back into the same padded batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from rlvr_lens.models.adapters import ArchitectureAdapter, adapter_for

Replacement = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def hook_name(point: str, layer: int) -> str:
    """Key of a hook point in caches and patch maps: ``"<point>.<layer>"``, e.g. ``"mlp_out.3"``."""
    return f"{point}.{layer}"


def parse_hook_name(name: str) -> tuple[str, int]:
    point, _, layer = name.rpartition(".")
    return point, int(layer)


def _first(value):
    return value[0] if isinstance(value, tuple) else value


def _with_first(value, first):
    return (first, *value[1:]) if isinstance(value, tuple) else first


@contextlib.contextmanager
def _registered(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture(
    model: nn.Module,
    points: Iterable[str] = ("resid_post",),
    layers: Sequence[int] | None = None,
    *,
    adapter: ArchitectureAdapter | None = None,
    detach: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record activations at ``points`` x ``layers`` into a dict keyed by :func:`hook_name`.

    Each value is ``[batch, seq, width]`` from the last forward pass inside the context.
    ``device``/``dtype`` move the stored copies (e.g. ``"cpu"`` to save GPU memory).
    """
    adapter = adapter or adapter_for(model)
    layers = range(adapter.num_layers(model)) if layers is None else layers
    cache: dict[str, torch.Tensor] = {}
    handles = []

    def store(key: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach() if detach else tensor
        if device is not None or dtype is not None:
            tensor = tensor.to(device=device or tensor.device, dtype=dtype or tensor.dtype)
        cache[key] = tensor

    for point in points:
        for layer in layers:
            module, where = adapter.hook_target(model, point, layer)
            key = hook_name(point, layer)
            if where == "input":
                handles.append(module.register_forward_pre_hook(lambda m, args, key=key: store(key, args[0])))
            else:
                handles.append(module.register_forward_hook(lambda m, args, out, key=key: store(key, _first(out))))
    with _registered(handles):
        yield cache


@contextlib.contextmanager
def patch(
    model: nn.Module,
    replacements: Mapping[str, Replacement],
    *,
    adapter: ArchitectureAdapter | None = None,
    positions: torch.Tensor | None = None,
) -> Iterator[None]:
    """Replace the value at hook points by given tensors (activation patching).

    Args:
        replacements: :func:`hook_name` -> tensor of the same shape as the value it
            replaces (``[batch, seq, width]``), or a function ``value -> new value``.
        positions: optional boolean mask ``[batch, seq]``; where ``False`` the model's own
            value is kept (patch only some positions).
    """
    adapter = adapter or adapter_for(model)
    handles = []

    def replaced(original: torch.Tensor, replacement: Replacement) -> torch.Tensor:
        new = replacement(original) if callable(replacement) else replacement
        new = new.to(device=original.device, dtype=original.dtype)
        if new.shape != original.shape:
            raise ValueError(f"patch shape {tuple(new.shape)} does not match activation {tuple(original.shape)}")
        if positions is not None:
            mask = positions.to(original.device).unsqueeze(-1)
            new = torch.where(mask, new, original)
        return new

    for key, replacement in replacements.items():
        point, layer = parse_hook_name(key)
        module, where = adapter.hook_target(model, point, layer)
        if where == "input":

            def pre_hook(m, args, replacement=replacement):
                return (replaced(args[0], replacement), *args[1:])

            handles.append(module.register_forward_pre_hook(pre_hook))
        else:

            def hook(m, args, out, replacement=replacement):
                return _with_first(out, replaced(_first(out), replacement))

            handles.append(module.register_forward_hook(hook))
    with _registered(handles):
        yield


@contextlib.contextmanager
def scale_neurons(
    model: nn.Module,
    layer: int,
    neurons: Sequence[int] | torch.Tensor,
    alpha: float,
    *,
    adapter: ArchitectureAdapter | None = None,
) -> Iterator[None]:
    """Multiply MLP neuron activations (input of ``down_proj``) of ``layer`` by ``alpha``."""
    adapter = adapter or adapter_for(model)
    index = torch.as_tensor(neurons, dtype=torch.long)

    def scale(activation: torch.Tensor) -> torch.Tensor:
        factor = torch.ones(activation.shape[-1], dtype=activation.dtype, device=activation.device)
        factor[index.to(activation.device)] = alpha
        return activation * factor

    with patch(model, {hook_name("neurons", layer): scale}, adapter=adapter):
        yield


def run_with_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], *args, **kwargs):
    """Weight swapping: run ``model`` with some parameters replaced, without mutating it.

    ``weights`` maps parameter names (as in ``model.named_parameters()``) to tensors, e.g.
    another checkpoint's ``model.layers.3.mlp.down_proj.weight``. The loaded model keeps
    its own weights; this is ``torch.func.functional_call``.
    """
    return torch.func.functional_call(model, dict(weights), args, kwargs, strict=False)
