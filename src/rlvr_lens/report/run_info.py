"""The report's last section: the run's configuration, its environment and the time per analysis."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from rlvr_lens import __version__
from rlvr_lens.distributed import world_size
from rlvr_lens.report.html import Section, Table

#: Packages whose versions the report lists (those that change numbers).
PACKAGES = ("torch", "transformers", "accelerate", "trl", "numpy", "safetensors", "math-verify")


def environment(device: str = "auto", dtype: str = "auto") -> dict[str, str]:
    """Versions, machine and the device / dtype the run resolved to (``torch`` is imported here)."""
    import torch

    info = {
        "rlvr-lens": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "processes": str(world_size()),  # > 1 under accelerate launch / torchrun (samples sharded)
    }
    for package in PACKAGES:
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    if torch.cuda.is_available():
        info["gpus"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    resolved_device = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    info["device"] = f"{device} -> {resolved_device}" if device != resolved_device else device
    if dtype == "auto" and resolved_device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        info["dtype"] = "auto -> bfloat16"
    else:
        info["dtype"] = "auto (as stored)" if dtype == "auto" else dtype
    return info


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return "(not set)" if value is None else str(value)


def run_section(config: dict[str, Any], env: dict[str, str], steps: list | None = None) -> Section:
    """Section ``run`` with three tables: options of the run, environment, time per analysis step.

    ``steps`` are :class:`rlvr_lens.audit.StepOutcome` (name, status, seconds).
    """
    from rlvr_lens.progress import format_seconds

    tables = [
        Table(["option", "value"], [[key, _cell(value)] for key, value in config.items()], "Options of this run"),
        Table(["", "value"], [[key, value] for key, value in env.items()], "Environment"),
    ]
    total = 0.0
    if steps:
        rows = []
        for step in steps:
            seconds = getattr(step, "seconds", None) or 0.0
            total += seconds
            rows.append([step.name, step.status, format_seconds(seconds)])
        tables.append(Table(["analysis step", "status", "wall time"], rows, "Time per analysis step (cached = read from an earlier run)"))
    summary = f"rlvr-lens {env.get('rlvr-lens', __version__)} on {env.get('device', '?')}, dtype {env.get('dtype', '?')}"
    if steps:
        summary += f"; {len(steps)} analysis steps in {format_seconds(total)}"
    paragraphs = ["What produced this report, to repeat or compare it. <code>rlvr-lens audit --config OUT/config.toml</code> "
                  "repeats an audit with exactly these options."]
    return Section("run", "Run configuration and environment", summary + ".", paragraphs, tables)
