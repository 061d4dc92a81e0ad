"""``rlvr-lens weights``: weight-space forensics of tuned checkpoints against their base.

Reads the checkpoint files directly (no model is built) and writes ``OUT/weights.json``,
``OUT/figures/weights-*.png`` and ``OUT/report.html``.
"""

from __future__ import annotations

import argparse

from rlvr_lens.cli.common import add_threads_arg, float_in, int_at_least


def register(subparsers) -> None:
    from rlvr_lens.cli.defaults import dataclass_defaults

    # defaults read from the source, so that --help does not import torch (see cli/defaults.py)
    d = dataclass_defaults("rlvr_lens.analyses.weights", "WeightsConfig")
    parser = subparsers.add_parser(
        "weights",
        help="what tuning changed in the weights: sparsity, norms, spectra, principal subspaces",
        description="Compare every weight tensor of one or more tuned checkpoints with the base, streaming tensors "
        "from the checkpoint files (safetensors, sharded or not, or pytorch_model.bin) one at a time.",
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="checkpoint directory, repeatable; base first, then tuned ones (at least 2)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory for JSON, figures and report.html")
    parser.add_argument(
        "--metrics",
        default=d.metrics,
        choices=("all", "cheap"),
        help="all, or cheap = sparsity and norms only, one read pass (default: all)",
    )
    parser.add_argument("--tol", type=float_in(0), default=d.tol, help=f"tolerance of |dW| <= tol sparsity (default: {d.tol})")
    parser.add_argument(
        "--k-fraction", type=float_in(0, 1, low_open=True), default=d.k_fraction, help=f"top-k subspaces: k = fraction x rank (default: {d.k_fraction})"
    )
    parser.add_argument("--k-fixed", type=int_at_least(1), default=d.k_fixed, help=f"the second, fixed k (default: {d.k_fixed})")
    parser.add_argument(
        "--ranks", default=",".join(map(str, d.ranks)), help="ranks r of the best rank-r approximation error (default: 16,64)"
    )
    parser.add_argument("--device", default=d.device, help="auto (CUDA when available), cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--svd-dtype",
        default=d.svd_dtype,
        choices=("auto", "float32", "float64"),
        help="Gram/eigh dtype for W (dW always float64); auto = float64 on CPU, float32 on GPU (default: auto)",
    )
    parser.add_argument(
        "--chunk-mb", type=float_in(0, low_open=True), default=d.chunk_mb, help=f"float32 MB per streamed row chunk (default: {d.chunk_mb})"
    )
    parser.add_argument("--spectrum-matrix", default=None, metavar="NAME", help="tensor for the spectrum plot (default: middle layer's down_proj)")
    parser.add_argument("--include", default=None, metavar="REGEX", help="analyse only tensors whose name matches (default: all)")
    parser.add_argument(
        "--mask-alpha", type=float_in(0, 1, low_open=True, high_open=True), default=0.5, help="share of entries in the principal / low-magnitude masks (default: 0.5)"
    )
    parser.add_argument(
        "--mask-k", type=int_at_least(1), default=None, help="rank of the base reconstruction of the principal mask (default: the k-fraction k)"
    )
    parser.add_argument(
        "--mask-update",
        default="auto",
        choices=("auto", "exact", "bf16"),
        help="entries counted as updated for the masks: exact, bf16 (bf16 roundings differ), auto = bf16 when a side is "
        "stored wider than bf16 (default: auto)",
    )
    add_threads_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def _ranks(text: str) -> tuple[int, ...]:
    from rlvr_lens.errors import UserError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--ranks {text!r} must be comma-separated integers, e.g. 16,64.") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlvr_lens.analyses.weights import WeightsConfig, weight_forensics
    from rlvr_lens.cli.common import check_out_dir, parse_models
    from rlvr_lens.errors import UserError
    from rlvr_lens.models.loading import check_weight_files
    from rlvr_lens.report import write_run

    specs = parse_models(args.models, minimum=2)
    for spec in specs:
        if not Path(spec.source).is_dir():
            raise UserError(f"No checkpoint directory at {spec.source}.")
        check_weight_files(spec.source)
    config = WeightsConfig(
        metrics=args.metrics,
        tol=args.tol,
        k_fraction=args.k_fraction,
        k_fixed=args.k_fixed,
        ranks=_ranks(args.ranks),
        device=args.device,
        svd_dtype=args.svd_dtype,
        chunk_mb=args.chunk_mb,
        spectrum_matrix=args.spectrum_matrix,
        include=args.include,
        mask_alpha=args.mask_alpha,
        mask_k=args.mask_k,
        mask_update=args.mask_update,
    )
    config.check()
    out = check_out_dir(args.out)  # before the pass over the weights, which takes hours on a 7B pair
    result = weight_forensics(
        specs[0].source,
        {s.name: s.source for s in specs[1:]},
        config,
        base_name=specs[0].name,
        show_progress=not args.no_progress,
    )
    from rlvr_lens.distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun every process holds the gathered result; rank 0 writes
        return 0
    report = write_run(
        out,
        [result],
        title="rlvr-lens: weight forensics",
        context=[f"{s.name}: {s.source}" for s in specs],
    )
    print(f"wrote {out / 'weights.json'} and {report}")
    return 0
