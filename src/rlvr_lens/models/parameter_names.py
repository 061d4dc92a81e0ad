"""What a stored parameter is: ``(layer, module type)`` from its name, for every supported family.

All supported families (Llama, Qwen2/2.5, Qwen3, Mistral, OLMo-2, Gemma-2/3) store decoder
parameters as ``<prefix>.layers.<i>.<module path>.(weight|bias)``; the prefix is ``model``
for causal LMs and e.g. ``model.language_model`` / ``language_model.model`` for multimodal
wrappers, so the layer is read from the ``layers.<i>`` component wherever it is.

Module types (short names used in tables and heatmap columns):

==================================  ===========================================
stored module                       module type
==================================  ===========================================
``self_attn.{q,k,v,o}_proj``        ``q``, ``k``, ``v``, ``o`` (``q_bias``... for Qwen2 biases)
``mlp.{gate,up,down}_proj``         ``gate``, ``up``, ``down``
``embed_tokens`` / ``lm_head``      ``embed`` / ``lm_head``
norms                               their stored name: ``input_layernorm``,
                                    ``post_attention_layernorm`` (pre-MLP norm in
                                    Llama/Qwen, post-attention output norm in
                                    OLMo-2/Gemma), ``pre_feedforward_layernorm``,
                                    ``post_feedforward_layernorm``, ``q_norm``,
                                    ``k_norm``; the final norm is ``final_norm``
==================================  ===========================================
"""

from __future__ import annotations

import re

#: Heatmap column order: attention, MLP, then norms; anything else follows in name order.
MODULE_ORDER = (
    "embed",
    "q",
    "k",
    "v",
    "o",
    "gate",
    "up",
    "down",
    "q_bias",
    "k_bias",
    "v_bias",
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
    "q_norm",
    "k_norm",
    "final_norm",
    "lm_head",
)

_PROJECTIONS = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.(weight|bias)$")


def parameter_role(name: str) -> tuple[int | None, str]:
    """``(layer, module type)`` of a stored parameter name; layer is ``None`` outside the decoder layers.

    >>> parameter_role("model.layers.3.mlp.down_proj.weight")
    (3, 'down')
    >>> parameter_role("model.layers.0.self_attn.q_proj.bias")
    (0, 'q_bias')
    >>> parameter_role("lm_head.weight")
    (None, 'lm_head')
    """
    match = _LAYER.search(name)
    if match:
        layer, path, kind = int(match.group(1)), match.group(2), match.group(3)
        leaf = path.rsplit(".", 1)[-1]
        module = _PROJECTIONS.get(leaf, leaf)
        if kind == "bias":
            module = f"{module}_bias"
        return layer, module
    if "embed_tokens" in name:
        return None, "embed"
    if name.startswith("lm_head") or ".lm_head." in name:
        return None, "lm_head"
    if re.search(r"(?:^|\.)norm\.weight$", name):
        return None, "final_norm"
    return None, name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name


def module_sort_key(module: str) -> tuple[int, str]:
    """Sort modules as :data:`MODULE_ORDER`, unknown ones last by name."""
    return (MODULE_ORDER.index(module), "") if module in MODULE_ORDER else (len(MODULE_ORDER), module)


def name_sort_key(name: str) -> tuple[int, int, str, str]:
    """Sort parameter names: embedding, layers in numeric order (modules as :data:`MODULE_ORDER`), then the rest."""
    layer, module = parameter_role(name)
    group = 0 if module == "embed" else (1 if layer is not None else 2)
    rank, extra = module_sort_key(module)
    return (group, layer if layer is not None else -1, f"{rank:03d}{extra}", name)
