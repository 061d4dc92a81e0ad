"""``rlvr-lens perplexity``: the perplexity paradox over a base checkpoint and its tuned versions.

Writes ``OUT/perplexity.json``, ``OUT/figures/perplexity-*.png`` and ``OUT/report.html``
(each atomically, at the end: a failed or interrupted run leaves no result file).
"""

from __future__ import annotations

import argparse

from rlvr_lens.cli.common import add_data_args, add_model_args, add_runtime_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "perplexity",
        help="prompt- vs answer-token perplexity along base -> tuned checkpoints (the perplexity paradox)",
        description="Score every sample's prompt tokens and reference-answer tokens under each checkpoint "
        "(base first) and report whether answer perplexity falls while prompt perplexity rises.",
    )
    add_model_args(parser)
    add_data_args(parser)
    add_runtime_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.analyses.perplexity import perplexity_paradox
    from rlvr_lens.cli.common import check_out_dir, load_data, load_series
    from rlvr_lens.report import write_run

    samples = load_data(args)
    series = load_series(args)
    out = check_out_dir(args.out)
    result = perplexity_paradox(
        series, samples, template=args.template, batch_size=args.batch_size, show_progress=not args.no_progress
    )
    context = [
        f"checkpoints: {', '.join(f'{s.name} = {s.source}' for s in series.specs)}",
        f"data: {args.data} ({len(samples)} samples), template {args.template!r}",
    ]
    from rlvr_lens.distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun every process holds the gathered results; rank 0 writes
        return 0
    report = write_run(out, [result], title="rlvr-lens: perplexity paradox", context=context)
    v = result.verdict

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    print(
        f"paradox: {'yes' if v.paradox else 'no'} (answer ppl {fmt(v.answer_ppl[0])} -> {fmt(v.answer_ppl[-1])}, "
        f"prompt ppl {fmt(v.prompt_ppl[0])} -> {fmt(v.prompt_ppl[-1])}); wrote {out / 'perplexity.json'} and {report}"
    )
    return 0
