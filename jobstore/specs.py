"""The job spec: its pydantic model, the submission's model entry, normalization, and the engine request it
becomes (the dedupe key of a normalized spec is in ``jobstore.dedupe``)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gscore.errors import DatasetError, SpecError
from gscore.settings import Settings

if TYPE_CHECKING:
    from gscore.pipeline import ScoreRequest

DATASET_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_SEED = 2**64 - 1


def _no_control_characters(value: str | None) -> str | None:
    if value is not None and any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


class JobSpec(BaseModel):
    """What to compute: ``spec`` in ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    arch: dict[str, Any] = Field(description="Architecture spec, e.g. {'family': 'cnn', ...}")
    dataset: str = Field(min_length=1, max_length=64, description="Built-in or uploaded dataset name")
    split: str = "train"
    measures: list[str] | None = None
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    samples_per_class: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="0 .. 2**64-1 (torch.manual_seed's range)")


class SubmissionMeta(BaseModel):
    """Where a job's model goes: its collection, name, hyperparameters and accuracies."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, min_length=1, max_length=128)
    model_name: str | None = Field(None, min_length=1, max_length=256)
    hyperparameters: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    test_accuracy: float | None = None
    train_accuracy: float | None = None

    @field_validator("collection")
    @classmethod
    def _collection_is_a_path_segment(cls, value: str | None) -> str | None:
        # it is read back at /v1/collections/{name}: one URL path segment
        if value is not None and ("/" in value or value in (".", "..")):
            raise ValueError("must not contain '/' or be '.' or '..' (it is read at /v1/collections/{name})")
        return _no_control_characters(value)

    @field_validator("model_name")
    @classmethod
    def _model_name_is_printable(cls, value: str | None) -> str | None:
        return _no_control_characters(value)


def _first_error(exc: ValidationError, prefix: str) -> SpecError:
    err = exc.errors()[0]
    location = ".".join(str(part) for part in err["loc"])
    field = f"{prefix}.{location}" if location else prefix
    return SpecError(f"{field}: {err['msg']}", field=field)


def parse_spec(raw: str | None) -> JobSpec:
    """The ``spec`` form field -> JobSpec, or a SpecError naming the field."""
    if raw is None or not raw.strip():
        raise SpecError("the form field 'spec' (a JSON object) is required", field="spec")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"spec is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", field="spec"
        ) from None
    if not isinstance(data, dict):
        raise SpecError("spec must be a JSON object", field="spec")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, "spec") from None


def parse_meta(fields: dict[str, str]) -> SubmissionMeta:
    """The optional form fields -> SubmissionMeta, or a SpecError naming the field."""
    data: dict[str, Any] = {}
    for name in ("collection", "model_name"):
        if fields.get(name, "").strip():
            data[name] = fields[name].strip()
    if fields.get("hyperparameters", "").strip():
        try:
            data["hyperparameters"] = json.loads(fields["hyperparameters"])
        except json.JSONDecodeError:
            raise SpecError("hyperparameters is not valid JSON", field="hyperparameters") from None
        if not isinstance(data["hyperparameters"], dict):
            raise SpecError("hyperparameters must be a flat JSON object", field="hyperparameters")
        for key, value in data["hyperparameters"].items():
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(
                    f"hyperparameters.{key} must be a finite number (got {value})",
                    field=f"hyperparameters.{key}",
                )
    for name in ("test_accuracy", "train_accuracy"):
        if fields.get(name, "").strip():
            try:
                value = float(fields[name])
            except ValueError:
                raise SpecError(f"{name} must be a number", field=name) from None
            if not math.isfinite(value):
                raise SpecError(f"{name} must be a finite number", field=name)
            if not 0 <= value <= 1:  # one scale per collection, or the rankings mix percentages and fractions
                raise SpecError(
                    f"{name} must be a fraction in [0, 1] (got {value}; 0.93, not 93)", field=name
                )
            data[name] = value
    try:
        return SubmissionMeta.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise SpecError(
            f"{field}: {error['msg']} (hyperparameters must be flat: string, number, boolean or null values)"
            if field.startswith("hyperparameters")
            else f"{field}: {error['msg']}",
            field=field,
        ) from None


def normalized_spec(spec: JobSpec, dataset_sha256: str | None) -> dict[str, Any]:
    """The spec as stored with the job; uploaded datasets carry their content hash."""
    data = spec.model_dump()
    if dataset_sha256 is not None:
        data["dataset_sha256"] = dataset_sha256
    return data


def check_dataset_name(name: str) -> None:
    if not DATASET_NAME_PATTERN.match(name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use 1-64 characters a-z, 0-9, '-' and '_' starting with a "
            "letter or digit"
        )


def score_request(
    spec: dict[str, Any], checkpoint: Path, settings: Settings, dataset_path: Path | None
) -> ScoreRequest:
    """The engine request for a stored spec; ``dataset_path`` is the stored file of an uploaded dataset."""
    from gscore.pipeline import ScoreRequest

    return ScoreRequest(
        checkpoint=checkpoint,
        arch=spec["arch"],
        dataset=str(dataset_path) if dataset_path is not None else spec["dataset"],
        split=spec["split"],
        measures=spec["measures"],
        params=spec["params"],
        samples_per_class=spec["samples_per_class"],
        seed=spec["seed"],
        device=settings.device,
        data_dir=settings.resolved_datasets_dir,
    )
