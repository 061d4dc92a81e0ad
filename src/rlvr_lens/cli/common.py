"""Options and error handling shared by every ``rlvr-lens`` command."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rlvr_lens.errors import UserError

# ----------------------------------------------------------------------------- option ranges


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= minimum`` (a bad value exits 2 with a sentence)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}; got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    parse.kind = int  # what a config file's value must be (rlvr_lens.cli.config)
    return parse


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False):
    """An argparse ``type`` accepting finite floats in a range (open or closed at each end)."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            left = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            right = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(x for x in (left, right) if x)}; got {text}")
        return value

    parse.__name__ = "number"
    parse.kind = float
    return parse


# ----------------------------------------------------------------------------- threads


def _other_jobs() -> int:
    """How many other ``rlvr-lens`` processes run on this machine (Linux ``/proc``; 0 elsewhere)."""
    me = os.getpid()
    count = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            # ``rlvr-lens CMD`` or ``python -m rlvr_lens.cli CMD``
            if any(a.endswith(b"rlvr-lens") for a in argv[:2]) or b"rlvr_lens.cli" in argv[:3]:
                count += 1
    return count


def default_threads() -> int:
    """Torch threads for this job when ``--threads`` is not given.

    ``OMP_NUM_THREADS`` when set; otherwise the cores this process may use, divided by the
    ``rlvr-lens`` jobs now running (this one included), and 1 when the machine is already
    saturated (1-minute load average >= cores). PyTorch's own default, one thread per core
    whatever else runs, makes two jobs on a 2-core machine spin against each other: 25x
    slower instead of 2x (see benchmarks/two_audits.py).
    """
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, AttributeError):
        if os.getloadavg()[0] >= cores:
            return 1
    return max(1, cores // (1 + _other_jobs()))


#: Whether ``--threads`` fixed the thread count of this job (then :func:`refresh_threads` keeps it).
_THREADS_FIXED = [False]


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``requested`` (or :func:`default_threads`) and its
    inter-op pool to 1 (rlvr-lens runs no parallel graph); return the intra-op count."""
    import torch

    _THREADS_FIXED[0] = requested is not None
    threads = requested or default_threads()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the pool first runs
        torch.set_num_interop_threads(1)
    return threads


def step_printer(indent: int = 2, width: int = 28) -> Callable:
    """The ``on_step`` callback of ``run_steps`` for a command: one stderr line per step (name,
    status, wall time, error), then the thread default re-checked (other jobs may have started
    or ended during the step)."""

    def say(step) -> None:
        from rlvr_lens.progress import format_seconds

        detail = f": {step.error}" if step.error else ""
        if step.seconds is not None:
            detail = f" in {format_seconds(step.seconds)}{detail}"
        print(f"{' ' * indent}{step.name:<{width}} {step.status}{detail}", file=sys.stderr)
        refresh_threads()

    return say


def refresh_threads() -> int:
    """Re-apply :func:`default_threads` between the steps of a long job (call it from the main
    thread: torch's thread count is per calling thread), since other jobs may have started or
    ended meanwhile; keeps a count fixed by ``--threads``. Returns the count in use."""
    import torch

    if not _THREADS_FIXED[0]:
        torch.set_num_threads(default_threads())
    return torch.get_num_threads()


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
    parser.add_argument("--limit", type=int_at_least(1), default=None, help="use only the first N samples (default: all)")
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
    parser.add_argument(
        "--batch-size", type=int_at_least(1), default=batch_size, help=f"samples per forward pass (default: {batch_size})"
    )
    add_threads_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=None,
        help="CPU threads of PyTorch (default: cores / rlvr-lens jobs running, 1 on a saturated machine)",
    )


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
    from rlvr_lens.models import ModelSeries

    specs = parse_models(args.models, minimum)
    check_runtime_options(args)
    series = ModelSeries(list(specs), dtype=args.dtype, device=args.device, device_map=args.device_map)
    series.check()
    return series


def check_runtime_options(args: argparse.Namespace) -> None:
    """Validate --dtype, --device (unless --device-map), --template and --batch-size, before any work."""
    from rlvr_lens.data import apply_template
    from rlvr_lens.models import resolve_device, resolve_dtype

    resolve_dtype(args.dtype)
    if getattr(args, "device_map", None) is None:
        resolve_device(args.device)
    if getattr(args, "template", None):
        apply_template("x", args.template)
    if getattr(args, "batch_size", 1) < 1:
        raise UserError(f"--batch-size must be at least 1; got {args.batch_size}.")


def load_data(args: argparse.Namespace):
    from rlvr_lens.data import parse_field_map, read_samples_report

    report = read_samples_report(args.data, parse_field_map(args.fields), limit=args.limit)
    if report.skipped:
        print(f"warning: {report.summary}", file=sys.stderr)
    return report.samples


#: Locks on the run directories of this command, released by :func:`run_guarded`.
_OUT_LOCKS = contextlib.ExitStack()
_LOCKED: set[Path] = set()


def check_out_dir(path: str) -> Path:
    """Create run directory ``path`` and make it this job's, before any computation.

    Refuses (one sentence) a path that is a file, a directory that cannot be written, and a
    directory another ``rlvr-lens`` job is writing to (an ``flock``, released when this job
    ends however it ends). Removes temporary files a killed job left there.
    """
    from rlvr_lens.io import RunDirLocked, remove_stale_temp_files, run_dir_lock

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {path} is a file; give a directory.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f".write-test-{os.getpid()}", "wb"):
            pass
        (out / f".write-test-{os.getpid()}").unlink()
    except OSError as error:
        raise UserError(f"Cannot write to --out {path}: {error.strerror or error}.") from None
    if out.resolve() in _LOCKED:
        return out  # this job already holds it
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return out  # a non-zero rank of accelerate launch / torchrun: rank 0 holds the lock and writes
    try:
        _OUT_LOCKS.enter_context(run_dir_lock(out))
        _LOCKED.add(out.resolve())
        _OUT_LOCKS.callback(_LOCKED.discard, out.resolve())
    except RunDirLocked as locked:
        who = f"process {locked.pid}" if locked.pid else "another process"
        raise UserError(f"--out {path} is in use by another rlvr-lens job ({who}); wait for it or choose another directory.") from None
    remove_stale_temp_files(out)
    return out


def _missing_dirs(path: str | None) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first (none for ``None``)."""
    if not path:
        return []
    out = Path(path)
    return [d for d in (out, *out.parents) if not d.exists()]


def _remove_if_empty(directory: Path) -> None:
    """Remove ``directory`` if it holds nothing but empty folders and the run-directory lock."""
    from rlvr_lens.io import LOCK_NAME

    if not directory.is_dir():
        return
    for sub in sorted(directory.rglob("*"), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir() if sub.is_dir() else (sub.unlink() if sub.name == LOCK_NAME else None)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only succeeds on an empty directory


def _is_allocation_failure(error: BaseException) -> bool:
    """A CPU (or any) allocator that could not get memory: ``MemoryError`` or torch's RuntimeError."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "DefaultCPUAllocator" in text)


#: OS errors that are about the machine or the user's files, not a bug: one sentence, exit 2.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT}


def run_guarded(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command; a user error, out-of-memory or a full / read-only disk becomes one sentence
    and exit status 2. Sets torch's thread count first (``--threads`` or :func:`default_threads`)."""
    import torch

    new_dirs = _missing_dirs(getattr(args, "out", None))  # what the command may create for --out
    status = 1
    try:
        configure_threads(getattr(args, "threads", None))
        status = int(func(args) or 0)
    except UserError as error:
        print(f"error: {error.message}", file=sys.stderr)
        status = error.exit_code
    except torch.OutOfMemoryError:
        print("error: out of memory; try a smaller --batch-size, --dtype bfloat16, or --device cpu.", file=sys.stderr)
        status = 2
    except (MemoryError, RuntimeError) as error:
        if not _is_allocation_failure(error):
            raise
        print(
            "error: out of CPU memory; try a smaller --batch-size or --chunk-size, --dtype bfloat16, or fewer samples.",
            file=sys.stderr,
        )
        status = 2
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write{where}: {error.strerror}.", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted; finished results are saved, unfinished ones were not written.", file=sys.stderr)
        status = 130
    finally:
        _OUT_LOCKS.close()
        if status != 0:  # a failed command leaves no empty --out directory behind
            for directory in new_dirs:
                _remove_if_empty(directory)
    return status
