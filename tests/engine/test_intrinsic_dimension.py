"""Tests of gscore.measures.intrinsic_dimension: TwoNN against a numpy transcription and scikit-dimension, and the
llid / pid / id_ratio measure functions on a stand-in context."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

import gscore.measures.intrinsic_dimension as intrinsic_dimension_module
from gscore.errors import MeasureError
from gscore.inputs.extraction import Activations
from gscore.measures.intrinsic_dimension import (
    TooFewPointsError,
    id_ratio_measure,
    intrinsic_dimension,
    llid_measure,
    nearest_neighbours,
    pid_measure,
    twonn_fit,
)
from gscore.measures.types import MeasureOutcome, MeasureUndefined

# -- the reference: MEASURES.md's estimator, transcribed plainly on a brute-force distance matrix ----------


def brute_force_distances(points: np.ndarray) -> np.ndarray:
    """[n, n] Euclidean distances by direct differences in float64."""
    points = np.asarray(points, dtype=np.float64)
    return np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))


def reference_twonn(distances: np.ndarray) -> float:
    """TwoNN as MEASURES.md states it, from a full distance matrix."""
    ordered = np.sort(distances, axis=1)
    r1, r2 = ordered[:, 1], ordered[:, 2]  # column 0 is a zero: the point itself (or a duplicate)
    good = np.setdiff1d(np.arange(len(r1)), np.where(r1 == 0)[0])
    good = np.setdiff1d(good, np.where(r1 == r2)[0])
    n = good.size
    mu = np.sort(r2[good] / r1[good])
    cdf = np.arange(1, n + 1, dtype=np.float64) / n
    x = np.log(mu[:-2])
    y = -np.log(1 - cdf[:-2])
    m = int(np.floor(n * 0.9))
    x, y = x[:m], y[:m]
    return float(np.sum(x * y) / np.sum(x * x))


def reference_resampled(points: np.ndarray, resamples: int, fraction: float, seed: int) -> list[float]:
    """The estimates on seeded subsets: subset i = prefix of the i-th permutation of one default_rng."""
    distances = brute_force_distances(points)
    rng = np.random.default_rng(seed)
    size = int(np.round(len(points) * fraction))
    estimates = []
    for _ in range(resamples):
        subset = rng.permutation(len(points))[:size]
        estimates.append(reference_twonn(distances[np.ix_(subset, subset)]))
    return estimates


def subspace_points(n: int, d: int, ambient: int, seed: int) -> np.ndarray:
    """n Gaussian points on a random d-dimensional linear subspace of R^ambient."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((ambient, d)))
    return rng.standard_normal((n, d)) @ basis.T


def with_duplicates(n: int, dim: int, copies: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((n, dim))
    return np.concatenate([points, points[rng.choice(n, copies, replace=False)]])


# -- the estimator ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "points",
    [
        np.random.default_rng(0).standard_normal((300, 7)),
        subspace_points(250, 3, 40, seed=1),
        with_duplicates(200, 4, copies=30, seed=2),
        np.round(np.random.default_rng(3).standard_normal((200, 3)) * 2),  # integer lattice: many ties
    ],
    ids=["gaussian", "subspace", "duplicates", "lattice"],
)
def test_single_estimate_equals_numpy_transcription(points: np.ndarray) -> None:
    expected = reference_twonn(brute_force_distances(points))
    result = intrinsic_dimension(torch.tensor(points), resamples=0)
    assert result.estimates == [result.mean] and result.std == 0.0
    assert result.mean == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_lattice_data_drops_ties_and_duplicates() -> None:
    points = np.round(np.random.default_rng(3).standard_normal((200, 3)) * 2)
    result = intrinsic_dimension(torch.tensor(points), resamples=0)
    assert result.dropped_duplicates[0] > 0 and result.dropped_ties[0] > 0
    assert result.points_used[0] == 200 - result.dropped_duplicates[0] - result.dropped_ties[0]


def test_resamples_equal_brute_force_per_subset() -> None:
    points = np.random.default_rng(4).standard_normal((240, 6))
    expected = reference_resampled(points, resamples=20, fraction=0.9, seed=7)
    result = intrinsic_dimension(torch.tensor(points), resamples=20, fraction=0.9, seed=7)
    np.testing.assert_allclose(result.estimates, expected, rtol=1e-12, atol=1e-12)
    assert result.mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert result.std == pytest.approx(np.std(expected), rel=1e-9)
    assert result.subset_size == 216


def test_exact_search_fallback_when_kept_neighbours_miss_the_subset() -> None:
    points = with_duplicates(60, 5, copies=6, seed=5)
    expected = reference_resampled(points, resamples=12, fraction=0.5, seed=3)
    result = intrinsic_dimension(torch.tensor(points), resamples=12, fraction=0.5, seed=3, neighbours=2)
    assert result.neighbours == 2
    assert result.exact_searches > 0  # some point lost both kept neighbours in some subset
    np.testing.assert_allclose(result.estimates, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("one_float64_copy", [True, False], ids=["float64-copy", "blockwise-conversion"])
def test_chunking_and_float32_input_do_not_change_the_answer(
    one_float64_copy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not one_float64_copy:  # as for inputs too large to copy: float64 row and column blocks
        monkeypatch.setattr(intrinsic_dimension_module, "_float64_copy_limit", lambda device: 0)
    rng = np.random.default_rng(6)
    base = rng.standard_normal((150, 64)).astype(np.float32) * 100
    near = base[:40] + rng.standard_normal((40, 64)).astype(np.float32) * 1e-3  # near-duplicates
    points32 = np.concatenate([base, near])
    expected = reference_resampled(points32.astype(np.float64), resamples=5, fraction=0.9, seed=0)
    for chunk_size in (None, 7, 190):
        result = intrinsic_dimension(torch.tensor(points32), resamples=5, seed=0, chunk_size=chunk_size)
        np.testing.assert_allclose(result.estimates, expected, rtol=1e-12, atol=1e-12)


def test_neighbour_cache_is_exact() -> None:
    points = np.random.default_rng(8).standard_normal((90, 12))
    distances = brute_force_distances(points)
    np.fill_diagonal(distances, np.inf)
    cache = nearest_neighbours(torch.tensor(points), neighbours=5, chunk_size=16)
    np.testing.assert_allclose(cache.distances, np.sort(distances, axis=1)[:, :5], rtol=1e-13)
    np.testing.assert_array_equal(cache.indices, np.argsort(distances, axis=1, kind="stable")[:, :5])


@pytest.mark.parametrize("d", [2, 5, 10])
def test_known_dimension_linear_subspaces(d: int) -> None:
    points = subspace_points(2000, d, 100, seed=d)
    result = intrinsic_dimension(torch.tensor(points, dtype=torch.float32))
    assert abs(result.mean - d) < 0.12 * d
    assert 0 < result.std < 0.05 * d
    assert len(result.estimates) == 20 and result.subset_size == 1800


def test_duplicated_rows_and_constant_features_give_finite_values() -> None:
    rng = np.random.default_rng(9)
    points = np.concatenate([rng.standard_normal((100, 4)), np.full((100, 3), 2.5)], axis=1)
    points = np.concatenate([points, points[:50], points[:10]])  # duplicates, some triplicated
    result = intrinsic_dimension(torch.tensor(points, dtype=torch.float32))
    assert math.isfinite(result.mean) and math.isfinite(result.std)
    assert all(math.isfinite(e) for e in result.estimates)
    assert min(result.dropped_duplicates) > 0


def test_fewer_than_three_distinct_points_is_a_clear_error() -> None:
    identical = torch.ones(50, 8)
    with pytest.raises(TooFewPointsError, match="at least 3 distinct points"):
        intrinsic_dimension(identical)
    two_points = torch.tensor([[0.0, 0.0]] * 10 + [[1.0, 1.0]] * 10)
    with pytest.raises(TooFewPointsError, match="0 of 18 points"):
        intrinsic_dimension(two_points)
    with pytest.raises(TooFewPointsError, match="at least 3 points"):
        intrinsic_dimension(torch.randn(2, 5))
    assert issubclass(TooFewPointsError, MeasureError)
    with pytest.raises(ValueError, match="fraction"):
        intrinsic_dimension(torch.randn(10, 2), fraction=1.5)


def test_twonn_fit_hand_computed_case() -> None:
    # 5 usable points with mu = e^1..e^5 (point 6 is a duplicate, point 7 a tie): N' = 5, x = [1, 2, 3],
    # y = -log(1 - [1, 2, 3] / 5), floor(4.5) = 4 > 3 pairs, so all three are fitted.
    r1 = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 2.0])
    r2 = np.exp([1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 0.0]) * r1
    r2[6] = 2.0
    fit = twonn_fit(r1, r2)
    x = np.array([1.0, 2.0, 3.0])
    y = -np.log(1 - np.array([1.0, 2.0, 3.0]) / 5)
    assert fit.dimension == pytest.approx(float(x @ y / (x @ x)), rel=1e-14)
    assert (fit.points_used, fit.dropped_duplicates, fit.dropped_ties) == (5, 1, 1)


# -- scikit-dimension as a second, independent reference ----------------------------------------------------

skdim = pytest.importorskip("skdim", reason="scikit-dimension (dev extra) is not installed")


def test_scikit_dimension_agrees_on_tie_free_data() -> None:
    for points in (np.random.default_rng(10).standard_normal((500, 8)), subspace_points(400, 6, 60, seed=11)):
        ours = intrinsic_dimension(torch.tensor(points), resamples=0)
        theirs = skdim.id.TwoNN(discard_fraction=0.1).fit(points).dimension_
        assert ours.dropped_ties == [0] and ours.dropped_duplicates == [0]
        assert ours.mean == pytest.approx(theirs, rel=1e-9)
        # the same (r1, r2) distance data: exact
        cache = nearest_neighbours(torch.tensor(points), neighbours=2)
        theirs_same = skdim.id.TwoNN(discard_fraction=0.1, dist=True).fit(cache.distances).dimension_
        assert ours.mean == pytest.approx(theirs_same, rel=1e-12)


def test_scikit_dimension_differs_on_duplicated_rows_where_measures_md_wins() -> None:
    points = with_duplicates(300, 5, copies=40, seed=12)
    ours = intrinsic_dimension(torch.tensor(points), resamples=0)
    expected = reference_twonn(brute_force_distances(points))
    with pytest.warns(UserWarning, match="duplicate"):
        theirs = skdim.id.TwoNN(discard_fraction=0.1).fit(points).dimension_
    assert ours.dropped_ties[0] > 0  # points whose nearest neighbour has a twin: r1 = r2
    assert ours.mean == pytest.approx(expected, rel=1e-12)
    assert abs(ours.mean - theirs) > 0.05  # skdim keeps the r1 = r2 points (mu = 1)


# -- the measure functions on a stand-in context ------------------------------------------------------------


@dataclass
class FakeContext:
    """Stands in for gscore.measures.context.MeasureContext: one activations object per probe key."""

    activations_object: Activations
    seed: int = 0
    device: torch.device = torch.device("cpu")
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    cache: dict[Any, Any] = field(default_factory=dict)

    def activations(self, split: str, samples: int | None, seed: int) -> Activations:
        self.calls.append((split, samples, seed))
        return self.activations_object


def make_activations(last: torch.Tensor | None, stages: list[tuple[str, torch.Tensor]]) -> Activations:
    n = (last if last is not None else stages[0][1]).shape[0]
    return Activations(
        pre=torch.empty(n, 0),
        layer_of=torch.empty(0, dtype=torch.int64),
        layer_names=[],
        last_linear_input=last,
        last_linear_name=None if last is None else "fc",
        stage_outputs=stages,
    )


PARAMS = {"resamples": 4, "fraction": 0.9, "samples": None, "split": "test", "seed": 1}


def test_measures_values_meta_and_shared_estimates() -> None:
    low = torch.tensor(subspace_points(300, 3, 32, seed=13), dtype=torch.float32)
    high = torch.tensor(subspace_points(300, 9, 64, seed=14), dtype=torch.float32)
    ctx = FakeContext(make_activations(low, [("stem.relu", high), ("layer.relu", low * 2)]))
    expected_low = intrinsic_dimension(low, resamples=4, seed=1).mean
    expected_high = intrinsic_dimension(high, resamples=4, seed=1).mean

    llid = llid_measure(ctx, PARAMS)
    assert isinstance(llid, MeasureOutcome)
    assert llid.value == pytest.approx(expected_low, rel=1e-12)
    assert llid.meta["representation"] == "fc (input)" and llid.meta["split"] == "test"
    assert len(llid.meta["estimates"]) == 4

    pid = pid_measure(ctx, PARAMS)
    assert pid.value == pytest.approx(expected_high, rel=1e-12)
    assert pid.meta["peak_stage"] == "stem.relu"
    assert list(pid.meta["stages"]) == ["stem.relu", "layer.relu", "fc (input)"]
    assert pid.meta["stages"]["fc (input)"]["id"] == pytest.approx(expected_low, rel=1e-12)
    assert pid.meta["stages"]["layer.relu"]["id"] == pytest.approx(expected_low, rel=1e-9)  # scale-free

    ratio = id_ratio_measure(ctx, PARAMS)
    assert ratio.value == pytest.approx(expected_high / expected_low, rel=1e-12)
    assert set(ctx.calls) == {("test", None, 1)}  # the probe key of the parameters (ctx caches its pass)
    assert len(ctx.cache) == 3  # one estimate per representation, shared by the three measures


def test_measures_undefined_without_linear_or_distinct_points() -> None:
    stage = torch.tensor(subspace_points(100, 4, 16, seed=15), dtype=torch.float32)
    no_linear = FakeContext(make_activations(None, [("relu", stage)]))
    with pytest.raises(MeasureUndefined, match="no nn.Linear"):
        llid_measure(no_linear, PARAMS)
    with pytest.raises(MeasureUndefined, match="no nn.Linear"):
        id_ratio_measure(no_linear, PARAMS)
    pid = pid_measure(no_linear, PARAMS)
    assert pid.value == pytest.approx(intrinsic_dimension(stage, resamples=4, seed=1).mean, rel=1e-12)
    assert any("no nn.Linear" in warning for warning in pid.warnings)

    collapsed = FakeContext(make_activations(torch.zeros(100, 10), [("relu", stage)]))
    with pytest.raises(MeasureUndefined, match="LLID of fc \\(input\\).*distinct points"):
        llid_measure(collapsed, PARAMS)
    pid = pid_measure(collapsed, PARAMS)  # the collapsed stage is skipped, with its reason
    assert pid.meta["stages"]["fc (input)"]["id"] is None
    assert pid.meta["peak_stage"] == "relu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    points = torch.tensor(subspace_points(3000, 7, 256, seed=16), dtype=torch.float32)
    on_cpu = intrinsic_dimension(points, resamples=5)
    on_cuda = intrinsic_dimension(points.cuda(), resamples=5)
    np.testing.assert_allclose(on_cuda.estimates, on_cpu.estimates, rtol=1e-10)
