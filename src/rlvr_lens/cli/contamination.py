"""``rlvr-lens contamination``: the partial-prompt contamination probe over a series of checkpoints.

Writes ``OUT/contamination.json``, ``OUT/figures/contamination-*.png`` and
``OUT/report.html`` (each atomically, at the end).
"""

from __future__ import annotations

import argparse

from rlvr_lens.cli.common import add_data_args, add_model_args, add_runtime_args, int_at_least
from rlvr_lens.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "contamination",
        help="partial-prompt probe: can each checkpoint finish a problem from its first x%% of tokens?",
        description="Show each checkpoint the first share of every problem's tokens, let it continue greedily, "
        "and score the continuation against the true rest of the problem (exact match, ROUGE-L) and whether "
        "it then states the reference answer.",
    )
    add_model_args(parser)
    add_data_args(parser)
    add_runtime_args(parser)
    parser.add_argument(
        "--fractions",
        default="0.4,0.6,0.8",
        help="comma-separated shares of the problem's tokens shown (default: 0.4,0.6,0.8)",
    )
    parser.add_argument(
        "--answer-tokens",
        type=int_at_least(0),
        default=64,
        help="tokens generated beyond the length of the problem's remainder (default: 64)",
    )
    parser.set_defaults(func=run)


def parse_fractions(text: str) -> tuple[float, ...]:
    try:
        fractions = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"Cannot read --fractions {text!r}; write e.g. 0.4,0.6,0.8.") from None
    if not fractions or any(not 0.0 < f < 1.0 for f in fractions):
        raise UserError(f"--fractions must lie strictly between 0 and 1; got {text!r}.")
    return fractions


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.analyses.contamination import partial_prompt_probe
    from rlvr_lens.cli.common import check_out_dir, load_data, load_series
    from rlvr_lens.report import write_run

    fractions = parse_fractions(args.fractions)
    if args.answer_tokens < 0:
        raise UserError(f"--answer-tokens must be 0 or more; got {args.answer_tokens}.")
    samples = load_data(args)
    series = load_series(args)
    out = check_out_dir(args.out)
    result = partial_prompt_probe(
        series,
        samples,
        fractions=fractions,
        template=args.template,
        answer_tokens=args.answer_tokens,
        batch_size=args.batch_size,
        show_progress=not args.no_progress,
    )
    context = [
        f"checkpoints: {', '.join(f'{s.name} = {s.source}' for s in series.specs)}",
        f"data: {args.data} ({len(samples)} samples), template {args.template!r}",
    ]
    from rlvr_lens.distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun every process holds the gathered results; rank 0 writes
        return 0
    report = write_run(out, [result], title="rlvr-lens: partial-prompt contamination probe", context=context)
    middle = result.fractions[len(result.fractions) // 2]
    means = {name: result.run(name, middle).rouge_l_mean for name in result.checkpoints}
    rates = ", ".join(f"{name} {'n/a' if m is None else f'{m:.2f}'}" for name, m in means.items())
    print(f"mean ROUGE-L at {middle:.0%} shown: {rates}; wrote {out / 'contamination.json'} and {report}")
    return 0
