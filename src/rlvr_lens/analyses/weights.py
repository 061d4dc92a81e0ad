"""Weight-space forensics: what tuning (RLVR, SFT) changed in the parameters.

Implements the parameter-level analysis of *The Path Not Taken* (RLVR learns off the
principal directions) and the weight-distance / SVD part of the base-vs-SFT-vs-RLVR study,
straight from checkpoint directories: tensors are streamed by name, one matrix of the base
and of every tuned checkpoint at a time, in row chunks, so peak memory is a few chunks plus
``n x n`` Gram matrices (``n`` = the matrix's smaller side), never a model.

For a stored matrix ``W`` (base) and ``W' = W + dW`` (tuned), all in float32 or wider:

cheap metrics (``metrics="cheap"``, every tensor, 1-D norms and biases included)
    ``sparsity``: share of entries with ``W' == W`` exactly in the stored dtype (after
    upcasting to float32 when the two checkpoints store different dtypes);
    ``tol_sparsity``: share with ``|dW| <= tol``;
    ``precision_gate`` (only when a side is not stored in bf16): of the entries that
    changed, the share for which ``bf16(W') == bf16(W)`` -- updates a bf16 checkpoint
    would not have kept;
    ``relative_norm`` = ``||dW||_F / ||W||_F``.

spectral metrics (``metrics="all"``, 2-D matrices)
    singular values ``s`` of ``W``, ``W'`` and ``dW``; ``update_spectral_norm`` = ``s_1(dW)``;
    ``spectral_drift`` = ``||s(W') - s(W)|| / ||s(W)||`` (all, and the top k);
    principal angles (degrees) between the top-k left (output side) and right (input side)
    singular subspaces of ``W`` and ``W'``;
    ``principal_share``: ``||U_k U_k^T dW V_k V_k^T||_F^2 / ||dW||_F^2`` with ``U_k, V_k``
    the top-k singular vectors of ``W``; a random update (any distribution invariant under
    rotations, e.g. i.i.d. Gaussian entries) has expectation ``k^2 / (m n)``: rotating
    ``U_k``, ``V_k`` to the first k coordinates leaves ``k*k`` of the ``m*n`` equally
    likely entries inside. ``off_principal_share = 1 - principal_share``. The one-sided
    shares ``||U_k^T dW||^2`` (chance ``k/m``) and ``||dW V_k||^2`` (chance ``k/n``) are kept
    too;
    update energy against the singular-value rank of ``W``: ``c_i = u_i^T dW v_i``, whose
    squares (over ``||dW||_F^2``) are summed in equal-width rank bins;
    rank structure of ``dW``: stable rank ``||dW||_F^2 / s_1^2``, effective rank
    ``exp(H(s / sum s))`` (Roy & Vetterli), and the relative Frobenius error of its best
    rank-r approximation (Eckart-Young: ``sqrt(sum_{i>r} s_i^2) / ||dW||_F``), what a LoRA
    of rank r could at best keep.

principal-mask overlap (``metrics="all"``, 2-D matrices; *The Path Not Taken*'s mask form)
    ``M_update`` = the entries with ``W' != W`` (``mask_update="exact"``) or with
    ``bf16(W') != bf16(W)`` (``"bf16"``, the default when a side is stored wider than bf16: an
    Adam-trained float32 checkpoint changes nearly every entry by a little, and the paper's
    checkpoints were bf16). The principal mask ``M_princ`` = the
    top-``alpha`` share of entries of ``|W^(k)|``, ``W^(k) = U_k S_k V_k^T`` the rank-k
    reconstruction of the base (``k`` = ``mask_k``, default the ``k_fraction`` k); the
    low-magnitude mask ``M_low`` = the bottom-``alpha`` share of entries of ``|W|``. The overlap
    of a mask ``M`` is ``|M_update & M| / |M_update|``: the share of the changed weights that
    lie in ``M``. An update whose support is independent of the base (any random mask) has
    expectation ``alpha``: above ``alpha`` the update prefers the mask, below it avoids it.
    The alpha-quantiles are found without sorting: every entry's ``log2|x|`` falls in one of
    ``2^15`` equal bins over ``[-64, 16)`` (relative width 0.17 %), counted for all entries and
    for the changed ones; the threshold bin is split proportionally, and the largest error this
    can make (the changed entries inside that bin over ``|M_update|``) is reported beside
    each overlap.

cross-run consistency (two or more tuned checkpoints)
    per matrix and pair: Jaccard overlap of the update masks (``W' != W``), against
    ``p_a p_b / (p_a + p_b - p_a p_b)``, the expectation for independent masks of the same
    densities; cosine of the two ``dW``, against chance ``0 +- 1/sqrt(N)`` (``N`` entries;
    for independent updates with random signs on random supports of any density, the
    cosine has mean 0 and variance ``1/N``).
    Over the whole model (and per module type), the runs' updates as one vector each: the
    pairwise cosine matrix ``<dW_a, dW_b> / (||dW_a|| ||dW_b||)`` and each run's cosine to
    the mean update ``dbar = (1/R) sum_b dW_b`` and to the mean of the *other* runs
    (leave-one-out: with two runs the plain mean contains the run itself). Both come from the
    per-tensor dot products of the streaming pass: ``<dW_a, dbar> = (1/R) sum_b <dW_a, dW_b>``,
    ``||dbar||^2 = (1/R^2) sum_{a,b} <dW_a, dW_b>``; no extra read.

How singular values are computed: for the tall orientation ``A`` (``m >= n``) of each
matrix, the Gram matrix ``A^T A`` is accumulated over row chunks and diagonalized with
``eigh``; ``s = sqrt(eigenvalues)``, ``V`` = eigenvectors and ``U_k = A V_k / s_k``. This is
exact up to rounding (no randomization) and ~10x faster than a direct SVD on a CPU.
``svd_lowrank`` (randomized) is *not* used: with its default iterations its top singular
values are wrong by percents on slowly decaying weight spectra (measured in
``benchmarks/weights_7b.py``, see ``docs/weights.md``). ``dW`` is ill-conditioned, so its Gram
matrix and eigenvalues are always float64; ``W`` and ``W'`` use float64 on CPU and float32 on
GPU (``svd_dtype``), with TF32 disabled.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch

from rlvr_lens.distributed import gather_dict, local_device, shard
from rlvr_lens.errors import UserError
from rlvr_lens.models.checkpoint_files import CheckpointTensors, matched_names
from rlvr_lens.models.parameter_names import module_sort_key, name_sort_key, parameter_role
from rlvr_lens.progress import progress
from rlvr_lens.results import Result

METRIC_SETS = ("all", "cheap")


@dataclass
class WeightsConfig:
    """How weight forensics runs (every default is the CLI's).

    Attributes:
        metrics: ``"all"`` or ``"cheap"`` (sparsity and norms only: no Gram/eigh, one read pass).
        tol: tolerance of ``tol_sparsity`` (``|dW| <= tol``, float32 units of the weights).
        k_fraction: top-k subspaces use ``k = max(1, round(k_fraction * rank))``.
        k_fixed: the second, fixed small k (clipped to the rank).
        ranks: ranks r of the best rank-r approximation error of ``dW``.
        energy_bins: number of equal-width singular-rank bins of the update energy profile.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``; under
            ``accelerate launch`` / ``torchrun`` on GPUs, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``.
        svd_dtype: dtype of the Gram matrices of ``W`` and ``W'``: ``auto`` (float64 on CPU,
            float32 on GPU), ``float32`` or ``float64``. ``dW`` always uses float64.
        chunk_mb: float32 megabytes of one row chunk of one tensor (bounds peak memory).
        spectrum_matrix: parameter whose full spectra are kept for the spectrum plot
            (default: the ``down`` projection of the middle layer).
        include: regular expression; only parameter names it matches (``re.search``) are analysed.
        mask_alpha: share of entries in the principal and low-magnitude masks (the paper: 0.5).
        mask_k: rank of the base reconstruction of the principal mask (default: the
            ``k_fraction`` k of each matrix).
        mask_update: which entries count as updated for the masks: ``exact`` (``W' != W`` in
            the stored dtype), ``bf16`` (``bf16(W') != bf16(W)``: what a bf16 checkpoint, as the
            paper studied, would show changed), ``auto`` (``bf16`` when a side is stored wider
            than bf16, else ``exact``).
        mask_overlap: compute the principal / low-magnitude mask overlaps (``metrics="all"``
            only; off leaves ``MatrixRow.mask_overlap`` as ``None``).
    """

    metrics: str = "all"
    tol: float = 1e-5
    k_fraction: float = 0.01
    k_fixed: int = 8
    ranks: tuple[int, ...] = (16, 64)
    energy_bins: int = 10
    device: str = "auto"
    svd_dtype: str = "auto"
    chunk_mb: float = 64
    spectrum_matrix: str | None = None
    include: str | None = None
    mask_alpha: float = 0.5
    mask_k: int | None = None
    mask_update: str = "auto"
    mask_overlap: bool = True

    def check(self) -> None:
        if self.metrics not in METRIC_SETS:
            raise UserError(f"Unknown weight metrics {self.metrics!r}; choose all or cheap.")
        if not 0 < self.k_fraction <= 1:
            raise UserError(f"k fraction must be in (0, 1]; got {self.k_fraction}.")
        if self.k_fixed < 1 or any(r < 1 for r in self.ranks) or self.energy_bins < 1 or self.chunk_mb <= 0:
            raise UserError("k, ranks, energy bins and chunk size must all be positive.")
        if not 0 < self.mask_alpha < 1:
            raise UserError(f"Mask alpha must be in (0, 1); got {self.mask_alpha}.")
        if self.mask_update not in ("auto", "exact", "bf16"):
            raise UserError(f"Unknown mask update rule {self.mask_update!r}; choose auto, exact or bf16.")
        if self.mask_k is not None and self.mask_k < 1:
            raise UserError(f"Mask k must be >= 1; got {self.mask_k}.")
        if self.tol < 0:
            raise UserError(f"Tolerance must be >= 0; got {self.tol}.")
        if self.svd_dtype not in ("auto", "float32", "float64"):
            raise UserError(f"Unknown SVD dtype {self.svd_dtype!r}; choose auto, float32 or float64.")
        if self.include is not None:
            try:
                re.compile(self.include)
            except re.error as error:
                raise UserError(f"--include {self.include!r} is not a valid regular expression ({error}).") from None


# ----------------------------------------------------------------------------- result types


@dataclass
class SubspaceStats:
    """Top-k subspace metrics of one matrix for one k (shares are fractions of ``||dW||_F^2``)."""

    k: int
    angle_left_max_deg: float
    angle_left_mean_deg: float
    angle_right_max_deg: float
    angle_right_mean_deg: float
    spectral_drift_topk: float
    principal_share: float | None
    principal_share_random: float
    left_share: float | None
    left_share_random: float
    right_share: float | None
    right_share_random: float


@dataclass
class MaskOverlap:
    """Where one run's changed weights lie: principal vs low-magnitude masks of the base."""

    alpha: float
    k: int
    update_rule: str  # "exact" or "bf16": which entries counted as changed
    update_density: float  # |M_update| / N
    principal_overlap: float | None
    principal_error: float
    low_magnitude_overlap: float | None
    low_magnitude_error: float


@dataclass
class MatrixRow:
    """Every metric of one stored tensor of one tuned run against the base (``None``: not computed).

    ``left`` is the output side (stored dimension 0), ``right`` the input side.
    """

    run: str
    name: str
    layer: int | None
    module: str
    shape: list[int]
    dtype_base: str
    dtype_tuned: str
    n_params: int
    sparsity: float
    tol_sparsity: float
    precision_gate: float | None
    base_norm: float
    update_norm: float
    relative_norm: float | None
    update_spectral_norm: float | None = None
    spectral_drift: float | None = None
    stable_rank: float | None = None
    effective_rank: float | None = None
    rank_errors: dict[str, float] | None = None
    diagonal_share: float | None = None
    energy_bins: list[float] | None = None
    subspaces: list[SubspaceStats] = field(default_factory=list)
    mask_overlap: MaskOverlap | None = None

    @property
    def off_principal_share(self) -> float | None:
        share = self.subspaces[0].principal_share if self.subspaces else None
        return None if share is None else 1.0 - share


@dataclass
class CrossRow:
    """Agreement of two tuned runs' updates of one tensor, with its chance level."""

    run_a: str
    run_b: str
    name: str
    layer: int | None
    module: str
    n_params: int
    density_a: float
    density_b: float
    jaccard: float | None
    jaccard_chance: float | None
    cosine: float | None
    cosine_chance_std: float


@dataclass
class Aggregate:
    """Metrics of one run summed over a group of tensors (``scope`` ``module`` or ``layer``).

    ``sparsity`` and ``tol_sparsity`` are parameter-weighted, ``precision_gate`` weighted by the
    number of changed weights; ``relative_norm`` is ``sqrt(sum ||dW||^2 / sum ||W||^2)``; the
    others are means over the group's matrices.
    """

    run: str
    scope: str
    key: str
    n_tensors: int
    n_params: int
    sparsity: float
    tol_sparsity: float
    relative_norm: float | None
    precision_gate: float | None = None
    spectral_drift: float | None = None
    angle_left_max_deg: float | None = None
    angle_right_max_deg: float | None = None
    principal_share: float | None = None
    principal_share_random: float | None = None
    stable_rank: float | None = None
    effective_rank: float | None = None
    principal_mask_overlap: float | None = None
    low_magnitude_mask_overlap: float | None = None


@dataclass
class UpdateConsistency:
    """Agreement of every tuned run's whole update over a group of tensors (``scope`` ``model`` or ``module``).

    ``cosine[a][b]`` is the cosine of runs a and b (order of ``runs``); ``cosine_to_mean[a]`` of
    run a with the mean update, ``cosine_to_others[a]`` with the mean of the other runs; chance
    for independent random updates: ``0 +- chance_std`` (``1/sqrt(n_params)``).
    """

    scope: str
    key: str
    runs: list[str]
    n_params: int
    cosine: list[list[float | None]]
    cosine_to_mean: list[float | None]
    cosine_to_others: list[float | None]
    chance_std: float


@dataclass
class SpectrumDetail:
    """Full spectra of one matrix of one run (for the spectrum plot).

    ``s_*``: singular values of W, W' and dW (descending). ``energy_coefficients[i]`` =
    ``u_i^T dW v_i`` on the base's singular vectors. ``right_energy[i]``: share of
    ``||dW||_F^2`` along the base's i-th singular vector on the matrix's *shorter* side
    (``||dW v_i||^2`` for a tall matrix, the input side; ``||u_i^T dW||^2`` for a wide one such
    as ``down_proj``, the output side); it sums to 1. ``angles_*_deg``: principal angles
    between the base's and the tuned top-k singular subspaces (k = the first k value).
    """

    run: str
    name: str
    s_base: list[float]
    s_tuned: list[float]
    s_update: list[float]
    energy_coefficients: list[float]
    right_energy: list[float]
    angles_left_deg: list[float]
    angles_right_deg: list[float]


@dataclass
class WeightsResult(Result):
    """Weight forensics of tuned checkpoints against one base (see the module docstring)."""

    kind: ClassVar[str] = "weights"

    base: str
    runs: list[str]
    sources: dict[str, str]
    config: dict
    device: str
    matrices: list[MatrixRow]
    aggregates: list[Aggregate]
    cross: list[CrossRow] = field(default_factory=list)
    consistency: list[UpdateConsistency] = field(default_factory=list)
    spectra: list[SpectrumDetail] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    bytes_read: int = 0

    def rows(self, run: str) -> list[MatrixRow]:
        return [r for r in self.matrices if r.run == run]

    def row(self, run: str, name: str) -> MatrixRow:
        return next(r for r in self.matrices if r.run == run and r.name == name)


# ----------------------------------------------------------------------------- streaming


def _resolve_device(device: str) -> torch.device:
    if device in ("auto", "cuda") and local_device():  # under a multi-process launcher on GPUs: this process' GPU (LOCAL_RANK)
        device = local_device()
    elif device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"Unknown device {device!r}; use auto, cpu, cuda or cuda:N.") from None
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"Weight forensics needs float64 and runs on cpu or cuda, not {device!r}.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device {device!r} was requested but no CUDA GPU is available on this machine.")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())  # buffers compare devices by index
    return resolved


@contextlib.contextmanager
def _exact_matmuls() -> Iterator[None]:
    """Disable TF32 (10-bit mantissa) in CUDA matmuls: Gram products need full float32."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous[0]
        torch.set_float32_matmul_precision(previous[1])


class _Buffers:
    """Reusable flat buffers by key: chunks are read and converted into memory that stays paged in."""

    def __init__(self) -> None:
        self._store: dict[str, torch.Tensor] = {}

    def get(self, key: str, numel: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
        buffer = self._store.get(key)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype or buffer.device != torch.device(device):
            buffer = self._store[key] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel]


def _chunks(
    readers: list[CheckpointTensors], name: str, shape: tuple[int, ...], chunk_rows: int, *, tall: bool, buffers: _Buffers
) -> Iterator[list[torch.Tensor]]:
    """Row chunks of tensor ``name``, one tensor per reader, in the stored dtype on the CPU.

    ``tall=False``: chunks of the stored rows (2-D ``[rows, cols]`` view), read from disk slice
    by slice; the next chunk is read in a background thread while the caller works on this one.
    ``tall=True``: chunks of the tall orientation ``A`` (``m >= n``): tall matrices as above,
    wide ones (``down``, GQA ``k``/``v``) read whole, transposed and cut. 1-D tensors are one
    ``[len, 1]`` column either way.
    """
    if len(shape) <= 1:
        yield [r.tensor(name).reshape(-1, 1) for r in readers]
        return
    rows, cols = shape[0], math.prod(shape[1:])
    if tall and rows < cols:
        whole = [r.tensor(name).reshape(rows, cols).T for r in readers]
        for start in range(0, cols, chunk_rows):
            yield [w[start : start + chunk_rows].contiguous() for w in whole]
        return
    from concurrent.futures import ThreadPoolExecutor

    starts = list(range(0, rows, chunk_rows))
    itemsizes = [torch.empty((), dtype=r.info(name).dtype).element_size() for r in readers]

    def read(index: int) -> list[torch.Tensor]:
        start = starts[index]
        stop = min(rows, start + chunk_rows)
        out = []
        for i, reader in enumerate(readers):
            buffer = buffers.get(f"read{index % 2}-{i}", chunk_rows * cols * itemsizes[i], torch.uint8)
            out.append(reader.rows(name, start, stop, out=buffer).reshape(stop - start, cols))
        return out

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, 0)
        for index in range(len(starts)):
            chunk = pending.result()
            if index + 1 < len(starts):
                pending = pool.submit(read, index + 1)  # the other buffer slot
            yield chunk


#: Elements per elementwise block on the CPU: small enough that a block's float32 copies stay in cache.
_CPU_BLOCK = 1 << 18


def _cheap_sums(chunk, cheap, pairs, inter, dots, gate, dtype, tol, device, buffers, block) -> None:
    """Add one chunk's counts and sums of squares to ``cheap`` (per run) and ``inter``/``dots`` (per pair).

    Works through the chunk in blocks of ``block`` elements (``None``: the whole chunk, on a GPU)
    with reusable buffers. A weight is unchanged when its update ``W' - W`` (in ``dtype``, exact
    for values upcast from any narrower float) is 0, i.e. the values are equal in the stored
    dtype (``+0 == -0``). On the CPU the comparisons and counts run in NumPy, about twice as
    fast as ``torch``'s boolean kernels.
    """
    on_cpu = device.type == "cpu"
    flat = [c.reshape(-1) for c in chunk]
    total = flat[0].numel()
    step = total if block is None else min(block, total)
    runs = len(flat) - 1
    for start in range(0, total, step):
        stop = min(total, start + step)
        k = stop - start
        base_f = buffers.get("base", step, dtype, device)[:k]
        base_f.copy_(flat[0][start:stop])
        base_sq = float(torch.dot(base_f, base_f))
        changed, delta = [], []
        for i in range(runs):
            acc = cheap[i]
            tuned_f = buffers.get(f"tuned{i}", step, dtype, device)[:k]
            tuned_f.copy_(flat[i + 1][start:stop])
            d = torch.sub(tuned_f, base_f, out=buffers.get(f"delta{i}", step, dtype, device)[:k])
            magnitude = torch.abs(d, out=buffers.get("abs", step, dtype, device)[:k])
            small = buffers.get("small", step, torch.bool, device)[:k]
            if on_cpu:
                n_changed = int(np.count_nonzero(d.numpy()))
                np.less_equal(magnitude.numpy(), tol, out=small.numpy())
                within = int(np.count_nonzero(small.numpy()))
            else:
                n_changed = int(torch.count_nonzero(d))
                within = int(torch.count_nonzero(torch.le(magnitude, tol, out=small)))
            acc.n += k
            acc.equal += k - n_changed
            acc.within_tol += within
            acc.base_sq += base_sq
            acc.update_sq += float(torch.dot(d, d))
            if gate[i]:
                # equal values stay equal in bf16, so the vanished updates are (bf16-equal) - (equal)
                b16 = buffers.get("base16", step, torch.bfloat16, device)[:k]
                t16 = buffers.get("tuned16", step, torch.bfloat16, device)[:k]
                b16.copy_(base_f), t16.copy_(tuned_f)
                eq16 = torch.eq(b16, t16, out=buffers.get("eq16", step, torch.bool, device)[:k])
                acc.changed_f32 += n_changed
                acc.vanish_bf16 += int(torch.count_nonzero(eq16)) - (k - n_changed)
            if pairs:
                mask = buffers.get(f"changed{i}", step, torch.bool, device)[:k]
                if on_cpu:
                    np.not_equal(d.numpy(), 0, out=mask.numpy())
                else:
                    torch.ne(d, 0, out=mask)
                changed.append(mask)
                delta.append(d)
        for a, b in pairs:
            both = torch.logical_and(changed[a], changed[b], out=buffers.get("both", step, torch.bool, device)[:k])
            inter[(a, b)] += int(torch.count_nonzero(both))
            dots[(a, b)] += float(torch.dot(delta[a], delta[b]))


@dataclass
class _Cheap:
    """Running sums of the cheap metrics of one (base, tuned) tensor pair."""

    n: int = 0
    equal: int = 0
    within_tol: int = 0
    changed_f32: int = 0
    vanish_bf16: int = 0
    base_sq: float = 0.0
    update_sq: float = 0.0


def _eigh_desc(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, clamped at 0) and eigenvectors of a symmetric PSD matrix."""
    values, vectors = torch.linalg.eigh(gram)
    return values.flip(0).clamp_min(0), vectors.flip(1)


def _angles_deg(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Principal angles (degrees, descending) between the column spans of ``a`` and ``b``."""
    from scipy.linalg import subspace_angles

    return np.degrees(subspace_angles(a.double().cpu().numpy(), b.double().cpu().numpy()))


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 or not math.isfinite(num / den) else num / den


def _k_values(rank: int, config: WeightsConfig) -> list[int]:
    k_frac = max(1, min(rank, round(config.k_fraction * rank)))
    return [k_frac, max(1, min(rank, config.k_fixed))]


def _rank_structure(eig_update: torch.Tensor, ranks: tuple[int, ...]) -> dict:
    """Spectral norm, stable/effective rank and rank-r errors of ``dW`` from its Gram eigenvalues (float64)."""
    lam = eig_update.double().cpu().numpy()
    total = float(lam.sum())
    if total <= 0:
        return {"update_spectral_norm": 0.0, "stable_rank": None, "effective_rank": None, "rank_errors": None}
    s = np.sqrt(lam)
    # eigenvalues of a float64 Gram matrix below ~n * eps * lambda_1 are rounding noise, not rank
    s_kept = s[lam > lam[0] * len(lam) * 10 * np.finfo(np.float64).eps]
    p = s_kept / s_kept.sum()
    tails = {str(r): float(math.sqrt(max(0.0, lam[r:].sum()) / total)) for r in ranks}
    return {
        "update_spectral_norm": float(s[0]),
        "stable_rank": total / float(lam[0]),
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "rank_errors": tails,
    }


#: The log2 grid of the mask-overlap histograms: 2^15 bins over [-64, 16), 0.17 % relative width.
_HIST_LO, _HIST_HI, _HIST_BINS = -64.0, 16.0, 1 << 15


def _log_bins(values: torch.Tensor) -> torch.Tensor:
    """Histogram bin of each ``|value|`` on the log2 grid (flat int64; zeros and tiny values -> bin 0)."""
    logs = torch.log2(values.reshape(-1).abs().clamp_min(2.0**_HIST_LO))
    scale = _HIST_BINS / (_HIST_HI - _HIST_LO)
    return logs.sub_(_HIST_LO).mul_(scale).long().clamp_(0, _HIST_BINS - 1)


def _update_mask(base: torch.Tensor, tuned: torch.Tensor, bf16: bool, device: torch.device) -> torch.Tensor:
    """Entries counted as updated: stored values differ, or (``bf16``) their bf16 roundings differ."""
    if bf16:
        return base.to(device=device, dtype=torch.bfloat16) != tuned.to(device=device, dtype=torch.bfloat16)
    return base.to(device) != tuned.to(device)


class _MaskCounts:
    """Histograms of one magnitude (e.g. ``|W^(k)|``) over all entries and over each run's changed entries."""

    def __init__(self, runs: int, device: torch.device) -> None:
        self.all = torch.zeros(_HIST_BINS, dtype=torch.int64, device=device)
        self.changed = [torch.zeros(_HIST_BINS, dtype=torch.int64, device=device) for _ in range(runs)]

    def add(self, values: torch.Tensor, changed: list[torch.Tensor]) -> None:
        bins = _log_bins(values)
        self.all += torch.bincount(bins, minlength=_HIST_BINS)
        for counts, mask in zip(self.changed, changed):
            counts += torch.bincount(bins[mask.reshape(-1)], minlength=_HIST_BINS)

    def overlap(self, run: int, alpha: float, top: bool) -> tuple[float | None, float]:
        """Share of run's changed entries in the top (or bottom) ``alpha`` of entries, and its error bound."""
        total = self.all.double().cpu().numpy()
        changed = self.changed[run].double().cpu().numpy()
        if top:
            total, changed = total[::-1], changed[::-1]
        n_changed = changed.sum()
        if n_changed == 0:
            return None, 0.0
        target = alpha * total.sum()
        cumulative = np.cumsum(total)
        edge = int(np.searchsorted(cumulative, target))  # first bin whose cumulative count reaches target
        before = cumulative[edge - 1] if edge > 0 else 0.0
        fraction = (target - before) / total[edge] if total[edge] > 0 else 0.0
        inside = changed[:edge].sum() + fraction * changed[edge]
        return float(inside / n_changed), float(changed[edge] / n_changed)


def _drift(s_tuned: torch.Tensor, s_base: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(s_tuned - s_base) / torch.linalg.vector_norm(s_base).clamp_min(1e-300))


def _analyse_tensor(
    readers: list[CheckpointTensors],
    runs: list[str],
    name: str,
    config: WeightsConfig,
    device: torch.device,
    want_spectrum: bool,
) -> tuple[list[MatrixRow], list[CrossRow], list[SpectrumDetail], int]:
    """All metrics of tensor ``name``: one row per tuned run, one cross row per pair of runs."""
    base_reader = readers[0]
    shape = base_reader.info(name).shape
    dtypes = [r.info(name).dtype for r in readers]
    is_matrix = len(shape) >= 2
    rows_stored, cols = (shape[0], math.prod(shape[1:])) if is_matrix else (shape[0], 1)
    transposed = is_matrix and rows_stored < cols
    m, n = (cols, rows_stored) if transposed else (rows_stored, cols)
    spectral = config.metrics == "all" and is_matrix and min(m, n) >= 2
    # a chunk holds chunk_rows rows of the orientation _chunks cuts: the tall one A ([m, n]) for
    # the spectral passes, the stored one ([rows_stored, cols]) for the cheap pass alone
    row_length = n if spectral else cols
    chunk_rows = max(1, int(config.chunk_mb * (1 << 20)) // (4 * row_length))
    wdt = torch.float64 if (config.svd_dtype == "float64" or (config.svd_dtype == "auto" and device.type == "cpu")) else torch.float32
    nruns = len(runs)
    cheap = [_Cheap() for _ in runs]
    pairs = [(a, b) for a in range(nruns) for b in range(a + 1, nruns)]
    inter = dict.fromkeys(pairs, 0)
    dots = dict.fromkeys(pairs, 0.0)
    gate = [dtypes[0] != torch.bfloat16 or dt != torch.bfloat16 for dt in dtypes[1:]]
    # float32 unless a checkpoint stores float64 (then nothing is lost by comparing in float64)
    cheap_dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    gram_base = torch.zeros(n, n, dtype=wdt, device=device) if spectral else None
    gram_tuned = [torch.zeros(n, n, dtype=wdt, device=device) for _ in runs] if spectral else []
    gram_update = [torch.zeros(n, n, dtype=torch.float64, device=device) for _ in runs] if spectral else []
    bytes_read = 0

    # pass 1: cheap sums and Gram matrices
    buffers = _Buffers()
    block = None if device.type == "cuda" else _CPU_BLOCK
    for chunk in _chunks(readers, name, shape, chunk_rows, tall=spectral, buffers=buffers):
        bytes_read += sum(c.numel() * c.element_size() for c in chunk)
        _cheap_sums(chunk, cheap, pairs, inter, dots, gate, cheap_dtype, config.tol, device, buffers, block)
        if spectral:
            base_w = chunk[0].to(device=device, dtype=wdt)
            gram_base.addmm_(base_w.T, base_w)
            base64 = base_w if wdt == torch.float64 else chunk[0].to(device=device, dtype=torch.float64)
            for i, tuned in enumerate(chunk[1:]):
                tuned_w = tuned.to(device=device, dtype=wdt)
                gram_tuned[i].addmm_(tuned_w.T, tuned_w)
                upd = (tuned_w if wdt == torch.float64 else tuned.to(device=device, dtype=torch.float64)) - base64
                gram_update[i].addmm_(upd.T, upd)
            del base_w, base64, tuned_w, upd

    for value in (cheap[0].base_sq, *(c.update_sq for c in cheap)):
        if not math.isfinite(value):
            raise UserError(f"{name} holds NaN or infinite values in one of the checkpoints.")

    layer, module = parameter_role(name)
    rows: list[MatrixRow] = []
    for i, run in enumerate(runs):
        acc = cheap[i]
        base_norm, update_norm = math.sqrt(acc.base_sq), math.sqrt(acc.update_sq)
        rows.append(
            MatrixRow(
                run=run,
                name=name,
                layer=layer,
                module=module,
                shape=list(shape),
                dtype_base=str(dtypes[0]).removeprefix("torch."),
                dtype_tuned=str(dtypes[i + 1]).removeprefix("torch."),
                n_params=acc.n,
                sparsity=acc.equal / acc.n,
                tol_sparsity=acc.within_tol / acc.n,
                precision_gate=(acc.vanish_bf16 / acc.changed_f32 if acc.changed_f32 else 0.0) if gate[i] else None,
                base_norm=base_norm,
                update_norm=update_norm,
                relative_norm=_ratio(update_norm, base_norm),
            )
        )
    cross = []
    for a, b in pairs:
        ca, cb = cheap[a].n - cheap[a].equal, cheap[b].n - cheap[b].equal
        total = cheap[a].n
        union = ca + cb - inter[(a, b)]
        pa, pb = ca / total, cb / total
        chance = pa * pb / (pa + pb - pa * pb) if pa + pb > 0 else None
        cross.append(
            CrossRow(
                run_a=runs[a],
                run_b=runs[b],
                name=name,
                layer=layer,
                module=module,
                n_params=total,
                density_a=pa,
                density_b=pb,
                jaccard=inter[(a, b)] / union if union else None,
                jaccard_chance=chance,
                cosine=_ratio(dots[(a, b)], math.sqrt(cheap[a].update_sq * cheap[b].update_sq)),
                cosine_chance_std=1.0 / math.sqrt(total),
            )
        )
    if not spectral:
        return rows, cross, [], bytes_read

    # spectra: W (wdt), W' (wdt), dW (float64)
    rank = min(m, n)
    ks = _k_values(rank, config)
    kmax = max(ks)
    eig_base, v_base = _eigh_desc(gram_base)
    del gram_base
    s_base = eig_base.sqrt()
    safe_base = torch.where(s_base > s_base[0] * 1e-12, s_base, torch.full_like(s_base, math.inf))
    tuned_spectra = []
    for i in range(nruns):
        eig_t, v_t = _eigh_desc(gram_tuned[i])
        s_t = eig_t.sqrt()
        tuned_spectra.append((s_t, v_t[:, :kmax].clone(), torch.where(s_t > s_t[0] * 1e-12, s_t, torch.full_like(s_t, math.inf))))
        gram_tuned[i] = None
    update_eigs = [torch.linalg.eigvalsh(g).flip(0).clamp_min(0) for g in gram_update]
    del gram_update

    # pass 2: left singular vectors U_k = A V_k / s_k, and dW projected on the base's singular vectors
    v_base64 = v_base.double()
    u_base = torch.zeros(m, kmax, dtype=torch.float64, device=device)
    u_tuned = [torch.zeros(m, kmax, dtype=torch.float64, device=device) for _ in runs]
    coef = [torch.zeros(n, dtype=torch.float64, device=device) for _ in runs]
    right_energy = [torch.zeros(n, dtype=torch.float64, device=device) for _ in runs]
    ut_update = [torch.zeros(kmax, n, dtype=torch.float64, device=device) for _ in runs]
    mask_k = min(rank, config.mask_k or ks[0])
    bf16_masks = [config.mask_update == "bf16" or (config.mask_update == "auto" and g) for g in gate]
    principal_counts, low_counts = _MaskCounts(nruns, device), _MaskCounts(nruns, device)
    start = 0
    for chunk in _chunks(readers, name, shape, chunk_rows, tall=True, buffers=buffers):
        bytes_read += sum(c.numel() * c.element_size() for c in chunk)
        stop = start + chunk[0].shape[0]
        base_w = chunk[0].to(device=device, dtype=wdt)
        proj_base = (base_w @ v_base).double()  # [rows, n]: A_r v_i
        u_chunk = proj_base[:, :kmax] / safe_base[:kmax].double()
        u_base[start:stop] = u_chunk
        base64 = base_w if wdt == torch.float64 else chunk[0].to(device=device, dtype=torch.float64)
        if config.mask_overlap:
            changed = [_update_mask(chunk[0], tuned, bf16_masks[i], device) for i, tuned in enumerate(chunk[1:])]
            principal_counts.add(proj_base[:, :mask_k] @ v_base64[:, :mask_k].T, changed)  # rows of W^(k)
            low_counts.add(base64, changed)
            del changed
        for i, tuned in enumerate(chunk[1:]):
            s_t, v_t, safe_t = tuned_spectra[i]
            tuned_w = tuned.to(device=device, dtype=wdt)
            u_tuned[i][start:stop] = (tuned_w @ v_t).double() / safe_t[:kmax].double()
            upd = (tuned_w if wdt == torch.float64 else tuned.to(device=device, dtype=torch.float64)) - base64
            del tuned_w
            proj_update = upd @ v_base64  # [rows, n]: dW_r v_i
            right_energy[i] += torch.linalg.vector_norm(proj_update, dim=0).square()
            coef[i] += proj_update.mul_(proj_base).sum(0)  # in place: no second [rows, n] temporary
            ut_update[i] += u_chunk.T @ upd
            del upd, proj_update
        del base_w, base64, proj_base
        start = stop

    spectra = []
    for i, row in enumerate(rows):
        s_t, v_t, _ = tuned_spectra[i]
        lam_update = update_eigs[i]
        total = float(lam_update.sum())
        row.spectral_drift = _drift(s_t.double(), s_base.double())
        for key, value in _rank_structure(lam_update, config.ranks).items():
            setattr(row, key, value)
        c = (coef[i] / safe_base.double()).cpu().numpy()
        energy = c**2 / total if total > 0 else np.zeros_like(c)
        row.diagonal_share = float(energy.sum()) if total > 0 else None
        edges = np.linspace(0, n, config.energy_bins + 1).round().astype(int)
        row.energy_bins = [float(energy[lo:hi].sum()) for lo, hi in zip(edges[:-1], edges[1:])] if total > 0 else None
        if config.mask_overlap:
            principal, principal_error = principal_counts.overlap(i, config.mask_alpha, top=True)
            low, low_error = low_counts.overlap(i, config.mask_alpha, top=False)
            density = float(principal_counts.changed[i].sum()) / max(1, int(principal_counts.all.sum()))
            rule = "bf16" if bf16_masks[i] else "exact"
            row.mask_overlap = MaskOverlap(config.mask_alpha, mask_k, rule, density, principal, principal_error, low, low_error)
        for k in ks:
            a_left = _angles_deg(u_base[:, :k], u_tuned[i][:, :k])
            a_right = _angles_deg(v_base[:, :k], v_t[:, :k])
            if transposed:
                a_left, a_right = a_right, a_left
            two_sided = float((ut_update[i][:k] @ v_base64[:, :k]).square().sum())
            tall_left = float(ut_update[i][:k].square().sum())
            tall_right = float(right_energy[i][:k].sum())
            left, right = (tall_right, tall_left) if transposed else (tall_left, tall_right)
            out_dim, in_dim = (n, m) if transposed else (m, n)
            row.subspaces.append(
                SubspaceStats(
                    k=k,
                    angle_left_max_deg=float(a_left.max()),
                    angle_left_mean_deg=float(a_left.mean()),
                    angle_right_max_deg=float(a_right.max()),
                    angle_right_mean_deg=float(a_right.mean()),
                    spectral_drift_topk=_drift(s_t[:k].double(), s_base[:k].double()),
                    principal_share=_ratio(two_sided, total),
                    principal_share_random=k * k / (m * n),
                    left_share=_ratio(left, total),
                    left_share_random=k / out_dim,
                    right_share=_ratio(right, total),
                    right_share_random=k / in_dim,
                )
            )
        if want_spectrum:
            a_left = _angles_deg(u_base[:, : ks[0]], u_tuned[i][:, : ks[0]])
            a_right = _angles_deg(v_base[:, : ks[0]], v_t[:, : ks[0]])
            if transposed:
                a_left, a_right = a_right, a_left
            spectra.append(
                SpectrumDetail(
                    run=row.run,
                    name=name,
                    s_base=s_base.double().cpu().tolist(),
                    s_tuned=s_t.double().cpu().tolist(),
                    s_update=lam_update.sqrt().cpu().tolist(),
                    energy_coefficients=c.tolist(),
                    right_energy=(right_energy[i] / total if total > 0 else right_energy[i]).cpu().tolist(),
                    angles_left_deg=a_left.tolist(),
                    angles_right_deg=a_right.tolist(),
                )
            )
    return rows, cross, spectra, bytes_read


# ----------------------------------------------------------------------------- aggregation


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _weighted_gate(rows: list[MatrixRow]) -> float | None:
    """Precision gate over a group: vanished / changed weights, summed over its tensors."""
    gated = [r for r in rows if r.precision_gate is not None]
    changed = sum((1 - r.sparsity) * r.n_params for r in gated)
    if not gated or changed <= 0:
        return None if not gated else 0.0
    return sum(r.precision_gate * (1 - r.sparsity) * r.n_params for r in gated) / changed


def _pooled_mask_overlap(rows: list[MatrixRow], field_name: str) -> float | None:
    """A mask overlap over a group: changed weights inside each matrix's mask over all changed weights."""
    pairs = [(getattr(r.mask_overlap, field_name), (1 - r.sparsity) * r.n_params) for r in rows if r.mask_overlap]
    pairs = [(value, changed) for value, changed in pairs if value is not None]
    changed = sum(c for _, c in pairs)
    return sum(v * c for v, c in pairs) / changed if pairs and changed > 0 else None


def update_consistency(
    rows: list[MatrixRow], cross: list[CrossRow], runs: list[str], scope: str = "model"
) -> list[UpdateConsistency]:
    """Cosines of whole-model (``scope="model"``) or per-module-type updates between runs; see the module docstring.

    Rebuilds the per-tensor dot products ``<dW_a, dW_b>`` from the rows' update norms and the
    cross rows' cosines (``cos * ||dW_a|| * ||dW_b||``), sums them over the group, and returns
    one :class:`UpdateConsistency` per group (empty with fewer than two runs).
    """
    if len(runs) < 2:
        return []
    index = {run: i for i, run in enumerate(runs)}
    norms = {(r.run, r.name): r.update_norm for r in rows}
    groups: dict[str, dict] = {}
    for row in rows:
        key = "all" if scope == "model" else row.module
        group = groups.setdefault(key, {"gram": np.zeros((len(runs), len(runs))), "n": {}})
        group["gram"][index[row.run], index[row.run]] += row.update_norm**2
        group["n"][row.name] = row.n_params
    for c in cross:
        key = "all" if scope == "model" else c.module
        dot = (c.cosine or 0.0) * norms[(c.run_a, c.name)] * norms[(c.run_b, c.name)]
        a, b = index[c.run_a], index[c.run_b]
        groups[key]["gram"][a, b] += dot
        groups[key]["gram"][b, a] += dot
    ordered = sorted(groups, key=module_sort_key) if scope == "module" else list(groups)
    return [_consistency_from_gram(scope, key, runs, groups[key]["gram"], sum(groups[key]["n"].values())) for key in ordered]


def _consistency_from_gram(scope: str, key: str, runs: list[str], gram: np.ndarray, n_params: int) -> UpdateConsistency:
    """Cosines from the Gram matrix ``G[a, b] = <dW_a, dW_b>`` of the runs' updates (float64)."""
    r = len(runs)
    norms = np.sqrt(np.clip(np.diag(gram), 0, None))

    def cos(dot: float, norm_a: float, norm_b: float) -> float | None:
        return _ratio(dot, norm_a * norm_b) if norm_a > 0 and norm_b > 0 else None

    cosine = [[cos(gram[a, b], norms[a], norms[b]) for b in range(r)] for a in range(r)]
    mean_norm = math.sqrt(max(0.0, gram.sum())) / r
    to_mean = [cos(gram[a].sum() / r, norms[a], mean_norm) for a in range(r)]
    to_others = []
    for a in range(r):
        others = [b for b in range(r) if b != a]
        others_norm = math.sqrt(max(0.0, gram[np.ix_(others, others)].sum())) / len(others)
        to_others.append(cos(gram[a, others].sum() / len(others), norms[a], others_norm))
    return UpdateConsistency(scope, key, list(runs), n_params, cosine, to_mean, to_others, 1.0 / math.sqrt(max(1, n_params)))


def aggregate(rows: list[MatrixRow], scope: str) -> list[Aggregate]:
    """Group one run's rows by ``module`` type or by ``layer`` (see :class:`Aggregate`)."""
    groups: dict[str, list[MatrixRow]] = {}
    for row in rows:
        if scope == "module":
            key = row.module
        elif row.layer is not None:
            key = str(row.layer)
        else:
            continue
        groups.setdefault(key, []).append(row)
    if scope == "module":
        ordered = sorted(groups, key=module_sort_key)
    else:
        ordered = sorted(groups, key=int)
    out = []
    for key in ordered:
        group = groups[key]
        n = sum(r.n_params for r in group)
        base_sq = sum(r.base_norm**2 for r in group)
        update_sq = sum(r.update_norm**2 for r in group)
        first = [r.subspaces[0] for r in group if r.subspaces]
        out.append(
            Aggregate(
                run=group[0].run,
                scope=scope,
                key=key,
                n_tensors=len(group),
                n_params=n,
                sparsity=sum(r.sparsity * r.n_params for r in group) / n,
                tol_sparsity=sum(r.tol_sparsity * r.n_params for r in group) / n,
                relative_norm=_ratio(math.sqrt(update_sq), math.sqrt(base_sq)),
                precision_gate=_weighted_gate(group),
                spectral_drift=_mean(r.spectral_drift for r in group),
                angle_left_max_deg=_mean(s.angle_left_max_deg for s in first),
                angle_right_max_deg=_mean(s.angle_right_max_deg for s in first),
                principal_share=_mean(s.principal_share for s in first),
                principal_share_random=_mean(s.principal_share_random for s in first),
                stable_rank=_mean(r.stable_rank for r in group),
                effective_rank=_mean(r.effective_rank for r in group),
                principal_mask_overlap=_pooled_mask_overlap(group, "principal_overlap"),
                low_magnitude_mask_overlap=_pooled_mask_overlap(group, "low_magnitude_overlap"),
            )
        )
    return out


# ----------------------------------------------------------------------------- entry point


def _default_spectrum_matrix(names: list[str]) -> str | None:
    layers = sorted({parameter_role(n)[0] for n in names if parameter_role(n)[0] is not None})
    if not layers:
        return None
    middle = layers[len(layers) // 2]
    for module in ("down", "o", "up", "q"):
        for name in names:
            if parameter_role(name) == (middle, module):
                return name
    return None


def weight_forensics(
    base_dir,
    tuned_dirs: dict[str, object],
    config: WeightsConfig | None = None,
    *,
    base_name: str = "base",
    show_progress: bool = False,
) -> WeightsResult:
    """Compare every tensor of each tuned checkpoint in ``tuned_dirs`` (``name -> directory``) with ``base_dir``.

    Reads tensors straight from the checkpoint files (safetensors, sharded or not, or
    ``pytorch_model*.bin``), one tensor of every checkpoint at a time; see the module
    docstring for the metrics. Raises :class:`UserError` for a missing directory, tensors
    that are not in every checkpoint, or shapes that differ.

    Under ``accelerate launch`` / ``torchrun`` (:mod:`rlvr_lens.distributed`) each process
    reads and analyses every ``world_size``-th tensor (in name order) on its own device; the
    rows are gathered in tensor order, and the aggregates and cross-run consistency sums are
    computed from the gathered rows in that order, so every number is the single-process one.
    """
    config = config or WeightsConfig()
    config.check()
    if not tuned_dirs:
        raise UserError("Give at least one tuned checkpoint to compare with the base.")
    device = _resolve_device(config.device)
    started = time.perf_counter()
    runs = list(tuned_dirs)
    readers = [CheckpointTensors.open(base_dir)] + [CheckpointTensors.open(tuned_dirs[r]) for r in runs]
    try:
        model_types = {r.config.get("model_type") for r in readers if r.config.get("model_type")}
        if len(model_types) > 1:
            raise UserError(f"Checkpoints are of different architectures ({', '.join(sorted(model_types))}).")
        names = matched_names(readers[0], readers[1])
        for reader in readers[2:]:
            if matched_names(readers[0], reader) != names:
                raise UserError(f"Tuned checkpoints {runs[0]} and {reader.directory} do not store the same tensors.")
        skipped = [n for n in readers[0].tied_aliases if n not in names]
        if config.include:
            names = [n for n in names if re.search(config.include, n)]
            if not names:
                raise UserError(f"No tensor name matches --include {config.include!r}.")
        names.sort(key=name_sort_key)
        spectrum_name = config.spectrum_matrix or _default_spectrum_matrix(names)
        if config.spectrum_matrix and config.spectrum_matrix not in names:
            raise UserError(f"--spectrum-matrix {config.spectrum_matrix} is not a tensor of these checkpoints.")
        # under accelerate launch / torchrun each process reads and analyses its share of the
        # tensors (tensor i goes to process i mod world_size, see rlvr_lens.distributed); every
        # tensor's rows depend on that tensor alone, so they are those of a one-process run
        mine: dict[int, tuple] = {}
        with torch.no_grad(), _exact_matmuls():
            for i in progress(shard(range(len(names))), enabled=show_progress, desc="weights", unit="tensor"):
                mine[i] = _analyse_tensor(readers, runs, names[i], config, device, want_spectrum=names[i] == spectrum_name)
    finally:
        for reader in readers:
            reader.close()
    matrices: list[MatrixRow] = []
    cross: list[CrossRow] = []
    spectra: list[SpectrumDetail] = []
    bytes_read = 0
    for _, (rows, pair_rows, detail, nbytes) in sorted(gather_dict(mine).items()):  # the original tensor order
        matrices.extend(rows)
        cross.extend(pair_rows)
        spectra.extend(detail)
        bytes_read += nbytes
    # aggregates and the cross-run consistency sums run over the gathered rows, in the same
    # order as in one process: every number is the one-process number
    aggregates = []
    for run in runs:
        run_rows = [r for r in matrices if r.run == run]
        aggregates += aggregate(run_rows, "module") + aggregate(run_rows, "layer")
    cfg = asdict(config)
    cfg["ranks"] = list(config.ranks)
    return WeightsResult(
        base=base_name,
        runs=runs,
        sources={base_name: str(base_dir), **{r: str(tuned_dirs[r]) for r in runs}},
        config=cfg,
        device=str(device),
        matrices=matrices,
        aggregates=aggregates,
        cross=cross,
        consistency=update_consistency(matrices, cross, runs, "model") + update_consistency(matrices, cross, runs, "module"),
        spectra=spectra,
        skipped=skipped,
        wall_time_s=time.perf_counter() - started,
        bytes_read=bytes_read,
    )


def _register() -> None:
    from rlvr_lens.analyses.weights_report import ENTRY
    from rlvr_lens.report import register

    register(WeightsResult.kind, ENTRY)


_register()
