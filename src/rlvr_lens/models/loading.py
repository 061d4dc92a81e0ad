"""Load a checkpoint (local directory or hub id) or a series of them, as ``transformers`` does.

Nothing is converted: the returned model is the ``AutoModelForCausalLM`` that
``transformers`` builds, so with no hook set it computes exactly what ``transformers``
computes.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from rlvr_lens.distributed import local_device, world_size
from rlvr_lens.errors import UserError
from rlvr_lens.models.adapters import ArchitectureAdapter, adapter_for_model_type

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str | None = None) -> torch.dtype | str:
    """Names map to ``torch`` dtypes; ``"auto"``/``None`` is bfloat16 when ``device`` is a CUDA GPU
    that supports it (half the memory of float32, and the dtype RL checkpoints are trained in),
    otherwise the checkpoint's stored dtype (``"auto"``)."""
    if dtype is None or dtype == "auto":
        if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise UserError(f"Unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(set(DTYPES)))}.") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` picks CUDA when available (``cuda:LOCAL_RANK`` under a multi-process launcher),
    then Apple MPS, else CPU."""
    if device is None or device == "auto":
        if local_device() is not None:  # one model replica per GPU under accelerate launch / torchrun
            return torch.device(local_device())
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"Unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device {device!r} was requested but no CUDA GPU is available on this machine.")
    return resolved


def _looks_local(source: str) -> bool:
    """True when ``source`` reads as a local path rather than a hub id ``owner/name``: it starts
    with ``.``, ``/`` or ``~``, has more than one ``/``, or its first component is an existing
    local directory (``runs/rlvr-step100`` while ``./runs`` exists)."""
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        return True
    return os.path.isdir(source.split("/", 1)[0])


def check_source(path_or_id: str) -> str:
    """Reject a local path that does not exist, before ``transformers`` tries the hub with it."""
    source = str(path_or_id)
    if os.path.isdir(source):
        if not (Path(source) / "config.json").is_file():
            raise UserError(f"{source} is a directory but holds no config.json, so it is not a Hugging Face checkpoint.")
        return source
    if os.path.exists(source):
        raise UserError(f"{source} is a file; pass the checkpoint directory that holds config.json.")
    if _looks_local(source):
        raise UserError(f"No checkpoint directory at {source}.")
    return source  # a hub id: transformers resolves it (cache or download)


def check_weight_files(path_or_id: str) -> None:
    """Reject a local checkpoint whose ``.safetensors`` files are truncated, before loading it.

    Reads only each file's header: the byte range of every tensor must lie inside the file.
    Hub ids and ``.bin`` checkpoints are left to ``transformers``.
    """
    from rlvr_lens.models.checkpoint_files import _safetensors_header

    directory = Path(str(path_or_id))
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.safetensors")):
        try:
            header_size, header = _safetensors_header(path)
        except OSError as error:
            raise UserError(f"Cannot read {path}: {error.strerror or error}.") from None
        end = 8 + header_size + max((int(m["data_offsets"][1]) for m in header.values()), default=0)
        size = path.stat().st_size
        if size < end:
            raise UserError(
                f"{path} is truncated ({size} bytes, its header describes {end}); copy or save the checkpoint again."
            )


def load_config(path_or_id: str):
    source = check_source(path_or_id)
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as error:
        raise UserError(f"Could not read the model config of {source}: {str(error).splitlines()[0]}") from None
    except ValueError as error:
        raise UserError(f"{source} has a config that transformers cannot read: {str(error).splitlines()[0]}") from None


#: ``tokenizer_class`` values that mean "the tokenizer is exactly its tokenizer.json".
_GENERIC_TOKENIZER_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def _saved_as_generic_tokenizer(source: str) -> bool:
    """True for a local checkpoint whose tokenizer was saved as a plain ``tokenizers`` object.

    ``AutoTokenizer`` loads such a tokenizer as the model family's class (e.g.
    ``Qwen2Tokenizer`` for a qwen2 config), which rebuilds its own pre-tokenizer and so
    tokenizes differently (transformers 5 splits every digit) from the tokenizer the model
    was trained with. Such checkpoints are loaded from their tokenizer.json as saved.
    """
    config = Path(source) / "tokenizer_config.json"
    if not (Path(source) / "tokenizer.json").is_file() or not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("tokenizer_class") in _GENERIC_TOKENIZER_CLASSES
    except (OSError, ValueError):
        return False


#: Files that hold a tokenizer's vocabulary (one of them must be in a local checkpoint).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.tiktoken")


def load_tokenizer(path_or_id: str) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer; a :class:`UserError` when a local checkpoint has none."""
    source = check_source(path_or_id)
    if os.path.isdir(source) and not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"{source} holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer into the checkpoint directory."
        )
    try:
        if _saved_as_generic_tokenizer(source):
            tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise UserError(f"Could not load the tokenizer of {source}: {str(error).splitlines()[0]}") from None
    if len(tokenizer) < 2:
        raise UserError(f"The tokenizer of {source} has an empty vocabulary; save the tokenizer into the checkpoint directory.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


@dataclass
class LoadedModel:
    """A loaded checkpoint: the ``transformers`` model, its tokenizer and its adapter."""

    name: str
    source: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: ArchitectureAdapter

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers(self.model)


def check_finite_weights(model: torch.nn.Module, source: str) -> None:
    """Raise a :class:`UserError` naming the first parameter that holds NaN or Inf."""
    for name, param in model.named_parameters():
        if param.is_floating_point() and not bool(torch.isfinite(param).all()):
            raise UserError(f"Checkpoint {source} has non-finite (NaN or Inf) values in parameter {name}.")


def check_loading_info(info: dict, source: str) -> None:
    """Raise a :class:`UserError` naming the first tensor that ``from_pretrained`` could not load
    as stored: missing from the checkpoint (``transformers`` would fill it with random values),
    unexpected (stored but unused), or of another shape than the config implies."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [])
    if missing:
        raise UserError(
            f"Checkpoint {source} lacks {len(missing)} weight tensor(s) the model needs (first: {missing[0]}); "
            "it is incomplete or for another architecture."
        )
    if mismatched:
        name, stored, expected = (list(mismatched[0]) + [None, None])[:3]
        shapes = f" (stored {list(stored)}, expected {list(expected)})" if stored is not None and expected is not None else ""
        raise UserError(
            f"Checkpoint {source} stores weight {name} with the wrong shape{shapes}; "
            "its weights do not match its config.json."
        )
    if unexpected:
        raise UserError(
            f"Checkpoint {source} holds {len(unexpected)} weight tensor(s) its model does not use (first: {unexpected[0]}); "
            "its weights do not match its config.json."
        )
    if info.get("error_msgs"):
        raise UserError(f"Could not load the weights of {source}: {str(info['error_msgs'][0]).splitlines()[0]}")


def context_window(model) -> int | None:
    """The longest sequence (in tokens) the model was built for: ``max_position_embeddings``
    of its config (of the text config for multimodal ones), or ``None`` when it states none."""
    config = getattr(model, "config", model)
    config = getattr(config, "text_config", None) or config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def load_model(
    path_or_id: str,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = "auto",
    *,
    name: str | None = None,
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    check_finite: bool = True,
) -> LoadedModel:
    """Load a causal LM checkpoint with its tokenizer and architecture adapter.

    Args:
        path_or_id: local checkpoint directory or Hugging Face hub id.
        dtype: ``"auto"`` (stored dtype), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... (ignored when ``device_map`` is set).
        name: display name (defaults to the directory name).
        attn_implementation: passed to ``transformers`` (``"eager"``, ``"sdpa"``, ...).
        device_map: ``accelerate`` device map (e.g. ``"auto"`` to spread a model over GPUs).
        check_finite: reject checkpoints whose weights hold NaN/Inf.
    """
    config = load_config(path_or_id)
    adapter = adapter_for_model_type(config.model_type)
    if device_map is not None and world_size() > 1:
        raise UserError(
            "--device-map spreads one model over every GPU and cannot be combined with accelerate launch / torchrun, "
            "which run one replica per GPU; use one or the other."
        )
    target = ("cuda" if torch.cuda.is_available() else "cpu") if device_map is not None else resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    kwargs: dict = {"dtype": torch_dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    hf_logging.disable_progress_bar()
    check_weight_files(path_or_id)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is replaced by one sentence below
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            check_source(path_or_id), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        check_loading_info(info, str(path_or_id))
        if device_map is None:
            model.to(resolve_device(device))
    except torch.OutOfMemoryError:
        raise UserError(
            f"Out of memory while loading {path_or_id}; try --dtype bfloat16, a smaller batch, or --device-map auto."
        ) from None
    except OSError as error:
        raise UserError(f"Could not load the weights of {path_or_id}: {str(error).splitlines()[0]}") from None
    except Exception as error:
        if type(error).__name__ != "SafetensorError":
            raise
        raise UserError(f"Could not read the weights of {path_or_id}: {str(error).splitlines()[0]}.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval()
    if check_finite:
        check_finite_weights(model, str(path_or_id))
    tokenizer = load_tokenizer(path_or_id)
    display = name or Path(str(path_or_id).rstrip("/")).name
    return LoadedModel(display, str(path_or_id), model, tokenizer, adapter)


def free_model(loaded: LoadedModel | None) -> None:
    """Drop a model and return its memory (GPU caches included)."""
    if loaded is not None:
        loaded.model = None  # type: ignore[assignment]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class ModelSpec:
    """A named checkpoint of a series: ``name=path``."""

    name: str
    source: str

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse ``NAME=PATH`` (or a bare ``PATH``, named after its last component)."""
        if "=" in text:
            name, source = text.split("=", 1)
            if not name or not source:
                raise UserError(f"Cannot read model spec {text!r}; write it as NAME=PATH.")
            return cls(name.strip(), source.strip())
        return cls(Path(text.rstrip("/")).name, text)


@dataclass
class ModelSeries:
    """N >= 2 checkpoints of one model: base first, then tuned ones (e.g. SFT, RLVR, RL steps).

    Models are loaded one at a time (``iter_loaded``) so a series of 7B checkpoints needs
    the memory of one.
    """

    specs: list[ModelSpec]
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str | None = None
    device_map: str | None = None
    _checked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.specs) < 2:
            raise UserError("A series needs at least two checkpoints (base first, then tuned); got one.")
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise UserError(f"Checkpoint names must be unique; got {', '.join(names)}.")

    @classmethod
    def from_strings(cls, texts: list[str], **kwargs) -> ModelSeries:
        return cls([ModelSpec.parse(t) for t in texts], **kwargs)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def base(self) -> ModelSpec:
        return self.specs[0]

    def check(self) -> None:
        """Verify every checkpoint exists with untruncated weight files, and that they are
        comparable (see :func:`check_compatible`), without loading any weight."""
        from rlvr_lens.models.compat import check_compatible

        for spec in self.specs:
            check_source(spec.source)
            check_weight_files(spec.source)
        check_compatible([s.source for s in self.specs], names=self.names)
        self._checked = True

    def load(self, index: int) -> LoadedModel:
        spec = self.specs[index]
        return load_model(
            spec.source,
            self.dtype,
            self.device,
            name=spec.name,
            attn_implementation=self.attn_implementation,
            device_map=self.device_map,
        )

    def iter_loaded(self) -> Iterator[LoadedModel]:
        """Yield each checkpoint loaded, freeing the previous one first."""
        if not self._checked:
            self.check()
        for index in range(len(self.specs)):
            loaded = self.load(index)
            try:
                yield loaded
            finally:
                free_model(loaded)
