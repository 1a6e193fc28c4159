"""timm models by name: built never pretrained (no network), ReLU models are measured, GELU models make
extraction raise its "no ReLU" MeasureError, clear errors for unknown names and a missing timm."""

from __future__ import annotations

import socket

import pytest
import torch

pytest.importorskip("timm")

from gscore.errors import MeasureError, SpecError  # noqa: E402
from gscore.inputs.checkpoints.loading import load_into  # noqa: E402
from gscore.inputs.extraction import extract_preactivations  # noqa: E402
from gscore.models import (  # noqa: E402
    architecture_catalog,
    build_model,
    parse_arch_spec,
    timm_model_names,
    timm_models,  # noqa: E402
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_timm_resnet18_built_offline_and_its_relus_are_measured(no_network: None) -> None:
    spec = parse_arch_spec({"family": "timm", "name": "resnet18", "num_classes": 7, "in_channels": 1})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = torch.randn(5, 1, 32, 32)
    assert model(x).shape == (5, 7)
    activations = extract_preactivations(model, [x], num_samples=5)
    assert activations.num_layers == 17  # stem + 2 per basic block x 8
    assert activations.pre.shape == (5, 64 + 4 * 64 + 4 * 128 + 4 * 256 + 4 * 512)
    # a fresh build with another seed has other weights: nothing pretrained was loaded
    torch.manual_seed(1)
    other = build_model(spec)
    assert not torch.equal(other.conv1.weight, model.conv1.weight)
    # its state_dict loads back strictly, also behind a DataParallel prefix
    report = load_into(other, {f"module.{k}": v for k, v in model.state_dict().items()})
    assert report.removed_prefix == "module."
    assert torch.equal(other.conv1.weight, model.conv1.weight)


def test_gelu_model_has_no_relu_layers_for_c1_c4(no_network: None) -> None:
    model = build_model({"family": "timm", "name": "convnext_atto", "num_classes": 4})
    x = torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 4)
    with pytest.raises(MeasureError, match="calls no ReLU-type activation"):
        extract_preactivations(model, [x], num_samples=2)


def test_unknown_name_and_missing_timm_are_spec_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError, match="unknown timm model 'resnet181'; close matches: resnet18") as info:
        parse_arch_spec({"family": "timm", "name": "resnet181", "num_classes": 10})
    assert info.value.field == "arch.name"
    monkeypatch.setattr(timm_models, "timm_available", lambda: False)
    with pytest.raises(SpecError, match=r"pip install 'gscore\[timm\]'"):
        parse_arch_spec({"family": "timm", "name": "resnet18", "num_classes": 10})
    with pytest.raises(SpecError, match=r"pip install 'gscore\[timm\]'"):
        timm_models.build_timm_model("resnet18", 10)


def test_catalog_lists_timm_names() -> None:
    names = timm_model_names()
    assert "resnet18" in names and "convnext_atto" in names and names == sorted(names)
    entry = next(e for e in architecture_catalog() if e["family"] == "timm")
    fields = {f["name"]: f for f in entry["fields"]}
    assert fields["name"]["allowed"] == names
    assert parse_arch_spec(entry["example"]).name == "resnet18"
