"""Orchestration: run the selected analyses, cache each result, resume after interruption.

An audit is a list of :class:`AuditStep`. Each step names its inputs (checkpoint
fingerprints, data file hash, config) in ``key``; the result is cached in
``<out>/cache/<name>-<hash>.json`` and reused when the same step runs again with the same
inputs, so an interrupted audit resumes where it stopped and a changed config recomputes
only what it affects. A step that fails is reported (and the audit goes on with the
others); finished results are never lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr_lens.errors import UserError
from rlvr_lens.results import Result

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def fingerprint_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A cheap identity of a checkpoint directory: names, sizes and mtimes of its files.

    Hub ids (no local directory) are fingerprinted by name only.
    """
    path = Path(path)
    if not path.is_dir():
        return {"source": str(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return {
        "source": str(path.resolve()),
        "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files],
    }


def fingerprint_file(path: str | os.PathLike) -> str:
    """SHA-256 of a data file's bytes (directories: of their file names, sizes and mtimes)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                digest.update(f"{p.relative_to(path)}:{p.stat().st_size}:{int(p.stat().st_mtime)}".encode())
    else:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def step_hash(name: str, key: dict[str, Any]) -> str:
    text = json.dumps({"step": name, **key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class AuditStep:
    """One analysis to run: ``run()`` returns a result of ``result_type``; ``key`` names its inputs."""

    name: str
    result_type: type[Result]
    key: dict[str, Any]
    run: Callable[[], Result]


@dataclass
class StepOutcome:
    name: str
    status: str  # "computed" | "cached" | "failed"
    cache_file: str | None = None
    error: str | None = None


@dataclass
class AuditOutcome:
    results: list[Result] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[StepOutcome]:
        return [s for s in self.steps if s.status == "failed"]


def run_steps(
    out_dir: str | os.PathLike,
    steps: list[AuditStep],
    *,
    on_step: Callable[[StepOutcome], None] | None = None,
    keep_going: bool = True,
) -> AuditOutcome:
    """Run (or load from cache) every step; see the module docstring.

    A :class:`UserError` in a step stops the audit (the input is wrong, the other steps
    would fail the same way) unless ``keep_going``; any other exception is recorded with
    its traceback's last line and the audit continues.
    """
    cache = Path(out_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    outcome = AuditOutcome()
    for step in steps:
        path = cache / f"{step.name}-{step_hash(step.name, step.key)}.json"
        result: Result | None = None
        if path.exists():
            try:
                result = step.result_type.load(path)
                status = StepOutcome(step.name, "cached", str(path))
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                result = None  # unreadable cache entry (older version): recompute
        if result is None:
            try:
                result = step.run()
                result.save(path)
                status = StepOutcome(step.name, "computed", str(path))
            except UserError as error:
                if not keep_going:
                    raise
                status = StepOutcome(step.name, "failed", error=error.message)
            except Exception as error:  # a bug in one analysis must not lose the others
                last = traceback.format_exception_only(type(error), error)[-1].strip()
                status = StepOutcome(step.name, "failed", error=last)
        if result is not None and status.status != "failed":
            outcome.results.append(result)
        outcome.steps.append(status)
        if on_step is not None:
            on_step(status)
    return outcome
