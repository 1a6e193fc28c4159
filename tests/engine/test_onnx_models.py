"""ONNX models: exported torch models convert back with the same logits, ReLU pre-activations and c1-c4;
hostile or unfit files are refused with clear errors, and nothing they name is opened."""

from __future__ import annotations

import builtins
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2pytorch")

from onnx import TensorProto, helper  # noqa: E402

from gscore.errors import CheckpointError, SpecError  # noqa: E402
from gscore.inputs.checkpoints.loading import load_into, read_state_dict, save_safetensors  # noqa: E402
from gscore.inputs.extraction import extract_preactivations  # noqa: E402
from gscore.inputs.onnx_models import check_onnx_input, convert_onnx, load_onnx_model, read_onnx_file  # noqa: E402
from gscore.measures import clustering as measures  # noqa: E402
from gscore.measures.sharpness import random_sharpness  # noqa: E402

MAX_BYTES = 200 * 1024 * 1024


class NotInAnyZoo(nn.Module):
    """Functional ReLU, one nn.ReLU module called three times, a residual add, BN, max-pool, linear."""

    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 12, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        h = self.relu(h + self.relu(self.conv_a(h)))  # residual add around a reused ReLU module
        h = F.max_pool2d(h, 2)
        h = self.relu(self.conv_b(h))
        return self.head(h.mean(dim=(2, 3)))


def trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine values, then eval mode."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def export(model: nn.Module, example: torch.Tensor, path: Path, dynamo: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=True,
                external_data=False,
                input_names=["images"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
        else:
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=False,
                input_names=["images"],
                dynamic_axes={"images": {0: "b"}},
            )
    return path


def clustering_scores(
    pre: torch.Tensor, layer_of: torch.Tensor, y: torch.Tensor, sub: torch.Tensor
) -> list[float]:
    return [
        measures.subclass_selectivity(pre, y, sub, k=3),
        measures.layer_silhouette(pre, layer_of, y, sub, k=2),
        measures.neuron_variance(pre, y, k=3),
        measures.layer_variance(pre, layer_of, y, k=2),
    ]


@pytest.fixture(scope="module")
def custom_model() -> nn.Module:
    torch.manual_seed(0)
    return trained_like(NotInAnyZoo())


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_custom_model_round_trip_same_logits_preactivations_and_c1_c4(
    tmp_path: Path, custom_model: nn.Module, dynamo: bool
) -> None:
    x = torch.randn(48, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    path = export(custom_model, x[:4], tmp_path / "custom.onnx", dynamo)
    converted = load_onnx_model(path, max_bytes=MAX_BYTES, image_shape=(1, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(converted(x), custom_model(x), atol=1e-5, rtol=1e-5)
    batches = [x[:20], x[20:]]  # a batch size different from the export's
    ours = extract_preactivations(converted, batches, num_samples=48)
    reference = extract_preactivations(custom_model, batches, num_samples=48)
    assert ours.num_layers == reference.num_layers == 4  # F.relu + the nn.ReLU module called 3 times
    assert all(name.startswith("Relu_") for name in ours.layer_names)
    assert torch.equal(ours.layer_of, reference.layer_of)
    torch.testing.assert_close(ours.pre, reference.pre, atol=1e-5, rtol=1e-5)
    sub = torch.arange(48) % 6
    y = sub // 2
    got = clustering_scores(ours.pre, ours.layer_of, y, sub)
    want = clustering_scores(reference.pre, reference.layer_of, y, sub)
    assert got == pytest.approx(want, abs=1e-5)


def test_torchvision_resnet18_via_onnx_matches_name_plus_state_dict(tmp_path: Path) -> None:
    from gscore.models import build_model

    spec = {"family": "torchvision", "name": "resnet18", "num_classes": 10}
    torch.manual_seed(3)
    trained = trained_like(build_model(spec))
    checkpoint = tmp_path / "resnet18.safetensors"
    save_safetensors(trained, checkpoint)
    by_name = build_model(spec)
    load_into(by_name, read_state_dict(checkpoint))
    by_name.eval()
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    path = export(trained, x[:2], tmp_path / "resnet18.onnx", dynamo=True)
    converted = load_onnx_model(path, max_bytes=MAX_BYTES, image_shape=(3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(converted(x), by_name(x), atol=1e-5, rtol=1e-4)
    ours = extract_preactivations(converted, [x], num_samples=12)
    reference = extract_preactivations(by_name, [x], num_samples=12)
    assert ours.num_layers == reference.num_layers == 17
    torch.testing.assert_close(ours.pre, reference.pre, atol=1e-5, rtol=1e-5)


def test_sharpness_runs_on_converted_model(tmp_path: Path, custom_model: nn.Module) -> None:
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    converted = load_onnx_model(export(custom_model, x[:2], tmp_path / "m.onnx", False), max_bytes=MAX_BYTES)
    assert all(isinstance(p, nn.Parameter) for p in converted.parameters())
    assert sum(p.numel() for p in converted.parameters()) > 0
    y = converted(x).argmax(dim=1)  # labels the model gets right: accuracy 1
    before = {name: p.detach().clone() for name, p in converted.named_parameters()}
    result = random_sharpness(converted, x, y, draws=2, steps=4, seed=0)
    assert result.base_accuracy == 1.0
    assert result.scale > 0 and torch.isfinite(torch.tensor(result.value)) and result.value > 0
    for name, p in converted.named_parameters():  # the perturbations are undone
        assert torch.equal(p.detach(), before[name]), name


# ---- hostile and unfit files ---------------------------------------------------------------------


def tiny_graph(
    nodes: list, initializers: list, opset: int = 17, extra_domains: tuple = ()
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in extra_domains)]
    return helper.make_model(graph, opset_imports=opsets)


def gemm_model() -> onnx.ModelProto:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], [0.1 * i for i in range(12)])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [3], [0.0, 1.0, -1.0])
    nodes = [
        helper.make_node("Gemm", ["x", "w", "bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    return tiny_graph(nodes, [weight, bias])


def test_hand_built_graph_converts_to_reference_values(tmp_path: Path) -> None:
    path = tmp_path / "gemm.onnx"
    onnx.save_model(gemm_model(), path)
    model = load_onnx_model(path, max_bytes=MAX_BYTES, image_shape=(4,))
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.1
    expected = torch.relu(x @ w.T + torch.tensor([0.0, 1.0, -1.0]))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd"])
def test_external_data_refused_and_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    proto = gemm_model()
    weight = proto.graph.initializer[0]
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "sub" / "external.onnx"
    path.parent.mkdir()
    path.write_bytes(proto.SerializeToString())
    opened: list[str] = []
    real_open = builtins.open

    def spy_open(file, *args, **kwargs):  # noqa: ANN001, ANN202
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    with pytest.raises(CheckpointError, match="external data") as info:
        read_onnx_file(path, max_bytes=MAX_BYTES)
    assert repr(location) in info.value.detail and "'w'" in info.value.detail
    assert not any("passwd" in name for name in opened)


def test_external_data_in_a_constant_node_refused(tmp_path: Path) -> None:
    value = helper.make_tensor("c", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    value.ClearField("float_data")
    value.data_location = TensorProto.EXTERNAL
    entry = value.external_data.add()
    entry.key, entry.value = "location", "/proc/self/environ"
    proto = gemm_model()
    proto.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], value=value))
    path = tmp_path / "constant.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(CheckpointError, match=r"attribute 'value'.*'/proc/self/environ'"):
        read_onnx_file(path, max_bytes=MAX_BYTES)


def test_truncated_empty_garbage_and_oversized_files_refused(tmp_path: Path, custom_model: nn.Module) -> None:
    good = export(custom_model, torch.randn(2, 1, 8, 8), tmp_path / "good.onnx", False)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid ONNX file|invalid ONNX model"):
        read_onnx_file(truncated, max_bytes=MAX_BYTES)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 100)
    with pytest.raises(CheckpointError, match="not a valid ONNX file"):
        read_onnx_file(garbage, max_bytes=MAX_BYTES)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_onnx_file(empty, max_bytes=MAX_BYTES)
    with pytest.raises(CheckpointError, match=rf"{len(data)} bytes, over the limit of 1000 bytes"):
        read_onnx_file(good, max_bytes=1000)


def test_unsupported_operators_are_named(tmp_path: Path) -> None:
    proto = gemm_model()
    proto.graph.node[-1].output[0] = "r"
    proto.graph.node.extend(
        [
            helper.make_node("Hardmax", ["r"], ["hm"]),
            helper.make_node("RandomUniformLike", ["hm"], ["noise"]),
            helper.make_node("Add", ["hm", "noise"], ["y"]),
        ]
    )
    path = tmp_path / "unsupported.onnx"
    onnx.save_model(proto, path)
    with pytest.raises(CheckpointError, match=r"Hardmax \(x1\), RandomUniformLike \(x1\)\. Supported"):
        read_onnx_file(path, max_bytes=MAX_BYTES)
    custom = gemm_model()
    custom.graph.node[-1].CopyFrom(helper.make_node("FancyAct", ["h"], ["y"], domain="com.example"))
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "custom_domain.onnx"
    onnx.save_model(custom, path)
    with pytest.raises(CheckpointError, match="com.example::FancyAct"):
        read_onnx_file(path, max_bytes=MAX_BYTES)


def test_input_must_fit_the_dataset_images(tmp_path: Path, custom_model: nn.Module) -> None:
    path = export(custom_model, torch.randn(2, 1, 8, 8), tmp_path / "m.onnx", False)
    proto = read_onnx_file(path, max_bytes=MAX_BYTES)
    check_onnx_input(proto, (1, 8, 8))
    with pytest.raises(SpecError, match=r"shape \[b, 1, 8, 8\].*\[batch, 3, 32, 32\].*dim 1 is 1") as info:
        check_onnx_input(proto, (3, 32, 32))
    assert info.value.field == "model"
    with pytest.raises(SpecError, match="input 'images' has shape"):
        check_onnx_input(convert_onnx(proto), (64,))  # the converted module keeps its proto
    with pytest.raises(SpecError):
        load_onnx_model(path, max_bytes=MAX_BYTES, image_shape=(3, 8, 8))
    symbolic = tiny_graph(gemm_model().graph.node, list(gemm_model().graph.initializer))
    check_onnx_input(symbolic, (4,))


# ---- the CLI route: gscore score --model FILE.onnx ------------------------------------------------


def test_cli_model_option_fills_the_request() -> None:
    from gscore.cli.local import model_source

    assert model_source(None, None, "m.onnx") == {"checkpoint": Path("m.onnx"), "arch": {"family": "onnx"}}
    assert model_source(None, '{"input": null}', "m.onnx")["arch"] == {"family": "onnx", "input": None}
    assert model_source("c.pt", '{"family": "cnn", "num_classes": 5}', None)["checkpoint"] == Path("c.pt")
    with pytest.raises(SpecError, match="not both"):
        model_source("c.pt", None, "m.onnx")
    with pytest.raises(SpecError, match="--arch may only set"):
        model_source(None, '{"family": "cnn"}', "m.onnx")
    with pytest.raises(SpecError, match="--arch is required"):
        model_source("c.pt", None, None)
    with pytest.raises(SpecError, match="or --model FILE.onnx"):
        model_source(None, None, None)


def test_load_scored_model_routes_onnx_and_checkpoints(tmp_path: Path, custom_model: nn.Module) -> None:
    from gscore.inputs.model_loading import load_scored_model

    x = torch.randn(3, 1, 8, 8)
    path = export(custom_model, x[:2], tmp_path / "m.onnx", False)
    model, report = load_scored_model({"family": "onnx"}, path, max_bytes=MAX_BYTES, image_shape=(1, 8, 8))
    assert report.removed_prefix is None
    torch.testing.assert_close(model(x), custom_model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(SpecError, match="dim 1 is 1"):
        load_scored_model({"family": "onnx"}, path, max_bytes=MAX_BYTES, image_shape=(3, 8, 8))
    cnn = {"family": "cnn", "in_channels": 1, "width": 4, "depth": 1, "num_classes": 5}
    from gscore.models import build_model

    source = build_model(cnn)
    checkpoint = tmp_path / "cnn.pt"
    torch.save({"state_dict": {f"_orig_mod.{k}": v for k, v in source.state_dict().items()}}, checkpoint)
    model, report = load_scored_model(cnn, checkpoint, max_bytes=MAX_BYTES)
    assert report.removed_prefix == "_orig_mod." and not model.training


def test_cli_scores_an_onnx_file_like_the_torch_model(
    tmp_path: Path, custom_model: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from gscore.cli.main import main
    from gscore.inputs import datasets

    path = export(custom_model, torch.randn(2, 1, 8, 8), tmp_path / "custom.onnx", False)
    argv = ["score", "--model", str(path), "--dataset", "digits", "--measures", "c1,c2,c3,c4"]
    argv += ["--samples-per-class", "8", "--device", "cpu", "--json", "--no-progress"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    probe = datasets.balanced_subset(datasets.load_probe_set("digits", "train"), 8, seed=0)
    acts = extract_preactivations(custom_model, probe.batches(256), num_samples=len(probe))
    k = {name: result["meta"]["parameters"][name]["k"] for name in ("c1", "c2", "c3", "c4")}
    expected = {
        "c1": measures.subclass_selectivity(acts.pre, probe.y, probe.sub, k=k["c1"]),
        "c2": measures.layer_silhouette(acts.pre, acts.layer_of, probe.y, probe.sub, k=k["c2"]),
        "c3": measures.neuron_variance(acts.pre, probe.y, k=k["c3"]),
        "c4": measures.layer_variance(acts.pre, acts.layer_of, probe.y, k=k["c4"]),
    }
    assert result["scores"] == pytest.approx(expected, abs=1e-5)
