"""Tests of gscore.ranking.kendall: tau-a, granulated Kendall (vs a brute force), orientation, reasons, I/O."""

from __future__ import annotations

import itertools
import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import kendalltau

from gscore.measures.table import orientation
from gscore.ranking.bootstrap import bootstrap_tau, pair_matrices
from gscore.ranking.kendall import (
    GranulatedKendall,
    ModelRecord,
    RankingInputError,
    default_measures,
    format_ranking_table,
    granulated_kendall,
    kendall_tau,
    load_rank_file,
    model_ranking,
    rank_collection,
    select_measures,
    target_values,
)

# ----------------------------------------------------------------------------- brute force references


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def brute_tau(measure: list[float], target: list[float]) -> float:
    n = len(measure)
    total = 0
    for i in range(n):
        for j in range(i + 1, n):
            total += _sign(measure[i] - measure[j]) * _sign(target[i] - target[j])
    return total / (n * (n - 1) / 2)


def _normalized(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def brute_train_accuracy(record: ModelRecord) -> float | None:
    if _finite(record.train_accuracy):
        return record.train_accuracy
    return record.probe_accuracy if _finite(record.probe_accuracy) else None


def brute_counted(record: ModelRecord, measure: str, min_train: float) -> bool:
    """Plain-Python protocol and status: is the model's score usable and is it fitted enough?"""
    status = record.measure_status.get(measure, {"status": "ok"})["status"]
    if status != "ok" or not _finite(record.scores.get(measure)):
        return False
    if min_train > 0:
        train = brute_train_accuracy(record)
        return train is not None and train >= min_train
    return True


def brute_granulated(
    records: list[ModelRecord], measure: str, target: str, min_train: float = 0.0
) -> tuple[dict[str, float | None], dict[str, int], float | None]:
    """Explicit loops: usable models, axes, grouping by the other axes, pairs differing in the axis."""
    measure_sign = orientation(measure)
    usable = []
    for record in records:
        score = record.scores.get(measure)
        test, train = record.test_accuracy, brute_train_accuracy(record)
        if not brute_counted(record, measure, min_train) or not _finite(test):
            continue
        if target == "test_accuracy":
            oriented_target = test
        else:
            if not _finite(train):
                continue
            oriented_target = -(train - test)
        usable.append((record.hyperparameters, measure_sign * score, oriented_target))
    axes: list[str] = []
    for record in records:
        for axis in record.hyperparameters:
            if axis not in axes:
                axes.append(axis)
    psi: dict[str, float | None] = {}
    groups_per_axis: dict[str, int] = {}
    if len(usable) < 2:
        return dict.fromkeys(axes), dict.fromkeys(axes, 0), None
    for axis in axes:
        other_axes = [other for other in axes if other != axis]
        groups: dict[tuple, list] = {}
        for hyperparameters, m, t in usable:
            key = tuple(_normalized(hyperparameters.get(other)) for other in other_axes)
            groups.setdefault(key, []).append((_normalized(hyperparameters.get(axis)), m, t))
        taus = []
        informative = False
        for members in groups.values():
            if len(members) < 2 or len({value for value, _, _ in members}) < 2:
                continue
            n = len(members)
            total = 0
            for i in range(n):
                for j in range(i + 1, n):
                    a_i, m_i, t_i = members[i]
                    a_j, m_j, t_j = members[j]
                    if a_i == a_j:
                        continue
                    target_sign = _sign(t_i - t_j)
                    informative = informative or target_sign != 0
                    total += _sign(m_i - m_j) * target_sign
            taus.append(total / (n * (n - 1) / 2))
        groups_per_axis[axis] = len(taus)
        psi[axis] = sum(taus) / len(taus) if taus and informative else None
    formed = [value for value in psi.values() if value is not None]
    return psi, groups_per_axis, (sum(formed) / len(formed) if formed else None)


def random_collection(seed: int, paired_as_list: bool = False) -> list[ModelRecord]:
    """An incomplete grid with duplicates, a paired axis, missing keys, ties, missing targets and scores."""
    rng = random.Random(seed)
    pairs = [(0.1, 5e-4), (0.01, 0.0)] if paired_as_list else ["0.1/5e-4", "0.01/0"]
    grid = list(itertools.product([32, 64, 128], pairs, ["sgd", "adam"], [0.0, 0.2]))
    chosen = rng.sample(grid, rng.randint(6, len(grid)))
    chosen += [rng.choice(chosen) for _ in range(rng.randint(0, 4))]  # repeated runs
    records = []
    for index, (batch_size, lr_wd, optimizer, dropout) in enumerate(chosen):
        hyperparameters: dict[str, Any] = {"batch_size": batch_size, "lr_wd": lr_wd, "optim": optimizer}
        if rng.random() < 0.8:  # some models lack the dropout axis (value None)
            hyperparameters["dropout"] = dropout
        scores: dict[str, float] = {}
        if rng.random() < 0.85:
            scores["c3"] = float(rng.randint(0, 5))  # ties
        if rng.random() < 0.85:
            scores["random_sharpness"] = rng.uniform(0.0, 3.0)
        if rng.random() < 0.85:
            scores["user_measure"] = float("nan") if rng.random() < 0.1 else rng.gauss(0.0, 1.0)
        status = {}
        if "c3" in scores and rng.random() < 0.1:  # a score whose measure was not "ok" is skipped
            status["c3"] = {"status": rng.choice(["undefined", "failed"]), "reason": "k >= neurons"}
        test = rng.choice([0.6, 0.7, 0.75, 0.8, None]) if rng.random() < 0.9 else None
        train = rng.choice([1.0, 0.995, 0.99, 0.95, 0.8, None])
        probe = rng.choice([None, 0.999, 0.9]) if train is None else rng.choice([None, 0.5])
        records.append(ModelRecord(f"m{index:02d}", hyperparameters, scores, test, train, status, probe))
    rng.shuffle(records)
    return records


def grid_2x2() -> list[ModelRecord]:
    rows = [
        ("a1", 1, "x", 1.0, 0.5),
        ("a2", 2, "x", 2.0, 0.6),
        ("b1", 1, "y", 4.0, 0.7),
        ("b2", 2, "y", 3.0, 0.8),
    ]
    return [ModelRecord(name, {"lr": lr, "bs": bs}, {"c3": m}, t, 1.0) for name, lr, bs, m, t in rows]


# ----------------------------------------------------------------------------- kendall_tau


def test_kendall_tau_matches_scipy_without_ties() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 40):
        measure, target = rng.normal(size=n), rng.normal(size=n)
        expected = kendalltau(measure, target).statistic
        assert kendall_tau(measure, target) == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_matches_double_loop_with_ties() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        measure = rng.integers(0, 4, size=n).astype(float).tolist()
        target = rng.integers(0, 3, size=n).astype(float).tolist()
        assert kendall_tau(measure, target) == pytest.approx(brute_tau(measure, target), abs=1e-12)


def test_kendall_tau_hand_case_with_ties() -> None:
    # pairs: (0,1) tie in t -> 0; (1,2) tie in m -> 0; the other four concordant -> 4/6
    assert kendall_tau([1, 2, 2, 3], [1, 1, 2, 3]) == pytest.approx(4 / 6)
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == -1.0
    assert kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0  # constant measure: 0 by the formula


def test_kendall_tau_near_the_float_maximum_is_exact_and_silent() -> None:
    """1e308 - (-1e308) overflows to inf: the sign is still right, and no RuntimeWarning leaks out."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kendall_tau([1e308, -1e308, 0.0], [1.0, -1.0, 0.0]) == 1.0
        assert kendall_tau([0.5, 0.3, 0.1], [1e308, -1e308, 3.0]) == pytest.approx(1 / 3)


def test_kendall_tau_degenerate_and_invalid() -> None:
    assert kendall_tau([], []) is None
    assert kendall_tau([1.0], [2.0]) is None
    with pytest.raises(RankingInputError):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(RankingInputError):
        kendall_tau([1, float("nan")], [1, 2])


# ----------------------------------------------------------------------------- granulated


@pytest.mark.parametrize("min_train", [0.0, 0.99])
@pytest.mark.parametrize("target", ["test_accuracy", "generalization_gap"])
@pytest.mark.parametrize("paired_as_list", [False, True])
def test_granulated_matches_brute_force_on_random_collections(
    target: str, paired_as_list: bool, min_train: float
) -> None:
    formed_psi = 0
    for seed in range(25):
        records = random_collection(seed, paired_as_list)
        for measure in ("c3", "random_sharpness", "user_measure"):
            result = granulated_kendall(records, measure, target, min_train_accuracy=min_train)
            psi, groups, total = brute_granulated(records, measure, target, min_train)
            assert result.axes == list(psi)
            assert result.groups == groups, (seed, measure)
            for axis, expected in psi.items():
                if expected is None:
                    assert result.psi[axis] is None and axis in result.why, (seed, measure, axis)
                else:
                    assert result.psi[axis] == pytest.approx(expected, abs=1e-12), (seed, measure, axis)
                    formed_psi += 1
            if total is None:
                assert result.total is None and "total" in result.why
            else:
                assert result.total == pytest.approx(total, abs=1e-12)
    assert formed_psi > 40  # the random collections do exercise the formula


def test_granulated_hand_grid() -> None:
    result = granulated_kendall(grid_2x2(), "c3")
    assert isinstance(result, GranulatedKendall)
    # lr varies within bs=x (concordant, +1) and bs=y (discordant, -1);
    # bs varies within lr=1 and within lr=2 (concordant, +1 each)
    assert result.psi == {"lr": 0.0, "bs": 1.0}
    assert result.groups == {"lr": 2, "bs": 2}
    assert result.total == 0.5
    assert result.why == {}


def test_duplicates_share_a_group_and_their_pair_counts_zero() -> None:
    records = [
        ModelRecord("A", {"lr": 1}, {"c3": 1.0}, 0.5),
        ModelRecord("B", {"lr": 1}, {"c3": 2.0}, 0.4),  # repeated run of A's configuration, discordant with A
        ModelRecord("C", {"lr": 2}, {"c3": 3.0}, 0.9),
    ]
    result = granulated_kendall(records, "c3")
    assert result.groups == {"lr": 1}
    assert result.psi["lr"] == pytest.approx(2 / 3)  # A-B same lr -> 0; A-C, B-C concordant
    # an all-duplicate collection has no group
    duplicates = [ModelRecord(name, {"lr": 1}, {"c3": float(k)}, 0.1 * k) for k, name in enumerate("XYZ")]
    assert granulated_kendall(duplicates, "c3").why["lr"] == "no two models differ only in lr"


def test_paired_axis_is_one_axis() -> None:
    records = [
        ModelRecord("p", {"lr_wd": "0.1/5e-4", "bs": 32}, {"c3": 1.0}, 0.6),
        ModelRecord("q", {"lr_wd": "0.01/0", "bs": 32}, {"c3": 2.0}, 0.7),
        ModelRecord("r", {"lr_wd": (0.1, 5e-4), "bs": 64}, {"c3": 2.0}, 0.8),
        ModelRecord("s", {"lr_wd": [0.01, 0.0], "bs": 64}, {"c3": 1.0}, 0.9),
    ]
    result = granulated_kendall(records, "c3")
    assert result.groups == {"lr_wd": 2, "bs": 0}
    assert result.psi["lr_wd"] == pytest.approx(0.0)  # +1 in bs=32, -1 in bs=64
    assert result.why["bs"] == "no two models differ only in bs"


# ----------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("min_train", [0.0, 0.95, 0.99])
def test_rank_collection_tau_and_left_out_match_brute_force(min_train: float) -> None:
    """Underfit models, missing training accuracies (some measured on the probe), skipped statuses."""
    left_out_seen = 0
    for seed in range(25):
        records = random_collection(seed)
        result = rank_collection(records, min_train_accuracy=min_train, n_resamples=0)
        expected_left_out = [
            r.name
            for r in records
            if min_train > 0 and (brute_train_accuracy(r) is None or brute_train_accuracy(r) < min_train)  # type: ignore[operator]
        ]
        assert [m["name"] for m in result["left_out"]] == expected_left_out
        assert result["n_left_out"] == len(expected_left_out)
        left_out_seen += len(expected_left_out)
        for measure, entry in result["measures"].items():
            counted = [
                r for r in records if brute_counted(r, measure, min_train) and _finite(r.test_accuracy)
            ]
            assert entry["n_models"] == len(counted)
            if len(counted) >= 2 and len({r.test_accuracy for r in counted}) > 1:
                sign = orientation(measure)
                expected = brute_tau(
                    [sign * r.scores[measure] for r in counted], [r.test_accuracy for r in counted]
                )
                assert entry["tau"] == pytest.approx(expected, abs=1e-12)
            else:
                assert entry["tau"] is None and "tau" in entry["why"]
            in_coefficients = {row["name"] for row in entry["ranking"] if row["in_coefficients"]}
            assert in_coefficients == {r.name for r in counted}
    if min_train > 0:
        assert left_out_seen > 20


def test_protocol_reasons_and_probe_accuracy() -> None:
    records = [
        ModelRecord("fit", {"lr": 1}, {"c3": 1.0}, 0.9, 1.0),
        ModelRecord("fit2", {"lr": 2}, {"c3": 2.0}, 0.8, None, {}, 0.995),  # measured on the train split
        ModelRecord("under", {"lr": 3}, {"c3": 3.0}, 0.7, 0.79),
        ModelRecord("unknown", {"lr": 4}, {"c3": 4.0}, 0.6),
        ModelRecord("given-wins", {"lr": 5}, {"c3": 5.0}, 0.5, 0.5, {}, 1.0),
    ]
    result = rank_collection(records)
    assert result["min_train_accuracy"] == 0.99 and result["n_left_out"] == 3
    reasons = {m["name"]: m["reason"] for m in result["left_out"]}
    assert reasons["under"] == "training accuracy 0.79 is below min_train_accuracy 0.99"
    assert reasons["unknown"].startswith("training accuracy unknown")
    assert "0.5 is below" in reasons["given-wins"]
    entry = result["measures"]["c3"]
    assert entry["n_models"] == 2 and entry["tau"] == -1.0  # fit (1.0, 0.9) vs fit2 (2.0, 0.8)
    rows = {row["name"]: row for row in entry["ranking"]}
    assert [row["name"] for row in entry["ranking"]] == ["fit2", "fit", "given-wins", "unknown", "under"]
    assert rows["fit2"]["rank"] == 1 and rows["fit2"]["train_accuracy"] == 0.995
    assert rows["under"]["rank"] is None and rows["under"]["reason"] == reasons["under"]
    assert not rows["under"]["in_coefficients"] and rows["under"]["score"] == 3.0
    everyone = rank_collection(records, min_train_accuracy=0)["measures"]["c3"]
    assert everyone["n_models"] == 5 and everyone["tau"] == -1.0
    assert [row["rank"] for row in everyone["ranking"]] == [1, 2, 3, 4, 5]


def test_measure_status_skips_with_the_reason() -> None:
    records = [
        ModelRecord("a", {}, {"c1": 1.0, "c3": 1.0}, 0.5, 1.0),
        ModelRecord(
            "b", {}, {"c3": 2.0}, 0.6, 1.0, {"c1": {"status": "undefined", "reason": "k >= neurons"}}
        ),
        ModelRecord("c", {}, {"c1": 3.0, "c3": 3.0}, 0.7, 1.0, {"c1": {"status": "failed", "reason": None}}),
        ModelRecord("d", {}, {"c1": float("nan"), "c3": 4.0}, 0.8, 1.0),
        ModelRecord("e", {}, {"c1": 2.0, "c3": 5.0}, 0.9, 1.0, {"c1": {"status": "ok", "reason": None}}),
    ]
    entry = rank_collection(records, measures=["c1"])["measures"]["c1"]
    assert entry["n_models"] == 2 and entry["n_skipped"] == 3 and entry["tau"] == 1.0  # a, e
    rows = {row["name"]: row for row in entry["ranking"]}
    assert [row["name"] for row in entry["ranking"]] == ["e", "a", "b", "c", "d"]
    assert rows["b"]["reason"] == "c1 undefined: k >= neurons" and rows["b"]["rank"] is None
    assert rows["c"]["reason"] == "c1 failed: no reason given" and rows["c"]["score"] is None
    assert rows["d"]["reason"] == "c1 score is nan"


def test_ties_share_a_rank_and_models_without_target_are_ranked() -> None:
    records = [
        ModelRecord("d", {}, {"c3": 2.0, "random_sharpness": 0.5}, 0.5, 1.0),
        ModelRecord("b", {}, {"c3": 2.0}, None, 1.0),
        ModelRecord("a", {}, {"c3": 3.0, "random_sharpness": 0.1}, 0.6, 1.0),
        ModelRecord("z", {}, {}, 0.7, 1.0),
        ModelRecord("c", {}, {"c3": float("nan"), "random_sharpness": 0.9}, 0.8, 1.0),
        ModelRecord("e", {}, {"c3": -1.0}, 0.9, 1.0),
    ]
    rows = model_ranking(records, "c3")
    assert [(r["rank"], r["name"]) for r in rows] == [
        (1, "a"),
        (2, "b"),
        (2, "d"),
        (4, "e"),
        (None, "c"),
        (None, "z"),
    ]
    assert rows[1]["reason"] == "no test_accuracy (ranked, not counted in the coefficients)"
    assert not rows[1]["in_coefficients"] and rows[2]["in_coefficients"]
    sharp = model_ranking(records, "random_sharpness")  # lower is better
    assert [r["name"] for r in sharp] == ["a", "d", "c", "b", "e", "z"]
    assert [r["rank"] for r in sharp] == [1, 2, 3, None, None, None]


# ----------------------------------------------------------------------------- intervals


def brute_resample_tau(measure: list[float], target: list[float], counts: np.ndarray) -> float:
    """tau over the expanded resample, pairs of two copies of one model not counted."""
    members = [i for i, count in enumerate(counts) for _ in range(int(count))]
    total, pairs = 0, 0
    for p, q in itertools.combinations(range(len(members)), 2):
        i, j = members[p], members[q]
        if i == j:
            continue
        pairs += 1
        total += _sign(measure[i] - measure[j]) * _sign(target[i] - target[j])
    return total / pairs


def test_bootstrap_tau_matches_an_expanded_resample() -> None:
    rng = np.random.default_rng(3)
    measure, target = rng.integers(0, 4, 9).astype(float), rng.integers(0, 5, 9).astype(float)
    concordance, differs = pair_matrices(measure, target)
    taus = bootstrap_tau(concordance, differs, 30, np.random.default_rng(7))
    counts = np.random.default_rng(7).multinomial(9, np.full(9, 1 / 9), size=30)
    for tau, row in zip(taus, counts, strict=True):
        assert tau == pytest.approx(brute_resample_tau(measure.tolist(), target.tolist(), row), abs=1e-12)


def _noisy_collection(n_models: int, seed: int) -> list[ModelRecord]:
    """A full grid over (a, b, run) whose c3 follows test accuracy with noise."""
    rng = random.Random(seed)
    records = []
    for index in range(n_models):
        test = rng.uniform(0.5, 0.9)
        hyperparameters = {"a": index % 4, "b": (index // 4) % 5, "run": index // 20}
        records.append(ModelRecord(f"m{index}", hyperparameters, {"c3": test + rng.gauss(0, 0.1)}, test, 1.0))
    return records


def test_intervals_reproducible_contain_the_estimate_and_shrink() -> None:
    small, large = _noisy_collection(20, 0), _noisy_collection(100, 0)
    first = rank_collection(small, seed=5)["measures"]["c3"]
    assert first == rank_collection(small, seed=5)["measures"]["c3"]
    other_seed = rank_collection(small, seed=6)["measures"]["c3"]
    assert (other_seed["ci_low"], other_seed["ci_high"]) != (first["ci_low"], first["ci_high"])

    def width(entry: dict[str, Any], key: str) -> float:
        return entry["ci_high"][key] - entry["ci_low"][key]

    for records in (small, large):
        entry = rank_collection(records)["measures"]["c3"]
        for key in ("tau", "a", "b", "total"):
            value = entry["tau"] if key == "tau" else entry["psi"][key]
            assert entry["ci_low"][key] <= value <= entry["ci_high"][key], (len(records), key)
    small_entry, large_entry = (
        rank_collection(small)["measures"]["c3"],
        rank_collection(large)["measures"]["c3"],
    )
    for key in ("tau", "a", "b", "total"):
        assert width(large_entry, key) < 0.75 * width(small_entry, key), key
    # a higher level gives a wider interval; n_resamples=0 gives none
    assert width(rank_collection(small, level=0.99)["measures"]["c3"], "tau") >= width(first, "tau")
    none = rank_collection(small, n_resamples=0)["measures"]["c3"]
    assert set(none["ci_low"].values()) == set(none["ci_high"].values()) == {None}


def test_perfect_tau_has_a_degenerate_interval_at_one() -> None:
    records = [ModelRecord(f"m{k}", {}, {"c3": float(k)}, 0.1 * k, 1.0) for k in range(6)]
    entry = rank_collection(records)["measures"]["c3"]
    assert entry["tau"] == 1.0 and entry["ci_low"]["tau"] == entry["ci_high"]["tau"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_train_accuracy": 1.5}, "min_train_accuracy"),
        ({"level": 1.0}, "level"),
        ({"n_resamples": -1}, "n_resamples"),
        ({"seed": -2}, "seed"),
    ],
)
def test_invalid_protocol_parameters(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RankingInputError, match=fragment):
        rank_collection(grid_2x2(), **kwargs)


# ----------------------------------------------------------------------------- orientation, targets


def test_sharpness_orientation_reverses_tau_psi_and_ranking() -> None:
    records = random_collection(3)
    for record in records:  # the same values under a +1 and a -1 measure (continuous: no ties)
        value = record.scores.get("random_sharpness")
        record.scores = {} if value is None else {"c3": value, "random_sharpness": value}
        record.measure_status = {}
    assert orientation("random_sharpness") == -1
    result = rank_collection(records, measures=["c3", "random_sharpness"], min_train_accuracy=0)["measures"]
    plus, minus = result["c3"], result["random_sharpness"]
    assert (plus["orientation"], minus["orientation"]) == (1, -1)
    assert plus["tau"] is not None and minus["tau"] == pytest.approx(-plus["tau"])
    assert any(value is not None for value in plus["psi"].values())
    for key, value in plus["psi"].items():
        assert (minus["psi"][key] is None) if value is None else minus["psi"][key] == pytest.approx(-value)
    n_scored = sum("c3" in record.scores for record in records)
    names_plus = [row["name"] for row in plus["ranking"]]
    names_minus = [row["name"] for row in minus["ranking"]]
    assert names_minus[:n_scored] == names_plus[:n_scored][::-1]
    assert names_minus[n_scored:] == names_plus[n_scored:]


def test_generalization_gap_target() -> None:
    records = random_collection(5)
    for record in records:
        record.probe_accuracy = None
    assert target_values(records[:1], "generalization_gap")[0] == (
        None
        if records[0].train_accuracy is None or records[0].test_accuracy is None
        else records[0].train_accuracy - records[0].test_accuracy
    )
    usable = [
        r
        for r in records
        if r.test_accuracy is not None and r.train_accuracy is not None and brute_counted(r, "c3", 0)
    ]
    expected = brute_tau(
        [r.scores["c3"] for r in usable], [r.test_accuracy - r.train_accuracy for r in usable]
    )
    result = rank_collection(records, target="generalization_gap", measures=["c3"], min_train_accuracy=0)
    assert result["target"] == "generalization_gap"
    assert result["measures"]["c3"]["n_models"] == len(usable)
    assert result["measures"]["c3"]["tau"] == pytest.approx(expected)
    # with train accuracy 1 everywhere, the gap target ranks exactly like test accuracy
    for record in records:
        record.train_accuracy = 1.0
    by_gap = rank_collection(records, target="generalization_gap")["measures"]
    by_test = rank_collection(records, target="test_accuracy")["measures"]
    for measure in by_test:
        assert by_gap[measure]["tau"] == pytest.approx(by_test[measure]["tau"])
        assert by_gap[measure]["psi"] == pytest.approx(by_test[measure]["psi"])


def test_unknown_target_is_an_error() -> None:
    with pytest.raises(RankingInputError, match="unknown target"):
        rank_collection(grid_2x2(), target="accuracy")


# ----------------------------------------------------------------------------- reasons, shape


def test_result_shape_and_reasons_for_every_null() -> None:
    for seed in range(10):
        result = rank_collection(random_collection(seed), n_resamples=50)
        json.dumps(result, allow_nan=False)  # no NaN anywhere
        assert set(result) == {
            "target",
            "n_models",
            "n_models_with_target",
            "min_train_accuracy",
            "n_left_out",
            "left_out",
            "bootstrap",
            "axes",
            "measures",
        }
        assert result["bootstrap"] == {"level": 0.95, "n_resamples": 50, "seed": 0}
        assert result["axes"][:3] == ["batch_size", "lr_wd", "optim"]  # order of first appearance
        assert set(result["axes"]) <= {"batch_size", "lr_wd", "optim", "dropout"}
        for entry in result["measures"].values():
            assert set(entry) == {
                "orientation",
                "tau",
                "n_models",
                "n_skipped",
                "psi",
                "groups",
                "ci_low",
                "ci_high",
                "why",
                "ranking",
            }
            assert list(entry["psi"]) == [*result["axes"], "total"]
            assert list(entry["groups"]) == result["axes"]
            assert list(entry["ci_low"]) == list(entry["ci_high"]) == ["tau", *result["axes"], "total"]
            nulls = {key for key, value in entry["psi"].items() if value is None}
            nulls |= {"tau"} if entry["tau"] is None else set()
            assert set(entry["why"]) == nulls
            for key in nulls:
                assert entry["ci_low"][key] is None and entry["ci_high"][key] is None
            names = sorted(row["name"] for row in entry["ranking"])
            assert names == sorted(record.name for record in random_collection(seed))


def test_reasons_instead_of_nan() -> None:
    constant = [ModelRecord(f"m{k}", {"bs": k}, {"c3": float(k)}, 0.7, 1.0) for k in range(4)]
    entry = rank_collection(constant)["measures"]["c3"]
    assert entry["tau"] is None and entry["why"]["tau"] == "all test_accuracy values are equal (4 models)"
    assert entry["psi"]["bs"] is None and "does not change" in entry["why"]["bs"]
    assert entry["psi"]["total"] is None and "total" in entry["why"]

    lonely = [ModelRecord("a", {"bs": 1}, {"c3": 1.0}, 0.5, 1.0), ModelRecord("b", {"bs": 2}, {"c3": 2.0})]
    result = rank_collection(lonely, min_train_accuracy=0)
    entry = result["measures"]["c3"]
    assert result["n_models_with_target"] == 1 and entry["n_models"] == 1
    assert entry["why"]["tau"] == "fewer than 2 models have test_accuracy, a usable c3 score (1)"
    assert [row["name"] for row in entry["ranking"]] == ["b", "a"]  # models without the target are ranked
    fitted = rank_collection(lonely)["measures"]["c3"]
    assert fitted["why"]["tau"].endswith("a usable c3 score and training accuracy >= 0.99 (1)")

    no_axes = [ModelRecord(f"m{k}", {}, {"c3": float(k)}, 0.1 * k, 1.0) for k in range(3)]
    entry = rank_collection(no_axes)["measures"]["c3"]
    assert entry["tau"] == 1.0 and entry["psi"] == {"total": None}
    assert entry["why"] == {"total": "the models have no hyperparameters"}

    missing_measure = rank_collection(grid_2x2(), measures=["c1"])["measures"]["c1"]
    assert missing_measure["n_models"] == 0 and missing_measure["tau"] is None
    assert [row["name"] for row in missing_measure["ranking"]] == ["a1", "a2", "b1", "b2"]
    assert {row["reason"] for row in missing_measure["ranking"]} == {"no c1 score"}


def test_default_measures_order() -> None:
    records = [
        ModelRecord("a", {}, {"zzz": 1.0, "c3": 1.0}),
        ModelRecord(
            "b", {}, {"random_sharpness": 1.0, "aaa": 2.0}, measure_status={"c1": {"status": "failed"}}
        ),
    ]
    assert default_measures(records) == ["c1", "c3", "random_sharpness", "aaa", "zzz"]
    assert list(rank_collection(records)["measures"]) == ["c1", "c3", "random_sharpness", "aaa", "zzz"]


def test_invalid_records() -> None:
    with pytest.raises(RankingInputError, match="unique"):
        rank_collection([ModelRecord("a", {}, {}), ModelRecord("a", {}, {})])
    with pytest.raises(RankingInputError, match="reserved"):
        rank_collection([ModelRecord("a", {"total": 1}, {})])
    with pytest.raises(RankingInputError, match="hyperparameters.bs"):
        granulated_kendall([ModelRecord("a", {"bs": {"x": 1}}, {"c3": 1.0})], "c3")


# ----------------------------------------------------------------------------- files


def _write(tmp_path: Path, content: Any, raw: bool = False) -> Path:
    path = tmp_path / "models.json"
    path.write_text(content if raw else json.dumps(content))
    return path


def test_load_rank_file_round_trip(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[{"name": "m1", "hyperparameters": {"lr_wd": [0.1, 0.0005], "bs": 32}, "test_accuracy": 0.8,'
        ' "train_accuracy": 1.0, "scores": {"c3": 1.5, "c1": null},'
        ' "status": {"c1": {"status": "undefined", "reason": "k >= neurons"}}},'
        ' {"name": "m2", "test_accuracy": null, "scores": {"c4": NaN},'
        ' "meta": {"split": "train", "probe_accuracy": 0.97}},'
        ' {"name": "m3", "meta": {"split": "test", "probe_accuracy": 0.9}}]',
        raw=True,
    )
    records = load_rank_file(path)
    assert records[0] == ModelRecord(
        "m1",
        {"lr_wd": (0.1, 0.0005), "bs": 32},
        {"c3": 1.5},
        0.8,
        1.0,
        {"c1": {"status": "undefined", "reason": "k >= neurons"}},
    )
    assert records[1].name == "m2" and math.isnan(records[1].scores["c4"])
    assert (records[1].test_accuracy, records[1].probe_accuracy) == (None, 0.97)
    assert records[2].probe_accuracy is None  # accuracy on the test split is not a training accuracy


def test_load_rank_file_reads_the_experiments_models_json(tmp_path: Path) -> None:
    """experiments/digits_zoo.py's models.json (checkpoint, arch, epochs, seconds) is a rank file."""
    stored = json.loads(
        (Path(__file__).parents[2] / "experiments/results/digits_zoo_models.json").read_text()
    )
    records = load_rank_file(_write(tmp_path, stored))
    assert [r.name for r in records] == [item["name"] for item in stored]
    assert records[0].train_accuracy == stored[0]["train_accuracy"]


@pytest.mark.parametrize(
    ("content", "item", "field", "fragment"),
    [
        ({"name": "m"}, None, None, "expected a JSON list"),
        (["m"], 0, None, "item 0: expected an object"),
        ([{"scores": {}}], 0, "name", "field 'name'"),
        (
            [{"name": "a"}, {"name": "b", "scores": {"c3": "high"}}],
            1,
            "scores.c3",
            "'scores.c3' must be a number",
        ),
        ([{"name": "a", "test_accuracy": True}], 0, "test_accuracy", "'test_accuracy' must be a number"),
        ([{"name": "a", "hyperparameters": [1, 2]}], 0, "hyperparameters", "must be an object"),
        ([{"name": "a", "hyperparameters": {"bs": {"v": 1}}}], 0, "hyperparameters.bs", "hyperparameters.bs"),
        ([{"name": "a", "hyperparameters": {"tau": 1}}], 0, "hyperparameters.tau", "reserved"),
        ([{"name": "a", "score": {}}], 0, "score", "unknown field"),
        ([{"name": "a"}, {"name": "a"}], 1, "name", "already used by item 0"),
        ([{"name": "a", "status": {"c1": {"status": "bad"}}}], 0, "status.c1", "'status.c1' must be"),
        ([{"name": "a", "status": {"c1": {"status": "ok", "reason": 3}}}], 0, "status.c1", "reason"),
    ],
)
def test_load_rank_file_errors(
    tmp_path: Path, content: Any, item: int | None, field: str | None, fragment: str
) -> None:
    with pytest.raises(RankingInputError) as info:
        load_rank_file(_write(tmp_path, content))
    assert fragment in info.value.detail
    assert (info.value.item, info.value.field) == (item, field)
    assert info.value.to_dict()["type"] == "invalid-collection"


def test_load_rank_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(RankingInputError, match="not valid JSON.*line 1"):
        load_rank_file(_write(tmp_path, "[{", raw=True))
    with pytest.raises(RankingInputError, match="cannot read"):
        load_rank_file(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- table


def test_format_ranking_table() -> None:
    records = grid_2x2() + [ModelRecord("odd", {"lr": 3, "bs": "z"}, {"random_sharpness": 1.0}, 0.1, 1.0)]
    result = rank_collection(records, measures=["c3", "random_sharpness"], n_resamples=0)
    lines = format_ranking_table(result).splitlines()
    assert lines[1].split() == ["measure", "lr", "bs", "total", "tau", "n"]
    assert lines[3].split() == ["c3", "0.00", "1.00", "0.50", "0.67", "4"]
    assert lines[4].split() == ["random_sharpness", "n/a[1]", "n/a[1]", "n/a[1]", "n/a[1]", "1"]
    table = "\n".join(lines)
    assert "[1] fewer than 2 models have test_accuracy, a usable random_sharpness score and training" in table
    assert "Protocol: 5 of 5 models reached training accuracy >= 0.99; 0 left out" in table
    assert "Groups per axis (c3): lr 2, bs 2" in table
    assert "nan" not in table.lower()


def test_format_ranking_table_shows_intervals() -> None:
    result = rank_collection(grid_2x2(), seed=1)
    entry = result["measures"]["c3"]
    expected = f"0.67 [{entry['ci_low']['tau']:.2f}, {entry['ci_high']['tau']:.2f}]"
    table = format_ranking_table(result)
    assert expected in table and "1.00 [1.00, 1.00]" in table  # bs: both groups +1
    assert "Intervals: 95% bootstrap, 1000 resamples" in table


def test_families_and_all_stand_for_the_members_a_collection_has() -> None:
    records = [
        ModelRecord(
            f"m{i}",
            {"lr": i},
            {"c3": float(i), "margin": float(i), "fro_over_spec": 1.0 - i, "mine": 0.0},
            0.5 + i / 10,
            1.0,
        )
        for i in range(3)
    ]
    assert select_measures(records, ["norm", "c3"]) == (["margin", "fro_over_spec", "c3"], [])
    assert select_measures(records, ["all"]) == (["c3", "margin", "fro_over_spec", "mine"], [])
    assert select_measures(records, ["c3", "c1", "spectral", "norm"]) == (
        ["c3", "c1", "margin", "fro_over_spec"],
        ["c1", "spectral"],
    )
    by_family = rank_collection(records, measures=["norm"], n_resamples=0)
    by_name = rank_collection(records, measures=["margin", "fro_over_spec"], n_resamples=0)
    assert by_family == by_name and by_family["measures"]["margin"]["tau"] == 1.0
    with pytest.raises(RankingInputError, match="more than once"):
        rank_collection(records, measures=["c3", "c3"])
