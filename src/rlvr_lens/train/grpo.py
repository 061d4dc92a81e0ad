"""GRPO training (RLVR) of a Hugging Face causal LM with any of our rewards, on TRL's GRPOTrainer.

:func:`train_grpo` maps :class:`GRPOSettings` onto TRL's ``GRPOConfig`` (see
:func:`grpo_config` and docs/training.md), trains, and writes:

* ``out_dir/step-{k}/``: the policy after ``k`` optimizer steps (model + tokenizer, a
  normal Hugging Face directory), every ``save_steps`` steps and at the last step;
* ``out_dir/metrics.jsonl``: one JSON object per logged step, appended (and flushed) as
  training goes, so an interrupted run keeps what it logged.

It returns a :class:`GRPORun`. Besides the training reward, every generation batch is also
graded with the *true* reward (``correct``, weight 0 in the advantage), so a run on a
spurious reward still reports how often its samples were right.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvr_lens.data.sample import Sample
from rlvr_lens.data.templates import apply_template
from rlvr_lens.errors import UserError
from rlvr_lens.io import atomic_save_pretrained
from rlvr_lens.report.registry import register
from rlvr_lens.results import Result
from rlvr_lens.train.report import ENTRY as _REPORT_ENTRY
from rlvr_lens.train.rewards import WRONG_LABEL, as_trl_reward, make_reward
from rlvr_lens.train.settings import TRL_FIELDS, AdapterConfig, GRPOSettings

__all__ = ["TRUE_ACCURACY", "GRPORun", "GRPOSettings", "build_trainer", "grpo_config", "train_grpo", "trl_batch_layout"]

#: TRL's metric name for the true-reward monitor (weight 0 in the advantage).
TRUE_ACCURACY = "true_accuracy"


def trl_batch_layout(settings: GRPOSettings) -> dict[str, int]:
    """TRL's batch arguments for our settings (single process).

    ``G = prompts_per_step * num_generations`` completions are generated at once; each of the
    ``steps_per_generation`` optimizer steps sees ``G / steps_per_generation`` of them, in
    micro-batches of ``micro_batch_size`` (gradient accumulation).
    """
    per_step = settings.completions_per_generation // settings.steps_per_generation
    micro = settings.micro_batch_size or per_step
    accumulation = per_step // micro
    return {
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accumulation,
        "steps_per_generation": settings.steps_per_generation * accumulation,  # TRL counts micro-batches
    }


def grpo_config(settings: GRPOSettings, output_dir: str | os.PathLike):
    """The ``trl.GRPOConfig`` that runs ``settings`` (see docs/training.md for the mapping).

    The fields in :data:`~rlvr_lens.train.settings.TRL_FIELDS` go through by name; the batch
    layout is :func:`trl_batch_layout`'s; the rest is fixed (our callback saves and evaluates).
    """
    from trl import GRPOConfig

    on_gpu = torch.cuda.is_available()
    return GRPOConfig(
        output_dir=str(output_dir),
        **{name: getattr(settings, name) for name in TRL_FIELDS},
        **trl_batch_layout(settings),
        lr_scheduler_type="constant",
        warmup_steps=0,
        top_p=1.0,
        top_k=0,
        data_seed=settings.seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=not on_gpu,
        bf16=bool(on_gpu and torch.cuda.is_bf16_supported()),
        fp16=False,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        log_completions=False,
    )


@dataclass
class GRPORun(Result):
    """What one GRPO run did, step by step.

    Attributes:
        settings: the :class:`GRPOSettings` as a dict.
        steps: one row per logged step (step 0 holds only the initial evaluation). Keys:
            ``step``; ``reward_mean``/``reward_std`` (training reward over the generation
            batch); ``accuracy`` (fraction of the batch's completions that are correct under
            the true reward, whatever the training reward); ``kl`` (mean per-token KL of the
            policy from the starting model on the sampled completions, TRL's k3 estimator);
            ``entropy`` (mean per-token entropy, nats); ``clip_ratio`` (fraction of completion
            tokens whose probability ratio was clipped), ``clip_low`` / ``clip_high`` (its two
            sides: ratio below 1 - eps with a negative advantage, above 1 + eps with a positive
            one); ``completion_length`` (tokens);
            ``loss``; ``grad_norm``; ``eval/<name>`` (greedy accuracy on each eval set).
            Values absent at a step (e.g. rewards on a step that reused a batch) are null.
        checkpoints: saved ``step-{k}`` directories, in order.
        final_dir: the last saved directory.
        wall_time_s: seconds from start to end of training (saving and evaluation included).
    """

    kind = "grpo_run"

    settings: dict
    steps: list[dict]
    checkpoints: list[str]
    final_dir: str
    wall_time_s: float
    model_dir: str = ""
    train_size: int = 0
    eval_sizes: dict = field(default_factory=dict)


register(GRPORun.kind, _REPORT_ENTRY)


#: Our metric name -> TRL's logged key.
_LOG_KEYS = {
    "reward_mean": "reward",
    "reward_std": "reward_std",
    "accuracy": f"rewards/{TRUE_ACCURACY}/mean",
    "kl": "lens/kl",
    "kl_penalty": "kl",
    "entropy": "entropy",
    "clip_ratio": "clip_ratio/region_mean",
    "completion_length": "completions/mean_length",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "divergence_weight_max": "lens/divergence_weight_max",
    # Share of completion tokens clipped from below (ratio < 1 - eps, negative advantage) and from
    # above (ratio > 1 + eps, positive advantage); ``clip_ratio`` is their union.
    "clip_low": "clip_ratio/low_mean",
    "clip_high": "clip_ratio/high_mean",
}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def metrics_row(step: int, logs: dict[str, Any]) -> dict[str, Any]:
    """Our row for one TRL log entry (absent or non-finite values become ``None``)."""
    row: dict[str, Any] = {"step": int(step)}
    for ours, theirs in _LOG_KEYS.items():
        if theirs in logs:
            row[ours] = _finite_or_none(logs[theirs])
    return row


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _make_callback(
    settings: GRPOSettings,
    out_dir: Path,
    tokenizer,
    eval_sets: dict[str, list[Sample]],
    show_progress: bool,
):
    from transformers import TrainerCallback

    from rlvr_lens.generation import accuracy
    from rlvr_lens.train.peft_methods import merged_model

    class LensCallback(TrainerCallback):
        """Evaluates, saves step directories and appends metrics rows (``trainer`` is set after construction)."""

        def __init__(self):
            self.trainer = None
            self.rows: list[dict] = []
            self.checkpoints: list[str] = []
            self.pending_eval: dict[str, float] = {}
            self.metrics_path = out_dir / "metrics.jsonl"
            self.bar = None

        def _model(self):
            return self.trainer.accelerator.unwrap_model(self.trainer.model)

        def _evaluate(self) -> dict[str, float]:
            model = self._model()
            was_training = model.training
            model.eval()
            try:
                return {
                    f"eval/{name}": accuracy(
                        model,
                        tokenizer,
                        samples,
                        template=settings.template,
                        max_new_tokens=settings.eval_max_new_tokens,
                        batch_size=settings.eval_batch_size,
                    )[0]
                    for name, samples in eval_sets.items()
                }
            finally:
                model.train(was_training)

        def _record(self, row: dict) -> None:
            self.rows.append(row)
            _append_jsonl(self.metrics_path, row)

        def on_train_begin(self, args, state, control, **kwargs):
            if show_progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(
                    total=settings.max_steps, desc="grpo", unit="step", leave=False, dynamic_ncols=True
                )
            if eval_sets and settings.eval_steps:
                self._record({"step": 0, **self._evaluate()})

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            last = step >= settings.max_steps
            if eval_sets and settings.eval_steps and (step % settings.eval_steps == 0 or last):
                self.pending_eval = self._evaluate()
            if (settings.save_steps and step % settings.save_steps == 0) or last:
                directory = out_dir / f"step-{step}"
                atomic_save_pretrained(merged_model(self._model()), tokenizer, directory)
                self.checkpoints.append(str(directory))
            if self.bar is not None:
                self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "train_runtime" in logs:  # the Trainer's end-of-training summary, not a step
                return
            row = metrics_row(state.global_step, logs)
            row.update(self.pending_eval)
            self.pending_eval = {}
            if self.bar is not None and row.get("reward_mean") is not None:
                self.bar.set_postfix(
                    reward=f"{row['reward_mean']:.3f}", acc=f"{row.get('accuracy') or 0:.3f}"
                )
            self._record(row)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return LensCallback()


def _training_rows(samples: list[Sample], settings: GRPOSettings, tokenizer) -> list[dict[str, str]]:
    if settings.one_shot:
        samples = samples[:1]
    rows = [
        {"prompt": apply_template(s.prompt, settings.template, tokenizer), "answer": s.answer, "id": s.id}
        for s in samples
    ]
    if settings.reward == "incorrect_label":  # the study's incorrect reward grades against a stored wrong label
        missing = [s.id for s in samples if not s.labels.get(WRONG_LABEL)]
        if missing:
            raise UserError(
                f"The incorrect_label reward needs labels.{WRONG_LABEL} on every training sample; {missing[0]} has none "
                "(the organism's data has them; add them with rlvr_lens.train.rewards.wrong_label)."
            )
        for row, s in zip(rows, samples):
            row[WRONG_LABEL] = str(s.labels[WRONG_LABEL])
    # TRL draws `prompts_per_step` distinct rows per generation batch; repeat a small set (one-shot RLVR) to fill it.
    while len(rows) < settings.prompts_per_step:
        rows = rows + rows[: settings.prompts_per_step - len(rows)]
    return rows


def _adapter_arguments(model, adapter: AdapterConfig | None) -> tuple[dict, list]:
    """Extra trainer arguments and callbacks for a PEFT-ablation run (none for full fine-tuning).

    LoRA / PiSSA go to TRL as ``peft_config``; a sparse mask is installed on ``model`` (gradient
    hooks) with a callback restoring its frozen entries after every optimizer step.
    """
    from rlvr_lens.train.peft_methods import SparseMask, check_rank_fits, lora_config, sparse_callback

    if adapter is None or adapter.method == "full":
        return {}, []
    if adapter.method == "sparse":
        return {}, [sparse_callback(SparseMask(model, adapter))]
    check_rank_fits(model, adapter)
    return {"peft_config": lora_config(adapter)}, []


def build_trainer(
    model_dir: str | Path,
    train_samples: list[Sample],
    out_dir: str | Path,
    settings: GRPOSettings,
    *,
    eval_sets: dict[str, list[Sample]] | None = None,
    show_progress: bool = False,
):
    """Load the model and build the :class:`~rlvr_lens.train.divergence.LensGRPOTrainer` for a run.

    Returns ``(trainer, callback)``; ``trainer.train()`` runs it and ``callback`` holds the
    logged rows and saved directories. :func:`train_grpo` is the one-call form.
    """
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging

    from rlvr_lens.models.loading import load_model
    from rlvr_lens.train.divergence import LensGRPOTrainer

    settings.check()
    if not train_samples:
        raise UserError("No training samples were given.")
    eval_sets = {name: list(samples) for name, samples in (eval_sets or {}).items() if samples}
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file; give a directory for the training run.")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.jsonl").unlink(missing_ok=True)

    loaded = load_model(str(model_dir), dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    model.train()
    need_ref = settings.beta == 0 and (settings.track_kl or settings.divergence_weighting)
    reference = copy.deepcopy(model) if need_ref else None

    train_reward = make_reward(settings.reward, p=settings.random_p, seed=settings.seed)
    true_reward = make_reward("correct")
    rewards = [as_trl_reward(train_reward), as_trl_reward(true_reward, TRUE_ACCURACY)]

    callback = _make_callback(settings, out_dir, tokenizer, eval_sets, show_progress)
    adapter_kwargs, adapter_callbacks = _adapter_arguments(model, settings.adapter)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' gradient_checkpointing rename
            args = grpo_config(settings, out_dir)
            args.reward_weights = [1.0, 0.0]
            trainer = LensGRPOTrainer(
                model=model,
                reward_funcs=rewards,
                args=args,
                train_dataset=Dataset.from_list(_training_rows(train_samples, settings, tokenizer)),
                processing_class=tokenizer,
                callbacks=[callback, *adapter_callbacks],
                reference_model=reference,
                divergence_weighting=settings.divergence_weighting,
                **adapter_kwargs,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    callback.trainer = trainer
    return trainer, callback


def train_grpo(
    model_dir: str | Path,
    train_samples: list[Sample],
    out_dir: str | Path,
    settings: GRPOSettings,
    *,
    eval_sets: dict[str, list[Sample]] | None = None,
    show_progress: bool = False,
) -> GRPORun:
    """Train the checkpoint in ``model_dir`` with GRPO on ``train_samples`` (see the module docstring).

    Runs on the GPU when one is present (bf16 autocast when supported), else on the CPU in
    float32; on the CPU a fixed ``settings.seed`` gives the same run twice. Writes
    ``out_dir/step-{k}/`` and ``out_dir/metrics.jsonl`` (replacing a previous run's log).
    """
    from transformers.utils import logging as hf_logging

    start = time.perf_counter()
    eval_sets = {name: list(samples) for name, samples in (eval_sets or {}).items() if samples}
    trainer, callback = build_trainer(
        model_dir, train_samples, out_dir, settings, eval_sets=eval_sets, show_progress=show_progress
    )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer.train()
    finally:
        hf_logging.set_verbosity(verbosity)
    wall = time.perf_counter() - start
    return GRPORun(
        settings=dataclasses.asdict(settings),
        steps=callback.rows,
        checkpoints=callback.checkpoints,
        final_dir=callback.checkpoints[-1] if callback.checkpoints else "",
        wall_time_s=wall,
        model_dir=str(model_dir),
        train_size=len(train_samples[:1] if settings.one_shot else train_samples),
        eval_sizes={name: len(samples) for name, samples in eval_sets.items()},
    )
