"""Architecture adapters: where each supported family keeps the modules an analysis needs.

Hook points are named by what they *mean*, not by the module that happens to produce
them, because the same module name means different things across families:

=============  =====================================================================
hook point     meaning
=============  =====================================================================
``resid_post`` residual stream after decoder layer ``i`` (the layer's output)
``attn_out``   what the attention block adds to the residual stream in layer ``i``
``mlp_out``    what the MLP block adds to the residual stream in layer ``i``
``neurons``    MLP neuron activations ("keys"): the *input* of ``down_proj``,
               ``act(gate(x)) * up(x)``, shape ``[batch, seq, intermediate_size]``
``gate``       output of ``gate_proj`` (pre-activation), ``[batch, seq, intermediate]``
``up``         output of ``up_proj``, ``[batch, seq, intermediate]``
``down``       output of ``down_proj``, ``[batch, seq, hidden]``
=============  =====================================================================

Pre-norm families (Llama, Qwen2/2.5, Qwen3, Mistral) add the MLP's output directly, so
``mlp_out`` is the output of ``layer.mlp`` and ``post_attention_layernorm`` is the *pre*-MLP
norm. OLMo-2 is post-norm and Gemma-2/3 use sandwich norms: the residual stream receives
``post_feedforward_layernorm(mlp(...))``, so ``mlp_out`` is that norm's output, and
``attn_out`` is the output of ``post_attention_layernorm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlvr_lens.errors import UserError

HOOK_POINTS = ("resid_post", "attn_out", "mlp_out", "neurons", "gate", "up", "down")


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Names, for one family, the modules behind each hook point.

    All module paths are relative to the decoder layer ``model.<base>.layers.<i>``.
    """

    family: str
    model_types: tuple[str, ...]
    attn_out_module: str
    mlp_out_module: str
    base_attr: str = "model"
    layers_attr: str = "layers"
    final_norm_attr: str = "norm"
    gate_module: str = "mlp.gate_proj"
    up_module: str = "mlp.up_proj"
    down_module: str = "mlp.down_proj"
    o_proj_module: str = "self_attn.o_proj"

    # ----------------------------------------------------------------- module lookup
    def base_model(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.base_attr)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return getattr(self.base_model(model), self.layers_attr)

    def num_layers(self, model: nn.Module) -> int:
        return len(self.layers(model))

    def final_norm(self, model: nn.Module) -> nn.Module:
        return getattr(self.base_model(model), self.final_norm_attr)

    def unembedding(self, model: nn.Module) -> nn.Module:
        return model.get_output_embeddings()

    def layer_module(self, model: nn.Module, layer: int, path: str) -> nn.Module:
        return self.layers(model)[layer].get_submodule(path)

    def hook_target(self, model: nn.Module, point: str, layer: int) -> tuple[nn.Module, str]:
        """Return ``(module, "output" | "input")``: where a hook for ``point`` attaches.

        ``"input"`` means the value is the (first) positional input of the module and is
        read or replaced with a forward *pre*-hook.
        """
        n = self.num_layers(model)
        if not -n <= layer < n:
            raise UserError(f"Layer {layer} does not exist: the model has {n} decoder layers (0..{n - 1}).")
        if point == "resid_post":
            return self.layers(model)[layer], "output"
        paths = {
            "attn_out": self.attn_out_module,
            "mlp_out": self.mlp_out_module,
            "gate": self.gate_module,
            "up": self.up_module,
            "down": self.down_module,
        }
        if point == "neurons":
            return self.layer_module(model, layer, self.down_module), "input"
        if point not in paths:
            raise UserError(f"Unknown hook point {point!r}; known points: {', '.join(HOOK_POINTS)}.")
        return self.layer_module(model, layer, paths[point]), "output"

    # ----------------------------------------------------------------- logit lens
    def logits_from_residual(self, model: nn.Module, residual: torch.Tensor) -> torch.Tensor:
        """Logits that the final norm + unembedding (+ soft-capping) give for a residual state.

        ``residual``: ``[..., hidden]`` *before* the final norm. Returns ``[..., vocab]``.
        """
        hidden = self.final_norm(model)(residual)
        return self.logits_from_normed(model, hidden)

    def logits_from_normed(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Logits for a hidden state that is already final-normed (e.g. ``hidden_states[-1]``)."""
        logits = self.unembedding(model)(hidden)
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits


_PRE_NORM = dict(attn_out_module="self_attn.o_proj", mlp_out_module="mlp")
_SANDWICH = dict(attn_out_module="post_attention_layernorm", mlp_out_module="post_feedforward_layernorm")

ADAPTERS: tuple[ArchitectureAdapter, ...] = (
    ArchitectureAdapter("llama", ("llama",), **_PRE_NORM),
    ArchitectureAdapter("qwen2", ("qwen2",), **_PRE_NORM),
    ArchitectureAdapter("qwen3", ("qwen3",), **_PRE_NORM),
    ArchitectureAdapter("mistral", ("mistral",), **_PRE_NORM),
    ArchitectureAdapter("olmo2", ("olmo2",), **_SANDWICH),
    ArchitectureAdapter("gemma2", ("gemma2",), **_SANDWICH),
    ArchitectureAdapter("gemma3", ("gemma3_text",), **_SANDWICH),
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for a in ADAPTERS for t in a.model_types)


def adapter_for_model_type(model_type: str) -> ArchitectureAdapter:
    """The adapter for a ``config.model_type``; a :class:`UserError` names the supported ones."""
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise UserError(
        f"Architecture {model_type!r} is not supported; supported model types are: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)}."
    )


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    return adapter_for_model_type(model.config.model_type)
