"""Read a checkpoint's tensors one at a time, by name, straight from its files (no model is built).

Supported layouts of a Hugging Face checkpoint directory:

- ``model.safetensors.index.json`` + shards (``weight_map`` says which shard holds a name),
- one ``model.safetensors`` (or any single ``*.safetensors``),
- ``pytorch_model.bin.index.json`` + shards, or one ``pytorch_model.bin`` (memory-mapped
  with ``torch.load(mmap=True, weights_only=True)``, so unread tensors stay on disk).

Safetensors tensors are read with plain positioned file reads of the byte range the header
names (the format is a JSON header followed by raw little-endian arrays), not through a memory
map: a row slice (``rows(name, start, stop)``) reads only those rows, and nothing of a file
stays mapped into the process, so resident memory is what the caller holds (a memory map
would count every page touched as resident while the file is open). This is what lets weight
forensics stream a 152k x 3584 embedding without holding it.

``lm_head.weight`` is absent from checkpoints whose config ties it to the input
embedding (``tie_word_embeddings``); :class:`CheckpointTensors` then reports it as an
*alias* of ``model.embed_tokens.weight`` (see :attr:`tied_aliases`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlvr_lens.errors import UserError

_SAFE_INDEX = "model.safetensors.index.json"
_BIN_INDEX = "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is: ``file`` (absolute path), ``dtype``, ``shape``, and
    for safetensors the absolute byte ``offset`` of its data in the file."""

    file: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int | None = None


_SAFE_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _safetensors_header(path: Path) -> tuple[int, dict]:
    """Size and content of the JSON header of a ``.safetensors`` file (names, dtypes, shapes, byte offsets)."""
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if size <= 0 or size > 100_000_000:
            raise UserError(f"{path} is not a readable safetensors file.")
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path} is not a readable safetensors file.") from None
    header.pop("__metadata__", None)
    return size, header


@dataclass
class CheckpointTensors:
    """Tensors of one checkpoint directory, read lazily by name.

    Use as a context manager (or call :meth:`close`); open file handles are cached per file.

    Attributes:
        directory: the checkpoint directory.
        infos: ``name -> TensorInfo`` for every stored tensor.
        tied_aliases: ``name -> stored name`` for tensors that are not stored because they
            are tied (``lm_head.weight -> model.embed_tokens.weight``).
        config: the parsed ``config.json`` (empty dict when absent).
    """

    directory: Path
    infos: dict[str, TensorInfo]
    tied_aliases: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    _handles: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, directory: str | os.PathLike) -> CheckpointTensors:
        """Index the tensors of ``directory``; a :class:`UserError` says what is missing."""
        directory = Path(directory)
        if not directory.exists():
            raise UserError(f"Checkpoint directory {directory} does not exist.")
        if not directory.is_dir():
            raise UserError(f"Checkpoint {directory} is not a directory.")
        config = {}
        if (directory / "config.json").is_file():
            config = json.loads((directory / "config.json").read_text())
        infos = _index_safetensors(directory)
        if infos is None:
            infos = _index_bin(directory)
        if not infos:
            raise UserError(f"{directory} holds no weights (no *.safetensors or pytorch_model*.bin files).")
        aliases = {}
        tied = config.get("tie_word_embeddings", config.get("text_config", {}).get("tie_word_embeddings", False))
        if "lm_head.weight" not in infos and tied:
            embed = next((n for n in infos if n.endswith("embed_tokens.weight")), None)
            if embed is not None:
                aliases["lm_head.weight"] = embed
        return cls(directory, infos, aliases, config)

    def __enter__(self) -> CheckpointTensors:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles.values():
            if hasattr(handle, "close"):
                handle.close()
        self._handles.clear()

    # ------------------------------------------------------------------ reading
    @property
    def names(self) -> list[str]:
        """Stored tensor names, sorted."""
        return sorted(self.infos)

    def info(self, name: str) -> TensorInfo:
        return self.infos[self.tied_aliases.get(name, name)]

    def _handle(self, file: str):
        if file not in self._handles:
            if file.endswith(".safetensors"):
                self._handles[file] = open(file, "rb", buffering=0)  # noqa: SIM115 (closed in close())
            else:
                try:
                    self._handles[file] = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
                except Exception as error:  # a truncated or foreign file: say which
                    raise UserError(f"Cannot read {file}: {type(error).__name__}.") from error
        return self._handles[file]

    def tensor(self, name: str) -> torch.Tensor:
        """The whole tensor ``name`` in its stored dtype, on the CPU."""
        info = self.info(name)
        if info.offset is not None:
            return self._read(info, 0, info.shape[0] if info.shape else 1).reshape(info.shape)
        return self._handle(info.file)[self.tied_aliases.get(name, name)]

    def rows(self, name: str, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of tensor ``name`` (first dimension), reading only those rows.

        ``out``: optional flat ``uint8`` buffer, large enough, that safetensors data is read
        into (reusing one buffer avoids paging in fresh memory for every chunk).
        """
        info = self.info(name)
        if info.offset is not None:
            return self._read(info, start, stop, out)
        return self._handle(info.file)[self.tied_aliases.get(name, name)][start:stop]

    def _read(self, info: TensorInfo, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of a safetensors tensor, read from disk into ``out`` or a fresh tensor."""
        row_shape = info.shape[1:]
        itemsize = torch.empty((), dtype=info.dtype).element_size()
        row_bytes = math.prod(row_shape) * itemsize
        size = (stop - start) * row_bytes
        buffer = torch.empty(size, dtype=torch.uint8) if out is None or out.numel() < size else out[:size]
        view = memoryview(buffer.numpy())
        handle = self._handle(info.file)
        position, done = info.offset + start * row_bytes, 0
        while done < len(view):
            count = os.preadv(handle.fileno(), [view[done:]], position + done)
            if count <= 0:
                raise UserError(f"{info.file} is truncated: a tensor's data ends beyond the end of the file.")
            done += count
        return buffer.view(info.dtype).reshape(stop - start, *row_shape)


def _index_safetensors(directory: Path) -> dict[str, TensorInfo] | None:
    index = directory / _SAFE_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise UserError(f"{directory} is missing shard {missing[0]} named in {_SAFE_INDEX}.")
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
        if not files:
            return None
    infos: dict[str, TensorInfo] = {}
    for name in files:
        path = directory / name
        header_size, header = _safetensors_header(path)
        for tensor, meta in header.items():
            dtype = _SAFE_DTYPES.get(meta["dtype"])
            if dtype is None:
                raise UserError(f"{path} stores {tensor} as {meta['dtype']}, which rlvr-lens cannot compare.")
            offset = 8 + header_size + int(meta["data_offsets"][0])
            infos[tensor] = TensorInfo(str(path.resolve()), dtype, tuple(meta["shape"]), offset)
    return infos


def _index_bin(directory: Path) -> dict[str, TensorInfo]:
    index = directory / _BIN_INDEX
    if index.is_file():
        files = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
    else:
        files = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
    infos: dict[str, TensorInfo] = {}
    for name in files:
        path = directory / name
        if not path.is_file():
            raise UserError(f"{directory} is missing shard {name} named in {_BIN_INDEX}.")
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as error:
            raise UserError(f"Cannot read {path}: {type(error).__name__}.") from error
        for tensor, value in state.items():
            if isinstance(value, torch.Tensor):
                infos[tensor] = TensorInfo(str(path.resolve()), value.dtype, tuple(value.shape))
        del state
    return infos


def matched_names(base: CheckpointTensors, tuned: CheckpointTensors) -> list[str]:
    """Names present in both checkpoints, with equal shapes; otherwise a one-sentence :class:`UserError`.

    ``lm_head.weight`` counts as present where it is tied to the embedding, but a pair in which
    both sides tie it is compared once (through the embedding). Order: as stored in ``base``.
    """
    base_names = set(base.infos) | set(base.tied_aliases)
    tuned_names = set(tuned.infos) | set(tuned.tied_aliases)
    only_base = sorted(base_names - tuned_names)
    only_tuned = sorted(tuned_names - base_names)
    if only_base or only_tuned:
        side, names, other = (base, only_base, tuned) if only_base else (tuned, only_tuned, base)
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise UserError(
            f"Checkpoints do not match: {names[0]}{more} is in {side.directory} but not in {other.directory}."
        )
    names = []
    for name in sorted(base_names):
        if name in base.tied_aliases and name in tuned.tied_aliases:
            continue  # both tied: the embedding row already covers it
        b, t = base.info(name).shape, tuned.info(name).shape
        if b != t:
            raise UserError(
                f"Checkpoints do not match: {name} has shape {list(b)} in {base.directory} "
                f"but {list(t)} in {tuned.directory}."
            )
        names.append(name)
    return names
