"""Architecture registry: parse a JSON spec, build a fresh model, choose its input normalization.

    spec = parse_arch_spec({"family": "vgg", "depth": 9, "width": 32, "num_classes": 10})
    model = build_model(spec)                      # random init, deterministic given torch.manual_seed
    load_into(model, read_state_dict(path))        # gscore.inputs.checkpoints.loading; keys never contain normalization
    norm = input_normalization(spec, dataset_default=(mean, std) or None)
    net = nn.Sequential(norm, model) if norm is not None else model

Every model is a classifier [B, C, H, W] -> logits [B, num_classes] whose only activation is ReLU (distinct
``nn.ReLU`` modules, ``inplace=False``, in the vgg/wrn/mlp/cnn families; torchvision models keep their own
forward, which may call ReLU functionally or in place).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gscore.errors import SpecError
from gscore.models.normalization import Normalize, input_normalization
from gscore.models.small import MLP, SmallCNN
from gscore.models.spec import (
    FAMILIES,
    SPEC_CLASSES,
    ArchSpec,
    BaseArchSpec,
    CNNSpec,
    InputNormalization,
    MLPSpec,
    OnnxSpec,
    TimmSpec,
    TorchvisionSpec,
    VGGSpec,
    WRNSpec,
    parse_arch_spec,
)
from gscore.models.timm_models import build_timm_model, timm_available, timm_model_names
from gscore.models.torchvision_zoo import build_torchvision_model, torchvision_model_names
from gscore.models.vgg import VGG
from gscore.models.wrn import WideResNet

__all__ = [
    "FAMILIES",
    "ArchSpec",
    "BaseArchSpec",
    "CNNSpec",
    "InputNormalization",
    "MLPSpec",
    "Normalize",
    "OnnxSpec",
    "TimmSpec",
    "TorchvisionSpec",
    "VGGSpec",
    "WRNSpec",
    "architecture_catalog",
    "build_model",
    "input_normalization",
    "parse_arch_spec",
    "timm_available",
    "timm_model_names",
    "torchvision_model_names",
]


def build_model(spec: BaseArchSpec | dict[str, Any] | str) -> nn.Module:
    """A fresh, randomly initialised model for ``spec`` (parsed first if needed), in training mode on CPU.

    Deterministic given ``torch.manual_seed``. Raises SpecError for an invalid spec.
    """
    spec = parse_arch_spec(spec)
    if isinstance(spec, VGGSpec):
        return VGG(spec.depth, spec.width, spec.num_classes, spec.in_channels, spec.dropout)
    if isinstance(spec, WRNSpec):
        return WideResNet(spec.depth, spec.width, spec.num_classes, spec.in_channels, spec.dropout)
    if isinstance(spec, TorchvisionSpec):
        return build_torchvision_model(spec.name, spec.num_classes)
    if isinstance(spec, TimmSpec):
        return build_timm_model(spec.name, spec.num_classes, spec.in_channels)
    if isinstance(spec, OnnxSpec):
        raise SpecError(
            'the "onnx" family is built from the .onnx file itself: pass it as the checkpoint (CLI: gscore '
            "score --model FILE.onnx) or call gscore.inputs.onnx_models.load_onnx_model(path, max_bytes=...)",
            field="arch.family",
        )
    if isinstance(spec, MLPSpec):
        return MLP(spec.in_features, list(spec.hidden), spec.num_classes, spec.dropout)
    if isinstance(spec, CNNSpec):
        return SmallCNN(
            spec.in_channels,
            spec.width,
            spec.depth,
            spec.num_classes,
            spec.dropout,
            spec.batch_norm,
            spec.global_pool,
        )
    raise TypeError(f"no builder for {type(spec).__name__}")


EXAMPLES: dict[str, dict[str, Any]] = {
    "vgg": {"family": "vgg", "depth": 9, "width": 32, "num_classes": 10, "dropout": 0.0},
    "wrn": {"family": "wrn", "depth": 18, "width": 32, "num_classes": 100, "dropout": 0.0},
    "torchvision": {"family": "torchvision", "name": "resnet18", "num_classes": 10},
    "mlp": {"family": "mlp", "in_features": 64, "hidden": [64, 64], "num_classes": 10, "dropout": 0.0},
    "timm": {"family": "timm", "name": "resnet18", "num_classes": 10, "in_channels": 3},
    "onnx": {"family": "onnx"},
    "cnn": {
        "family": "cnn",
        "in_channels": 1,
        "width": 16,
        "depth": 2,
        "num_classes": 10,
        "batch_norm": True,
    },
}


def architecture_catalog() -> list[dict[str, Any]]:
    """What GET /v1/architectures returns: one entry per family.

    Entry: ``{"family", "description", "fields": [{"name", "type", "required", "default"?, "allowed"?,
    "minimum"?, "maximum"?, "exclusive_maximum"?, "description"}], "example", "json_schema"}``.
    ``allowed`` lists every permitted value (torchvision: all model names); numeric ranges use
    minimum/maximum (inclusive) or exclusive_maximum.
    """
    catalog = []
    for family, spec_cls in SPEC_CLASSES.items():
        schema = spec_cls.model_json_schema()
        required = set(schema.get("required", []))
        fields = []
        for name, prop in schema["properties"].items():
            entry: dict[str, Any] = {"name": name, "type": _schema_type(prop), "required": name in required}
            if name not in required:
                entry["default"] = prop.get("default")
            entry.update(_schema_constraints(prop))
            entry["description"] = prop.get("description", "")
            fields.append(entry)
        catalog.append(
            {
                "family": family,
                "description": spec_cls.summary,
                "fields": fields,
                "example": EXAMPLES[family],
                "json_schema": schema,
            }
        )
    return catalog


def _schema_type(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        names = []
        for option in prop["anyOf"]:
            if "$ref" in option:
                names.append("object")
            elif "const" in option:
                names.append(repr(option["const"]).replace("'", '"'))
            else:
                names.append(option.get("type", "any"))
        return " | ".join(names)
    if prop.get("type") == "array":
        return f"array[{prop.get('items', {}).get('type', 'any')}]"
    return str(prop.get("type", "any"))


def _schema_constraints(prop: dict[str, Any]) -> dict[str, Any]:
    if "const" in prop:
        return {"allowed": [prop["const"]]}
    if "enum" in prop:
        return {"allowed": list(prop["enum"])}
    source = prop
    if "anyOf" in prop:  # e.g. an optional integer: report the integer's range
        numeric = [option for option in prop["anyOf"] if option.get("type") in ("integer", "number")]
        source = numeric[0] if numeric else {}
    if prop.get("type") == "array":
        out = {key: prop[key] for key in ("minItems", "maxItems") if key in prop}
        out.update({f"items_{k}": v for k, v in _schema_constraints(prop.get("items", {})).items()})
        return {_snake(k): v for k, v in out.items()}
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    return {_snake(key): source[key] for key in keys if key in source}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
