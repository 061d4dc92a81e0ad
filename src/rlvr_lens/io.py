"""Atomic file writes: a result file is either complete or absent, never half-written.

Every writer goes through :func:`atomic_write_bytes`, which writes to a temporary file in
the destination directory, flushes and fsyncs it, then renames it over the target
(``os.replace`` is atomic on POSIX and Windows for files on the same file system). The file
gets the mode an ordinary ``open()`` would give it (``0o666`` less the user's umask), not
the ``0o600`` of the temporary file.

A run directory is guarded by :func:`run_dir_lock` (one job writes to it at a time) and
:func:`remove_stale_temp_files` removes the temporary files a killed job left behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

#: Temporary files are named ``.<target name>.<random>.tmp`` (see :func:`atomic_write_bytes`).
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


def file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (mode as :func:`file_mode`) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), file_mode())
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


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) a killed writer left in run
    directory ``directory`` and its immediate subdirectories (``cache/``, ``figures/``);
    return what was removed. Deeper folders are not searched, so a mistaken ``--out`` (a
    home directory) is never walked.

    Call it only while holding :func:`run_dir_lock`, so no live writer's file is removed.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    folders = [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]
    removed = []
    for folder in folders:
        for path in sorted(folder.glob(f"{TEMP_PREFIX}*.*{TEMP_SUFFIX}")):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


LOCK_NAME = ".rlvr-lens.lock"


class RunDirLocked(Exception):
    """Another process holds the run directory's lock (``pid`` when known)."""

    def __init__(self, directory: Path, pid: int | None):
        super().__init__(f"{directory} is locked by process {pid}")
        self.directory, self.pid = directory, pid


@contextlib.contextmanager
def run_dir_lock(directory: str | os.PathLike):
    """Hold an exclusive lock on run directory ``directory`` for the ``with`` block.

    The lock is an ``flock`` on ``<directory>/.rlvr-lens.lock`` (it holds the owner's pid):
    the kernel releases it when the process ends, however it ends, so a killed job never
    leaves a stale lock. Raises :class:`RunDirLocked` at once if another process holds it.
    On systems without ``fcntl`` (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    directory = Path(directory)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise RunDirLocked(directory, int(text) if text.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
