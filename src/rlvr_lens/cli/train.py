"""``rlvr-lens train``: GRPO (RLVR) on a checkpoint with a true or spurious reward.

Writes ``OUT/step-{k}/`` checkpoints, ``OUT/metrics.jsonl`` (appended while training),
``OUT/grpo_run.json`` and ``OUT/report.html`` (the last two atomically, at the end).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlvr_lens.cli.common import add_threads_arg, int_at_least
from rlvr_lens.errors import UserError

#: Flags of ``GRPOSettings`` fields before they took TRL's names (issue 16); they keep working.
OLD_FLAGS = {
    "max_steps": ("--steps",),
    "num_generations": ("--group-size",),
    "learning_rate": ("--lr",),
    "beta": ("--kl-coef",),
    "epsilon": ("--clip-eps",),
    "max_completion_length": ("--max-new-tokens",),
    "save_steps": ("--save-every",),
    "eval_steps": ("--eval-every",),
}


def register(subparsers) -> None:
    # GRPOSettings lives in a torch-free module, so its fields make the flags without slowing --help.
    from rlvr_lens.cli.dataclass_args import add_dataclass_arguments
    from rlvr_lens.train.settings import GRPOSettings

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
        "--eval", action="append", default=[], metavar="NAME=FILE", help="evaluation set, repeatable"
    )
    add_threads_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group = parser.add_argument_group(
        "GRPO settings",
        "one flag per GRPOSettings field; fields that are trl.GRPOConfig's carry TRL's name "
        "(old names --steps, --group-size, --lr, --kl-coef, --clip-eps, --max-new-tokens, --save-every, "
        "--eval-every still work)",
    )
    names = add_dataclass_arguments(
        group,
        GRPOSettings,
        aliases=OLD_FLAGS,
        # the evaluation's length cap follows the sampling cap unless it is given
        defaults={"eval_max_new_tokens": (None, "--max-completion-length")},
    )
    group.add_argument(
        "--adapter",
        default="full",
        choices=("full", "lora", "pissa", "sparse"),
        help="PEFT ablation: full fine-tuning, a LoRA or PiSSA adapter, or a sparse top-|W0| mask (default: full)",
    )
    group.add_argument("--adapter-rank", type=int, default=16, help="LoRA / PiSSA rank (default: 16)")
    group.add_argument(
        "--sparse-fraction",
        type=float,
        default=0.1,
        help="share of each projection's entries that train with --adapter sparse, by base |W0| (default: 0.1)",
    )
    parser.set_defaults(func=run, settings_fields=tuple(names))


def settings_from_args(args: argparse.Namespace):
    """The :class:`~rlvr_lens.train.settings.GRPOSettings` of parsed ``train`` arguments."""
    from rlvr_lens.cli.dataclass_args import dataclass_from_args
    from rlvr_lens.train.settings import AdapterConfig, GRPOSettings

    values = dataclass_from_args(args, list(args.settings_fields))
    if values["eval_max_new_tokens"] is None:
        values["eval_max_new_tokens"] = values["max_completion_length"]
    adapter = None
    if args.adapter != "full":
        adapter = AdapterConfig(method=args.adapter, rank=args.adapter_rank, sparse_fraction=args.sparse_fraction)
    return GRPOSettings(**values, adapter=adapter)


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
    from rlvr_lens.train.grpo import train_grpo

    settings = settings_from_args(args)
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
