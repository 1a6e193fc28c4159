"""Architecture specs: pydantic v2 models, a discriminated union on ``family``.

A spec is the JSON object a user sends next to a checkpoint (``arch`` in a scoring request). It fully
determines the module tree, hence the state_dict keys and shapes the checkpoint must match.

Families (layouts are documented in ``models/vgg.py``, ``models/wrn.py``, ``models/small.py``):

- ``vgg``: the paper's four-stage VGG variants, depth 9 or 13, first-stage width 32 or 48.
- ``wrn``: the paper's four-stage Wide-ResNet variants, depth 18 or 26, first-stage width 32 or 48.
- ``torchvision``: any torchvision classification model by name, never pretrained.
- ``mlp`` and ``cnn``: small models for small inputs (e.g. 8x8 digits).
- ``timm``: any timm model by name, never pretrained (optional extra ``gscore[timm]``).
- ``onnx``: the architecture and weights are one ``.onnx`` file (gscore/onnx_models.py); the spec only
  carries ``input``, and the file is passed where a checkpoint would be.

Every spec has ``num_classes`` and an optional ``input`` normalization: ``"dataset"`` (the default: use the
dataset's constants, e.g. CIFAR mean/std for CIFAR datasets, none for others), ``null`` (no normalization)
or ``{"mean": [...], "std": [...]}`` (one value per input channel, std > 0).

``parse_arch_spec`` turns any pydantic error into a ``SpecError`` whose ``field`` is the dotted path
(``arch.depth``, ``arch.hidden[1]``, ``arch.input.std[0]``) and whose detail names the allowed values.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gscore.errors import SpecError

MAX_CHANNELS = 64
MAX_CLASSES = 100_000

NumClasses = Annotated[
    int,
    Field(ge=2, le=MAX_CLASSES, description="Number of output logits (classes the model was trained on)."),
]
DropoutRate = Annotated[
    float,
    Field(ge=0.0, lt=1.0, description="Dropout probability used in training; no effect in eval mode."),
]
FAMILY_DOC = "Architecture family; selects the other fields."
InChannels = Annotated[int, Field(ge=1, le=MAX_CHANNELS, description="Channels of the input images.")]


class InputNormalization(BaseModel):
    """Per-channel input statistics: the model sees ``(x - mean[c]) / std[c]``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mean: list[float] = Field(min_length=1, max_length=MAX_CHANNELS, description="One mean per channel.")
    std: list[Annotated[float, Field(gt=0.0)]] = Field(
        min_length=1, max_length=MAX_CHANNELS, description="One standard deviation per channel, all > 0."
    )

    @model_validator(mode="after")
    def _check_lengths(self) -> InputNormalization:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean has {len(self.mean)} values but std has {len(self.std)}; give one per channel"
            )
        if not all(math.isfinite(v) for v in [*self.mean, *self.std]):
            raise ValueError("mean and std must be finite numbers")
        return self


InputSetting = Annotated[
    Union[InputNormalization, Literal["dataset"], None],  # noqa: UP007 (pydantic reads this union at runtime)
    Field(
        description='Input normalization: "dataset" (the dataset\'s default constants, if any), null (none) '
        'or {"mean": [...], "std": [...]} with one value per input channel.'
    ),
]


class BaseArchSpec(BaseModel):
    """Fields and checks shared by every family. ``in_channels`` is None when the family does not fix it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    summary: ClassVar[str]

    @field_validator("input", mode="after", check_fields=False)
    @classmethod
    def _check_input_channels(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, InputNormalization):
            channels = info.data.get("in_channels", getattr(cls, "fixed_in_channels", None))
            if channels is not None and len(value.mean) != channels:
                raise ValueError(
                    f"input.mean and input.std have {len(value.mean)} values but the model takes "
                    f"{channels} input channel(s); give one value per channel"
                )
        return value


class VGGSpec(BaseArchSpec):
    """The paper's VGG variants: 4 stages of conv-BN-ReLU, widths w, 2w, 4w, 8w, one linear classifier."""

    summary: ClassVar[str] = (
        "Four-stage VGG of the paper (appendix A.2). VGG-9: 4 stages x 2 conv3x3-BN-ReLU + 1 linear; VGG-13: "
        "4 x 3 conv + 1 linear. Stage widths w, 2w, 4w, 8w; 2x2 max-pool between stages; global average "
        "pool before the linear classifier; dropout after every conv-BN-ReLU."
    )

    family: Literal["vgg"] = Field(description=FAMILY_DOC)
    depth: Literal[9, 13] = Field(
        9, description="Weight layers: 9 (4 x 2 conv + linear) or 13 (4 x 3 + linear)."
    )
    width: Literal[32, 48] = Field(32, description="Channels of the first stage; doubled after each pooling.")
    num_classes: NumClasses
    dropout: DropoutRate = 0.0
    in_channels: InChannels = 3
    input: InputSetting = "dataset"


class WRNSpec(BaseArchSpec):
    """The paper's Wide-ResNet variants: stem conv-BN, 4 stages of post-activation basic blocks."""

    summary: ClassVar[str] = (
        "Four-stage Wide ResNet of the paper (appendix A.2). WRN-18: stem conv3x3-BN + 4 stages x 2 "
        "post-activation basic blocks (2 conv3x3 each) + 1 linear; WRN-26: 4 x 3 blocks. Stage widths w, 2w, "
        "4w, 8w; 2x2 max-pool between stages; parameter-free zero-padded identity shortcuts; global average "
        "pool; dropout between the two convs of each block."
    )

    family: Literal["wrn"] = Field(description=FAMILY_DOC)
    depth: Literal[18, 26] = Field(
        18,
        description="Weight layers: 18 (stem + 4 x 2 blocks + linear) or 26 (stem + 4 x 3 blocks + linear).",
    )
    width: Literal[32, 48] = Field(32, description="Channels of the first stage; doubled after each pooling.")
    num_classes: NumClasses
    dropout: DropoutRate = 0.0
    in_channels: InChannels = 3
    input: InputSetting = "dataset"


class TorchvisionSpec(BaseArchSpec):
    """Any torchvision classification model, built with ``weights=None`` (never pretrained)."""

    summary: ClassVar[str] = (
        "A torchvision classification model by name (torchvision.models.get_model(name, weights=None, "
        "num_classes=N)); never pretrained; 3 input channels. Only the ReLU calls of a model are measured, "
        "so models with other activations (GELU, SiLU, Hardswish) expose few or no layers."
    )
    fixed_in_channels: ClassVar[int] = 3

    family: Literal["torchvision"] = Field(description=FAMILY_DOC)
    name: str = Field(min_length=1, max_length=100, description="A torchvision classification model name.")
    num_classes: NumClasses
    input: InputSetting = "dataset"

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra=lambda schema: schema["properties"]["name"].update(enum=_torchvision_names()),
    )

    @property
    def in_channels(self) -> int:
        return self.fixed_in_channels

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        names = _torchvision_names()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
            if not close:
                close = difflib.get_close_matches(name.lower(), names, n=5, cutoff=0.5)
            if close:
                hint = f"close matches: {', '.join(close)} (GET /v1/architectures lists all {len(names)})"
            else:
                hint = f"name must be one of {', '.join(names)}"
            raise ValueError(f"unknown torchvision model {name!r}; {hint}")
        return name


class MLPSpec(BaseArchSpec):
    """Fully connected ReLU network on the flattened input."""

    summary: ClassVar[str] = (
        "MLP on the flattened input: for each hidden size a linear-ReLU(-dropout) layer, then a linear "
        "classifier. No batch norm."
    )

    family: Literal["mlp"] = Field(description=FAMILY_DOC)
    in_features: int = Field(
        ge=1, le=1_000_000, description="Size of the flattened input, e.g. 64 for 1x8x8."
    )
    hidden: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default=[64, 64],
        min_length=1,
        max_length=16,
        description="Width of each hidden layer (1 to 16 layers, each 1..8192 units).",
    )
    num_classes: NumClasses
    dropout: DropoutRate = 0.0
    in_channels: InChannels | None = Field(
        None, description="Channels of the input images; only used to check input normalization lengths."
    )
    input: InputSetting = "dataset"


class CNNSpec(BaseArchSpec):
    """Small conv net: ``depth`` conv-BN-ReLU layers in up to 3 stages, width doubling per stage."""

    summary: ClassVar[str] = (
        "Small CNN: `depth` conv3x3(-BN)-ReLU(-dropout) layers split as evenly as possible into "
        "min(depth, 3) stages (earlier stages get the extra layers), widths w, 2w, 4w, 2x2 max-pool between "
        "stages, global average or max pool, linear classifier."
    )

    family: Literal["cnn"] = Field(description=FAMILY_DOC)
    in_channels: InChannels = 1
    width: int = Field(
        16, ge=4, le=256, description="Channels of the first stage; doubled after each pooling."
    )
    depth: int = Field(2, ge=1, le=8, description="Number of conv layers.")
    num_classes: NumClasses
    dropout: DropoutRate = 0.0
    batch_norm: bool = Field(
        True, description="BatchNorm2d between each conv and its ReLU (conv has no bias)."
    )
    global_pool: Literal["avg", "max"] = Field("avg", description="Global pooling before the classifier.")
    input: InputSetting = "dataset"


class TimmSpec(BaseArchSpec):
    """Any timm model, built with ``pretrained=False`` (nothing is downloaded); needs ``gscore[timm]``."""

    summary: ClassVar[str] = (
        "A timm model by name (timm.create_model(name, pretrained=False, num_classes=N, in_chans=C)); never "
        "pretrained, nothing downloaded; needs the optional extra gscore[timm]. Only ReLU-type calls are "
        "measured: for models with GELU/SiLU activations (ViT, ConvNeXt, EfficientNet) c1-c4 are undefined "
        "and the other measures still run."
    )

    family: Literal["timm"] = Field(description=FAMILY_DOC)
    name: str = Field(min_length=1, max_length=100, description="A timm model name (timm.list_models()).")
    num_classes: NumClasses
    in_channels: InChannels = 3
    input: InputSetting = "dataset"

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra=lambda schema: (
            schema["properties"]["name"].update(enum=_timm_names()) if _timm_names() else None
        ),
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        from gscore.models.timm_models import TIMM_INSTALL_HINT, timm_available

        if not timm_available():
            raise ValueError(TIMM_INSTALL_HINT)
        names = _timm_names()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else "GET /v1/architectures lists the names"
            raise ValueError(f"unknown timm model {name!r}; {hint} ({len(names)} names)")
        return name


class OnnxSpec(BaseArchSpec):
    """An ONNX file holds architecture and weights; the spec only says how to normalize its input."""

    summary: ClassVar[str] = (
        "Any architecture exported to ONNX (torch.onnx.export(..., external_data=False)): the .onnx file is "
        "both architecture and weights and is sent instead of a checkpoint (CLI: gscore score --model "
        "FILE.onnx). ONNX Relu nodes are the measured ReLU calls. Refused: external data, unsupported "
        "operators (named), inputs that do not fit the dataset's images. Needs the optional extra gscore[onnx]."
    )

    family: Literal["onnx"] = Field(description=FAMILY_DOC)
    input: InputSetting = "dataset"


ArchSpec = Annotated[
    Union[VGGSpec, WRNSpec, TorchvisionSpec, MLPSpec, CNNSpec, TimmSpec, OnnxSpec],  # noqa: UP007
    Field(discriminator="family"),
]
"""Type of a parsed spec; usable as a field type in other pydantic models (``arch: ArchSpec``)."""

SPEC_CLASSES: dict[str, type[BaseArchSpec]] = {
    "vgg": VGGSpec,
    "wrn": WRNSpec,
    "torchvision": TorchvisionSpec,
    "mlp": MLPSpec,
    "cnn": CNNSpec,
    "timm": TimmSpec,
    "onnx": OnnxSpec,
}
FAMILIES: tuple[str, ...] = tuple(SPEC_CLASSES)


def _timm_names() -> list[str]:
    from gscore.models.timm_models import timm_model_names

    return timm_model_names()


def _torchvision_names() -> list[str]:
    from gscore.models.torchvision_zoo import torchvision_model_names

    return torchvision_model_names()


def parse_arch_spec(spec: BaseArchSpec | Mapping[str, Any] | str, *, prefix: str = "arch") -> BaseArchSpec:
    """Validate a spec given as a dict, JSON text or an already parsed spec.

    Raises ``SpecError(detail, field=...)`` where ``field`` is the dotted path under ``prefix`` of the first
    problem and the detail lists every problem (up to 5) with the allowed values.
    """
    if isinstance(spec, BaseArchSpec):
        return spec
    if isinstance(spec, (str, bytes)):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{prefix} is not valid JSON: {exc}", field=prefix) from None
    if not isinstance(spec, Mapping):
        raise SpecError(f"{prefix} must be a JSON object, got {type(spec).__name__}", field=prefix)
    family = spec.get("family")
    if family not in SPEC_CLASSES:
        allowed = ", ".join(FAMILIES)
        if family is None:
            detail = f"{prefix}.family is required; family must be one of {allowed}"
        else:
            detail = f"{prefix}.family must be one of {allowed} (got {family!r})"
        raise SpecError(detail, field=f"{prefix}.family")
    spec_cls = SPEC_CLASSES[family]
    try:
        return spec_cls.model_validate(dict(spec))
    except ValidationError as exc:
        problems = _readable_errors(family, spec_cls, exc, dict(spec), prefix)
        detail = "; ".join(message for _, message in problems[:5])
        if len(problems) > 5:
            detail += f"; and {len(problems) - 5} more problem(s)"
        raise SpecError(detail, field=problems[0][0]) from None


def describe_allowed(spec_cls: type[BaseModel], field_name: str) -> str:
    """Human-readable allowed values of one field, e.g. ``one of 9, 13`` or ``an integer in [4, 256]``."""
    prop = spec_cls.model_json_schema()["properties"].get(field_name, {})
    return _describe_schema(prop)


def _describe_schema(prop: Mapping[str, Any]) -> str:
    if "const" in prop:
        return f"exactly {json.dumps(prop['const'])}"
    if "enum" in prop:
        values = [json.dumps(v) for v in prop["enum"]]
        if len(values) > 12:
            return f"one of {len(values)} names (GET /v1/architectures lists them)"
        return f"one of {', '.join(values)}"
    if "anyOf" in prop:
        parts = []
        for option in prop["anyOf"]:
            if "$ref" in option:
                parts.append('{"mean": [...], "std": [...]}')
            elif option.get("type") == "null":
                parts.append("null")
            else:
                parts.append(_describe_schema(option))
        return " or ".join(parts)
    kind = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string"}
    if prop.get("type") == "array":
        items = _describe_schema(prop.get("items", {}))
        low, high = prop.get("minItems"), prop.get("maxItems")
        count = f" of {low} to {high} items" if low is not None and high is not None else ""
        return f"a list{count}, each {items}"
    text = kind.get(prop.get("type", ""), "a value")
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum", prop.get("exclusiveMaximum"))
    if low is not None and high is not None:
        left = "(" if "exclusiveMinimum" in prop else "["
        right = ")" if "exclusiveMaximum" in prop else "]"
        return f"{text} in {left}{low}, {high}{right}"
    if low is not None:
        return f"{text} {'>' if 'exclusiveMinimum' in prop else '>='} {low}"
    if high is not None:
        return f"{text} {'<' if 'exclusiveMaximum' in prop else '<='} {high}"
    return text


def _format_loc(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _readable_errors(
    family: str, spec_cls: type[BaseArchSpec], exc: ValidationError, raw: dict[str, Any], prefix: str
) -> list[tuple[str, str]]:
    """(field path, message) per pydantic error, with union-branch labels removed and duplicates merged."""
    problems: list[tuple[str, str]] = []
    input_is_object = isinstance(raw.get("input"), Mapping)
    input_reported = False
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        owner: type[BaseModel] = spec_cls
        owner_name = f"family {family!r}"
        if loc and loc[0] == "input" and len(loc) > 1:
            # Inside Union[InputNormalization, "dataset", None]: when an object was given keep the errors of
            # the object branch only, else report one summary message.
            if input_is_object:
                if InputNormalization.__name__ not in str(loc[1]):
                    continue
                loc, owner, owner_name = ("input", *loc[2:]), InputNormalization, "input"
            else:
                if input_reported:
                    continue
                input_reported = True
                loc, kind = ("input",), "input_union"
        path = _format_loc(prefix, loc)
        name = str(loc[-1]) if loc else prefix
        got = f" (got {json.dumps(error.get('input'), default=str)[:60]})" if "input" in error else ""
        field_names = list(owner.model_fields)
        if kind == "input_union":
            message = f"{path} must be {describe_allowed(spec_cls, 'input')}{got}"
        elif kind == "extra_forbidden":
            message = (
                f"{path}: unknown field {name!r} for {owner_name}; allowed fields: {', '.join(field_names)}"
            )
        elif kind == "missing":
            message = f"{path} is required; {name} must be {describe_allowed(owner, name)}"
        elif kind == "value_error":
            message = f"{path}: {error['msg'].removeprefix('Value error, ')}"
        elif name in field_names and loc[-1] == name:
            message = f"{path}: {name} must be {describe_allowed(owner, name)}{got}"
        else:
            message = f"{path}: {error['msg']}{got}"
        problems.append((path, message))
    return problems
