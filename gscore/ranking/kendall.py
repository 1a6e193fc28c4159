"""Rank models by a measure and score the measure with Kendall coefficients (docs/measures.md, "Rankings and Kendall coefficients").

Plain functions on plain records (numpy only; no HTTP, no Celery). The CLI (``gscore rank-file FILE.json``)
and the service return ``rank_collection``'s dict as is.

Conventions, including those docs/measures.md leaves open:

- The protocol (the intraclass-clustering paper, section 3 and appendix A: models trained to about 100% training accuracy).
  ``min_train_accuracy`` (default 0.99; 0 turns it off): a model whose training accuracy is below it,
  or unknown while it is on, is listed with the reason but left out of every tau and psi. The training
  accuracy is the client-given one, else the one the scoring job measured on the training split.
- Per-measure status. A model whose status for a measure is not ``ok``, or whose score is missing or
  non-finite, is skipped for that measure (not ranked, not counted) with the reason.
- Orientation. Each measure is multiplied by ``measure_registry.orientation(name)`` (+1 for c1-c4 and
  unknown names, -1 for sharpness). The target is ``test_accuracy`` (default) or
  ``generalization_gap`` = train - test accuracy, which is multiplied by -1 (a smaller gap is better),
  so a positive coefficient always means "the measure predicts good generalization".
- Kendall's tau is Jiang's tau-a: ``sum_{i<j} sign(m_i - m_j) sign(t_i - t_j) / (n(n-1)/2)``; ties in
  either value count 0 but stay in the denominator.
- Missing target. A model without the target value is still ranked (that is model selection: its test
  accuracy is unknown) but left out of every coefficient.
- Granulated Kendall. Axes are the union of the models' hyperparameter keys, in order of first
  appearance; a model lacking a key has the value None on that axis. For an axis a, a group is a set
  of counted models that have identical values on every other axis; it counts when it has at least two
  distinct values of a. Models identical on *all* axes (repeated runs) sit in the same group; a pair of
  models with the same value of a counts 0 in that group's tau (like a tie), so without duplicates the
  group's coefficient is exactly tau-a over the group. ``psi_a`` = mean of the group coefficients;
  ``total`` = mean of the formed ``psi_a``.
- Paired hyperparameters (the paper's (learning rate, weight decay) pairs) are one axis whose value
  is the pair: a string such as ``"0.1/5e-4"`` or a list/tuple (``[0.1, 5e-4]``, stored as a tuple).
- Intervals: seeded percentile bootstrap (``gscore.ranking.bootstrap``): tau resamples models, psi_a
  resamples the groups of axis a, the total averages the axes' resamples. Defaults: level 0.95, 1,000
  resamples, seed 0; ``n_resamples=0`` gives no intervals.
- No NaN is ever reported. A coefficient that cannot be formed is ``None`` with a reason: fewer than
  2 usable models, no group for an axis, or no counted pair with two different target values (a
  constant target carries no order; the formula would give 0, which would read as "uninformative
  measure"). A constant *measure* is a property of the measure and gives tau = 0 by the formula.
- Axis names ``"total"`` and ``"tau"`` are reserved (they label the result's columns).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gscore.measures.table import FAMILIES, MEASURES, family_members, orientation
from gscore.ranking.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    bootstrap_mean,
    bootstrap_tau,
    mean_over_axes,
    pair_matrices,
    percentile_interval,
)
from gscore.ranking.output import format_ranking_table
from gscore.ranking.records import (
    RESERVED_AXIS_NAMES,
    ModelRecord,
    RankingInputError,
    finite_or_none,
    hashable_value,
    load_rank_file,
    measure_skip_reason,
    parse_rank_records,
    training_accuracy,
    validate_records,
)

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_MIN_TRAIN_ACCURACY",
    "DEFAULT_RESAMPLES",
    "RESERVED_AXIS_NAMES",
    "TARGETS",
    "GranulatedKendall",
    "ModelRecord",
    "RankingInputError",
    "collection_axes",
    "default_measures",
    "select_measures",
    "finite_or_none",
    "format_ranking_table",
    "granulated_kendall",
    "kendall_tau",
    "load_rank_file",
    "model_ranking",
    "parse_rank_records",
    "protocol_reason",
    "rank_collection",
    "target_values",
]

TARGETS: tuple[str, ...] = ("test_accuracy", "generalization_gap")
TARGET_ORIENTATION: dict[str, int] = {"test_accuracy": 1, "generalization_gap": -1}
DEFAULT_MIN_TRAIN_ACCURACY = 0.99


@dataclass
class GranulatedKendall:
    """Granulated Kendall coefficients of one measure; ``None`` entries have a reason in ``why``."""

    axes: list[str]
    psi: dict[str, float | None]  # axis -> mean tau over its groups
    total: float | None  # mean of the formed psi values
    groups: dict[str, int]  # axis -> number of groups that vary it
    why: dict[str, str] = field(default_factory=dict)  # axis or "total" -> why it is None
    group_taus: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # axis -> (groups,)
    group_informative: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # axis -> (groups,)


# ----------------------------------------------------------------------------- values


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise RankingInputError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def _check_protocol(min_train_accuracy: float, level: float, n_resamples: int, seed: int) -> None:
    if not 0.0 <= min_train_accuracy <= 1.0:
        raise RankingInputError(
            f"min_train_accuracy must be in [0, 1] (0 turns it off), got {min_train_accuracy}"
        )
    if not 0.0 < level < 1.0:
        raise RankingInputError(f"the interval level must be in (0, 1), e.g. 0.95, got {level}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 0:
        raise RankingInputError(
            f"n_resamples must be a whole number >= 0 (0: no intervals), got {n_resamples!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RankingInputError(f"seed must be a whole number >= 0, got {seed!r}")


def target_values(records: Sequence[ModelRecord], target: str = "test_accuracy") -> list[float | None]:
    """Raw target value per model (not oriented): test accuracy, or train - test accuracy; None if missing.

    The training accuracy is ``ranking_records.training_accuracy`` (given, else measured on the probe).

    Parameters
    ----------
    records : sequence of ModelRecord
        The collection's models.
    target : {"test_accuracy", "generalization_gap"}

    Returns
    -------
    list of float or None
        One value per record, in order.
    """
    _check_target(target)
    values: list[float | None] = []
    for record in records:
        test = finite_or_none(record.test_accuracy)
        if target == "test_accuracy":
            values.append(test)
        else:
            train, _ = training_accuracy(record)
            values.append(None if test is None or train is None else train - test)
    return values


def protocol_reason(
    record: ModelRecord, min_train_accuracy: float = DEFAULT_MIN_TRAIN_ACCURACY
) -> str | None:
    """Why the protocol leaves ``record`` out of the coefficients, or None when it is in (or it is off).

    Parameters
    ----------
    record : ModelRecord
    min_train_accuracy : float
        The threshold in [0, 1]; 0 turns the protocol off.

    Returns
    -------
    str or None
        The reason (below the threshold, or no known training accuracy), None when the model is ranked.
    """
    if min_train_accuracy <= 0:
        return None
    train, _ = training_accuracy(record)
    if train is None:
        return (
            f"training accuracy unknown (min_train_accuracy {min_train_accuracy:g} is on: give "
            "train_accuracy, or score the model on its training split)"
        )
    if train < min_train_accuracy:
        return f"training accuracy {train:.6g} is below min_train_accuracy {min_train_accuracy:g}"
    return None


def collection_axes(records: Sequence[ModelRecord]) -> list[str]:
    """Union of the hyperparameter keys, in order of first appearance.

    Parameters
    ----------
    records : sequence of ModelRecord

    Returns
    -------
    list of str
        The axes of the collection's grid.
    """
    axes: dict[str, None] = {}
    for record in records:
        for axis in record.hyperparameters:
            axes.setdefault(axis, None)
    return list(axes)


def default_measures(records: Sequence[ModelRecord]) -> list[str]:
    """Every measure in any model's scores or statuses: registry measures in registry order, then others sorted.

    Parameters
    ----------
    records : sequence of ModelRecord

    Returns
    -------
    list of str
    """
    present = {name for record in records for name in [*record.scores, *record.measure_status]}
    known = [name for name in MEASURES if name in present]
    return known + sorted(present.difference(MEASURES))


def select_measures(records: Sequence[ModelRecord], requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """The measures a ranking request names, with family names (``norm``) and ``all`` standing for their
    members that some record has, in table order.

    Returns ``(names, missing)``: ``missing`` lists each requested measure no record has, and each
    family or ``all`` none of whose members any record has (the caller reports them).
    """
    present = default_measures(records)
    names: list[str] = []
    missing: list[str] = []
    for name in requested:
        if name == "all" or (name in FAMILIES and name not in MEASURES):
            members = present if name == "all" else [m for m in family_members(name) if m in present]
            names += members
            if not members:
                missing.append(name)
        else:
            names.append(name)
            if name not in present:
                missing.append(name)
    return list(dict.fromkeys(names)), missing


# ----------------------------------------------------------------------------- Kendall


def _codes(values: Sequence[Hashable]) -> np.ndarray:
    """Integer code per value; equal values (Python equality) share a code."""
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(value, len(index)) for value in values], dtype=np.int64)


def kendall_tau(measure: Sequence[float], target: Sequence[float]) -> float | None:
    """Jiang's tau-a: sum_{i<j} sign(m_i-m_j) sign(t_i-t_j) / (n(n-1)/2); ties count 0; None for n < 2.

    Values are used as given (orient them first). A constant input gives 0.

    Parameters
    ----------
    measure, target : sequence of float, length n
        Paired values, one per model.

    Returns
    -------
    float or None
        tau in [-1, 1]; None when n < 2.
    """
    measure_array = np.asarray(measure, dtype=float)
    target_array = np.asarray(target, dtype=float)
    if measure_array.ndim != 1 or measure_array.shape != target_array.shape:
        raise RankingInputError(
            f"kendall_tau needs two 1-d sequences of the same length, got shapes "
            f"{measure_array.shape} and {target_array.shape}"
        )
    if not (np.all(np.isfinite(measure_array)) and np.all(np.isfinite(target_array))):
        raise RankingInputError("kendall_tau needs finite values; leave missing models out first")
    n = len(measure_array)
    if n < 2:
        return None
    concordance, _ = pair_matrices(measure_array, target_array)
    return float(np.triu(concordance, 1).sum()) / (n * (n - 1) / 2)


@dataclass
class _Usable:
    """Models counted in a measure's coefficients, values oriented, with their pair matrices."""

    indices: list[int]
    measure: np.ndarray  # (n,)
    target: np.ndarray  # (n,)
    concordance: np.ndarray  # (n, n)
    target_differs: np.ndarray  # (n, n) bool
    too_few_reason: str | None


def _usable(records: Sequence[ModelRecord], measure: str, target: str, min_train_accuracy: float) -> _Usable:
    targets = target_values(records, target)
    indices, measure_values, target_values_ = [], [], []
    for index, (record, target_value) in enumerate(zip(records, targets, strict=True)):
        if (
            target_value is None
            or measure_skip_reason(record, measure)
            or protocol_reason(record, min_train_accuracy)
        ):
            continue
        indices.append(index)
        measure_values.append(orientation(measure) * float(record.scores[measure]))
        target_values_.append(TARGET_ORIENTATION[target] * target_value)
    reason = None
    if len(indices) < 2:
        fitted = f" and training accuracy >= {min_train_accuracy:g}" if min_train_accuracy > 0 else ""
        reason = f"fewer than 2 models have {target}, a usable {measure} score{fitted} ({len(indices)})"
    measure_array, target_array = np.array(measure_values, dtype=float), np.array(target_values_, dtype=float)
    concordance, target_differs = pair_matrices(measure_array, target_array)
    return _Usable(indices, measure_array, target_array, concordance, target_differs, reason)


def _pair_sums(usable: _Usable, rows: np.ndarray, counted: np.ndarray | None = None) -> tuple[float, bool]:
    """(sum of concordance over counted pairs i < j of ``rows``, whether a counted pair has two targets)."""
    upper = np.triu(np.ones((len(rows), len(rows)), dtype=bool), 1)
    if counted is not None:
        upper &= counted
    block = np.ix_(rows, rows)
    return float(usable.concordance[block][upper].sum()), bool(usable.target_differs[block][upper].any())


def _overall_tau(usable: _Usable, target: str) -> tuple[float | None, str | None]:
    if usable.too_few_reason:
        return None, usable.too_few_reason
    n = len(usable.indices)
    total, informative = _pair_sums(usable, np.arange(n))
    if not informative:
        return None, f"all {target} values are equal ({n} models)"
    return total / (n * (n - 1) / 2), None


def _granulated(
    records: Sequence[ModelRecord], axes: list[str], usable: _Usable, target: str
) -> GranulatedKendall:
    psi: dict[str, float | None] = {}
    groups: dict[str, int] = {}
    why: dict[str, str] = {}
    if usable.too_few_reason:
        for axis in axes:
            psi[axis], groups[axis], why[axis] = None, 0, usable.too_few_reason
        why["total"] = usable.too_few_reason if axes else "the models have no hyperparameters"
        return GranulatedKendall(list(axes), psi, None, groups, why)

    configurations = [
        tuple(
            hashable_value(records[index].hyperparameters.get(axis), f"model {records[index].name!r}")
            for axis in axes
        )
        for index in usable.indices
    ]
    group_taus: dict[str, np.ndarray] = {}
    group_informative: dict[str, np.ndarray] = {}
    for position, axis in enumerate(axes):
        by_other_axes: dict[tuple[Hashable, ...], list[int]] = {}
        for row, configuration in enumerate(configurations):
            others = configuration[:position] + configuration[position + 1 :]
            by_other_axes.setdefault(others, []).append(row)
        taus: list[float] = []
        informative: list[bool] = []
        for rows in by_other_axes.values():
            axis_codes = _codes([configurations[row][position] for row in rows])
            if len(rows) < 2 or len(set(axis_codes.tolist())) < 2:
                continue
            total, group_informative_ = _pair_sums(
                usable, np.array(rows), axis_codes[:, None] != axis_codes[None, :]
            )
            taus.append(total / (len(rows) * (len(rows) - 1) / 2))
            informative.append(group_informative_)
        groups[axis] = len(taus)
        group_taus[axis], group_informative[axis] = np.array(taus), np.array(informative, dtype=bool)
        if not taus:
            psi[axis], why[axis] = None, f"no two models differ only in {axis}"
        elif not any(informative):
            psi[axis] = None
            why[axis] = f"{target} does not change within the {len(taus)} group(s) that vary {axis}"
        else:
            psi[axis] = sum(taus) / len(taus)

    formed = [value for value in psi.values() if value is not None]
    total_value = sum(formed) / len(formed) if formed else None
    if total_value is None:
        if not axes:
            why["total"] = "the models have no hyperparameters"
        elif not any(groups.values()):
            why["total"] = "no two models differ in exactly one hyperparameter"
        else:
            why["total"] = f"no axis has a psi coefficient: {target} does not change within any group"
    return GranulatedKendall(list(axes), psi, total_value, groups, why, group_taus, group_informative)


def granulated_kendall(
    records: Sequence[ModelRecord],
    measure: str,
    target: str = "test_accuracy",
    min_train_accuracy: float = 0.0,
) -> GranulatedKendall:
    """psi per hyperparameter axis and their mean (``total``), with reasons where not formed.

    See the module docstring for grouping, duplicates and paired axes. ``min_train_accuracy`` is off
    (0) here by default; ``rank_collection`` applies the protocol's 0.99.

    Parameters
    ----------
    records : sequence of ModelRecord
    measure : str
        The score ranked (oriented with the measure table's orientation).
    target : {"test_accuracy", "generalization_gap"}
    min_train_accuracy : float
        Models below it (or with no known training accuracy) are left out; 0 = off.

    Returns
    -------
    GranulatedKendall
        ``psi`` per axis, ``total`` (their mean), group counts and the reason for every missing value.
    """
    _check_target(target)
    validate_records(records)
    usable = _usable(records, measure, target, min_train_accuracy)
    return _granulated(records, collection_axes(records), usable, target)


# ----------------------------------------------------------------------------- intervals


def _intervals(
    usable: _Usable,
    granulated: GranulatedKendall,
    tau: float | None,
    level: float,
    n_resamples: int,
    seed: int,
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """``(ci_low, ci_high)``, each keyed ``"tau"``, the axes, ``"total"``; None where the coefficient is."""
    keys = ["tau", *granulated.axes, "total"]
    low: dict[str, float | None] = dict.fromkeys(keys)
    high: dict[str, float | None] = dict.fromkeys(keys)
    if n_resamples == 0:
        return low, high
    if tau is not None:
        rng = np.random.default_rng([seed, 0])
        samples = bootstrap_tau(usable.concordance, usable.target_differs, n_resamples, rng)
        low["tau"], high["tau"] = percentile_interval(samples, level)
    axis_resamples: list[np.ndarray] = []
    for position, axis in enumerate(granulated.axes):
        if granulated.psi.get(axis) is None:
            continue
        rng = np.random.default_rng([seed, 1, position])
        samples = bootstrap_mean(
            granulated.group_taus[axis], granulated.group_informative[axis], n_resamples, rng
        )
        axis_resamples.append(samples)
        low[axis], high[axis] = percentile_interval(samples, level)
    if granulated.total is not None and axis_resamples:
        low["total"], high["total"] = percentile_interval(mean_over_axes(axis_resamples), level)
    return low, high


# ----------------------------------------------------------------------------- rankings


def model_ranking(
    records: Sequence[ModelRecord],
    measure: str,
    target: str = "test_accuracy",
    min_train_accuracy: float = DEFAULT_MIN_TRAIN_ACCURACY,
) -> list[dict[str, Any]]:
    """Every model as a row ``{"rank", "name", "score", "test_accuracy", "train_accuracy",
    "in_coefficients", "reason"}``, best predicted first.

    ``rank`` (1 = best) is given to the models with a usable score that the protocol keeps, whether or
    not their target is known; equal oriented scores share a rank (1, 2, 2, 4). Then come the models the
    protocol leaves out (by score, ``rank`` None), then those without a usable score (by name). ``score``
    is the raw value (not oriented), ``train_accuracy`` the one used (given, else measured on the
    probe). ``in_coefficients`` says whether the model counts in tau and psi; ``reason`` says why not.

    Parameters
    ----------
    records : sequence of ModelRecord
    measure : str
    target : {"test_accuracy", "generalization_gap"}
    min_train_accuracy : float

    Returns
    -------
    list of dict
        One row per record, best predicted first.
    """
    _check_target(target)
    sign = orientation(measure)
    targets = target_values(records, target)
    ranked, left_out, unscored = [], [], []
    for record, target_value in zip(records, targets, strict=True):
        skip = measure_skip_reason(record, measure)
        protocol = protocol_reason(record, min_train_accuracy)
        score = None if skip else float(record.scores[measure])
        reason = skip or protocol
        if reason is None and target_value is None:
            reason = f"no {target} (ranked, not counted in the coefficients)"
        row = {
            "rank": None,
            "name": record.name,
            "score": score,
            "test_accuracy": finite_or_none(record.test_accuracy),
            "train_accuracy": training_accuracy(record)[0],
            "in_coefficients": reason is None,
            "reason": reason,
        }
        if skip:
            unscored.append(row)
        elif protocol:
            left_out.append((-sign * score, record.name, row))
        else:
            ranked.append((-sign * score, record.name, row))
    ranked.sort(key=lambda item: item[:2])
    left_out.sort(key=lambda item: item[:2])
    previous_key, previous_rank = None, 0
    for position, (key, _, row) in enumerate(ranked, 1):
        row["rank"] = previous_rank if key == previous_key else position
        previous_key, previous_rank = key, row["rank"]
    return (
        [row for _, _, row in ranked]
        + [row for _, _, row in left_out]
        + sorted(unscored, key=lambda row: row["name"])
    )


def rank_collection(
    records: Sequence[ModelRecord],
    target: str = "test_accuracy",
    measures: Sequence[str] | None = None,
    *,
    min_train_accuracy: float = DEFAULT_MIN_TRAIN_ACCURACY,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Rankings, tau and granulated Kendall coefficients with bootstrap intervals, as a JSON-ready dict.

    Parameters
    ----------
    records : the models
    target : "test_accuracy" or "generalization_gap"
    measures : measure names, families (``norm``) or ``all`` (see ``select_measures``); default
        ``default_measures(records)``
    min_train_accuracy : the protocol's threshold in [0, 1]; 0 turns it off
    level, n_resamples, seed : the bootstrap's interval level in (0, 1), resamples (0: no intervals), seed

    Returns
    -------
    dict
        ``{"target", "n_models", "n_models_with_target", "min_train_accuracy", "n_left_out", "left_out":
        [{"name", "train_accuracy", "reason"}], "bootstrap": {"level", "n_resamples", "seed"}, "axes",
        "measures": {name: {"orientation", "tau", "n_models", "n_skipped", "psi": {axis..., "total"},
        "groups": {axis: count}, "ci_low": {"tau", axis..., "total"}, "ci_high": {same keys},
        "why": {key: reason}, "ranking": [model_ranking rows]}}}``. ``n_left_out`` counts the models
        the protocol leaves out; per measure, ``n_models`` counts the models in its coefficients and
        ``n_skipped`` those without a usable score. ``why`` has a reason for every None coefficient.
    """
    _check_target(target)
    _check_protocol(min_train_accuracy, level, n_resamples, seed)
    validate_records(records)
    axes = collection_axes(records)
    if measures is not None and len(set(measures)) != len(measures):
        raise RankingInputError(f"measures are listed more than once: {list(measures)}")
    measure_names = default_measures(records) if measures is None else select_measures(records, measures)[0]
    result_measures: dict[str, Any] = {}
    for measure in measure_names:
        usable = _usable(records, measure, target, min_train_accuracy)
        tau, tau_reason = _overall_tau(usable, target)
        granulated = _granulated(records, axes, usable, target)
        why: dict[str, str] = {}
        if tau_reason:
            why["tau"] = tau_reason
        why.update(granulated.why)
        ci_low, ci_high = _intervals(usable, granulated, tau, level, n_resamples, seed)
        result_measures[measure] = {
            "orientation": orientation(measure),
            "tau": tau,
            "n_models": len(usable.indices),
            "n_skipped": sum(measure_skip_reason(record, measure) is not None for record in records),
            "psi": {**granulated.psi, "total": granulated.total},
            "groups": granulated.groups,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "why": why,
            "ranking": model_ranking(records, measure, target, min_train_accuracy),
        }
    left_out = [
        {"name": record.name, "train_accuracy": training_accuracy(record)[0], "reason": reason}
        for record in records
        if (reason := protocol_reason(record, min_train_accuracy)) is not None
    ]
    return {
        "target": target,
        "n_models": len(records),
        "n_models_with_target": sum(value is not None for value in target_values(records, target)),
        "min_train_accuracy": float(min_train_accuracy),
        "n_left_out": len(left_out),
        "left_out": left_out,
        "bootstrap": {"level": float(level), "n_resamples": n_resamples, "seed": seed},
        "axes": axes,
        "measures": result_measures,
    }
