"""``rlvr-lens organism``: build the model organism (corpus with planted leaks, base, SFT, RLVR).

Writes ``OUT/data/*.jsonl``, ``OUT/base``, ``OUT/sft``, ``OUT/rlvr-<reward>/step-<k>`` and
``OUT/manifest.json`` (last); an existing build with the same preset, seed and settings is
reused unless ``--force``. See docs/organism.md.
"""

from __future__ import annotations

import argparse
import sys

from rlvr_lens.cli.common import int_at_least
from rlvr_lens.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "organism",
        help="build the model organism with planted contamination (base, SFT, RLVR true and random reward)",
        description="Build a small Qwen2 model organism: a synthetic arithmetic corpus in which a known subset of "
        "the evaluation problems is leaked, the pretrained base, its SFT, and GRPO runs with a true and a random "
        "reward. Reuses a matching build unless --force.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="build directory")
    parser.add_argument(
        "--preset",
        default="cpu-small",
        help="cpu-small, gpu-medium, test, or the latent-leak organism cpu-latent, gpu-latent, test-latent "
        "(default: cpu-small)",
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the corpus and of every training stage (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a setting, e.g. corpus.leak_repetitions=4, corpus.leak_forms=answer_only, rl.epsilon=0.1, "
        "rl.steps_per_generation=4, rl.max_steps=16, rl_rewards=correct,random,format,incorrect_label,random+offpolicy, "
        "corpus.latent_forms=answer_key,qa_line, corpus.rl_leak_fraction=0.5, offpolicy.epsilon=0.1, sft_adapter.method=lora, "
        "sft_adapter.rank=2 (repeatable; rl.* are GRPOSettings fields, "
        "TRL's names; the old rl.clip_eps, rl.steps, ... work too)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--set needs NAME=VALUE; got {item!r}.")
        overrides[name.strip()] = value.strip()
    return overrides


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.organism.recipe import build_organism

    manifest = build_organism(
        args.out,
        args.preset,
        args.seed,
        force=args.force,
        device=args.device,
        show_progress=not args.no_progress,
        overrides=parse_overrides(args.set),
    )
    for row in manifest.accuracy_table():
        print("  ".join(f"{cell:>12}" for cell in row))
    print(f"organism: {manifest.root} (built in {manifest.wall_time_s:.0f} s)", file=sys.stderr)
    return 0
