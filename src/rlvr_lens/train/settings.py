"""The settings of a GRPO run, torch-free: :class:`GRPOSettings` and :class:`AdapterConfig`.

This module imports neither torch, transformers, TRL nor NumPy, so the command line builds
``rlvr-lens train``'s flags from these dataclasses (see ``rlvr_lens.cli.dataclass_args``)
without paying for those imports.

Fields that mean what a field of ``trl.GRPOConfig`` means carry TRL's name and
``metadata["trl"] = True`` (listed in :data:`TRL_FIELDS`); :func:`rlvr_lens.train.grpo.grpo_config`
passes them to ``GRPOConfig`` unchanged, by name. The other fields are rlvr-lens's own (the
reward, the batch layout, evaluation, the divergence weighting). Every field has
``metadata["help"]``, the text of its command-line flag.

Until issue 16 seven fields had other names; :data:`RENAMED` maps them, and
:meth:`GRPOSettings.from_dict` (used wherever a saved ``grpo_run.json`` or organism manifest is
read back) accepts either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rlvr_lens.errors import UserError

#: Names of the rewards of :func:`rlvr_lens.train.rewards.make_reward`.
REWARD_NAMES = ("correct", "random", "format", "incorrect", "accuracy_format", "incorrect_label")
#: TRL's loss aggregations that GRPOSettings allows.
LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo")

#: Old field name -> its TRL name (renamed in issue 16; old names still load).
RENAMED = {
    "steps": "max_steps",
    "group_size": "num_generations",
    "kl_coef": "beta",
    "clip_eps": "epsilon",
    "max_new_tokens": "max_completion_length",
    "save_every": "save_steps",
    "eval_every": "eval_steps",
}

# ----------------------------------------------------------------------------- adapters (PEFT ablation)

METHODS = ("full", "lora", "pissa", "sparse")
SPARSE_CRITERIA = ("magnitude",)
#: Every linear projection of a decoder layer (Llama / Qwen2 / Qwen3 / Mistral / OLMo-2 / Gemma names).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class AdapterConfig:
    """Which parameter-efficient method trains the model (see :mod:`rlvr_lens.train.peft_methods`).

    Attributes:
        method: ``full``, ``lora``, ``pissa`` or ``sparse``.
        rank: adapter rank ``r`` (``lora`` / ``pissa``).
        alpha: LoRA scale numerator; the update is ``(alpha / rank) B A``. ``None`` = ``rank``
            (scale 1, so the learning rate means the same at every rank).
        target_modules: module-name suffixes that get an adapter or a mask (default: every
            linear projection of the decoder layers; embeddings, LM head and norms stay frozen
            for every method but ``full``).
        sparse_fraction: share of the entries of each target matrix that train (``sparse``), in (0, 1].
        sparse_criterion: how the entries are chosen; ``magnitude`` = the largest ``|W0|``.
    """

    method: str = "full"
    rank: int = 16
    alpha: float | None = None
    target_modules: tuple[str, ...] = field(default_factory=lambda: DEFAULT_TARGETS)
    sparse_fraction: float = 0.1
    sparse_criterion: str = "magnitude"

    def check(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"Unknown adapter {self.method!r}; use one of {', '.join(METHODS)}.")
        if self.rank < 1:
            raise UserError(f"Adapter rank must be at least 1; got {self.rank}.")
        if self.alpha is not None and self.alpha <= 0:
            raise UserError(f"Adapter alpha must be positive; got {self.alpha}.")
        if not self.target_modules:
            raise UserError("Give at least one target module for the adapter.")
        if not 0 < self.sparse_fraction <= 1:
            raise UserError(f"Sparse fraction must lie in (0, 1]; got {self.sparse_fraction}.")
        if self.sparse_criterion not in SPARSE_CRITERIA:
            raise UserError(
                f"Unknown sparse criterion {self.sparse_criterion!r}; use one of {', '.join(SPARSE_CRITERIA)}."
            )

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


# ----------------------------------------------------------------------------- GRPO


def _meta(help: str, *, trl: bool = False, **extra: Any) -> dict[str, Any]:
    """A field's metadata: its help text, whether it is TRL's field of that name, and what the
    CLI needs to check it (``choices``, ``min`` for integers, ``low`` / ``high`` / ``low_open``
    for floats)."""
    return {"help": help, "trl": trl, **extra}


@dataclass
class GRPOSettings:
    """How to run GRPO. Defaults suit the model organism on a CPU.

    One *generation batch* is ``prompts_per_step`` distinct prompts x ``num_generations``
    completions each. It is split into ``steps_per_generation`` mini-batches, one optimizer
    step each (the later ones are off-policy, so the clipped ratio matters), and that pass
    is repeated ``num_iterations`` times. ``max_steps`` counts optimizer steps.
    """

    reward: str = field(default="correct", metadata=_meta("training reward", choices=REWARD_NAMES))
    random_p: float = field(default=0.5, metadata=_meta("P(reward=1) for --reward random", low=0.0, high=1.0))
    max_steps: int = field(default=50, metadata=_meta("optimizer steps", trl=True, min=1))
    prompts_per_step: int = field(default=8, metadata=_meta("distinct prompts per generation batch", min=1))
    # min 1: GRPOSettings.check explains in a sentence why GRPO needs 2
    num_generations: int = field(default=8, metadata=_meta("completions per prompt (the GRPO group)", trl=True, min=1))
    learning_rate: float = field(
        default=1e-5, metadata=_meta("learning rate, constant, no warm-up", trl=True, low=0.0, low_open=True)
    )
    beta: float = field(default=0.0, metadata=_meta("KL penalty coefficient; 0 = none", trl=True, low=0.0))
    epsilon: float = field(default=0.2, metadata=_meta("PPO clip range epsilon", trl=True, low=0.0, low_open=True))
    # Not TRL's steps_per_generation: TRL counts micro-batches (see rlvr_lens.train.grpo.trl_batch_layout).
    steps_per_generation: int = field(
        default=1, metadata=_meta("optimizer steps per generation batch; >1 makes later steps off-policy", min=1)
    )
    max_completion_length: int = field(
        default=64, metadata=_meta("completion length cap of the sampled completions (tokens)", trl=True, min=1)
    )
    temperature: float = field(default=1.0, metadata=_meta("sampling temperature", trl=True, low=0.0, low_open=True))
    divergence_weighting: bool = field(
        default=False, metadata=_meta("weight token advantages by divergence from the start model")
    )
    template: str = field(default="organism", metadata=_meta("prompt template: plain, boxed, qwen-math, organism"))
    save_steps: int = field(
        default=10, metadata=_meta("save step-k/ every k steps and at the end; 0 = at the end only", trl=True, min=0)
    )
    eval_steps: int = field(default=10, metadata=_meta("evaluate every k steps; 0 = never", trl=True, min=0))
    eval_max_new_tokens: int = field(default=64, metadata=_meta("length cap of the greedy evaluation answers", min=1))
    seed: int = field(default=0, metadata=_meta("random seed (also TRL's data_seed)", trl=True, min=0))
    num_iterations: int = field(
        default=1, metadata=_meta("passes over each generation batch (the GRPO paper's mu)", trl=True, min=1)
    )
    micro_batch_size: int = field(
        default=0, metadata=_meta("completions per forward/backward pass; 0 = a whole optimizer step", min=0)
    )
    loss_type: str = field(
        default="dapo",
        metadata=_meta("TRL's loss aggregation (dapo: a token mean over the batch, as veRL)", trl=True, choices=LOSS_TYPES),
    )
    track_kl: bool = field(
        default=True,
        metadata=_meta("keep a frozen copy of the starting model to log KL(policy || start) when beta is 0 (one model's memory)"),
    )
    one_shot: bool = field(
        default=False, metadata=_meta("train on the first sample only (one-shot RLVR), repeated to fill each batch")
    )
    eval_batch_size: int = field(default=16, metadata=_meta("prompts per greedy evaluation batch", min=1))
    gradient_checkpointing: bool = field(
        default=False, metadata=_meta("recompute activations in the backward pass", trl=True)
    )
    adapter: AdapterConfig | None = field(
        default=None, metadata=_meta("PEFT ablation: lora / pissa / sparse (None = full fine-tuning)")
    )

    def __post_init__(self):
        if isinstance(self.adapter, dict):  # settings read back from grpo_run.json
            self.adapter = AdapterConfig(**{**self.adapter, "target_modules": tuple(self.adapter["target_modules"])})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GRPOSettings:
        """Settings from a dict (``grpo_run.json``'s ``settings``, an organism manifest's ``rl``),
        old field names (:data:`RENAMED`) included. Unknown keys are a :class:`UserError`."""
        return cls(**upgrade_names(data, cls, "GRPO setting"))

    @property
    def completions_per_generation(self) -> int:
        return self.prompts_per_step * self.num_generations

    def check(self) -> None:
        """Raise :class:`UserError` (one sentence) for settings TRL would reject or that make no sense."""
        from rlvr_lens.data.templates import TEMPLATES

        if self.reward not in REWARD_NAMES:
            raise UserError(f"Unknown reward {self.reward!r}; use one of {', '.join(REWARD_NAMES)}.")
        if self.template not in TEMPLATES:
            raise UserError(f"Unknown prompt template {self.template!r}; use one of {', '.join(TEMPLATES)}.")
        positive = {
            "max_steps": self.max_steps,
            "prompts_per_step": self.prompts_per_step,
            "steps_per_generation": self.steps_per_generation,
            "num_iterations": self.num_iterations,
            "max_completion_length": self.max_completion_length,
            "eval_max_new_tokens": self.eval_max_new_tokens,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"{name} must be at least 1; got {value}.")
        if self.num_generations < 2:
            raise UserError(
                f"GRPO needs at least 2 completions per prompt (num_generations); got {self.num_generations}."
            )
        if not 0.0 <= self.random_p <= 1.0:
            raise UserError(f"random_p must lie in [0, 1]; got {self.random_p}.")
        if self.learning_rate <= 0 or self.epsilon <= 0 or self.temperature <= 0:
            raise UserError("learning_rate, epsilon and temperature must be positive.")
        if self.beta < 0:
            raise UserError(f"beta (the KL coefficient) must be >= 0; got {self.beta}.")
        if self.save_steps < 0 or self.eval_steps < 0 or self.micro_batch_size < 0:
            raise UserError(
                "save_steps, eval_steps and micro_batch_size must be >= 0 (0 = off / whole batch)."
            )
        total = self.completions_per_generation
        if total % self.steps_per_generation:
            raise UserError(
                f"prompts_per_step x num_generations ({total}) must be divisible by steps_per_generation "
                f"({self.steps_per_generation}), so that each optimizer step gets an equal share."
            )
        per_step = total // self.steps_per_generation
        if self.micro_batch_size and per_step % self.micro_batch_size:
            raise UserError(
                f"Completions per optimizer step ({per_step}) must be divisible by micro_batch_size ({self.micro_batch_size})."
            )
        if self.loss_type not in LOSS_TYPES:
            raise UserError(f"Unknown loss_type {self.loss_type!r}; use one of {', '.join(LOSS_TYPES)}.")
        if self.adapter is not None:
            self.adapter.check()


#: GRPOSettings fields passed to ``trl.GRPOConfig`` under the same name and with the same value.
TRL_FIELDS = tuple(f.name for f in fields(GRPOSettings) if f.metadata.get("trl"))


def new_name(name: str, cls: type) -> str:
    """``name`` of a field of dataclass ``cls``, an old name (:data:`RENAMED`) translated;
    ``name`` unchanged when it is neither."""
    names = {f.name for f in fields(cls)}
    if name not in names and RENAMED.get(name) in names:
        return RENAMED[name]
    return name


def upgrade_names(data: dict[str, Any], cls: type, what: str = "setting") -> dict[str, Any]:
    """``data`` with old field names of dataclass ``cls`` replaced by the new ones.

    Raises :class:`UserError` for a key that is no field of ``cls`` (old or new) and for a
    setting given under both its names.
    """
    names = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in data.items():
        name = new_name(key, cls)
        if name not in names:
            raise UserError(f"Unknown {what} {key!r}; use one of {', '.join(sorted(names))}.")
        if name in out:
            raise UserError(f"The {what} {name!r} is given twice, as {given[name]!r} and as {key!r}.")
        out[name], given[name] = value, key
    return out


def upgrade_settings_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A saved GRPOSettings dict with the old names translated and unknown keys kept as they are
    (for reading old ``grpo_run.json`` files in reports, which must never fail on a key)."""
    return {new_name(key, GRPOSettings): value for key, value in data.items()}
