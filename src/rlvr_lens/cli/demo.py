"""``rlvr-lens demo``: build (or reuse) the model organism and audit it, in one command.

The organism is a small Qwen2 model pretrained on a synthetic math corpus in which a
known subset of the evaluation problems was leaked, then tuned with SFT and with GRPO
under a true and a random reward. Because every evaluation sample carries its ground
truth (leaked / clean), every diagnostic in the report is also *scored*: how well does it
separate leaked from clean problems (AUROC)?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlvr_lens.cli.common import add_threads_arg, int_at_least, step_printer


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="build the model organism (or reuse it) and audit it: the main job",
        description="Build the model organism with planted contamination (cached after the first run), "
        "then audit base vs SFT vs RLVR (true and random reward) and write report.html.",
    )
    parser.add_argument("--out", default="runs/demo", help="run directory of the audit (default: runs/demo)")
    parser.add_argument(
        "--organism-dir",
        default=None,
        help="where the organism is built or found (default: runs/organism-<preset>-seed<seed>)",
    )
    parser.add_argument("--preset", default="cpu-small", help="organism preset: cpu-small, gpu-medium, test (default: cpu-small)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="organism seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild the organism even if a matching one exists")
    parser.add_argument("--limit", type=int_at_least(1), default=None, help="audit only the first N evaluation samples (default: all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=32, help="samples per forward pass (default: 32)")
    add_threads_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def demo_plan(manifest) -> dict[str, list]:
    """Which checkpoints each part of the demo audit compares, from an organism manifest.

    * ``trajectories``: RL run name -> base followed by every saved step of that run
      (perplexity paradox along training);
    * ``checkpoints``: base, sft and the final checkpoint of each RL run (probe, weights);
    * ``pairs``: the RL runs compared token by token with the base.
    """
    from rlvr_lens.models import ModelSpec

    root = Path(manifest.root)
    stages = {s.name: s for s in manifest.stages}
    base = ModelSpec("base", str(manifest.checkpoint("base")))
    finals = [ModelSpec(name, str(manifest.checkpoint(name))) for name in stages if name != "base"]
    rl_names = [name for name in stages if name.startswith("rlvr-")]
    trajectories = {}
    for name in rl_names:
        steps = [ModelSpec(f"{name}/{Path(c).name}", str(root / c)) for c in stages[name].checkpoints]
        if steps:
            trajectories[name] = [base, *steps]
    return {"trajectories": trajectories, "checkpoints": [base, *finals], "pairs": rl_names}


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.audit import AuditConfig, audit_steps, run_steps
    from rlvr_lens.cli.common import check_out_dir
    from rlvr_lens.data import read_samples
    from rlvr_lens.organism.recipe import build_organism
    from rlvr_lens.report import write_run

    show = not args.no_progress
    organism_dir = Path(args.organism_dir or f"runs/organism-{args.preset}-seed{args.seed}")
    out = check_out_dir(args.out)
    print(f"[1/2] model organism ({args.preset}, seed {args.seed}) in {organism_dir}", file=sys.stderr)
    manifest = build_organism(organism_dir, args.preset, args.seed, force=args.force, device=args.device, show_progress=show)
    for row in manifest.accuracy_table():
        print("      " + "  ".join(f"{cell:>12}" for cell in row), file=sys.stderr)

    data_path = manifest.data_path("eval")
    samples = read_samples(data_path, limit=args.limit)
    plan = demo_plan(manifest)
    common = dict(template="organism", batch_size=args.batch_size, device=args.device, dtype="float32")
    steps = []
    for rl_name, series in plan["trajectories"].items():
        trajectory = audit_steps(series, data_path, samples, AuditConfig(analyses=("perplexity",), **common), show_progress=show)
        for step in trajectory:
            step.name = f"{step.name}-{rl_name}"  # one perplexity trajectory per RL run
        steps += trajectory
    steps += audit_steps(
        plan["checkpoints"],
        data_path,
        samples,
        AuditConfig(
            analyses=("contamination", "tokens", "weights", "evaluation", "scoreboard"),
            token_pairs=tuple(plan["pairs"]),
            max_new_tokens=manifest.config.get("eval_max_new_tokens", 64),
            **common,
        ),
        show_progress=show,
    )
    print(f"[2/2] audit: {len(steps)} steps, {len(samples)} evaluation samples -> {out}", file=sys.stderr)

    outcome = run_steps(out, steps, on_step=step_printer(indent=6, width=34))
    context = [
        f"model organism: preset {manifest.preset}, seed {manifest.seed}, built in {organism_dir}",
        f"evaluation set: {data_path} ({len(samples)} samples, labelled leaked / clean)",
    ] + [f"<b>step failed</b>: {s.name}: {s.error}" for s in outcome.failed]
    from rlvr_lens.train.grpo import GRPORun

    runs = [Path(manifest.root) / name / "grpo_run.json" for name in plan["pairs"]]
    grpo_runs = [GRPORun.load(p) for p in runs if p.is_file()]  # training curves of the organism's RL stages
    from rlvr_lens.cli.audit import print_verdict
    from rlvr_lens.report.run_info import environment, run_section

    verdict = print_verdict(outcome.results)
    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    trailing = [run_section(options, environment(args.device, common["dtype"]), outcome.steps)]
    path = write_run(
        out, [verdict, manifest, *grpo_runs, *outcome.results], title="rlvr-lens demo: auditing the model organism",
        context=context, trailing=trailing,
    )
    print(f"report: {path}")
    if outcome.failed:
        print(f"error: {len(outcome.failed)} analysis step(s) failed; the others are in the report.", file=sys.stderr)
        return 1
    return 0
