"""Kendall pair matrices and seeded, vectorized bootstrap intervals for tau-a and granulated Kendall.

Plain numpy; no records, no HTTP. ``gscore.ranking.kendall`` builds the inputs.

Conventions:

- ``pair_matrices`` gives, for ``n`` models, the ``(n, n)`` matrix ``S[i, j] = sign(m_i - m_j) *
  sign(t_i - t_j)`` (symmetric, zero diagonal; ties give 0) and the boolean ``T[i, j] = t_i != t_j``.
  tau-a of the models is ``S[i < j].sum() / (n(n-1)/2)``.
- Bootstrap of tau (resampling models with replacement). A resample is a vector of counts ``w``
  (multinomial, sum ``n``). Its coefficient is tau-a over the pairs of *distinct* models of the resample:
  ``(w^T S w / 2) / (((sum w)^2 - sum w^2) / 2)``. The pairs of two copies of one model are not pairs
  of models and are not counted (counting them as ties would pull every resample towards 0: a collection
  with tau = 1 would get an interval below 1). Ties between different models still count 0 and stay
  in the denominator, as in the point estimate. A resample in which no counted pair has two different
  target values is undefined (NaN) and left out of the percentiles, as the point estimate is None then.
- Bootstrap of a mean over groups (psi_a: resampling the groups of axis a with replacement): the mean of
  the resampled group coefficients; undefined when no resampled group is informative.
- Bootstrap of the total: resample ``b`` of the total is the mean over the axes of their resample ``b``
  (axes resampled independently), over the axes defined in that resample.
- Percentile intervals: ``ci_low``, ``ci_high`` are the ``(1 - level) / 2`` and ``(1 + level) / 2``
  quantiles (numpy's linear interpolation) of the defined resamples.
"""

from __future__ import annotations

import numpy as np

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 1000


def pair_matrices(measure: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concordance and target-difference matrices of ``n`` models.

    Parameters
    ----------
    measure, target : (n,) float arrays
        Oriented measure values and oriented target values (finite).

    Returns
    -------
    concordance : (n, n) float64
        ``sign(m_i - m_j) * sign(t_i - t_j)``; symmetric, zero diagonal.
    target_differs : (n, n) bool
        ``t_i != t_j``.
    """
    measure = np.asarray(measure, dtype=float)
    target = np.asarray(target, dtype=float)
    # finite values of opposite signs near the float maximum overflow to +-inf: the sign stays right
    with np.errstate(over="ignore"):
        measure_signs = np.sign(measure[:, None] - measure[None, :])
        target_signs = np.sign(target[:, None] - target[None, :])
    return measure_signs * target_signs, target_signs != 0


def bootstrap_tau(
    concordance: np.ndarray, target_differs: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """tau-a of ``n_resamples`` resamples of the models (with replacement); NaN where undefined.

    Parameters
    ----------
    concordance, target_differs : (n, n) arrays
        From ``pair_matrices``.
    n_resamples : int
        Number of resamples ``B``.
    rng : numpy Generator
        Source of the resamples (seed it for reproducible intervals).

    Returns
    -------
    (B,) float64
        The coefficient of each resample, over the pairs of distinct models it contains.
    """
    n = concordance.shape[0]
    if n < 2 or n_resamples <= 0:
        return np.full(max(n_resamples, 0), np.nan)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)  # (B, n)
    concordant = 0.5 * np.einsum("bi,bi->b", counts @ concordance, counts)
    informative = np.einsum("bi,bi->b", counts @ target_differs.astype(float), counts) > 0
    pairs = 0.5 * (counts.sum(axis=1) ** 2 - (counts**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        taus = concordant / pairs
    return np.where(informative & (pairs > 0), taus, np.nan)


def bootstrap_mean(
    values: np.ndarray, informative: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Mean of ``G`` values resampled with replacement, ``n_resamples`` times; NaN where undefined.

    Parameters
    ----------
    values : (G,) float array
        One coefficient per group.
    informative : (G,) bool array
        Whether a group has a counted pair with two different target values; a resample with no
        informative group is undefined.
    n_resamples : int
        Number of resamples ``B``.
    rng : numpy Generator

    Returns
    -------
    (B,) float64
    """
    values = np.asarray(values, dtype=float)
    groups = len(values)
    if groups == 0 or n_resamples <= 0:
        return np.full(max(n_resamples, 0), np.nan)
    counts = rng.multinomial(groups, np.full(groups, 1.0 / groups), size=n_resamples).astype(float)
    means = counts @ values / groups
    defined = counts @ np.asarray(informative, dtype=float) > 0
    return np.where(defined, means, np.nan)


def mean_over_axes(resamples: list[np.ndarray]) -> np.ndarray:
    """Row-wise mean of equally long resample vectors, ignoring NaN; NaN where every axis is NaN.

    Parameters
    ----------
    resamples : list of (B,) arrays, one per axis

    Returns
    -------
    (B,) float64
    """
    if not resamples:
        return np.array([])
    stacked = np.vstack(resamples)  # (axes, B)
    defined = ~np.isnan(stacked)
    count = defined.sum(axis=0)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def percentile_interval(resamples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """``((1 - level) / 2, (1 + level) / 2)`` quantiles of the defined (non-NaN) resamples, or (None, None)."""
    defined = resamples[~np.isnan(resamples)]
    if defined.size == 0:
        return None, None
    low, high = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
