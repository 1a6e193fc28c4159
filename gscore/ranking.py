"""Rank models by a measure and score the measure with Kendall coefficients (docs/measures.md, "Rankings and Kendall coefficients").

Plain functions on plain records (numpy only; no HTTP, no Celery). The CLI (``gscore rank FILE.json``)
and the service return ``rank_collection``'s dict as is.

Conventions, including those docs/measures.md leaves open:

- Orientation. Each measure is multiplied by ``measure_registry.orientation(name)`` (+1 for c1-c4 and
  unknown names, -1 for sharpness). The target is ``test_accuracy`` (default) or
  ``generalization_gap`` = train - test accuracy, which is multiplied by -1 (a smaller gap is better),
  so a positive coefficient always means "the measure predicts good generalization".
- Kendall's tau is Jiang's tau-a: ``sum_{i<j} sign(m_i - m_j) sign(t_i - t_j) / (n(n-1)/2)``; ties in
  either value count 0 but stay in the denominator.
- Missing values. A model without the target value is ranked but left out of every coefficient; a
  model without a measure's score is ranked last for that measure and left out of that measure's
  coefficients. Non-finite numbers (NaN, +-inf) count as missing.
- Granulated Kendall. Axes are the union of the models' hyperparameter keys, in order of first
  appearance; a model lacking a key has the value None on that axis. For an axis a, a group is a set
  of models (with the target and the score) that have identical values on every other axis; it counts
  when it has at least two distinct values of a. Models identical on *all* axes (repeated runs) sit in
  the same group; a pair of models with the same value of a counts 0 in that group's tau (like a tie),
  so without duplicates the group's coefficient is exactly tau-a over the group.
  ``psi_a`` = mean of the group coefficients; ``total`` = mean of the formed ``psi_a``.
- Paired hyperparameters (the paper's (learning rate, weight decay) pairs) are one axis whose value
  is the pair: a string such as ``"0.1/5e-4"`` or a list/tuple (``[0.1, 5e-4]``, stored as a tuple).
- No NaN is ever reported. A coefficient that cannot be formed is ``None`` with a reason: fewer than
  2 usable models, no group for an axis, or no counted pair with two different target values (a
  constant target carries no order; the formula would give 0, which would read as "uninformative
  measure"). A constant *measure* is a property of the measure and gives tau = 0 by the formula.
- Axis names ``"total"`` and ``"tau"`` are reserved (they label the result's columns).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gscore.errors import GScoreError
from gscore.measure_registry import MEASURES, orientation

TARGETS: tuple[str, ...] = ("test_accuracy", "generalization_gap")
TARGET_ORIENTATION: dict[str, int] = {"test_accuracy": 1, "generalization_gap": -1}
RESERVED_AXIS_NAMES: tuple[str, ...] = ("total", "tau")
_RECORD_FIELDS: tuple[str, ...] = ("name", "hyperparameters", "scores", "test_accuracy", "train_accuracy")


class RankingInputError(GScoreError):
    """A model collection (file or records) is malformed; ``item`` / ``field`` locate the problem."""

    type = "invalid-collection"
    title = "Invalid model collection"

    def __init__(self, detail: str, item: int | None = None, field: str | None = None) -> None:
        super().__init__(detail)
        self.item = item
        self.field = field


@dataclass
class ModelRecord:
    """One trained model: flat hyperparameters, measure scores and accuracies (any may be missing)."""

    name: str
    hyperparameters: dict[str, Any]  # flat: str/int/float/bool/None, or a list/tuple for a paired axis
    scores: dict[str, float]  # measure name -> value; a measure may be missing for some models
    test_accuracy: float | None = None
    train_accuracy: float | None = None


@dataclass
class GranulatedKendall:
    """Granulated Kendall coefficients of one measure; ``None`` entries have a reason in ``why``."""

    axes: list[str]
    psi: dict[str, float | None]  # axis -> mean tau over its groups
    total: float | None  # mean of the formed psi values
    groups: dict[str, int]  # axis -> number of groups that vary it
    why: dict[str, str] = field(default_factory=dict)  # axis or "total" -> why it is None


# ----------------------------------------------------------------------------- values


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite real number, else None (missing)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise RankingInputError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def target_values(records: Sequence[ModelRecord], target: str = "test_accuracy") -> list[float | None]:
    """Raw target value per model (not oriented): test accuracy, or train - test accuracy; None if missing."""
    _check_target(target)
    values: list[float | None] = []
    for record in records:
        test = finite_or_none(record.test_accuracy)
        if target == "test_accuracy":
            values.append(test)
        else:
            train = finite_or_none(record.train_accuracy)
            values.append(None if test is None or train is None else train - test)
    return values


def _hashable_value(value: Any, where: str) -> Hashable:
    """A hyperparameter value as a dict key: scalars as they are, lists/tuples (paired axes) as tuples."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise RankingInputError(f"{where}: a hyperparameter value must not be NaN")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_hashable_value(part, where) for part in value)
    raise RankingInputError(
        f"{where}: a hyperparameter value must be a string, number, boolean, null or a list of those "
        f"(a paired axis), got {type(value).__name__}"
    )


def _validate_records(records: Sequence[ModelRecord]) -> None:
    """Unique string names, hashable hyperparameter values, no reserved axis names."""
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        if not isinstance(record, ModelRecord):
            raise RankingInputError(
                f"item {index}: expected a ModelRecord, got {type(record).__name__}", index
            )
        if not isinstance(record.name, str) or not record.name:
            raise RankingInputError(f"item {index}: 'name' must be a non-empty string", index, "name")
        if record.name in seen:
            raise RankingInputError(
                f"item {index}: name {record.name!r} is already used by item {seen[record.name]}; "
                "model names must be unique",
                index,
                "name",
            )
        seen[record.name] = index
        for axis, value in record.hyperparameters.items():
            if axis in RESERVED_AXIS_NAMES:
                raise RankingInputError(
                    f"item {index} ({record.name!r}): hyperparameter name {axis!r} is reserved "
                    f"({', '.join(RESERVED_AXIS_NAMES)} label result columns); rename it",
                    index,
                    f"hyperparameters.{axis}",
                )
            _hashable_value(value, f"item {index} ({record.name!r}), field 'hyperparameters.{axis}'")


def collection_axes(records: Sequence[ModelRecord]) -> list[str]:
    """Union of the hyperparameter keys, in order of first appearance."""
    axes: dict[str, None] = {}
    for record in records:
        for axis in record.hyperparameters:
            axes.setdefault(axis, None)
    return list(axes)


def default_measures(records: Sequence[ModelRecord]) -> list[str]:
    """Every measure in any model's scores: registry measures in registry order, then others sorted."""
    present = {name for record in records for name in record.scores}
    known = [name for name in MEASURES if name in present]
    return known + sorted(present.difference(MEASURES))


# ----------------------------------------------------------------------------- Kendall


def _codes(values: Sequence[Hashable]) -> np.ndarray:
    """Integer code per value; equal values (Python equality) share a code."""
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(value, len(index)) for value in values], dtype=np.int64)


def _tau_a(
    measure: np.ndarray, target: np.ndarray, axis_codes: np.ndarray | None = None
) -> tuple[float, bool]:
    """(tau-a, informative) over all pairs; pairs with equal ``axis_codes`` count 0.

    ``informative`` is True when some counted pair has two different target values.
    """
    n = len(measure)
    total = 0.0
    informative = False
    # finite values of opposite signs near the float maximum overflow to +-inf: the sign stays right
    with np.errstate(over="ignore"):
        for i in range(n - 1):
            target_signs = np.sign(target[i] - target[i + 1 :])
            if axis_codes is not None:
                target_signs = target_signs * (axis_codes[i] != axis_codes[i + 1 :])
            total += float(np.dot(np.sign(measure[i] - measure[i + 1 :]), target_signs))
            informative = informative or bool(np.any(target_signs != 0))
    return total / (n * (n - 1) / 2), informative


def kendall_tau(measure: Sequence[float], target: Sequence[float]) -> float | None:
    """Jiang's tau-a: sum_{i<j} sign(m_i-m_j) sign(t_i-t_j) / (n(n-1)/2); ties count 0; None for n < 2.

    Values are used as given (orient them first). A constant input gives 0.
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
    if len(measure_array) < 2:
        return None
    return _tau_a(measure_array, target_array)[0]


@dataclass
class _Usable:
    """Models with both the target and the measure's score, values oriented."""

    indices: list[int]
    measure: np.ndarray
    target: np.ndarray
    too_few_reason: str | None


def _usable(records: Sequence[ModelRecord], measure: str, target: str) -> _Usable:
    targets = target_values(records, target)
    indices, measure_values, target_values_ = [], [], []
    for index, (record, target_value) in enumerate(zip(records, targets, strict=True)):
        score = finite_or_none(record.scores.get(measure))
        if score is None or target_value is None:
            continue
        indices.append(index)
        measure_values.append(orientation(measure) * score)
        target_values_.append(TARGET_ORIENTATION[target] * target_value)
    reason = None
    if len(indices) < 2:
        reason = f"fewer than 2 models have both {target} and a {measure} score ({len(indices)})"
    return _Usable(
        indices, np.array(measure_values, dtype=float), np.array(target_values_, dtype=float), reason
    )


def _overall_tau(usable: _Usable, target: str) -> tuple[float | None, str | None]:
    if usable.too_few_reason:
        return None, usable.too_few_reason
    tau, informative = _tau_a(usable.measure, usable.target)
    if not informative:
        return None, f"all {target} values are equal ({len(usable.indices)} models)"
    return tau, None


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
            _hashable_value(records[index].hyperparameters.get(axis), f"model {records[index].name!r}")
            for axis in axes
        )
        for index in usable.indices
    ]
    for position, axis in enumerate(axes):
        by_other_axes: dict[tuple[Hashable, ...], list[int]] = {}
        for row, configuration in enumerate(configurations):
            others = configuration[:position] + configuration[position + 1 :]
            by_other_axes.setdefault(others, []).append(row)
        group_taus: list[float] = []
        informative = False
        for rows in by_other_axes.values():
            axis_codes = _codes([configurations[row][position] for row in rows])
            if len(rows) < 2 or len(set(axis_codes.tolist())) < 2:
                continue
            tau, group_informative = _tau_a(usable.measure[rows], usable.target[rows], axis_codes)
            group_taus.append(tau)
            informative = informative or group_informative
        groups[axis] = len(group_taus)
        if not group_taus:
            psi[axis], why[axis] = None, f"no two models differ only in {axis}"
        elif not informative:
            psi[axis] = None
            why[axis] = f"{target} does not change within the {len(group_taus)} group(s) that vary {axis}"
        else:
            psi[axis] = sum(group_taus) / len(group_taus)

    formed = [value for value in psi.values() if value is not None]
    total = sum(formed) / len(formed) if formed else None
    if total is None:
        if not axes:
            why["total"] = "the models have no hyperparameters"
        elif not any(groups.values()):
            why["total"] = "no two models differ in exactly one hyperparameter"
        else:
            why["total"] = f"no axis has a psi coefficient: {target} does not change within any group"
    return GranulatedKendall(list(axes), psi, total, groups, why)


def granulated_kendall(
    records: Sequence[ModelRecord], measure: str, target: str = "test_accuracy"
) -> GranulatedKendall:
    """psi per hyperparameter axis and their mean (``total``), with reasons where not formed.

    See the module docstring for grouping, duplicates and paired axes.
    """
    _check_target(target)
    _validate_records(records)
    return _granulated(records, collection_axes(records), _usable(records, measure, target), target)


def rank_models(records: Sequence[ModelRecord], measure: str) -> list[str]:
    """Model names, best predicted first: orientation * score descending, ties by name.

    Models without a (finite) score for the measure come last, sorted by name.
    """
    sign = orientation(measure)
    scored: list[tuple[float, str]] = []
    missing: list[str] = []
    for record in records:
        score = finite_or_none(record.scores.get(measure))
        if score is None:
            missing.append(record.name)
        else:
            scored.append((-sign * score, record.name))
    return [name for _, name in sorted(scored)] + sorted(missing)


def rank_collection(
    records: Sequence[ModelRecord], target: str = "test_accuracy", measures: Sequence[str] | None = None
) -> dict[str, Any]:
    """Ranking, tau and granulated Kendall coefficients of each measure, as a JSON-ready dict.

    Shape: ``{"target", "n_models", "n_models_with_target", "axes", "measures": {name: {"orientation",
    "tau", "n", "psi": {axis..., "total"}, "groups": {axis: count}, "why": {key: reason},
    "ranking"}}}``. ``why`` has a reason for every None (keys "tau", an axis, "total"); ``n`` counts
    the models with both the target and the score. ``measures`` defaults to ``default_measures``.
    """
    _check_target(target)
    _validate_records(records)
    axes = collection_axes(records)
    measure_names = list(default_measures(records) if measures is None else measures)
    if len(set(measure_names)) != len(measure_names):
        raise RankingInputError(f"measures are listed more than once: {measure_names}")
    result_measures: dict[str, Any] = {}
    for measure in measure_names:
        usable = _usable(records, measure, target)
        tau, tau_reason = _overall_tau(usable, target)
        granulated = _granulated(records, axes, usable, target)
        why: dict[str, str] = {}
        if tau_reason:
            why["tau"] = tau_reason
        why.update(granulated.why)
        result_measures[measure] = {
            "orientation": orientation(measure),
            "tau": tau,
            "n": len(usable.indices),
            "psi": {**granulated.psi, "total": granulated.total},
            "groups": granulated.groups,
            "why": why,
            "ranking": rank_models(records, measure),
        }
    return {
        "target": target,
        "n_models": len(records),
        "n_models_with_target": sum(value is not None for value in target_values(records, target)),
        "axes": axes,
        "measures": result_measures,
    }


# ----------------------------------------------------------------------------- input files


def _number_or_none(value: Any, index: int, name: str, field_path: str) -> float | None:
    """A JSON number (NaN/inf count as missing) or null; anything else is an error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RankingInputError(
            f"item {index} ({name!r}): field {field_path!r} must be a number or null, got {value!r}",
            index,
            field_path,
        )
    return finite_or_none(value)


def parse_rank_records(data: Any) -> list[ModelRecord]:
    """Validate already-decoded JSON (a list of model objects) into records; see ``load_rank_file``."""
    if not isinstance(data, list):
        raise RankingInputError(f"expected a JSON list of models, got a JSON {type(data).__name__}")
    records: list[ModelRecord] = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise RankingInputError(f"item {index}: expected an object, got {type(item).__name__}", index)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise RankingInputError(f"item {index}: field 'name' must be a non-empty string", index, "name")
        unknown = sorted(set(item).difference(_RECORD_FIELDS))
        if unknown:
            raise RankingInputError(
                f"item {index} ({name!r}): unknown field(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_RECORD_FIELDS)}",
                index,
                unknown[0],
            )
        hyperparameters = item.get("hyperparameters", {})
        if not isinstance(hyperparameters, dict):
            raise RankingInputError(
                f"item {index} ({name!r}): field 'hyperparameters' must be an object",
                index,
                "hyperparameters",
            )
        for axis, value in hyperparameters.items():
            where = f"item {index} ({name!r}), field 'hyperparameters.{axis}'"
            try:
                _hashable_value(value, where)
            except RankingInputError as exc:
                raise RankingInputError(exc.detail, index, f"hyperparameters.{axis}") from None
        scores = item.get("scores", {})
        if not isinstance(scores, dict):
            raise RankingInputError(
                f"item {index} ({name!r}): field 'scores' must be an object", index, "scores"
            )
        parsed_scores: dict[str, float] = {}
        for measure, value in scores.items():
            number = _number_or_none(value, index, name, f"scores.{measure}")
            if number is not None:
                parsed_scores[measure] = number
        records.append(
            ModelRecord(
                name=name,
                hyperparameters={
                    axis: tuple(value) if isinstance(value, list) else value
                    for axis, value in hyperparameters.items()
                },
                scores=parsed_scores,
                test_accuracy=_number_or_none(item.get("test_accuracy"), index, name, "test_accuracy"),
                train_accuracy=_number_or_none(item.get("train_accuracy"), index, name, "train_accuracy"),
            )
        )
    _validate_records(records)
    return records


def load_rank_file(path: str | Path) -> list[ModelRecord]:
    """Read a JSON list of ``{"name", "hyperparameters", "scores", "test_accuracy", "train_accuracy"}``.

    Only ``name`` is required; ``hyperparameters`` and ``scores`` default to ``{}``, accuracies and
    scores may be null (missing; NaN counts as missing too). A list value is a paired axis. Unknown
    fields, wrong types, duplicate names and reserved axis names raise ``RankingInputError`` naming the
    item (0-based index and name) and the field.
    """
    file_path = Path(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RankingInputError(f"cannot read {file_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RankingInputError(f"{file_path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RankingInputError(
            f"{file_path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return parse_rank_records(data)


# ----------------------------------------------------------------------------- table


def format_ranking_table(result: dict[str, Any], digits: int = 2) -> str:
    """Plain-text table like the paper's Table 1: rows measures, columns the axes, "total", "tau".

    A coefficient that could not be formed shows ``n/a[k]``; footnote ``[k]`` gives the reason
    (identical reasons share a footnote).
    """
    axes: list[str] = list(result["axes"])
    columns = [*axes, "total", "tau"]
    footnotes: dict[str, int] = {}

    def cell(value: float | None, reason: str | None) -> str:
        if value is not None:
            return f"{value:.{digits}f}"
        number = footnotes.setdefault(reason or "not available", len(footnotes) + 1)
        return f"n/a[{number}]"

    rows: list[list[str]] = []
    for measure, entry in result["measures"].items():
        why = entry.get("why", {})
        values = [entry["psi"].get(axis) for axis in axes] + [entry["psi"].get("total"), entry["tau"]]
        reasons = [why.get(axis) for axis in axes] + [why.get("total"), why.get("tau")]
        rows.append([measure, *(cell(value, reason) for value, reason in zip(values, reasons, strict=True))])

    header = ["measure", *columns]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join(
            [first, *(text.rjust(width) for text, width in zip(row[1:], widths[1:], strict=True))]
        )

    out = [
        f"Kendall coefficients against {result['target']} "
        f"({result['n_models']} models, {result['n_models_with_target']} with {result['target']})",
        line(header),
        line(["-" * width for width in widths]),
        *(line(row) for row in rows),
    ]
    if footnotes:
        out.append("")
        out.extend(f"[{number}] {reason}" for reason, number in footnotes.items())
    return "\n".join(out) + "\n"
