"""Atomic file writes: a result file is either complete or absent, never half-written.

Every writer goes through :func:`atomic_write_bytes`, which writes to a temporary file in
the destination directory, flushes and fsyncs it, then renames it over the target
(``os.replace`` is atomic on POSIX and Windows for files on the same file system).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` so the file is strict JSON (no NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Serialize ``obj`` to strict JSON (non-finite floats become null) and write atomically."""
    text = json.dumps(_json_safe(obj), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_save_figure(path: str | os.PathLike, figure, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import io as _io

    import matplotlib.pyplot as plt

    buffer = _io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_pretrained(model, tokenizer, directory: str | os.PathLike) -> Path:
    """``save_pretrained`` model and tokenizer through a temporary sibling directory renamed into
    place, so ``directory`` is either a whole checkpoint or absent (a previous one is replaced)."""
    import shutil

    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return directory
