"""Parameter-efficient fine-tuning for the PEFT ablation (*The Path Not Taken*, issue 17).

Four ways to train a causal LM, named by :attr:`AdapterConfig.method`:

* ``full``: every parameter (the default everywhere; nothing here is used);
* ``lora``: a rank-``r`` update ``dW = (alpha / r) B A`` on each target projection, ``B``
  zero-initialised (``peft``'s LoRA), so training starts exactly at the base;
* ``pissa``: the same adapter, *principal-targeted*: ``B A`` is initialised to the top-``r``
  singular triplets of ``W0`` and the frozen weight becomes the residual ``W0 - B A``
  (``peft``'s ``init_lora_weights="pissa"``), so the update lives, to first order, in the
  principal subspace that RLVR is said to avoid;
* ``sparse``: only the top-``sparse_fraction`` entries of each target matrix by the
  stated criterion train; everything else (all other entries, embeddings, norms) stays
  bit-identical. Criterion ``magnitude``: the largest ``|W0|`` entries of the base, chosen
  per matrix (ties broken by ``torch.topk``).

Whatever the method, the result is written as a *plain* Hugging Face checkpoint (the
adapter merged into the weights, see :func:`merged_model` and :func:`merge_adapter`), so
``rlvr-lens weights`` reads it like any other.

Sparse masks act through tensor hooks that multiply each gradient by the mask (so AdamW's
moments of frozen entries stay zero and their update is exactly zero), plus
:meth:`SparseMask.restore`, called after every optimizer step, which copies the base values
back into the frozen entries -- weight decay, which moves every parameter with a gradient,
cannot move them either.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlvr_lens.errors import UserError

# AdapterConfig lives in the torch-free settings module (the CLI builds its flags from it); re-exported here.
from rlvr_lens.train.settings import DEFAULT_TARGETS, METHODS, SPARSE_CRITERIA, AdapterConfig  # noqa: F401


def _is_target(name: str, config: AdapterConfig) -> bool:
    return any(name == t or name.endswith("." + t) for t in config.target_modules)


def target_linears(model: nn.Module, config: AdapterConfig) -> dict[str, nn.Linear]:
    """``module name -> nn.Linear`` of every target projection; UserError when there is none."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and _is_target(n, config)}
    if not found:
        raise UserError(
            f"The model has no linear module named {', '.join(config.target_modules)}; "
            "choose target modules it has."
        )
    return found


def lora_config(config: AdapterConfig):
    """The ``peft.LoraConfig`` for a ``lora`` or ``pissa`` :class:`AdapterConfig` (TRL's ``peft_config``)."""
    from peft import LoraConfig

    config.check()
    if config.method not in ("lora", "pissa"):
        raise UserError(f"Adapter {config.method!r} is not a LoRA adapter.")
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha if config.alpha is not None else config.rank,
        target_modules=list(config.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights="pissa" if config.method == "pissa" else True,
    )


def check_rank_fits(model: nn.Module, config: AdapterConfig) -> None:
    """UserError when the adapter rank exceeds the smaller side of a target matrix."""
    if config.method not in ("lora", "pissa"):
        return
    smallest = min(min(m.weight.shape) for m in target_linears(model, config).values())
    if config.rank > smallest:
        raise UserError(
            f"Adapter rank {config.rank} exceeds the smallest side ({smallest}) of a target matrix; use a lower rank."
        )


# ----------------------------------------------------------------------------- sparse masks


def magnitude_mask(weight: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask (shape of ``weight``) of its ``round(fraction * numel)`` largest ``|w|`` entries (at least 1)."""
    flat = weight.detach().abs().flatten()
    k = max(1, round(fraction * flat.numel()))
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=weight.device)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view_as(weight)


class SparseMask:
    """Trains only the masked entries of each target matrix; see the module docstring.

    Attributes:
        masks: ``parameter name -> bool tensor`` (True = trains).
    """

    def __init__(self, model: nn.Module, config: AdapterConfig):
        config.check()
        self.model = model
        self.masks: dict[str, torch.Tensor] = {}
        self._frozen: dict[str, torch.Tensor] = {}  # base values, restored into the frozen entries
        self._handles = []
        targets = target_linears(model, config)
        trainable = {f"{n}.weight" for n in targets}
        for name, param in model.named_parameters():
            if name not in trainable:
                param.requires_grad_(False)
                continue
            mask = magnitude_mask(param, config.sparse_fraction)
            self.masks[name] = mask
            self._frozen[name] = param.detach().clone()
            param.requires_grad_(True)
            self._handles.append(param.register_hook(lambda grad, m=mask: grad * m.to(grad.dtype)))

    @property
    def params(self) -> dict[str, nn.Parameter]:
        named = dict(self.model.named_parameters())
        return {name: named[name] for name in self.masks}

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the base values back into every frozen entry (call after each optimizer step)."""
        for name, param in self.params.items():
            mask = self.masks[name]
            param.copy_(torch.where(mask, param, self._frozen[name].to(param.device)))

    def remove(self) -> None:
        """Remove the gradient hooks (the model is a plain model again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def trained_fraction(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        return sum(int(m.sum()) for m in self.masks.values()) / max(1, total)


def sparse_callback(mask: SparseMask):
    """A ``transformers.TrainerCallback`` that calls :meth:`SparseMask.restore` after every optimizer step."""
    from transformers import TrainerCallback

    class SparseMaskCallback(TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            mask.restore()

    return SparseMaskCallback()


# ----------------------------------------------------------------------------- applying and merging


@dataclass
class Adaptation:
    """A model prepared for training by :func:`apply_adapter`.

    ``model`` is what to train (a ``peft.PeftModel`` for LoRA / PiSSA, else the model
    itself); call :meth:`after_step` after every optimizer step and :meth:`finish` at the
    end, which returns the plain, merged model (the original module object, updated in place).
    """

    config: AdapterConfig
    model: nn.Module
    mask: SparseMask | None = None

    def after_step(self) -> None:
        if self.mask is not None:
            self.mask.restore()

    def finish(self) -> nn.Module:
        if self.mask is not None:
            self.mask.restore()
            self.mask.remove()
            for param in self.model.parameters():
                param.requires_grad_(True)
            return self.model
        if is_peft(self.model):
            merged = self.model.merge_and_unload()
            for param in merged.parameters():
                param.requires_grad_(True)
            return merged
        return self.model


def apply_adapter(model: nn.Module, config: AdapterConfig | None) -> Adaptation:
    """Prepare ``model`` for training with ``config`` (``None`` or ``full``: unchanged)."""
    config = config or AdapterConfig()
    config.check()
    if config.method == "full":
        return Adaptation(config, model)
    if config.method == "sparse":
        return Adaptation(config, model, SparseMask(model, config))
    from peft import get_peft_model

    check_rank_fits(model, config)
    return Adaptation(config, get_peft_model(model, lora_config(config)))


def is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def merged_model(model: nn.Module) -> nn.Module:
    """A plain model for saving: ``model`` itself, or for a PeftModel a merged copy (``model`` keeps training).

    The copy costs one more model's memory while it is saved.
    """
    if not is_peft(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def merge_adapter(model_dir: str | Path, out_dir: str | Path, *, base_dir: str | Path | None = None) -> Path:
    """Merge a saved LoRA adapter directory into its base and write a plain HF checkpoint to ``out_dir``.

    ``model_dir`` holds ``adapter_config.json`` and the adapter weights (``PeftModel.save_pretrained``);
    the base is ``base_dir`` or the adapter's ``base_model_name_or_path``. PiSSA adapters saved this
    way are relative to the *residual* base and cannot be merged onto the original one: our
    trainers save PiSSA runs merged already.
    """
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr_lens.io import atomic_save_pretrained

    model_dir = Path(model_dir)
    cfg_path = model_dir / "adapter_config.json"
    if not cfg_path.exists():
        raise UserError(f"{model_dir} holds no adapter_config.json; give a saved PEFT adapter directory.")
    cfg = json.loads(cfg_path.read_text())
    init = cfg.get("init_lora_weights")
    if isinstance(init, str) and init.startswith("pissa"):
        raise UserError(
            f"{model_dir} is a PiSSA adapter, relative to the residual base; merge it in memory before saving."
        )
    base = Path(base_dir) if base_dir is not None else Path(cfg.get("base_model_name_or_path") or "")
    if not (base / "config.json").exists():
        raise UserError(f"The adapter's base checkpoint {base} does not exist; give it as base_dir.")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    tok_dir = model_dir if (model_dir / "tokenizer_config.json").exists() else base
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    return atomic_save_pretrained(merged, tokenizer, out_dir)
