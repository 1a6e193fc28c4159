"""Model records for rankings: the record type, its validation, and reading a JSON collection file.

A record is one trained model: flat hyperparameters, measure scores with their per-measure status,
test accuracy and training accuracy (given by the client, or measured by the scoring job on the
training split: ``meta.probe_accuracy`` with ``meta.split == "train"``). Plain Python; no HTTP.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gscore.errors import GScoreError

RESERVED_AXIS_NAMES: tuple[str, ...] = ("total", "tau")
MEASURE_STATUSES: tuple[str, ...] = ("ok", "undefined", "failed")
RECORD_FIELDS: tuple[str, ...] = (
    "name",
    "hyperparameters",
    "scores",
    "test_accuracy",
    "train_accuracy",
    "status",
    "meta",
)
# fields of experiments/digits_zoo.py's models.json that say how a model was made; read and ignored
IGNORED_RECORD_FIELDS: tuple[str, ...] = (
    "checkpoint",
    "initial_checkpoint",
    "arch",
    "epochs",
    "seconds",
    "job_id",
    "state",
)


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
    """One trained model; any value may be missing (None, or absent from a dict).

    ``scores`` maps measure -> value (non-finite values count as missing). ``measure_status`` maps
    measure -> ``{"status": "ok" | "undefined" | "failed", "reason": str | None}`` as in a job result;
    a measure whose status is not ``ok`` is skipped for this model. ``probe_accuracy`` is the accuracy
    the scoring job measured on the training split (None when it scored another split).
    """

    name: str
    hyperparameters: dict[str, Any]  # flat: str/int/float/bool/None, or a list/tuple for a paired axis
    scores: dict[str, float]
    test_accuracy: float | None = None
    train_accuracy: float | None = None
    measure_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe_accuracy: float | None = None


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite real number, else None (missing)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def training_accuracy(record: ModelRecord) -> tuple[float | None, str | None]:
    """(training accuracy, source): the client-given ``train_accuracy`` ("given"), else the accuracy the
    scoring job measured on the training split ("probe"), else (None, None)."""
    given = finite_or_none(record.train_accuracy)
    if given is not None:
        return given, "given"
    measured = finite_or_none(record.probe_accuracy)
    return (measured, "probe") if measured is not None else (None, None)


def measure_skip_reason(record: ModelRecord, measure: str) -> str | None:
    """Why ``record`` has no usable ``measure`` score (status not ok, missing, non-finite), else None."""
    status = record.measure_status.get(measure)
    if status is not None and status.get("status") != "ok":
        return f"{measure} {status.get('status')}: {status.get('reason') or 'no reason given'}"
    if measure not in record.scores or record.scores[measure] is None:
        return f"no {measure} score"
    if finite_or_none(record.scores[measure]) is None:
        return f"{measure} score is {record.scores[measure]!r}"
    return None


def hashable_value(value: Any, where: str) -> Hashable:
    """A hyperparameter value as a dict key: scalars as they are, lists/tuples (paired axes) as tuples."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise RankingInputError(f"{where}: a hyperparameter value must not be NaN")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(hashable_value(part, where) for part in value)
    raise RankingInputError(
        f"{where}: a hyperparameter value must be a string, number, boolean, null or a list of those "
        f"(a paired axis), got {type(value).__name__}"
    )


def validate_records(records: Sequence[ModelRecord]) -> None:
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
            hashable_value(value, f"item {index} ({record.name!r}), field 'hyperparameters.{axis}'")


# ----------------------------------------------------------------------------- JSON input


def _number_or_none(value: Any, index: int, name: str, field_path: str) -> float | None:
    """A JSON number or null; anything else is an error. NaN/inf are kept (they count as missing)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RankingInputError(
            f"item {index} ({name!r}): field {field_path!r} must be a number or null, got {value!r}",
            index,
            field_path,
        )
    return float(value)


def _object(item: dict[str, Any], key: str, index: int, name: str) -> dict[str, Any]:
    value = item.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RankingInputError(f"item {index} ({name!r}): field {key!r} must be an object", index, key)
    return value


def _parse_status(raw: dict[str, Any], index: int, name: str) -> dict[str, dict[str, Any]]:
    parsed: dict[str, dict[str, Any]] = {}
    for measure, entry in raw.items():
        where = f"status.{measure}"
        if not isinstance(entry, dict) or entry.get("status") not in MEASURE_STATUSES:
            raise RankingInputError(
                f"item {index} ({name!r}): field {where!r} must be an object "
                f'{{"status": {" | ".join(map(repr, MEASURE_STATUSES))}, "reason": text or null}}',
                index,
                where,
            )
        reason = entry.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise RankingInputError(
                f"item {index} ({name!r}): field '{where}.reason' must be text or null", index, where
            )
        parsed[measure] = {"status": entry["status"], "reason": reason}
    return parsed


def _parse_item(item: Any, index: int) -> ModelRecord:
    if not isinstance(item, dict):
        raise RankingInputError(f"item {index}: expected an object, got {type(item).__name__}", index)
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise RankingInputError(f"item {index}: field 'name' must be a non-empty string", index, "name")
    unknown = sorted(set(item).difference(RECORD_FIELDS, IGNORED_RECORD_FIELDS))
    if unknown:
        raise RankingInputError(
            f"item {index} ({name!r}): unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(RECORD_FIELDS)} (ignored: {', '.join(IGNORED_RECORD_FIELDS)})",
            index,
            unknown[0],
        )
    hyperparameters = _object(item, "hyperparameters", index, name)
    for axis, value in hyperparameters.items():
        try:
            hashable_value(value, f"item {index} ({name!r}), field 'hyperparameters.{axis}'")
        except RankingInputError as exc:
            raise RankingInputError(exc.detail, index, f"hyperparameters.{axis}") from None
    scores: dict[str, float] = {}
    for measure, value in _object(item, "scores", index, name).items():
        number = _number_or_none(value, index, name, f"scores.{measure}")
        if number is not None:
            scores[measure] = number
    meta = _object(item, "meta", index, name)
    probe_accuracy = None
    if meta.get("split") == "train":  # the accuracy measured on the probe is a training accuracy
        probe_accuracy = finite_or_none(meta.get("probe_accuracy"))
    return ModelRecord(
        name=name,
        hyperparameters={
            axis: tuple(value) if isinstance(value, list) else value
            for axis, value in hyperparameters.items()
        },
        scores=scores,
        test_accuracy=finite_or_none(
            _number_or_none(item.get("test_accuracy"), index, name, "test_accuracy")
        ),
        train_accuracy=finite_or_none(
            _number_or_none(item.get("train_accuracy"), index, name, "train_accuracy")
        ),
        measure_status=_parse_status(_object(item, "status", index, name), index, name),
        probe_accuracy=probe_accuracy,
    )


def parse_rank_records(data: Any) -> list[ModelRecord]:
    """Validate already-decoded JSON (a list of model objects) into records; see ``load_rank_file``."""
    if not isinstance(data, list):
        raise RankingInputError(f"expected a JSON list of models, got a JSON {type(data).__name__}")
    records = [_parse_item(item, index) for index, item in enumerate(data)]
    validate_records(records)
    return records


def load_rank_file(path: str | Path) -> list[ModelRecord]:
    """Read a JSON list of models, such as the ``models.json`` that ``experiments/digits_zoo.py`` writes.

    Each model is ``{"name", "hyperparameters", "scores", "test_accuracy", "train_accuracy", "status",
    "meta"}``; only ``name`` is required. ``status`` and ``meta`` have the shapes of a job result (only
    ``meta.probe_accuracy`` and ``meta.split`` are read). Scores and accuracies may be null (missing;
    NaN counts as missing too). A list value is a paired axis. The experiment's own fields (``checkpoint``,
    ``initial_checkpoint``, ``arch``, ``epochs``, ``seconds``, ``job_id``, ``state``) are ignored. Other fields, wrong types,
    duplicate names and reserved axis names raise ``RankingInputError`` naming the item (0-based index
    and name) and the field.
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
