"""Is a pair / series of checkpoints comparable? Each mismatch is reported in one sentence.

Checks, without loading any weights: same architecture (``model_type``), same parameter
names and shapes (the model is built on the ``meta`` device from its config), and the
same tokenizer vocabulary.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from rlvr_lens.errors import UserError
from rlvr_lens.models.adapters import adapter_for_model_type
from rlvr_lens.models.loading import load_config, load_tokenizer


def parameter_shapes(config) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, from the config alone (model built on the meta device)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def compatibility_problems(sources: list[str], names: list[str] | None = None) -> list[str]:
    """Return one sentence per mismatch between the first checkpoint and each other one."""
    names = names or list(sources)
    configs = [load_config(s) for s in sources]
    for config in configs:
        adapter_for_model_type(config.model_type)
    problems: list[str] = []
    base_cfg, base_name = configs[0], names[0]
    base_shapes = parameter_shapes(base_cfg)
    base_vocab = load_tokenizer(sources[0]).get_vocab()
    for config, name, source in zip(configs[1:], names[1:], sources[1:]):
        if config.model_type != base_cfg.model_type:
            problems.append(
                f"{name} is a {config.model_type} model but {base_name} is a {base_cfg.model_type} model."
            )
            continue
        shapes = parameter_shapes(config)
        missing = sorted(set(base_shapes) - set(shapes))
        extra = sorted(set(shapes) - set(base_shapes))
        if missing or extra:
            detail = f"missing {missing[0]}" if missing else f"extra {extra[0]}"
            problems.append(
                f"{name} and {base_name} have different parameters ({len(missing)} missing, {len(extra)} extra; "
                f"first: {detail})."
            )
        differing = [(k, base_shapes[k], shapes[k]) for k in base_shapes if k in shapes and base_shapes[k] != shapes[k]]
        if differing:
            key, a, b = differing[0]
            problems.append(
                f"{name} and {base_name} differ in {len(differing)} parameter shapes (first: {key} is "
                f"{list(b)} vs {list(a)}; hidden_size {getattr(config, 'hidden_size', '?')} vs "
                f"{getattr(base_cfg, 'hidden_size', '?')})."
            )
        vocab = load_tokenizer(source).get_vocab()
        if vocab != base_vocab:
            changed = sum(1 for tok, idx in vocab.items() if base_vocab.get(tok) != idx)
            problems.append(
                f"{name} and {base_name} use different tokenizers (vocabulary sizes {len(vocab)} vs "
                f"{len(base_vocab)}, {changed} tokens differ)."
            )
    return problems


def check_compatible(sources: list[str], names: list[str] | None = None) -> None:
    """Raise a :class:`UserError` with every mismatch, one sentence each."""
    problems = compatibility_problems(sources, names)
    if problems:
        raise UserError(" ".join(problems))
