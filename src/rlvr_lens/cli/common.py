"""Options and error handling shared by every ``rlvr-lens`` command."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from rlvr_lens.errors import UserError


def add_model_args(parser: argparse.ArgumentParser, *, minimum: int = 2) -> None:
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help=f"checkpoint directory or hub id, repeatable; base first, then tuned ones (at least {minimum})",
    )


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="FILE", help="JSONL / Parquet file or saved datasets directory")
    parser.add_argument(
        "--fields",
        default=None,
        metavar="MAP",
        help="column mapping, e.g. prompt=question,answer=final (default: detect native, MATH or GSM8K layout)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples (default: all)")
    parser.add_argument(
        "--template",
        default="plain",
        help="prompt template: plain, boxed, qwen-math, organism (default: plain)",
    )


def add_runtime_args(parser: argparse.ArgumentParser, *, batch_size: int = 8) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory for JSON, figures and report.html")
    parser.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on a CUDA GPU, else as stored), float32, bfloat16, float16 (default: auto)"
    )
    parser.add_argument("--device-map", default=None, help="accelerate device map, e.g. auto to spread over GPUs")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"samples per forward pass (default: {batch_size})")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def parse_models(texts: list[str], minimum: int = 2):
    from rlvr_lens.models import ModelSpec

    specs = [ModelSpec.parse(t) for t in texts]
    if len(specs) < minimum:
        raise UserError(f"Give at least {minimum} checkpoints with --model NAME=PATH (base first); got {len(specs)}.")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError("Give every --model a different NAME.")
    return specs


def load_series(args: argparse.Namespace, minimum: int = 2):
    """The checkpoints of ``--model`` as a :class:`~rlvr_lens.models.ModelSeries`, checked before any
    weight is loaded: every path exists, dtype/device/template/batch size are valid, and the
    checkpoints are comparable (architecture, shapes, tokenizer)."""
    from rlvr_lens.data import apply_template
    from rlvr_lens.models import ModelSeries, resolve_device, resolve_dtype

    specs = parse_models(args.models, minimum)
    resolve_dtype(args.dtype)
    if args.device_map is None:
        resolve_device(args.device)
    if getattr(args, "template", None):
        apply_template("x", args.template)
    if getattr(args, "batch_size", 1) < 1:
        raise UserError(f"--batch-size must be at least 1; got {args.batch_size}.")
    series = ModelSeries(list(specs), dtype=args.dtype, device=args.device, device_map=args.device_map)
    series.check()
    return series


def load_data(args: argparse.Namespace):
    from rlvr_lens.data import parse_field_map, read_samples_report

    report = read_samples_report(args.data, parse_field_map(args.fields), limit=args.limit)
    if report.skipped:
        print(f"warning: {report.summary}", file=sys.stderr)
    return report.samples


def check_out_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {path} is a file; give a directory.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _missing_dirs(path: str | None) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first (none for ``None``)."""
    if not path:
        return []
    out = Path(path)
    return [d for d in (out, *out.parents) if not d.exists()]


def run_guarded(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command; a user error or out-of-memory becomes one sentence and exit status 2."""
    import torch

    new_dirs = _missing_dirs(getattr(args, "out", None))  # what the command may create for --out
    status = 1
    try:
        status = int(func(args) or 0)
    except UserError as error:
        print(f"error: {error.message}", file=sys.stderr)
        status = error.exit_code
    except torch.OutOfMemoryError:
        print("error: out of memory; try a smaller --batch-size, --dtype bfloat16, or --device cpu.", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted; finished results are saved, unfinished ones were not written.", file=sys.stderr)
        status = 130
    finally:
        if status != 0:  # a failed command leaves no empty --out directory behind
            for directory in new_dirs:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only succeeds on an empty directory
    return status
