"""``rlvr-lens audit``: every analysis over a series of checkpoints, cached and resumable, one report."""

from __future__ import annotations

import argparse
import sys

from rlvr_lens.cli.common import (
    add_data_args,
    add_model_args,
    add_runtime_args,
    check_out_dir,
    int_at_least,
    load_data,
    parse_models,
    step_printer,
)
from rlvr_lens.cli.config import add_config_arg, save_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="run the analyses over base + tuned checkpoints and write one report",
        description="Run the selected analyses over a base checkpoint and its tuned versions on one data set, "
        "cache each result (an interrupted audit resumes), and write report.html.",
    )
    add_model_args(parser)
    add_data_args(parser)
    add_runtime_args(parser)
    add_config_arg(parser)
    parser.add_argument(
        "--analyses",
        default="perplexity,contamination,tokens,weights,evaluation",
        help="comma-separated subset of perplexity, contamination, tokens, weights, evaluation (greedy correctness "
        "and sample groups; the verdict needs it), circuits (layer localization), interventions (reset/retain and "
        "neuron scaling: one decode of every sample per variant), scoreboard (every signal and the published "
        "detectors scored on the data's labels) (default: %(default)s)",
    )
    parser.add_argument("--token-pairs", default=None, help="tuned checkpoints compared token by token with the base (default: all)")
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=128, help="response length of the token analysis (default: 128)")
    parser.add_argument("--answer-tokens", type=int_at_least(0), default=64, help="probe tokens generated after the prompt (default: 64)")
    parser.add_argument(
        "--fractions", default="0.4,0.6,0.8", help="shares of each problem shown by the probe (default: 0.4,0.6,0.8)"
    )
    parser.add_argument("--no-cross-sampling", action="store_true", help="skip cross-sampling (the slowest step)")
    parser.add_argument("--weights-metrics", default="all", choices=["all", "cheap"], help="weight metrics (default: all)")
    parser.set_defaults(func=run)


def print_verdict(results):
    """Compute the verdict from ``results`` and print it on stdout; return it (first in the report)."""
    from rlvr_lens.analyses.verdict import build_verdict, verdict_lines

    verdict = build_verdict(results)
    print("\n".join(verdict_lines(verdict)))
    return verdict


def run_info(config, run_config: dict | None, steps):
    """The report's last section: options (``run_config``, else the audit config), environment, step times."""
    import dataclasses

    from rlvr_lens.report.run_info import environment, run_section

    options = run_config if run_config is not None else dataclasses.asdict(config)
    return run_section(options, environment(config.device, config.dtype), steps)


def report_audit(
    out, specs, data_path, samples, config, *, show_progress: bool, title: str, context: list[str] | None = None, run_config: dict | None = None
) -> int:
    """Run the audit's steps, print one line per step, write the report; 1 if a step failed."""
    from rlvr_lens.audit import audit_steps, run_steps
    from rlvr_lens.report import write_run

    steps = audit_steps(specs, data_path, samples, config, show_progress=show_progress)  # validates everything first
    out = check_out_dir(out)
    from rlvr_lens.distributed import is_main_process

    main_process = is_main_process()  # under accelerate launch / torchrun only rank 0 prints and writes
    outcome = run_steps(out, steps, on_step=step_printer() if main_process else None, keep_going=False)  # a user error stops the audit
    if not main_process:
        return 1 if outcome.failed else 0
    verdict = print_verdict(outcome.results)
    if run_config:
        save_config(out, run_config, command="audit")  # `audit --config OUT/config.toml` repeats the run
    lines = [f"checkpoints: {', '.join(f'{s.name} = {s.source}' for s in specs)}", f"data: {data_path} ({len(samples)} samples)"]
    lines += context or []
    lines += [f"<b>step failed</b>: {s.name}: {s.error}" for s in outcome.failed]
    path = write_run(out, [verdict, *outcome.results], title=title, context=lines, trailing=[run_info(config, run_config, outcome.steps)])
    print(f"report: {path}")
    if outcome.failed:
        print(f"error: {len(outcome.failed)} analysis step(s) failed; the others are in the report.", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.audit import AuditConfig
    from rlvr_lens.cli.contamination import parse_fractions

    specs = parse_models(args.models)
    config = AuditConfig(
        analyses=tuple(a.strip() for a in args.analyses.split(",") if a.strip()),
        template=args.template,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        answer_tokens=args.answer_tokens,
        fractions=parse_fractions(args.fractions),
        max_new_tokens=args.max_new_tokens,
        token_pairs=tuple(args.token_pairs.split(",")) if args.token_pairs else None,
        cross_sampling=not args.no_cross_sampling,
        weights_metrics=args.weights_metrics,
        fields=args.fields,
        limit=args.limit,
    )
    config.check()  # options first: a bad one costs no data reading
    samples = load_data(args)
    return report_audit(
        args.out, specs, args.data, samples, config, show_progress=not args.no_progress, title="rlvr-lens audit",
        run_config=getattr(args, "resolved_config", None),
    )
