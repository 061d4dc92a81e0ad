"""Wall time of ``rlvr-lens --help`` and of every ``rlvr-lens <command> --help``, before and after.

    python benchmarks/cli_help.py [--before-rev 02534db] [--repeats 5]

"after" is this checkout's ``src``; "before" is ``src`` of git revision ``--before-rev``
(default: the commit before the fast CLI), extracted with ``git archive`` into a temporary
directory. Each command runs ``--repeats`` times in a fresh interpreter (what a user's
shell does); the median is reported, with the 1-minute load average, since the development
machines are shared. Writes benchmarks/results/cli_help.json.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("", "demo", "audit", "perplexity", "contamination", "tokens", "weights", "train", "organism")


def _extract_src(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _time_help(src: Path, command: str, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "rlvr_lens.cli", *([command] if command else []), "--help"]
    seconds, cpu = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        seconds.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    # CPU seconds (user + sys) barely depend on the machine's load: about the wall time on an idle machine
    return {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3),
            "median_cpu_s": round(statistics.median(cpu), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", default="02534db", help="git revision of the slow CLI (default: 02534db)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", default=None, help="comma-separated subset of commands ('' = the bare --help)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cli_help.json"))
    args = parser.parse_args()

    from rlvr_lens.io import atomic_write_json

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before_src = _extract_src(args.before_rev, Path(tmp))
        commands = COMMANDS if args.commands is None else tuple(c.strip() for c in args.commands.split(","))
        for command in commands:
            load = os.getloadavg()[0]
            before = _time_help(before_src, command, args.repeats)
            after = _time_help(ROOT / "src", command, args.repeats)
            label = f"rlvr-lens {command} --help".replace("  ", " ")
            rows.append({"command": label, "before": before, "after": after, "load_1min": round(load, 2)})
            print(f"{label:<36} before {before['median_s']:6.2f} s (cpu {before['median_cpu_s']:5.2f} s)   "
                  f"after {after['median_s']:5.2f} s (cpu {after['median_cpu_s']:4.2f} s)   load {load:.1f}")
    atomic_write_json(
        args.out,
        {
            "what": "median wall seconds of `rlvr-lens [COMMAND] --help` in a fresh interpreter",
            "before_rev": args.before_rev,
            "repeats": args.repeats,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
