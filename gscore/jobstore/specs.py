"""The job spec: its pydantic model, the submission's model entry, normalization, and the engine request it
becomes (the dedupe key of a normalized spec is in ``gscore.jobstore.dedupe``)."""

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
MAX_JSON_FIELD_BYTES = 64 * 1024  # a spec with every measure's params is under 2 KB
MAX_JSON_DEPTH = 16  # the deepest spec: spec.arch.input.mean[...] is 4 levels
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _no_control_characters(value: str | None) -> str | None:
    if value is not None and any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def json_nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in the JSON ``text`` (0 for a scalar), without parsing it.

    Brackets inside string literals do not count; on malformed text the count is of the brackets outside
    anything that reads as a string (the parser reports the syntax error afterwards).
    """
    depth = deepest = 0
    for char in re.sub(r"[^\[\]{}]", "", JSON_STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json_field(raw: str, field: str) -> Any:
    """A JSON form field's value, or a SpecError naming ``field``.

    Parameters
    ----------
    raw : the field's text; at most ``MAX_JSON_FIELD_BYTES`` bytes (UTF-8) nested at most
        ``MAX_JSON_DEPTH`` deep, checked before parsing (so no input reaches the parser's recursion limit).
    field : the form field's name, for the message and the problem document's ``field``.

    Returns
    -------
    The parsed value (any JSON type; the caller checks it).
    """
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_JSON_FIELD_BYTES:
        raise SpecError(
            f"{field} is {size} bytes of JSON; at most {MAX_JSON_FIELD_BYTES} are accepted", field=field
        )
    depth = json_nesting_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise SpecError(
            f"{field} nests arrays/objects {depth} deep; at most {MAX_JSON_DEPTH} levels are accepted",
            field=field,
        )
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"{field} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", field=field
        ) from None
    except RecursionError:  # unreachable below MAX_JSON_DEPTH; kept so no input can answer 500
        raise SpecError(f"{field} nests too deeply", field=field) from None


def parse_flag(raw: str | None, field: str) -> bool:
    """A boolean form field (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``; absent: False)."""
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SpecError(f"{field} must be true or false (got {raw[:40]!r})", field=field)


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
        # it is read back at /v1/collections/{name}: one URL path segment, exactly as sent
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must not be empty or whitespace only")
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        if "/" in value or value in (".", ".."):
            raise ValueError("must not contain '/' or be '.' or '..' (it is read at /v1/collections/{name})")
        if any(unicodedata.category(ch) == "Cs" for ch in value):
            raise ValueError("must be valid Unicode (no lone surrogates)")
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


def parse_spec(raw: str | None, *, onnx_model: bool = False) -> JobSpec:
    """The ``spec`` form field -> JobSpec, or a SpecError naming the field.

    With ``onnx_model`` (the upload is a ``model`` file part: an .onnx file) the arch is
    ``{"family": "onnx"}``: ``spec.arch`` may be left out, or give only ``input`` (its normalization).
    Without it, an onnx arch is refused (the .onnx file goes in the ``model`` part).
    """
    if raw is None or not raw.strip():
        raise SpecError("the form field 'spec' (a JSON object) is required", field="spec")
    data = parse_json_field(raw, "spec")
    if not isinstance(data, dict):
        raise SpecError("spec must be a JSON object", field="spec")
    arch = data.get("arch")
    if onnx_model:
        if arch is None:
            arch = {}
        if (
            not isinstance(arch, dict)
            or arch.get("family", "onnx") != "onnx"
            or set(arch) - {"family", "input"}
        ):
            raise SpecError(
                'with a model file (.onnx) the arch is {"family": "onnx"}; spec.arch may be left out or set '
                'only "input"',
                field="spec.arch",
            )
        data = {**data, "arch": {**arch, "family": "onnx"}}
    elif isinstance(arch, dict) and arch.get("family") == "onnx":
        raise SpecError(
            "an ONNX model is sent as the 'model' file part (the arch is then implied), not as 'checkpoint'",
            field="checkpoint",
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, "spec") from None


def parse_meta(fields: dict[str, str]) -> SubmissionMeta:
    """The optional form fields -> SubmissionMeta, or a SpecError naming the field."""
    data: dict[str, Any] = {}
    if "collection" in fields:  # kept exactly as sent: it is read back at /v1/collections/{name}
        data["collection"] = fields["collection"]
    if "model_name" in fields:
        if not fields["model_name"].strip():
            raise SpecError("model_name must not be empty or whitespace only", field="model_name")
        data["model_name"] = fields["model_name"].strip()
    if fields.get("hyperparameters", "").strip():
        data["hyperparameters"] = parse_json_field(fields["hyperparameters"], "hyperparameters")
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
    spec: dict[str, Any],
    checkpoint: Path,
    settings: Settings,
    dataset_path: Path | None,
    initial_checkpoint: Path | None = None,
) -> ScoreRequest:
    """The engine request for a stored spec; ``dataset_path`` is the stored file of an uploaded dataset,
    ``initial_checkpoint`` the stored file of ``spec["initial_checkpoint_sha256"]``."""
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
        max_model_bytes=settings.max_upload_bytes,
        initial_checkpoint=initial_checkpoint,
    )
