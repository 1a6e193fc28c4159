"""Architecture registry: specs, validation errors, layouts of the paper's variants, normalization."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from gscore.errors import SpecError
from gscore.models import (
    ArchSpec,
    Normalize,
    VGGSpec,
    architecture_catalog,
    build_model,
    input_normalization,
    parse_arch_spec,
)

CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def relu_input_channels(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Channels of the tensor fed to every ReLU call during one forward pass (eval mode)."""
    seen: list[int] = []
    handles = [
        m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    model.eval()
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return seen


def spec_error(spec: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_arch_spec(spec)  # type: ignore[arg-type]
    return info.value


# ---- every family builds and runs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "input_shape"),
    [
        ({"family": "vgg", "depth": 9, "width": 32, "num_classes": 10}, (2, 3, 32, 32)),
        ({"family": "vgg", "depth": 13, "width": 32, "num_classes": 10, "dropout": 0.2}, (2, 3, 8, 8)),
        ({"family": "wrn", "depth": 18, "width": 32, "num_classes": 20}, (2, 3, 32, 32)),
        ({"family": "wrn", "depth": 26, "width": 32, "num_classes": 100, "dropout": 0.4}, (2, 3, 9, 12)),
        ({"family": "vgg", "depth": 9, "width": 32, "num_classes": 10, "in_channels": 1}, (2, 1, 8, 8)),
        ({"family": "mlp", "in_features": 64, "hidden": [32, 16], "num_classes": 10}, (3, 1, 8, 8)),
        ({"family": "cnn", "in_channels": 1, "width": 8, "depth": 3, "num_classes": 10}, (3, 1, 8, 8)),
        ({"family": "cnn", "width": 4, "depth": 1, "num_classes": 2, "batch_norm": False}, (3, 1, 5, 5)),
        ({"family": "cnn", "width": 4, "depth": 8, "num_classes": 3, "global_pool": "max"}, (2, 1, 8, 8)),
        ({"family": "torchvision", "name": "resnet18", "num_classes": 7}, (1, 3, 32, 32)),
    ],
)
def test_family_builds_and_forward_shape(spec: dict, input_shape: tuple[int, ...]) -> None:
    model = build_model(spec)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(*input_shape))
    assert logits.shape == (input_shape[0], spec["num_classes"])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("family", "depth", "convs_per_stage", "relu_layers"),
    [("vgg", 9, 2, 8), ("vgg", 13, 3, 12), ("wrn", 18, 4, 16), ("wrn", 26, 6, 24)],
)
def test_weight_layer_count_matches_name_and_widths_double(
    family: str, depth: int, convs_per_stage: int, relu_layers: int
) -> None:
    model = build_model({"family": family, "depth": depth, "width": 32, "num_classes": 10})
    layers = weight_layers(model)
    assert len(layers) == depth
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    stage_convs = convs[1:] if family == "wrn" else convs  # wrn: stem conv first
    widths = [conv.out_channels for conv in stage_convs]
    assert widths == [w for w in (32, 64, 128, 256) for _ in range(convs_per_stage)]
    assert isinstance(layers[-1], nn.Linear) and layers[-1].in_features == 256
    # BatchNorm before every ReLU: one BN per conv (no bias on convs).
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs)
    assert all(conv.bias is None for conv in convs)
    # One measured layer per ReLU call, all at stage width.
    channels = relu_input_channels(model, torch.randn(1, 3, 8, 8))
    assert len(channels) == relu_layers
    assert channels == [w for w in (32, 64, 128, 256) for _ in range(relu_layers // 4)]


@pytest.mark.parametrize(
    ("spec", "neurons"),
    [
        ({"family": "vgg", "depth": 9, "width": 32}, 960),
        ({"family": "vgg", "depth": 9, "width": 48}, 1440),
        ({"family": "wrn", "depth": 18, "width": 32}, 1920),
        ({"family": "wrn", "depth": 18, "width": 48}, 2880),
    ],
)
def test_neuron_counts_match_the_paper(spec: dict, neurons: int) -> None:
    """Paper, Fig. 4 caption: 960-1440 neurons in the VGGs, 1920-2880 in the ResNets."""
    model = build_model({**spec, "num_classes": 10})
    assert sum(relu_input_channels(model, torch.randn(1, 3, 8, 8))) == neurons


def test_width_48_first_stage() -> None:
    model = build_model({"family": "wrn", "depth": 18, "width": 48, "num_classes": 10})
    assert model.stem.conv.out_channels == 48
    assert [stage[0].conv1.out_channels for stage in model.stages] == [48, 96, 192, 384]


def test_cnn_width_doubles_at_up_to_two_pooling_steps() -> None:
    model = build_model({"family": "cnn", "width": 8, "depth": 4, "num_classes": 10})
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 32]
    assert len(weight_layers(build_model({"family": "cnn", "depth": 7, "num_classes": 2}))) == 8


def test_only_relu_activations_and_not_inplace() -> None:
    forbidden = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Hardswish)
    for spec in (
        {"family": "vgg", "num_classes": 10},
        {"family": "wrn", "num_classes": 10},
        {"family": "mlp", "in_features": 64, "num_classes": 10},
        {"family": "cnn", "num_classes": 10},
        {"family": "torchvision", "name": "resnet18", "num_classes": 10},
    ):
        modules = list(build_model(spec).modules())
        relus = [m for m in modules if isinstance(m, nn.ReLU)]
        assert relus and not any(m.inplace for m in relus)
        assert not any(isinstance(m, forbidden) for m in modules)


def test_build_is_deterministic_given_seed() -> None:
    spec = {"family": "cnn", "width": 8, "depth": 2, "num_classes": 10}
    torch.manual_seed(3)
    first = build_model(spec).state_dict()
    torch.manual_seed(3)
    second = build_model(spec).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_dropout_does_not_change_state_dict_keys() -> None:
    base = {"family": "wrn", "depth": 18, "width": 32, "num_classes": 10}
    plain = build_model(base).state_dict()
    with_dropout = build_model({**base, "dropout": 0.3}).state_dict()
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in with_dropout.items()}


# ---- validation errors ------------------------------------------------------------------------


def test_bad_vgg_depth_names_field_and_allowed_values() -> None:
    error = spec_error({"family": "vgg", "depth": 11, "width": 32, "num_classes": 10})
    assert error.field == "arch.depth"
    assert "depth must be one of 9, 13" in error.detail and "11" in error.detail


def test_bad_wrn_width() -> None:
    error = spec_error({"family": "wrn", "depth": 18, "width": 64, "num_classes": 10})
    assert error.field == "arch.width" and "32, 48" in error.detail


def test_unknown_family_lists_families() -> None:
    error = spec_error({"family": "resnet", "num_classes": 10})
    assert error.field == "arch.family"
    for family in ("vgg", "wrn", "torchvision", "mlp", "cnn"):
        assert family in error.detail
    assert spec_error({"num_classes": 10}).field == "arch.family"


def test_unknown_torchvision_name_suggests_close_matches() -> None:
    error = spec_error({"family": "torchvision", "name": "resnet19", "num_classes": 10})
    assert error.field == "arch.name"
    assert "resnet18" in error.detail and "resnet19" in error.detail
    error = spec_error({"family": "torchvision", "name": "qqqqqq", "num_classes": 10})
    assert "alexnet" in error.detail  # no close match: all names listed


def test_extra_field_rejected() -> None:
    error = spec_error({"family": "vgg", "num_classes": 10, "pretrained": True})
    assert error.field == "arch.pretrained"
    assert "unknown field" in error.detail and "depth" in error.detail


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ({"family": "vgg"}, "arch.num_classes", "required"),
        ({"family": "vgg", "num_classes": 10, "dropout": 1.0}, "arch.dropout", "[0.0, 1.0)"),
        ({"family": "vgg", "num_classes": "10"}, "arch.num_classes", "integer"),
        ({"family": "cnn", "num_classes": 10, "width": 2}, "arch.width", "[4, 256]"),
        ({"family": "cnn", "num_classes": 10, "depth": 9}, "arch.depth", "[1, 8]"),
        ({"family": "mlp", "in_features": 64, "hidden": [8, 0], "num_classes": 10}, "arch.hidden[1]", "0"),
        ({"family": "mlp", "in_features": 64, "hidden": [], "num_classes": 10}, "arch.hidden", "1 to 16"),
        (
            {"family": "vgg", "num_classes": 10, "input": {"mean": [0.5] * 3, "std": [1.0, 0.0, 1.0]}},
            "arch.input.std[1]",
            "greater than 0",
        ),
        (
            {"family": "vgg", "num_classes": 10, "input": {"mean": [0.5], "std": [1.0]}},
            "arch.input",
            "3 input",
        ),
        ({"family": "cnn", "num_classes": 10, "input": "imagenet"}, "arch.input", '"dataset" or null'),
        (
            {"family": "cnn", "num_classes": 10, "input": {"mean": [0.1], "sd": [1]}},
            "arch.input.std",  # first problem: std missing; the unknown "sd" is reported as well
            "arch.input.sd: unknown field 'sd' for input; allowed fields: mean, std",
        ),
        ("{not json", "arch", "JSON"),
        ([1, 2], "arch", "object"),
    ],
)
def test_invalid_specs_name_the_field(spec: object, field: str, fragment: str) -> None:
    error = spec_error(spec)
    assert error.field == field
    assert fragment in error.detail
    assert error.detail.startswith("arch")


def test_parse_accepts_json_text_and_round_trips() -> None:
    spec = parse_arch_spec('{"family": "vgg", "depth": 13, "width": 48, "num_classes": 10}')
    assert isinstance(spec, VGGSpec) and spec.depth == 13 and spec.input == "dataset"
    dumped = spec.model_dump(mode="json")
    assert parse_arch_spec(dumped) == spec
    assert parse_arch_spec(json.dumps(dumped)) == spec
    assert parse_arch_spec(spec) is spec


def test_arch_spec_usable_as_pydantic_field() -> None:
    class Request(BaseModel):
        arch: ArchSpec

    request = Request.model_validate({"arch": {"family": "wrn", "num_classes": 100}})
    assert request.arch.depth == 18


# ---- normalization -----------------------------------------------------------------------------


def test_normalize_math_and_not_in_state_dict() -> None:
    norm = Normalize([1.0, 2.0], [2.0, 4.0])
    x = torch.tensor([[[[3.0]], [[6.0]]]])
    assert torch.allclose(norm(x), torch.tensor([[[[1.0]], [[1.0]]]]))
    assert torch.allclose(norm(x.double()), torch.tensor([[[[1.0]], [[1.0]]]], dtype=torch.float64))
    assert norm(x.to(torch.uint8)).dtype == torch.float32
    assert norm.state_dict() == {}
    model = build_model({"family": "cnn", "in_channels": 2, "num_classes": 3})
    wrapped = nn.Sequential(norm, model)
    assert [k.split(".", 1)[1] for k in wrapped.state_dict()] == list(model.state_dict())
    with pytest.raises(ValueError):
        Normalize([0.0, 0.0], [1.0, 0.0])


def test_normalization_default_and_override() -> None:
    cifar = {"family": "vgg", "num_classes": 10}
    norm = input_normalization(parse_arch_spec(cifar), CIFAR_STATS)
    assert norm is not None and torch.allclose(norm.mean, torch.tensor(CIFAR_STATS[0]))
    assert input_normalization(parse_arch_spec(cifar), None) is None
    assert input_normalization(parse_arch_spec({**cifar, "input": None}), CIFAR_STATS) is None
    explicit = {**cifar, "input": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    for default in (CIFAR_STATS, None):
        norm = input_normalization(parse_arch_spec(explicit), default)
        assert norm is not None and torch.allclose(norm.std, torch.full((3,), 0.25))


def test_dataset_default_with_wrong_channel_count_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        input_normalization(
            parse_arch_spec({"family": "cnn", "in_channels": 1, "num_classes": 10}), CIFAR_STATS
        )
    assert info.value.field == "arch.in_channels"


# ---- catalog -----------------------------------------------------------------------------------


def test_catalog_lists_families_with_fields_and_working_examples() -> None:
    catalog = architecture_catalog()
    json.dumps(catalog)
    by_family = {entry["family"]: entry for entry in catalog}
    assert set(by_family) == {"vgg", "wrn", "torchvision", "mlp", "cnn", "timm", "onnx"}
    vgg_fields = {f["name"]: f for f in by_family["vgg"]["fields"]}
    assert vgg_fields["depth"]["allowed"] == [9, 13] and vgg_fields["depth"]["default"] == 9
    assert vgg_fields["num_classes"]["required"] is True
    cnn_fields = {f["name"]: f for f in by_family["cnn"]["fields"]}
    assert (cnn_fields["width"]["minimum"], cnn_fields["width"]["maximum"]) == (4, 256)
    tv_fields = {f["name"]: f for f in by_family["torchvision"]["fields"]}
    assert "resnet18" in tv_fields["name"]["allowed"]
    for entry in catalog:
        assert parse_arch_spec(entry["example"]).model_dump()["family"] == entry["family"]
        assert entry["description"]
