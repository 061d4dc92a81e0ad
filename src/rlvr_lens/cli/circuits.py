"""``rlvr-lens circuits``: which layers retrieve the tuned model's answers (logit lens, patching, MLP counterfactuals).

Runs the shared evaluation step (greedy, or any of N rollouts) to form the sample groups,
then the layer analyses of each (base, tuned) pair and the localization verdict. Both steps
are cached under ``OUT/cache`` like the audit's, so a rerun with other circuit settings
reuses the evaluation. Writes ``OUT/evaluation.json``, ``OUT/circuits.json``,
``OUT/figures/circuits-*.png`` and ``OUT/report.html``.
"""

from __future__ import annotations

import argparse
import sys

from rlvr_lens.cli.common import add_data_args, add_model_args, add_runtime_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "circuits",
        help="layer localization: logit lens, activation patching, MLP counterfactuals, anchor/adapter windows",
        description="Evaluate every checkpoint to form sample groups (leakage = tuned correct, base wrong; stable; "
        "lost; never; plus the data's labels), then localize the tuned answers in the layers: logit lens, activation "
        "patching in both directions, MLP weight restore and mean ablation, and an anchor / adapter verdict.",
    )
    add_model_args(parser)
    add_data_args(parser)
    add_runtime_args(parser)
    parser.add_argument("--tuned", default=None, help="tuned checkpoints to localize, comma-separated (default: every tuned one)")
    parser.add_argument("--samples", type=int, default=1, help="evaluation rollouts per sample; 1 = greedy (default: 1)")
    parser.add_argument("--temperature", type=float, default=1.0, help="rollout temperature when --samples > 1 (default: 1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="evaluation response length (default: 128)")
    parser.add_argument("--context", default="direct", choices=["direct", "solution"], help="answer context (default: direct)")
    parser.add_argument("--parts", default="lens,patching,counterfactual", help="analyses to run (default: all three)")
    parser.add_argument("--width", type=int, default=1, help="patching window width in layers, 1-3 (default: 1)")
    parser.add_argument(
        "--patched-accuracy",
        default="none",
        choices=["none", "held", "prompt"],
        help="greedy accuracy under each patch: held through decoding, prompt only, or none (default: none)",
    )
    parser.add_argument("--patched-tokens", type=int, default=32, help="response length of patched decoding (default: 32)")
    parser.add_argument("--max-per-group", type=int, default=64, help="samples analysed per group (default: 64)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the verdict's bands (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of rollouts, bootstrap and random W_down (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.analyses.circuits import CircuitsConfig
    from rlvr_lens.analyses.teacher_forcing import encode_all
    from rlvr_lens.audit import AuditConfig, audit_steps, run_steps
    from rlvr_lens.cli.common import check_out_dir, load_data, load_series
    from rlvr_lens.models import load_tokenizer
    from rlvr_lens.report import write_run

    samples = load_data(args)
    series = load_series(args)
    # every answer must be teacher-forceable: say so now, not after the evaluation
    encode_all(load_tokenizer(series.base.source), samples, args.template, args.context)
    circuits = CircuitsConfig(
        context=args.context,
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
        batch_size=args.batch_size,
        width=args.width,
        accuracy=args.patched_accuracy,
        max_new_tokens=args.patched_tokens,
        max_per_group=args.max_per_group,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    config = AuditConfig(
        analyses=("evaluation", "circuits"),
        template=args.template,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        eval_samples=args.samples,
        eval_temperature=args.temperature,
        eval_seed=args.seed,
        circuits=circuits,
        circuits_pairs=tuple(t.strip() for t in args.tuned.split(",")) if args.tuned else None,
    )
    steps = audit_steps(series.specs, args.data, samples, config, show_progress=not args.no_progress)
    out = check_out_dir(args.out)

    def say(step) -> None:
        print(f"  {step.name:<28} {step.status}", file=sys.stderr)

    from rlvr_lens.distributed import is_main_process

    outcome = run_steps(out, steps, on_step=say if is_main_process() else None, keep_going=False)
    if outcome.failed:  # a bug, not a user error: say which step and stop
        for step in outcome.failed:
            print(f"error: step {step.name} failed: {step.error}", file=sys.stderr)
        return 1
    if not is_main_process():  # under accelerate launch / torchrun every process holds the gathered results; rank 0 writes
        return 0
    context = [
        f"checkpoints: {', '.join(f'{s.name} = {s.source}' for s in series.specs)}",
        f"data: {args.data} ({len(samples)} samples), template {args.template!r}",
    ]
    report = write_run(out, outcome.results, title="rlvr-lens: layer localization", context=context)
    for result in outcome.results:
        if result.kind == "circuits":
            for verdict in result.verdicts:
                print(f"{result.base} -> {result.tuned} [{verdict.group}, {verdict.n_samples} samples]: {verdict.message}")
    print(f"wrote {report}")
    return 0
