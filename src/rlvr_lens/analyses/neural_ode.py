"""The study's neural-ODE view of trajectories: fit one vector field ``dz/dt = f(z, t)`` to
every sample's hidden-state trajectory, then ask where the field pushes two groups apart.

Definitions (states and positions as in :mod:`rlvr_lens.analyses.hidden_states`; ``L``
decoder layers, states ``h(0..L)``):

* **Reduction.** The states of all samples and all layers are pooled, centered, and
  projected on their top ``components`` principal directions (``torch.svd_lowrank``, seeded),
  then divided by one scalar (the RMS of the projected coordinates) so the field works in
  units of order 1: ``z_i(l)``, ``[n, L + 1, components]``.
* **Field.** ``f(z, t)``: an MLP (``components + 1 -> width -> width -> components``, tanh),
  ``t`` in layer units. Integrated with ``torchdiffeq.odeint`` (fixed-step RK4,
  ``step_size`` layers) from ``z_i(0)`` at ``t = 0, 1, ..., L``; trained (Adam, full batch,
  ``steps`` steps, seeded) to minimize the mean squared error to ``z_i(1..L)``. Group labels
  are never used in the fit. **Fit quality** ``r2 = 1 - SSE / SST`` over ``z(1..L)``.
* **Field separation** at layer ``l``: the separation of :mod:`rlvr_lens.analyses.trajectory`
  (mean difference over pooled spread, permutation test with family-wise threshold) applied
  to the field evaluated at each sample's midpoint state and time,
  ``F_i(l) = f((z_i(l) + z_i(l + 1)) / 2, l + 1/2)`` (the midpoint rule for what the field
  adds between layers ``l`` and ``l + 1``).

An ODE flow is deterministic: two samples with the same ``z(0)`` follow the same
trajectory, so the field can only separate groups that its inputs distinguish. At the
answer position of a templated prompt ``h(0)`` is the embedding of the same token for every
sample, and the fit then explains nothing (``fit_r2`` ~ 0): read ``fit_r2`` first. The
model-free velocity separation needs no fit and is the primary result; this is the
study's smoother alternative, reported beside it when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlvr_lens.analyses.trajectory import VectorFieldSeparation, vector_separation_test
from rlvr_lens.errors import UserError


@dataclass(frozen=True)
class VectorFieldConfig:
    """How the neural-ODE field is fitted (see the module docstring)."""

    components: int = 16
    width: int = 64
    steps: int = 400
    learning_rate: float = 1e-2
    step_size: float = 0.25
    seed: int = 0

    def check(self) -> None:
        if self.components < 1 or self.width < 1 or self.steps < 1:
            raise UserError("The vector field needs components, width and steps of at least 1.")
        if not 0 < self.step_size <= 1:
            raise UserError(f"The ODE step size must lie in (0, 1] layers; got {self.step_size}.")
        if not self.learning_rate > 0:
            raise UserError("The vector field's learning rate must be > 0.")


class _Field(nn.Module):
    def __init__(self, components: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(components + 1, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, components),
        )

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        time = t.expand(*z.shape[:-1], 1).to(z.dtype)
        return self.net(torch.cat([z, time], dim=-1))


def reduce_states(states: np.ndarray, components: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """``[n, L + 1, d]`` -> ``(z [n, L + 1, k], explained variance share)`` (module docstring)."""
    n, s, d = states.shape
    flat = torch.as_tensor(np.asarray(states, dtype=np.float64).reshape(n * s, d))
    flat = flat - flat.mean(dim=0, keepdim=True)
    k = min(components, d, n * s - 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(flat, q=min(k + 8, d, n * s), niter=6)
    z = flat @ v[:, :k]
    total = float((flat**2).sum())
    explained = float((z**2).sum()) / total if total > 0 else 0.0
    scale = float(z.pow(2).mean().sqrt()) or 1.0
    return (z / scale).reshape(n, s, k).numpy(), explained


def fit_vector_field(z: np.ndarray, config: VectorFieldConfig) -> tuple[_Field, float]:
    """Fit ``f`` to trajectories ``z [n, L + 1, k]``; returns the field and its fit ``r2``."""
    try:
        from torchdiffeq import odeint
    except ImportError:
        raise UserError("The vector-field fit needs torchdiffeq; install it with: pip install torchdiffeq") from None

    target = torch.as_tensor(z, dtype=torch.float32)
    times = torch.arange(target.shape[1], dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        field = _Field(target.shape[2], config.width)
    optimizer = torch.optim.Adam(field.parameters(), lr=config.learning_rate)
    options = {"step_size": config.step_size}

    def integrate() -> torch.Tensor:
        return odeint(field, target[:, 0], times, method="rk4", options=options).transpose(
            0, 1
        )  # [n, L + 1, k]

    with torch.enable_grad():
        for _ in range(config.steps):
            loss = (integrate()[:, 1:] - target[:, 1:]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = integrate()[:, 1:]
        observed = target[:, 1:]
        sse = float((predicted - observed).double().pow(2).sum())
        sst = float((observed - observed.mean(dim=0)).double().pow(2).sum())
    return field, (1 - sse / sst if sst > 0 else float("nan"))


@torch.no_grad()
def field_at_midpoints(field: _Field, z: np.ndarray) -> np.ndarray:
    """``F_i(l) = f((z_i(l) + z_i(l + 1)) / 2, l + 1/2)`` as ``[n, L, k]`` float64."""
    states = torch.as_tensor(z, dtype=torch.float32)
    middle = (states[:, 1:] + states[:, :-1]) / 2  # [n, L, k]
    times = torch.arange(states.shape[1] - 1, dtype=torch.float32) + 0.5
    values = torch.stack([field(times[layer], middle[:, layer]) for layer in range(middle.shape[1])], dim=1)
    return values.double().numpy()


def vector_field_separation(
    states: np.ndarray,
    index_a: Sequence[int],
    index_b: Sequence[int],
    config: VectorFieldConfig | None = None,
    *,
    permutations: int = 1000,
    alpha: float = 0.05,
    name: str = "",
) -> VectorFieldSeparation:
    """Fit the field on the two groups' trajectories (labels unused) and test its separation."""
    config = config or VectorFieldConfig()
    config.check()
    index_a, index_b = list(index_a), list(index_b)
    if set(index_a) & set(index_b):
        raise UserError("The two groups of a vector-field separation share samples; they must be disjoint.")
    if len(index_a) < 2 or len(index_b) < 2:
        raise UserError("Each group of a vector-field separation needs at least 2 samples.")
    z, explained = reduce_states(np.asarray(states)[index_a + index_b], config.components, config.seed)
    field, r2 = fit_vector_field(z, config)
    values = field_at_midpoints(field, z)
    separation = vector_separation_test(
        values, len(index_a), permutations=permutations, alpha=alpha, seed=config.seed, name=name
    )
    return VectorFieldSeparation(name, z.shape[2], explained, r2, separation)
