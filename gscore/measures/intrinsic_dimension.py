"""TwoNN intrinsic dimension of a point cloud (Brown et al., "Relating regularization and generalization through the intrinsic dimension of activations", 2022), and the ``llid`` / ``pid`` / ``id_ratio`` measures.

The estimator is the one of the seed authors' code (docs/measures.md, "Intrinsic dimension"):

- Euclidean distances; r1, r2 = each point's two smallest distances to *other* points;
- drop points with r1 = 0 (duplicates) and points with r1 = r2; N' points remain;
- mu = sort(r2 / r1), F_j = j / N' (j = 1..N'); x = log mu, y = -log(1 - F), both without their last 2
  entries; keep the first floor(0.9 N') pairs; d = sum x y / sum x^2 (a line through the origin);
- resampling: ``resamples`` subsets of round(fraction N) points without replacement (seeded); each
  subset's neighbours are searched within the subset; the ID is the mean, ``std`` their population std.

Speed without changing the answer: distances are computed once, in row blocks, as a float64 Gram matrix
(|a|^2 + |b|^2 - 2 a.b) that only *ranks* candidates; the few best candidates of each point are then
re-measured by direct differences in float64, and each point keeps its ``neighbours`` nearest (value,
index) pairs. A subset's r1, r2 of a point are its two nearest kept neighbours that are in the subset
(the values are exact even with ties: any neighbour not kept is at least as far as every kept one); a
point with fewer than two kept neighbours in the subset gets an exact search within the subset. No N x N
matrix ever exists: one block is ``chunk_size`` x N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gscore.errors import MeasureError
from gscore.measures.types import MeasureOutcome, MeasureUndefined

__all__ = [
    "IntrinsicDimension",
    "NeighbourCache",
    "TooFewPointsError",
    "TwoNNFit",
    "id_ratio_measure",
    "intrinsic_dimension",
    "llid_measure",
    "nearest_neighbours",
    "pid_measure",
    "resample_subsets",
    "subset_neighbour_distances",
    "twonn_fit",
]

FIT_FRACTION = 0.9
"""Share of the sorted (x, y) pairs used by the line fit (the authors' ``fraction`` of ``estimate_id``)."""

_MEMORY_BUDGET_BYTES = 256 * 2**20  # one distance block, or one block of differences
_CANDIDATE_MARGIN = 6  # Gram-ranked candidates re-measured beyond the kept neighbours


class TooFewPointsError(MeasureError):
    """The estimate is undefined: fewer than 3 points are left after dropping duplicates and ties."""

    type = "too-few-points"
    title = "Intrinsic dimension undefined"


@dataclass
class TwoNNFit:
    """One TwoNN estimate: ``dimension``; ``points_used`` = N'; the dropped counts (r1 = 0; r1 = r2 > 0)."""

    dimension: float
    points_used: int
    dropped_duplicates: int
    dropped_ties: int


def twonn_fit(r1: np.ndarray, r2: np.ndarray, fit_fraction: float = FIT_FRACTION) -> TwoNNFit:
    """TwoNN dimension from each point's two nearest-neighbour distances.

    Parameters
    ----------
    r1, r2 : array [N] float
        Distance of each point to its nearest and second-nearest other point (r1 <= r2).
    fit_fraction : float
        Share of the sorted pairs kept for the fit (floor(fit_fraction N')).

    Returns
    -------
    TwoNNFit
        The slope of the fit through the origin and the point counts.

    Raises
    ------
    TooFewPointsError
        When fewer than 3 points remain after dropping r1 = 0 and r1 = r2.
    """
    r1 = np.asarray(r1, dtype=np.float64).ravel()
    r2 = np.asarray(r2, dtype=np.float64).ravel()
    duplicates = r1 == 0
    ties = (r1 == r2) & ~duplicates
    keep = ~(duplicates | ties)
    used = int(keep.sum())
    if used < 3:
        raise TooFewPointsError(
            f"only {used} of {r1.size} points are usable for TwoNN after dropping {int(duplicates.sum())} "
            f"duplicates (r1 = 0) and {int(ties.sum())} ties (r1 = r2); at least 3 distinct points are needed"
        )
    mu = np.sort(r2[keep] / r1[keep])
    empirical_cdf = np.arange(1, used + 1, dtype=np.float64) / used
    x = np.log(mu[:-2])
    y = -np.log(1.0 - empirical_cdf[:-2])
    fitted = int(np.floor(used * fit_fraction))
    x, y = x[:fitted], y[:fitted]
    denominator = float(x @ x)
    if not denominator > 0:
        raise TooFewPointsError(f"TwoNN is undefined: every usable ratio r2 / r1 of the {used} points is 1")
    return TwoNNFit(float(x @ y) / denominator, used, int(duplicates.sum()), int(ties.sum()))


def resample_subsets(num_points: int, resamples: int, fraction: float, seed: int) -> list[np.ndarray]:
    """The seeded subsets of the resampled estimate.

    Parameters
    ----------
    num_points : int
        N, the number of points.
    resamples : int
        Number of subsets.
    fraction : float
        Each subset holds round(fraction N) points (numpy rounding), drawn without replacement.
    seed : int
        Seed of one ``numpy.random.default_rng``; subset i is the i-th permutation's prefix.

    Returns
    -------
    list of array [round(fraction N)] int64
        Sorted point indices of each subset.
    """
    size = int(np.round(num_points * fraction))
    rng = np.random.default_rng(seed)
    return [np.sort(rng.permutation(num_points)[:size]).astype(np.int64) for _ in range(resamples)]


@dataclass
class NeighbourCache:
    """Each point's nearest other points: ``distances`` [N, k] float64 ascending, ``indices`` [N, k] int64
    (numpy, on the host); k = min(neighbours, N - 1)."""

    distances: np.ndarray
    indices: np.ndarray


def _float64_copy_limit(device: torch.device) -> int:
    """Largest float64 copy of the features made at once (bytes): 2 GiB on CPU, a quarter of the free
    memory (at most 8 GiB) on CUDA; larger inputs are converted block by block."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(min(8 * 2**30, free // 4))
    return 2 * 2**30


def _block_rows(num_points: int, dim: int, converted: bool, chunk_size: int | None) -> int:
    """Rows per distance block: a [R, N] float64 block, plus [R, D] row and column copies when the
    features are converted to float64 block by block."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
        return int(chunk_size)
    per_row = 8 * (num_points + (0 if converted else 2 * dim))
    return int(max(1, min(1024, _MEMORY_BUDGET_BYTES // per_row)))


def _direct_distances(points: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """||others[i, j] - points[i]|| in float64: points [R, D], others [R, K, D] -> [R, K] (``others`` is
    consumed: used as scratch when it is already float64)."""
    difference = others if others.dtype == torch.float64 else others.to(torch.float64)
    difference.sub_(points.to(torch.float64).unsqueeze(1))
    return difference.square_().sum(dim=-1).sqrt_()


def nearest_neighbours(
    features: torch.Tensor, neighbours: int = 10, chunk_size: int | None = None
) -> NeighbourCache:
    """Each point's ``neighbours`` nearest other points, exact Euclidean distances in float64.

    Parameters
    ----------
    features : Tensor [N, D]
        The points (any float dtype, any device; the work runs on that device).
    neighbours : int
        k, how many neighbours each point keeps (at most N - 1).
    chunk_size : int, optional
        Rows per distance block (default: a [R, N] float64 block of at most 256 MiB, R <= 1024).

    Returns
    -------
    NeighbourCache
        Distances (by direct differences) and indices; a point's duplicates are its neighbours at 0.
    """
    num_points, dim = int(features.shape[0]), int(features.shape[1])
    kept = min(neighbours, num_points - 1)
    candidates = min(num_points - 1, kept + _CANDIDATE_MARGIN)
    device = features.device
    if features.dtype != torch.float64 and num_points * dim * 8 <= _float64_copy_limit(device):
        features = features.to(torch.float64)  # one exact copy; every block below is then a view
    converted = features.dtype == torch.float64
    rows_per_block = _block_rows(num_points, dim, converted, chunk_size)
    rows_per_refine = max(1, _MEMORY_BUDGET_BYTES // (64 * candidates * max(dim, 1)))  # 64 MiB scratch
    squared_norms = torch.empty(num_points, dtype=torch.float64, device=device)
    for start in range(0, num_points, rows_per_block):
        block = features[start : start + rows_per_block].to(torch.float64)
        squared_norms[start : start + block.shape[0]] = (block * block).sum(dim=1)
    distances = torch.empty((num_points, kept), dtype=torch.float64, device=device)
    indices = torch.empty((num_points, kept), dtype=torch.int64, device=device)
    gram = torch.empty((min(rows_per_block, num_points), num_points), dtype=torch.float64, device=device)
    for start in range(0, num_points, rows_per_block):
        stop = min(num_points, start + rows_per_block)
        rows = features[start:stop].to(torch.float64)
        block = gram[: stop - start]
        if converted:
            torch.matmul(rows, features.T, out=block)
        else:
            for column in range(0, num_points, rows_per_block):  # float64 copies, one column block at a time
                columns = features[column : column + rows_per_block].to(torch.float64)
                torch.matmul(rows, columns.T, out=block[:, column : column + columns.shape[0]])
        block.mul_(-2.0).add_(squared_norms[start:stop, None]).add_(squared_norms[None, :])
        own = torch.arange(start, stop, device=device)
        block[own - start, own] = math.inf  # a point is not its own neighbour
        candidate_index = torch.topk(block, candidates, dim=1, largest=False, sorted=False).indices
        for refine in range(start, stop, rows_per_refine):
            end = min(stop, refine + rows_per_refine)
            index = candidate_index[refine - start : end - start]
            exact = _direct_distances(features[refine:end], features[index])
            order = torch.argsort(exact, dim=1, stable=True)[:, :kept]
            distances[refine:end] = torch.gather(exact, 1, order)
            indices[refine:end] = torch.gather(index, 1, order)
    return NeighbourCache(distances.cpu().numpy(), indices.cpu().numpy())


def _exact_two_nearest(features: torch.Tensor, point: int, subset: np.ndarray) -> tuple[float, float]:
    """(r1, r2) of ``point`` among ``subset`` (which contains it), by direct differences in float64."""
    others = torch.as_tensor(subset[subset != point], device=features.device)
    rows_per_chunk = max(1, _MEMORY_BUDGET_BYTES // (16 * max(int(features.shape[1]), 1)))
    origin = features[point : point + 1]
    found = [
        _direct_distances(origin, features[others[s : s + rows_per_chunk]].unsqueeze(0))[0]
        for s in range(0, others.numel(), rows_per_chunk)
    ]
    two = torch.topk(torch.cat(found), 2, largest=False, sorted=True).values.cpu().numpy()
    return float(two[0]), float(two[1])


def subset_neighbour_distances(
    cache: NeighbourCache, features: torch.Tensor, subset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """r1, r2 [n] of every point of ``subset`` within the subset, from ``cache`` (exact search for a point
    with fewer than two kept neighbours in the subset). Returns (r1, r2, number of exact searches)."""
    in_subset = np.zeros(cache.indices.shape[0], dtype=bool)
    in_subset[subset] = True
    present = in_subset[cache.indices[subset]]  # [n, k]
    first_two = np.argsort(~present, axis=1, kind="stable")[:, :2]  # positions of the first two present
    pair = np.take_along_axis(cache.distances[subset], first_two, axis=1)
    r1, r2 = pair[:, 0].copy(), pair[:, 1].copy()
    short = np.flatnonzero(present.sum(axis=1) < 2)
    for row in short:
        r1[row], r2[row] = _exact_two_nearest(features, int(subset[row]), subset)
    return r1, r2, int(short.size)


@dataclass
class IntrinsicDimension:
    """A TwoNN estimate of one representation.

    ``mean``: the ID (the single estimate when ``resamples`` = 0); ``std``: population std of the
    ``estimates`` (0 for one). ``points_used``, ``dropped_duplicates``, ``dropped_ties``: per estimate.
    ``num_points`` = N, ``subset_size`` = points per estimate, ``exact_searches``: points whose kept
    neighbours missed the subset.
    """

    mean: float
    std: float
    estimates: list[float]
    points_used: list[int]
    dropped_duplicates: list[int]
    dropped_ties: list[int]
    num_points: int
    dim: int
    subset_size: int
    resamples: int
    fraction: float
    seed: int
    neighbours: int
    exact_searches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        """JSON-ready summary for a measure's ``meta``."""
        return {
            "id": self.mean,
            "std": self.std,
            "estimates": list(self.estimates),
            "num_points": self.num_points,
            "dim": self.dim,
            "subset_size": self.subset_size,
            "resamples": self.resamples,
            "fraction": self.fraction,
            "points_used_min": min(self.points_used),
            "dropped_duplicates_max": max(self.dropped_duplicates),
            "dropped_ties_max": max(self.dropped_ties),
            "exact_searches": self.exact_searches,
        }


def intrinsic_dimension(
    features: torch.Tensor,
    *,
    resamples: int = 20,
    fraction: float = 0.9,
    seed: int = 0,
    neighbours: int = 10,
    chunk_size: int | None = None,
    fit_fraction: float = FIT_FRACTION,
) -> IntrinsicDimension:
    """TwoNN intrinsic dimension of ``features`` (see the module docstring for the exact estimator).

    Parameters
    ----------
    features : Tensor [N, D]
        One row per point (rows of more dims are flattened); CPU or CUDA, any float dtype.
    resamples : int
        Number of seeded subsets; 0 = one deterministic estimate on all N points.
    fraction : float
        Subset size round(fraction N), in (0, 1].
    seed : int
        Seed of the subsets (:func:`resample_subsets`).
    neighbours : int
        Neighbours kept per point from the one distance pass.
    chunk_size : int, optional
        Rows per distance block (default: about 256 MiB per block).
    fit_fraction : float
        Share of the sorted pairs used by the fit (0.9 in the authors' code).

    Returns
    -------
    IntrinsicDimension

    Raises
    ------
    TooFewPointsError
        With fewer than 3 points (or subsets of fewer than 3), or when an estimate has < 3 usable points.
    ValueError
        For ``resamples`` < 0, ``fraction`` outside (0, 1] or ``neighbours`` < 2.
    """
    if resamples < 0:
        raise ValueError(f"resamples must be >= 0 (got {resamples})")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] (got {fraction})")
    if neighbours < 2:
        raise ValueError(f"neighbours must be >= 2 (got {neighbours})")
    if features.dim() != 2:
        features = features.reshape(features.shape[0], -1) if features.dim() > 2 else features.reshape(-1, 1)
    num_points, dim = int(features.shape[0]), int(features.shape[1])
    subsets = resample_subsets(num_points, resamples, fraction, seed) if resamples else []
    subset_size = int(subsets[0].size) if subsets else num_points
    if num_points < 3 or subset_size < 3:
        raise TooFewPointsError(
            f"TwoNN needs at least 3 points per estimate (got {num_points} points, {subset_size} per estimate)"
        )
    if not torch.is_floating_point(features):
        features = features.to(torch.float64)
    cache = nearest_neighbours(features, neighbours, chunk_size)
    fits: list[TwoNNFit] = []
    exact_searches = 0
    if not subsets:
        fits.append(twonn_fit(cache.distances[:, 0], cache.distances[:, 1], fit_fraction))
    for subset in subsets:
        r1, r2, searched = subset_neighbour_distances(cache, features, subset)
        exact_searches += searched
        fits.append(twonn_fit(r1, r2, fit_fraction))
    estimates = [fit.dimension for fit in fits]
    return IntrinsicDimension(
        mean=float(np.mean(estimates)),
        std=float(np.std(estimates)),
        estimates=estimates,
        points_used=[fit.points_used for fit in fits],
        dropped_duplicates=[fit.dropped_duplicates for fit in fits],
        dropped_ties=[fit.dropped_ties for fit in fits],
        num_points=num_points,
        dim=dim,
        subset_size=subset_size,
        resamples=resamples,
        fraction=fraction,
        seed=seed,
        neighbours=int(cache.indices.shape[1]),
        exact_searches=exact_searches,
    )


# -- the measures (entries of gscore.measures.types; ctx is a gscore.measures.context.MeasureContext) ----------


def _representations(ctx: Any, params: dict[str, Any]) -> Any:
    return ctx.activations(params.get("split", "test"), params.get("samples"), int(params.get("seed", 0)))


def _estimate(ctx: Any, params: dict[str, Any], name: str, features: torch.Tensor) -> IntrinsicDimension:
    """The ID of one representation, cached in ``ctx.cache`` so that llid, pid and id_ratio share it."""
    resamples, fraction, seed = (
        int(params.get("resamples", 20)),
        float(params.get("fraction", 0.9)),
        int(params.get("seed", 0)),
    )
    key = (
        "intrinsic_dimension",
        params.get("split", "test"),
        params.get("samples"),
        seed,
        name,
        resamples,
        fraction,
    )
    cache = getattr(ctx, "cache", None)
    if cache is not None and key in cache:
        cached = cache[key]
        if isinstance(cached, TooFewPointsError):
            raise cached
        return cached
    try:
        result: IntrinsicDimension | TooFewPointsError = intrinsic_dimension(
            features, resamples=resamples, fraction=fraction, seed=seed
        )
    except TooFewPointsError as exc:
        result = exc
    if cache is not None:
        cache[key] = result
    if isinstance(result, TooFewPointsError):
        raise result
    return result


def _warnings_of(name: str, estimate: IntrinsicDimension) -> list[str]:
    warnings = []
    dropped = max(d + t for d, t in zip(estimate.dropped_duplicates, estimate.dropped_ties, strict=True))
    if dropped > 0.1 * estimate.subset_size:
        warnings.append(
            f"{name}: up to {dropped} of {estimate.subset_size} points per estimate were dropped as duplicates "
            f"(r1 = 0) or ties (r1 = r2); the ID describes the rest"
        )
    if estimate.subset_size < 100:
        warnings.append(f"{name}: TwoNN on {estimate.subset_size} points per estimate is noisy")
    return warnings


def _common_meta(params: dict[str, Any], activations: Any) -> dict[str, Any]:
    return {
        "split": params.get("split", "test"),
        "probe_samples": int(activations.pre.shape[0]),
        "resamples": int(params.get("resamples", 20)),
        "fraction": float(params.get("fraction", 0.9)),
        "seed": int(params.get("seed", 0)),
    }


def _llid(ctx: Any, params: dict[str, Any]) -> tuple[str, IntrinsicDimension, Any]:
    activations = _representations(ctx, params)
    if activations.last_linear_input is None:
        raise MeasureUndefined(
            "the model calls no nn.Linear module: it has no last-layer representation (the input of a final "
            "linear layer), so LLID is undefined"
        )
    name = f"{activations.last_linear_name or 'linear'} (input)"
    try:
        return name, _estimate(ctx, params, name, activations.last_linear_input), activations
    except TooFewPointsError as exc:
        raise MeasureUndefined(f"LLID of {name}: {exc.detail}") from exc


def llid_measure(ctx: Any, params: dict[str, Any]) -> Any:
    """``llid``: TwoNN ID of the input of the model's last ``nn.Linear`` call (orientation -1).

    Parameters
    ----------
    ctx : MeasureContext
        Gives ``ctx.activations(split, samples, seed)`` extracted with representations.
    params : dict
        ``resamples`` (20), ``fraction`` (0.9), ``samples`` (None), ``split`` ("test"), ``seed`` (0).

    Returns
    -------
    MeasureOutcome
        ``value`` = mean ID, ``meta`` with its std, the estimates and the representation's name.
    """
    name, estimate, activations = _llid(ctx, params)
    meta = _common_meta(params, activations) | {"representation": name} | estimate.to_meta()
    return MeasureOutcome(value=estimate.mean, meta=meta, warnings=_warnings_of(name, estimate))


def _pid(ctx: Any, params: dict[str, Any]) -> tuple[str, float, dict[str, Any], list[str], Any]:
    activations = _representations(ctx, params)
    stages: list[tuple[str, torch.Tensor]] = list(activations.stage_outputs)
    warnings: list[str] = []
    if activations.last_linear_input is not None:
        stages.append((f"{activations.last_linear_name or 'linear'} (input)", activations.last_linear_input))
    else:
        warnings.append("the model calls no nn.Linear module: PID is the maximum over the ReLU stages only")
    if not stages:
        raise MeasureUndefined(
            "the model has no ReLU-type stage output and no nn.Linear input: PID is undefined"
        )
    stage_ids: dict[str, Any] = {}
    best_name, best = "", -math.inf
    check_cancel = getattr(ctx, "check_cancel", None)
    report = getattr(ctx, "report", None)
    for index, (name, features) in enumerate(stages):
        if check_cancel is not None:
            check_cancel()
        if report is not None:
            report("intrinsic dimension", index, len(stages))
        try:
            estimate = _estimate(ctx, params, name, features)
        except TooFewPointsError as exc:
            stage_ids[name] = {"id": None, "reason": exc.detail, "dim": int(features.shape[1])}
            warnings.append(f"stage {name} skipped: {exc.detail}")
            continue
        stage_ids[name] = {"id": estimate.mean, "std": estimate.std, "dim": estimate.dim}
        warnings.extend(_warnings_of(name, estimate))
        if estimate.mean > best:
            best_name, best = name, estimate.mean
    if report is not None:
        report("intrinsic dimension", len(stages), len(stages))
    if best_name == "":
        raise MeasureUndefined("no stage has 3 or more distinct points: PID is undefined")
    meta = _common_meta(params, activations) | {"peak_stage": best_name, "stages": stage_ids}
    return best_name, best, meta, warnings, activations


def pid_measure(ctx: Any, params: dict[str, Any]) -> Any:
    """``pid``: the maximum TwoNN ID over the stage outputs and the LLID representation (orientation +1).

    Parameters and context as :func:`llid_measure`. ``meta["stages"]`` holds every stage's ID (a stage
    with fewer than 3 distinct points has ``id`` None and a reason), ``meta["peak_stage"]`` the argmax.
    """
    _name, value, meta, warnings, _activations = _pid(ctx, params)
    return MeasureOutcome(value=value, meta=meta, warnings=warnings)


def id_ratio_measure(ctx: Any, params: dict[str, Any]) -> Any:
    """``id_ratio``: PID / LLID (orientation +1); parameters and context as :func:`llid_measure`."""
    llid_name, llid, _activations = _llid(ctx, params)
    peak_name, pid, meta, warnings, _ = _pid(ctx, params)
    if not llid.mean > 0:
        raise MeasureUndefined(f"LLID of {llid_name} is {llid.mean}: the ratio PID / LLID is undefined")
    meta = meta | {"pid": pid, "llid": llid.mean, "llid_std": llid.std, "llid_representation": llid_name}
    return MeasureOutcome(value=pid / llid.mean, meta=meta, warnings=warnings)
