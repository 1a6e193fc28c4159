"""Tests of gscore.ranking: tau-a, granulated Kendall (vs a brute force), orientation, reasons, I/O."""

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

from gscore.measure_registry import orientation
from gscore.ranking import (
    GranulatedKendall,
    ModelRecord,
    RankingInputError,
    default_measures,
    format_ranking_table,
    granulated_kendall,
    kendall_tau,
    load_rank_file,
    rank_collection,
    rank_models,
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


def brute_granulated(
    records: list[ModelRecord], measure: str, target: str
) -> tuple[dict[str, float | None], dict[str, int], float | None]:
    """Explicit loops: usable models, axes, grouping by the other axes, pairs differing in the axis."""
    measure_sign = orientation(measure)
    usable = []
    for record in records:
        score = record.scores.get(measure)
        test, train = record.test_accuracy, record.train_accuracy
        if not _finite(score) or not _finite(test):
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
        test = rng.choice([0.6, 0.7, 0.75, 0.8, None]) if rng.random() < 0.9 else None
        train = rng.choice([1.0, 0.99, 0.95, None])
        records.append(ModelRecord(f"m{index:02d}", hyperparameters, scores, test, train))
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


@pytest.mark.parametrize("target", ["test_accuracy", "generalization_gap"])
@pytest.mark.parametrize("paired_as_list", [False, True])
def test_granulated_matches_brute_force_on_random_collections(target: str, paired_as_list: bool) -> None:
    formed_psi = 0
    for seed in range(25):
        records = random_collection(seed, paired_as_list)
        for measure in ("c3", "random_sharpness", "user_measure"):
            result = granulated_kendall(records, measure, target)
            psi, groups, total = brute_granulated(records, measure, target)
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
    assert formed_psi > 100  # the random collections do exercise the formula


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


# ----------------------------------------------------------------------------- orientation, targets


def test_sharpness_orientation_reverses_tau_psi_and_ranking() -> None:
    records = random_collection(3)
    for record in records:  # the same values under a +1 and a -1 measure (continuous: no ties)
        value = record.scores.get("random_sharpness")
        record.scores = {} if value is None else {"c3": value, "random_sharpness": value}
    assert orientation("random_sharpness") == -1
    result = rank_collection(records, measures=["c3", "random_sharpness"])["measures"]
    plus, minus = result["c3"], result["random_sharpness"]
    assert (plus["orientation"], minus["orientation"]) == (1, -1)
    assert plus["tau"] is not None and minus["tau"] == pytest.approx(-plus["tau"])
    assert any(value is not None for value in plus["psi"].values())
    for key, value in plus["psi"].items():
        assert (minus["psi"][key] is None) if value is None else minus["psi"][key] == pytest.approx(-value)
    n_scored = sum("c3" in record.scores for record in records)
    assert minus["ranking"][:n_scored] == plus["ranking"][:n_scored][::-1]
    assert minus["ranking"][n_scored:] == plus["ranking"][n_scored:]


def test_generalization_gap_target() -> None:
    records = random_collection(5)
    assert target_values(records[:1], "generalization_gap")[0] == (
        None
        if records[0].train_accuracy is None or records[0].test_accuracy is None
        else records[0].train_accuracy - records[0].test_accuracy
    )
    usable = [
        r
        for r in records
        if r.test_accuracy is not None and r.train_accuracy is not None and "c3" in r.scores
    ]
    expected = brute_tau(
        [r.scores["c3"] for r in usable], [r.test_accuracy - r.train_accuracy for r in usable]
    )
    result = rank_collection(records, target="generalization_gap", measures=["c3"])
    assert result["target"] == "generalization_gap"
    assert result["measures"]["c3"]["n"] == len(usable)
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
        result = rank_collection(random_collection(seed))
        json.dumps(result, allow_nan=False)  # no NaN anywhere
        assert set(result) == {"target", "n_models", "n_models_with_target", "axes", "measures"}
        assert result["axes"][:3] == ["batch_size", "lr_wd", "optim"]  # order of first appearance
        assert set(result["axes"]) <= {"batch_size", "lr_wd", "optim", "dropout"}
        for entry in result["measures"].values():
            assert set(entry) == {"orientation", "tau", "n", "psi", "groups", "why", "ranking"}
            assert list(entry["psi"]) == [*result["axes"], "total"]
            assert list(entry["groups"]) == result["axes"]
            nulls = {key for key, value in entry["psi"].items() if value is None}
            nulls |= {"tau"} if entry["tau"] is None else set()
            assert set(entry["why"]) == nulls
            assert sorted(entry["ranking"]) == sorted(record.name for record in random_collection(seed))


def test_reasons_instead_of_nan() -> None:
    constant = [ModelRecord(f"m{k}", {"bs": k}, {"c3": float(k)}, 0.7) for k in range(4)]
    entry = rank_collection(constant)["measures"]["c3"]
    assert entry["tau"] is None and entry["why"]["tau"] == "all test_accuracy values are equal (4 models)"
    assert entry["psi"]["bs"] is None and "does not change" in entry["why"]["bs"]
    assert entry["psi"]["total"] is None and "total" in entry["why"]

    lonely = [ModelRecord("a", {"bs": 1}, {"c3": 1.0}, 0.5), ModelRecord("b", {"bs": 2}, {"c3": 2.0}, None)]
    result = rank_collection(lonely)
    entry = result["measures"]["c3"]
    assert result["n_models_with_target"] == 1 and entry["n"] == 1
    assert entry["tau"] is None and entry["why"]["tau"].startswith("fewer than 2 models")
    assert entry["ranking"] == ["b", "a"]  # models without the target are still ranked

    no_axes = [ModelRecord(f"m{k}", {}, {"c3": float(k)}, 0.1 * k) for k in range(3)]
    entry = rank_collection(no_axes)["measures"]["c3"]
    assert entry["tau"] == 1.0 and entry["psi"] == {"total": None}
    assert entry["why"] == {"total": "the models have no hyperparameters"}

    missing_measure = rank_collection(grid_2x2(), measures=["c1"])["measures"]["c1"]
    assert missing_measure["n"] == 0 and missing_measure["tau"] is None
    assert missing_measure["ranking"] == ["a1", "a2", "b1", "b2"]


def test_default_measures_order() -> None:
    records = [
        ModelRecord("a", {}, {"zzz": 1.0, "c3": 1.0}),
        ModelRecord("b", {}, {"random_sharpness": 1.0, "aaa": 2.0, "c1": 0.0}),
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


# ----------------------------------------------------------------------------- ranking


def test_rank_models_order() -> None:
    records = [
        ModelRecord("d", {}, {"c3": 2.0, "random_sharpness": 0.5}),
        ModelRecord("b", {}, {"c3": 2.0}),
        ModelRecord("a", {}, {"c3": 3.0, "random_sharpness": 0.1}),
        ModelRecord("z", {}, {}),
        ModelRecord("c", {}, {"c3": float("nan"), "random_sharpness": 0.9}),
        ModelRecord("e", {}, {"c3": -1.0}),
    ]
    assert rank_models(records, "c3") == ["a", "b", "d", "e", "c", "z"]  # tie b/d by name; missing last
    assert rank_models(records, "random_sharpness") == ["a", "d", "c", "b", "e", "z"]  # lower is better


# ----------------------------------------------------------------------------- files


def _write(tmp_path: Path, content: Any, raw: bool = False) -> Path:
    path = tmp_path / "models.json"
    path.write_text(content if raw else json.dumps(content))
    return path


def test_load_rank_file_round_trip(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[{"name": "m1", "hyperparameters": {"lr_wd": [0.1, 0.0005], "bs": 32}, "test_accuracy": 0.8,'
        ' "train_accuracy": 1.0, "scores": {"c3": 1.5, "c4": NaN, "c1": null}},'
        ' {"name": "m2", "test_accuracy": null}]',
        raw=True,
    )
    records = load_rank_file(path)
    assert records[0] == ModelRecord("m1", {"lr_wd": (0.1, 0.0005), "bs": 32}, {"c3": 1.5}, 0.8, 1.0)
    assert records[1] == ModelRecord("m2", {}, {}, None, None)


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
    records = grid_2x2() + [ModelRecord("odd", {"lr": 3, "bs": "z"}, {"random_sharpness": 1.0}, 0.1)]
    result = rank_collection(records, measures=["c3", "random_sharpness"])
    table = format_ranking_table(result)
    lines = table.splitlines()
    assert lines[1].split() == ["measure", "lr", "bs", "total", "tau"]
    assert lines[3].split() == ["c3", "0.00", "1.00", "0.50", "0.67"]
    assert lines[4].split() == ["random_sharpness", "n/a[1]", "n/a[1]", "n/a[1]", "n/a[1]"]
    assert "[1] fewer than 2 models have both test_accuracy and a random_sharpness score (1)" in table
    assert "nan" not in table.lower()
