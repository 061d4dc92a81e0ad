"""Trajectory separation: at which layer do two sample groups start to move differently?

The *Spurious Rewards Paradox* study reads a sample's hidden states, layer after layer, as
a trajectory and asks where the trajectories of samples the tuned model solves through a
memorized shortcut (the *leakage* group: tuned correct, base wrong) part from those it
solves under both models (*stable*). This module measures that, per model, with a stated
test.

Definitions (see :mod:`rlvr_lens.analyses.hidden_states` for states and positions):

* **Trajectory** of sample ``i``: its residual-stream states ``h_i(0..L)`` at the answer
  position (``L`` decoder layers; ``h(0)`` = embeddings, ``h(l + 1)`` = output of decoder
  layer ``l``, before the final norm).
* **Velocity** at layer ``l`` (``0 <= l < L``): ``v_i(l) = h_i(l + 1) - h_i(l)``, i.e. what
  decoder layer ``l`` adds to the residual stream. Velocities are in the units of the
  residual stream.
* **Separation** of groups ``A`` and ``B`` at layer ``l``::

      sep(l) = || m_A(l) - m_B(l) ||_2 / s(l)
      m_G(l) = mean of v_i(l) over i in G
      s(l)^2 = ( sum_{i in A} ||v_i(l) - m_A(l)||^2 + sum_{i in B} ||v_i(l) - m_B(l)||^2 ) / (n_A + n_B - 2)

  the distance between the two groups' mean velocities in units of the pooled RMS spread
  of a velocity around its group mean (``s^2`` is the trace of the pooled within-group
  covariance). It is dimensionless and unchanged by rotating or scaling the residual
  space. Under the null (both groups drawn from one distribution)
  ``E[sep^2] ~ 1/n_A + 1/n_B``, so small groups have a high floor: read it against the band.
* **Permutation test.** The group labels of the pooled ``n_A + n_B`` samples are shuffled
  ``permutations`` times (seeded, group sizes kept), and the separation curve recomputed
  for each shuffle. Reported per layer: the null mean, the *band* (the ``1 - alpha``
  quantile of the null at that layer) and the per-layer p-value
  ``(1 + #{null >= observed}) / (1 + permutations)``. **Significant** layers use the
  max-statistic correction over layers (family-wise error ``alpha``): layer ``l`` is
  significant when ``sep(l)`` exceeds the ``1 - alpha`` quantile of ``max_l null(l)``
  (``p_familywise = (1 + #{max null >= observed}) / (1 + permutations)`` <= ``alpha``).
* **Peak layer**: the layer of the largest separation.

Everything is computed in float64 from per-layer Gram matrices of the (pooled-mean
centered) velocities, so each permutation costs ``O(n^2)`` per layer whatever the
hidden size.

The study's neural-ODE fit of the trajectories (``torchdiffeq``) and the separation of its
vector field are optional (``vector_field=True``; :mod:`rlvr_lens.analyses.neural_ode`):
the velocity separation above is the model-free quantity the field smooths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from rlvr_lens.analyses.hidden_states import CaptureConfig, capture_series
from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.results import Result


@dataclass(frozen=True)
class TrajectoryConfig:
    """How :func:`trajectory_separation` runs.

    Attributes:
        group_a, group_b: names of the two groups compared (keys of the ``groups`` mapping).
        template, position, batch_size: how hidden states are read (:class:`CaptureConfig`).
        permutations: label shuffles of the permutation test.
        alpha: significance level (band quantile ``1 - alpha``, family-wise over layers).
        seed: seed of the shuffles.
        min_group_size: fewer members in either group gives "not enough samples".
        vector_field: also fit the study's neural-ODE vector field per model and test its
            separation (:mod:`rlvr_lens.analyses.neural_ode`; needs ``torchdiffeq``).
        field_components, field_steps: principal components and Adam steps of that fit.
    """

    group_a: str = "leakage"
    group_b: str = "stable"
    template: str = "plain"
    position: str = "answer"
    batch_size: int = 8
    permutations: int = 1000
    alpha: float = 0.05
    seed: int = 0
    min_group_size: int = 5
    vector_field: bool = False
    field_components: int = 16
    field_steps: int = 400

    def capture_config(self) -> CaptureConfig:
        return CaptureConfig(template=self.template, position=self.position, batch_size=self.batch_size)

    def check(self) -> None:
        self.capture_config().check()
        if self.group_a == self.group_b:
            raise UserError(f"Trajectory separation needs two different groups; got {self.group_a!r} twice.")
        if self.permutations < 1:
            raise UserError("The permutation test needs at least 1 permutation.")
        if not 0 < self.alpha < 1:
            raise UserError(f"alpha must lie in (0, 1); got {self.alpha}.")
        if self.min_group_size < 2:
            raise UserError("min_group_size must be at least 2 (a group's spread needs two members).")
        if self.vector_field:
            from rlvr_lens.analyses.neural_ode import VectorFieldConfig

            VectorFieldConfig(components=self.field_components, steps=self.field_steps).check()


@dataclass
class ModelSeparation:
    """Separation curve of one model; every list has one entry per decoder layer."""

    name: str
    separation: list[float]
    null_mean: list[float]
    band: list[float]  # per-layer 1 - alpha quantile of the permutation null
    max_threshold: float  # 1 - alpha quantile of the null's maximum over layers
    p_value: list[float]  # per layer, uncorrected
    p_familywise: list[float]  # per layer, max-statistic corrected
    significant_layers: list[int]  # p_familywise <= alpha
    peak_layer: int
    speed_a: list[float]  # mean ||v(l)|| over group A
    speed_b: list[float]


@dataclass
class VectorFieldSeparation:
    """The neural-ODE field fitted to one model's trajectories and where it separates the groups."""

    name: str
    components: int
    explained_variance: float  # share of the pooled states' variance the components keep
    fit_r2: float  # 1 - SSE / SST of the integrated trajectories over z(1..L)
    separation: ModelSeparation


@dataclass
class TrajectoryResult(Result):
    """Velocity separation of two sample groups along the layers, per model."""

    kind = "trajectory"

    config: dict
    sample_ids: list[str]
    group_a: str
    group_b: str
    group_sizes: dict[str, int]
    layers: int  # decoder layers (= velocity steps); 0 when not computed
    status: str  # "ok" or why nothing was computed (e.g. "not enough samples: ...")
    models: list[ModelSeparation] = field(default_factory=list)
    vector_fields: list[VectorFieldSeparation] = field(default_factory=list)  # when config.vector_field


# ----------------------------------------------------------------------------- kernels


def velocities(states: np.ndarray) -> np.ndarray:
    """``[n, L + 1, d]`` states -> ``[n, L, d]`` float64 velocities ``h(l + 1) - h(l)``."""
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 3 or states.shape[1] < 2:
        raise ValueError(f"states must be [samples, layers + 1 >= 2, hidden]; got shape {states.shape}")
    return np.diff(states, axis=1)


def layer_grams(vectors: np.ndarray) -> np.ndarray:
    """``[n, L, d]`` -> ``[L, n, n]`` float64 Gram matrices of the vectors centered on their mean over samples."""
    centered = vectors - vectors.mean(axis=0, keepdims=True)
    per_layer = np.ascontiguousarray(centered.transpose(1, 0, 2))  # [L, n, d]
    return per_layer @ per_layer.transpose(0, 2, 1)


def separation_from_grams(grams: np.ndarray, in_a: np.ndarray) -> np.ndarray:
    """Separation (module docstring) for each labelling.

    Args:
        grams: ``[L, n, n]`` Gram matrices of the pooled samples' velocities.
        in_a: ``[P, n]`` boolean, ``True`` where a sample belongs to group A in labelling ``p``;
            every row has the same number of ``True``.

    Returns ``[P, L]`` float64.
    """
    in_a = np.asarray(in_a, dtype=bool)
    n_a = int(in_a[0].sum())
    n_b = in_a.shape[1] - n_a
    weight_a = in_a / n_a  # [P, n], a^T G a = ||m_A||^2
    weight_b = ~in_a / n_b
    out = np.empty((in_a.shape[0], grams.shape[0]))
    for layer, gram in enumerate(grams):
        ga = weight_a @ gram  # [P, n]
        gb = weight_b @ gram
        aa = (ga * weight_a).sum(1)
        ab = (ga * weight_b).sum(1)
        bb = (gb * weight_b).sum(1)
        between = np.clip(aa + bb - 2 * ab, 0, None)  # ||m_A - m_B||^2
        within = np.trace(gram) - n_a * aa - n_b * bb  # total within-group sum of squares
        pooled = np.clip(within, 0, None) / (n_a + n_b - 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, layer] = np.where(
                pooled > 0, np.sqrt(between / pooled), np.where(between > 0, np.inf, 0.0)
            )
    return out


def separation_test(
    states: np.ndarray,
    index_a: Sequence[int],
    index_b: Sequence[int],
    *,
    permutations: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    name: str = "",
    chunk: int = 256,
) -> ModelSeparation:
    """Separation curve of groups ``index_a`` vs ``index_b`` (indices into ``states``
    ``[n, L + 1, d]``) with its permutation test; see the module docstring."""
    index_a, index_b = list(index_a), list(index_b)
    if set(index_a) & set(index_b):
        raise UserError("The two groups of a trajectory separation share samples; they must be disjoint.")
    if len(index_a) < 2 or len(index_b) < 2:
        raise UserError("Each group of a trajectory separation needs at least 2 samples.")
    pooled = velocities(np.asarray(states)[index_a + index_b])  # [n, L, d]
    return vector_separation_test(
        pooled, len(index_a), permutations=permutations, alpha=alpha, seed=seed, name=name, chunk=chunk
    )


def vector_separation_test(
    vectors: np.ndarray,
    n_a: int,
    *,
    permutations: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    name: str = "",
    chunk: int = 256,
) -> ModelSeparation:
    """The separation test on per-layer vectors ``[n, L, d]`` whose first ``n_a`` rows are group A
    (velocities here; the fitted vector field in :mod:`rlvr_lens.analyses.neural_ode`)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    n = vectors.shape[0]
    grams = layer_grams(vectors)
    observed_mask = np.zeros((1, n), dtype=bool)
    observed_mask[0, :n_a] = True
    observed = separation_from_grams(grams, observed_mask)[0]
    rng = np.random.default_rng(seed)
    null_rows = []
    for start in range(0, permutations, chunk):
        size = min(chunk, permutations - start)
        masks = np.zeros((size, n), dtype=bool)
        for row in range(size):
            masks[row, rng.permutation(n)[:n_a]] = True
        null_rows.append(separation_from_grams(grams, masks))
    null = np.concatenate(null_rows)  # [P, L]
    band = np.quantile(null, 1 - alpha, axis=0)
    max_null = null.max(axis=1)
    max_threshold = float(np.quantile(max_null, 1 - alpha))
    p_value = (1 + (null >= observed[None, :]).sum(0)) / (1 + permutations)
    p_familywise = (1 + (max_null[:, None] >= observed[None, :]).sum(0)) / (1 + permutations)
    speed = np.linalg.norm(vectors, axis=2)  # [n, L]
    return ModelSeparation(
        name=name,
        separation=observed.tolist(),
        null_mean=null.mean(0).tolist(),
        band=band.tolist(),
        max_threshold=max_threshold,
        p_value=p_value.tolist(),
        p_familywise=p_familywise.tolist(),
        significant_layers=[int(i) for i in np.flatnonzero(p_familywise <= alpha)],
        peak_layer=int(np.argmax(observed)),
        speed_a=speed[:n_a].mean(0).tolist(),
        speed_b=speed[n_a:].mean(0).tolist(),
    )


# ----------------------------------------------------------------------------- analysis


def _group(groups: Mapping[str, Sequence[int]], name: str, n_samples: int) -> list[int]:
    indices = [int(i) for i in groups.get(name, [])]
    bad = [i for i in indices if not 0 <= i < n_samples]
    if bad:
        raise UserError(f"Group {name!r} names sample index {bad[0]}, but there are {n_samples} samples.")
    return indices


def trajectory_separation(
    series,
    samples: Sequence[Sample],
    groups: Mapping[str, Sequence[int]],
    config: TrajectoryConfig | None = None,
    *,
    states: Mapping[str, np.ndarray] | None = None,
    show_progress: bool = False,
) -> TrajectoryResult:
    """Velocity separation of ``config.group_a`` vs ``config.group_b`` for every checkpoint.

    Args:
        series: a :class:`~rlvr_lens.models.ModelSeries` (base first); ignored when
            ``states`` is given.
        samples: the evaluation samples the group indices point into.
        groups: group name -> sample indices (e.g. the evaluation step's ``sample_groups``).
        config: see :class:`TrajectoryConfig`.
        states: already captured ``name -> [n_samples, L + 1, hidden]`` states (read with the
            same template and position), e.g. shared with the representation analysis.

    A group with fewer than ``config.min_group_size`` members gives a result whose
    ``status`` says "not enough samples" and that holds no curves.
    """
    config = config or TrajectoryConfig()
    config.check()
    index_a = _group(groups, config.group_a, len(samples))
    index_b = _group(groups, config.group_b, len(samples))
    if set(index_a) & set(index_b):
        raise UserError(
            f"Groups {config.group_a!r} and {config.group_b!r} share samples; they must be disjoint."
        )
    sizes = {config.group_a: len(index_a), config.group_b: len(index_b)}
    base = dict(
        config=asdict(config),
        sample_ids=[s.id for s in samples],
        group_a=config.group_a,
        group_b=config.group_b,
        group_sizes=sizes,
    )
    small = [f"{name} has {size}" for name, size in sizes.items() if size < config.min_group_size]
    if small:
        status = f"not enough samples: {' and '.join(small)} (at least {config.min_group_size} each needed)"
        return TrajectoryResult(**base, layers=0, status=status)
    if states is None:
        states = capture_series(series, samples, config.capture_config(), show_progress=show_progress)
    models = [
        separation_test(
            array,
            index_a,
            index_b,
            permutations=config.permutations,
            alpha=config.alpha,
            seed=config.seed,
            name=name,
        )
        for name, array in states.items()
    ]
    vector_fields = []
    if config.vector_field:
        from rlvr_lens.analyses.neural_ode import VectorFieldConfig, vector_field_separation

        field_config = VectorFieldConfig(
            components=config.field_components, steps=config.field_steps, seed=config.seed
        )
        vector_fields = [
            vector_field_separation(
                array,
                index_a,
                index_b,
                field_config,
                permutations=config.permutations,
                alpha=config.alpha,
                name=name,
            )
            for name, array in states.items()
        ]
    layers = len(models[0].separation) if models else 0
    return TrajectoryResult(**base, layers=layers, status="ok", models=models, vector_fields=vector_fields)


def _register_report() -> None:
    from rlvr_lens.analyses.trajectory_report import register_entries

    register_entries()


_register_report()
