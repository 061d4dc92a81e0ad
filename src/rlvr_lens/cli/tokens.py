"""``rlvr-lens tokens``: where a tuned model's next-token distribution moved from its base, and cross-sampling.

Writes ``OUT/token_divergence.json`` and ``OUT/cross_sampling.json`` (``-2``, ``-3`` ... for
further tuned checkpoints), their figures and ``OUT/report.html``.
"""

from __future__ import annotations

import argparse
import sys

from rlvr_lens.cli.common import (
    add_data_args,
    add_model_args,
    add_runtime_args,
    check_out_dir,
    check_runtime_options,
    float_in,
    int_at_least,
    load_data,
    parse_models,
)
from rlvr_lens.errors import UserError


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"Cannot read {option} {text!r}; give comma-separated numbers, e.g. 0.3,0.1,0.01.") from None


def register(subparsers) -> None:
    from rlvr_lens.cli.defaults import dataclass_defaults

    # defaults read from the source, so that --help does not import torch (see cli/defaults.py)
    d = dataclass_defaults("rlvr_lens.analyses.tokens", "TokenDivergenceConfig")
    c = dataclass_defaults("rlvr_lens.analyses.tokens", "CrossSamplingConfig")
    parser = subparsers.add_parser(
        "tokens",
        help="token-level divergence between base and tuned responses, and cross-sampling",
        description="Teacher-force a base and each tuned checkpoint on generated responses and compare their "
        "next-token distributions (Jensen-Shannon divergence in nats, KL, entropy, top-k overlap, rank), then "
        "cross-sample: decode with one model and take the other's token where they disagree most.",
    )
    add_model_args(parser)
    add_data_args(parser)
    add_runtime_args(parser, batch_size=d.batch_size)
    parser.add_argument(
        "--max-new-tokens", type=int_at_least(1), default=d.max_new_tokens, help=f"response length cap (default: {d.max_new_tokens})"
    )
    parser.add_argument(
        "--responses-from",
        default=",".join(d.responses_from),
        help="whose responses are scored: tuned, base or both (default: tuned,base)",
    )
    parser.add_argument("--sample", action="store_true", help="sample the scored responses instead of greedy decoding")
    parser.add_argument("--temperature", type=float_in(0, low_open=True), default=d.temperature, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-p", type=float_in(0, 1, low_open=True), default=d.top_p, help="nucleus sampling top-p (default: 1.0)")
    parser.add_argument("--seed", type=int_at_least(0), default=d.seed, help=f"sampling seed (default: {d.seed})")
    parser.add_argument(
        "--chunk-size",
        type=int_at_least(0),
        default=d.chunk_size,
        help=f"positions per unembedding chunk (peak memory ~ chunk x vocab); 0 = no chunking (default: {d.chunk_size})",
    )
    parser.add_argument(
        "--compile", action="store_true", help="fuse the metric kernels with torch.compile (faster on a GPU)"
    )
    parser.add_argument(
        "--thresholds",
        default=",".join(f"{t:g}" for t in c.thresholds),
        help="JSD thresholds (nats) of cross-sampling (default: %(default)s)",
    )
    parser.add_argument(
        "--top-fractions",
        default="",
        help="also replace the top x of positions by JSD, e.g. 0.01,0.05 (default: none)",
    )
    parser.add_argument(
        "--directions", default="forward,reverse", help="cross-sampling directions: forward, reverse (default: both)"
    )
    parser.add_argument("--no-cross-sampling", action="store_true", help="skip cross-sampling (the slowest part)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlvr_lens.analyses.tokens import (
        CrossSamplingConfig,
        TokenDivergenceConfig,
        cross_sampling,
        token_divergence,
    )
    from rlvr_lens.models import ModelSeries, free_model
    from rlvr_lens.report import write_run

    specs = parse_models(args.models)
    check_runtime_options(args)
    divergence_config = TokenDivergenceConfig(
        template=args.template,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        responses_from=tuple(s.strip() for s in args.responses_from.split(",") if s.strip()),
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        chunk_size=args.chunk_size or None,
        compile_metrics=args.compile,
    )
    divergence_config.check()
    cross_config = CrossSamplingConfig(
        template=args.template,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        thresholds=_floats(args.thresholds, "--thresholds"),
        top_fractions=_floats(args.top_fractions, "--top-fractions"),
        directions=tuple(s.strip() for s in args.directions.split(",") if s.strip()),
    )
    cross_config.check()
    samples = load_data(args)
    if not samples:
        raise UserError(f"{args.data} holds no usable samples.")
    out = check_out_dir(args.out)
    series = ModelSeries(specs, dtype=args.dtype, device=args.device, device_map=args.device_map)
    series.check()
    show = not args.no_progress
    results = []
    base = series.load(0)
    try:
        for index in range(1, len(specs)):
            tuned = series.load(index)
            try:
                print(f"{tuned.name} vs {base.name}: token divergence", file=sys.stderr)
                results.append(token_divergence(base, tuned, samples, divergence_config, show_progress=show))
                if not args.no_cross_sampling:
                    print(f"{tuned.name} vs {base.name}: cross-sampling", file=sys.stderr)
                    results.append(cross_sampling(base, tuned, samples, cross_config, show_progress=show))
            finally:
                free_model(tuned)
    finally:
        free_model(base)
    from rlvr_lens.distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun every process holds the gathered results; rank 0 writes
        return 0
    report = write_run(
        out,
        results,
        title="rlvr-lens: token-level forensics",
        context=[f"checkpoints: {', '.join(f'{s.name} = {s.source}' for s in specs)}", f"data: {args.data} ({len(samples)} samples)"],
    )
    for result in results:
        for response in getattr(result, "responses", []):
            print(
                f"{result.tuned} vs {result.base} ({response.responses_from} responses): "
                f"share of tokens with JSD > 0.1 nats = {response.share_above['0.1']:.4f}"
            )
    print(f"report: {report}")
    return 0
