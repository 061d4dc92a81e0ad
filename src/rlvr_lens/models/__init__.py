"""Loading checkpoints, architecture adapters, compatibility checks and hook interventions."""

from rlvr_lens.models.adapters import (
    ADAPTERS,
    HOOK_POINTS,
    SUPPORTED_MODEL_TYPES,
    ArchitectureAdapter,
    adapter_for,
)
from rlvr_lens.models.compat import check_compatible, compatibility_problems
from rlvr_lens.models.hooks import capture, hook_name, patch, run_with_weights, scale_neurons
from rlvr_lens.models.loading import (
    LoadedModel,
    ModelSeries,
    ModelSpec,
    free_model,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "ADAPTERS",
    "HOOK_POINTS",
    "SUPPORTED_MODEL_TYPES",
    "ArchitectureAdapter",
    "LoadedModel",
    "ModelSeries",
    "ModelSpec",
    "adapter_for",
    "capture",
    "check_compatible",
    "compatibility_problems",
    "free_model",
    "hook_name",
    "load_model",
    "load_tokenizer",
    "patch",
    "resolve_device",
    "resolve_dtype",
    "run_with_weights",
    "scale_neurons",
]
