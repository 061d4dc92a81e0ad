"""``rlvr-lens train``: GRPO (RLVR) on a checkpoint with a true or spurious reward.

Writes ``OUT/step-{k}/`` checkpoints, ``OUT/metrics.jsonl`` (appended while training),
``OUT/grpo_run.json`` and ``OUT/report.html`` (the last two atomically, at the end).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlvr_lens.cli.common import add_threads_arg, float_in, int_at_least
from rlvr_lens.errors import UserError


def register(subparsers) -> None:
    from rlvr_lens.cli.defaults import dataclass_defaults, module_constant

    # defaults read from the source, so that --help does not import torch or TRL (see cli/defaults.py)
    d = dataclass_defaults("rlvr_lens.train.grpo", "GRPOSettings")
    REWARD_NAMES = module_constant("rlvr_lens.train.rewards", "REWARD_NAMES")
    parser = subparsers.add_parser(
        "train",
        help="GRPO training (RLVR) with a true or spurious reward",
        description="Train a checkpoint with GRPO (TRL's GRPOTrainer) and write step checkpoints, a metrics log, "
        "grpo_run.json and report.html.",
    )
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="starting checkpoint (HF directory with tokenizer)"
    )
    parser.add_argument(
        "--data", required=True, metavar="FILE", help="training problems: JSONL / Parquet / datasets dir"
    )
    parser.add_argument(
        "--fields", default=None, metavar="MAP", help="column mapping, e.g. prompt=question,answer=final"
    )
    parser.add_argument(
        "--limit", type=int_at_least(1), default=None, help="train on the first N samples only (default: all)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory")
    parser.add_argument(
        "--reward", default=d.reward, choices=REWARD_NAMES, help=f"reward (default: {d.reward})"
    )
    parser.add_argument(
        "--random-p",
        type=float_in(0, 1),
        default=d.random_p,
        help=f"P(reward=1) for --reward random (default: {d.random_p})",
    )
    parser.add_argument("--steps", type=int_at_least(1), default=d.steps, help=f"optimizer steps (default: {d.steps})")
    parser.add_argument(
        "--prompts-per-step",
        type=int_at_least(1),
        default=d.prompts_per_step,
        help=f"distinct prompts per generation batch (default: {d.prompts_per_step})",
    )
    parser.add_argument(
        "--group-size",
        type=int_at_least(1),  # 1 passes here; GRPOSettings.check explains why GRPO needs 2
        default=d.group_size,
        help=f"completions per prompt (default: {d.group_size})",
    )
    parser.add_argument(
        "--lr",
        type=float_in(0, low_open=True),
        default=d.learning_rate,
        help=f"learning rate, constant (default: {d.learning_rate})",
    )
    parser.add_argument(
        "--kl-coef", type=float_in(0), default=d.kl_coef, help=f"KL penalty beta; 0 = none (default: {d.kl_coef})"
    )
    parser.add_argument(
        "--clip-eps", type=float_in(0, low_open=True), default=d.clip_eps, help=f"PPO clip epsilon (default: {d.clip_eps})"
    )
    parser.add_argument(
        "--steps-per-generation",
        type=int_at_least(1),
        default=d.steps_per_generation,
        help="optimizer steps per generation batch; >1 makes later steps off-policy (default: 1)",
    )
    parser.add_argument(
        "--num-iterations",
        type=int_at_least(1),
        default=d.num_iterations,
        help="passes over each generation batch (default: 1)",
    )
    parser.add_argument(
        "--micro-batch-size",
        type=int_at_least(0),
        default=d.micro_batch_size,
        help="completions per forward pass; 0 = whole step (default: 0)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int_at_least(1),
        default=d.max_new_tokens,
        help=f"completion length cap (default: {d.max_new_tokens})",
    )
    parser.add_argument(
        "--eval-max-new-tokens",
        type=int,
        default=None,
        help="length cap of the greedy evaluation answers (default: --max-new-tokens)",
    )
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=d.eval_batch_size,
        help=f"prompts per greedy evaluation batch (default: {d.eval_batch_size})",
    )
    parser.add_argument(
        "--loss-type",
        default=d.loss_type,
        choices=("dapo", "grpo", "dr_grpo", "bnpo"),
        help=f"TRL's loss aggregation (default: {d.loss_type}, a token mean over the batch)",
    )
    parser.add_argument(
        "--no-track-kl",
        action="store_true",
        help="with --kl-coef 0, keep no frozen reference copy (saves its memory; KL is then not logged)",
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass"
    )
    parser.add_argument(
        "--temperature",
        type=float_in(0, low_open=True),
        default=d.temperature,
        help=f"sampling temperature (default: {d.temperature})",
    )
    parser.add_argument(
        "--template",
        default=d.template,
        help=f"prompt template: plain, boxed, qwen-math, organism (default: {d.template})",
    )
    parser.add_argument(
        "--divergence-weighting",
        action="store_true",
        help="weight token advantages by divergence from the start model",
    )
    parser.add_argument(
        "--one-shot", action="store_true", help="train on the first sample only (one-shot RLVR)"
    )
    parser.add_argument(
        "--eval", action="append", default=[], metavar="NAME=FILE", help="evaluation set, repeatable"
    )
    parser.add_argument(
        "--eval-every",
        type=int_at_least(0),
        default=d.eval_every,
        help=f"evaluate every k steps; 0 = never (default: {d.eval_every})",
    )
    parser.add_argument(
        "--save-every",
        type=int_at_least(0),
        default=d.save_every,
        help=f"save step-k/ every k steps and at the end (default: {d.save_every})",
    )
    parser.add_argument("--seed", type=int_at_least(0), default=d.seed, help=f"random seed (default: {d.seed})")
    add_threads_arg(parser)
    parser.add_argument(
        "--adapter",
        default="full",
        choices=("full", "lora", "pissa", "sparse"),
        help="PEFT ablation: full fine-tuning, a LoRA or PiSSA adapter, or a sparse top-|W0| mask (default: full)",
    )
    parser.add_argument("--adapter-rank", type=int, default=16, help="LoRA / PiSSA rank (default: 16)")
    parser.add_argument(
        "--sparse-fraction",
        type=float,
        default=0.1,
        help="share of each projection's entries that train with --adapter sparse, by base |W0| (default: 0.1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def parse_eval_sets(texts: list[str], field_map) -> dict:
    from rlvr_lens.data import read_samples

    sets = {}
    for text in texts:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise UserError(f"Cannot read --eval {text!r}; write it as NAME=FILE.")
        if name in sets:
            raise UserError(f"Evaluation set name {name!r} is given twice.")
        if not Path(path).exists():
            raise UserError(f"Evaluation file {path} does not exist.")
        sets[name] = read_samples(path, field_map)
    return sets


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.cli.common import check_out_dir, load_data
    from rlvr_lens.data import parse_field_map
    from rlvr_lens.report import write_run
    from rlvr_lens.train.grpo import GRPOSettings, train_grpo
    from rlvr_lens.train.peft_methods import AdapterConfig

    settings = GRPOSettings(
        reward=args.reward,
        random_p=args.random_p,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        learning_rate=args.lr,
        kl_coef=args.kl_coef,
        clip_eps=args.clip_eps,
        steps_per_generation=args.steps_per_generation,
        num_iterations=args.num_iterations,
        micro_batch_size=args.micro_batch_size,
        max_new_tokens=args.max_new_tokens,
        eval_max_new_tokens=args.eval_max_new_tokens or args.max_new_tokens,
        eval_batch_size=args.eval_batch_size,
        loss_type=args.loss_type,
        track_kl=not args.no_track_kl,
        gradient_checkpointing=args.gradient_checkpointing,
        temperature=args.temperature,
        template=args.template,
        divergence_weighting=args.divergence_weighting,
        one_shot=args.one_shot,
        eval_every=args.eval_every,
        save_every=args.save_every,
        seed=args.seed,
        adapter=None
        if args.adapter == "full"
        else AdapterConfig(method=args.adapter, rank=args.adapter_rank, sparse_fraction=args.sparse_fraction),
    )
    settings.check()
    if not Path(args.data).exists():
        raise UserError(f"Training data {args.data} does not exist.")
    samples = load_data(args)
    if not samples:
        raise UserError(f"{args.data} holds no usable training samples.")
    eval_sets = parse_eval_sets(args.eval, parse_field_map(args.fields))
    out = check_out_dir(args.out)
    result = train_grpo(
        args.model, samples, out, settings, eval_sets=eval_sets, show_progress=not args.no_progress
    )
    report = write_run(
        out,
        [result],
        title="rlvr-lens: GRPO training",
        context=[f"model: {args.model}", f"data: {args.data}"],
    )
    print(
        f"wrote {out / 'grpo_run.json'}, {out / 'metrics.jsonl'} and {report}; final checkpoint {result.final_dir}"
    )
    return 0
