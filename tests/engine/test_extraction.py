"""Tests of gscore.inputs.extraction: ReLU inputs, global-max-pooled, one layer per call, streamed by batch."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gscore.errors import JobCancelled, MeasureError
from gscore.inputs.extraction import Activations, extract_preactivations


def _pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, ...] -> [B, C]: amax over all dims >= 2 (reference, written independently)."""
    return x.flatten(2).amax(dim=2) if x.dim() > 2 else x.clone()


def _capture_stack_empty() -> bool:
    return torch._C._len_torch_function_stack() == 0


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


class FunctionalBody(nn.Module):
    """Every functional ReLU spelling, in-place ones included, plus one module ReLU called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.conv3 = nn.Conv2d(5, 6, 3, padding=1)
        self.conv4 = nn.Conv2d(6, 7, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))  # layer 0, 4 ch
        h = torch.relu(self.conv2(h))  # layer 1, 5 ch
        h = self.conv3(h).relu()  # layer 2, 6 ch
        h = F.relu(self.conv4(h), inplace=True)  # layer 3, 7 ch, in place
        a = self.act(h - 0.5)  # layer 4, 7 ch
        return self.act(a - h)  # layer 5, same module again, 7 ch


class MixedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = FunctionalBody()
        self.fc1 = nn.Linear(7, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x).mean(dim=(2, 3))
        z = self.fc1(h)
        z.relu_()  # layer 6, [B, 8] used as is, in place
        return self.fc2(z)  # logits: not a layer


MIXED_NAMES = [
    "body:relu",
    "body:relu#2",
    "body:relu#3",
    "body:relu#4",
    "body.act",
    "body.act#2",
    "model:relu_",
]
MIXED_WIDTHS = [4, 5, 6, 7, 7, 7, 8]


def _mixed_reference(model: MixedNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Pooled ReLU inputs of MixedNet, computed by hand without any capture."""
    b = model.body
    with torch.no_grad():
        p0 = b.conv1(x)
        p1 = b.conv2(p0.clamp(min=0))
        p2 = b.conv3(p1.clamp(min=0))
        p3 = b.conv4(p2.clamp(min=0))
        h = p3.clamp(min=0)
        p4 = h - 0.5
        p5 = p4.clamp(min=0) - h
        z = model.fc1(p5.clamp(min=0).mean(dim=(2, 3)))
    return [_pool(p) for p in (p0, p1, p2, p3, p4, p5, z)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_resnet18_matches_module_hooks_one_layer_per_call() -> None:
    model = torchvision.models.resnet18(num_classes=10, weights=None)
    x = torch.randn(2, 3, 32, 32)

    # Reference: pre-hooks on every nn.ReLU module see each call's input before the in-place ReLU.
    expected: list[torch.Tensor] = []
    handles = [
        m.register_forward_pre_hook(lambda _m, inputs: expected.append(_pool(inputs[0])))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    model.eval()
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    model.train()

    acts = extract_preactivations(model, [x], num_samples=2)

    assert isinstance(acts, Activations)
    assert len(expected) == 17
    assert acts.num_layers == 17
    assert acts.layer_names[:4] == ["relu", "layer1.0.relu", "layer1.0.relu#2", "layer1.1.relu"]
    assert acts.layer_names[-1] == "layer4.1.relu#2"
    assert acts.pre.dtype == torch.float32 and acts.layer_of.dtype == torch.int64
    assert acts.pre.shape == (2, sum(e.shape[1] for e in expected))
    for layer, ref in enumerate(expected):
        torch.testing.assert_close(acts.pre[:, acts.layer_of == layer], ref, rtol=0, atol=0)
    assert (acts.pre < 0).any()  # inputs, not outputs, of the (in-place) ReLUs
    assert not acts.pre.is_inference()


def test_functional_and_repeated_module_relus_match_hand_reference() -> None:
    model = MixedNet()
    x = torch.randn(4, 3, 16, 16)

    acts = extract_preactivations(model, [x], num_samples=4)

    assert acts.layer_names == MIXED_NAMES
    assert torch.bincount(acts.layer_of).tolist() == MIXED_WIDTHS
    expected = _mixed_reference(model, x)
    for layer, ref in enumerate(expected):
        torch.testing.assert_close(acts.pre[:, acts.layer_of == layer], ref, rtol=1e-6, atol=1e-6)
    assert (acts.pre[:, acts.layer_of == 3] < 0).any()  # in-place F.relu captured before it clamps
    assert (acts.pre[:, acts.layer_of == 6] < 0).any()  # in-place Tensor.relu_ likewise


def test_relu_type_set_includes_clipped_relus_only() -> None:
    class Activations6(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu6 = nn.ReLU6()
            self.tanh_like = nn.Hardtanh(-1.0, 1.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu6(x)  # counted (hardtanh with min_val=0)
            x = F.relu6(x - 1)  # counted
            x = self.tanh_like(x - 2)  # not ReLU-type
            x = F.leaky_relu(x - 3)  # not ReLU-type
            x = F.gelu(x)  # not ReLU-type
            return F.hardtanh(x, 0.0, 2.0)  # counted: clipped ReLU

    acts = extract_preactivations(Activations6(), [torch.randn(3, 2, 4, 4)], num_samples=3)
    assert acts.layer_names == ["relu6", "model:relu6", "model:hardtanh"]


def test_batch_sizes_give_the_same_result() -> None:
    model = MixedNet()
    x = torch.randn(7, 3, 16, 16)

    whole = extract_preactivations(model, [x], num_samples=7)
    for size in (1, 3):
        split = extract_preactivations(model, torch.split(x, size), num_samples=7)
        torch.testing.assert_close(split.pre, whole.pre, rtol=1e-5, atol=1e-6)
        assert torch.equal(split.layer_of, whole.layer_of)
        assert split.layer_names == whole.layer_names == MIXED_NAMES
    expected_layer_of = torch.repeat_interleave(torch.arange(7), torch.tensor(MIXED_WIDTHS))
    assert torch.equal(whole.layer_of, expected_layer_of)


def test_progress_and_cancel() -> None:
    model = MixedNet()
    batches = list(torch.split(torch.randn(7, 3, 8, 8), 3))
    calls: list[tuple[int, int]] = []

    extract_preactivations(model, batches, 7, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]

    calls.clear()
    checks = iter([False, True])
    with pytest.raises(JobCancelled):
        extract_preactivations(
            model,
            batches,
            7,
            progress=lambda done, total: calls.append((done, total)),
            should_cancel=lambda: next(checks),
        )
    assert calls == [(3, 7)]
    assert _capture_stack_empty() and _no_hooks_left(model)


def test_eval_mode_is_used_and_training_flags_restored() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.Dropout(0.5), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        model(x)  # materialize the lazy layer; also moves BN running stats away from their init
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    running_mean = model[1].running_mean.clone()

    first = extract_preactivations(model, [x], 5)
    second = extract_preactivations(model, torch.split(x, 2), 5)

    torch.testing.assert_close(first.pre, second.pre, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        expected = _pool(model[1](model[0](x)))  # eval BN, dropout is identity in eval
    torch.testing.assert_close(first.pre, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(model[1].running_mean, running_mean)
    assert [m.training for m in model] == [True, False, True, True, True, True]
    assert model.training


def test_capture_removed_after_extraction_and_after_errors() -> None:
    model = MixedNet()
    x = torch.randn(2, 3, 8, 8)
    extract_preactivations(model, [x], 2)
    assert _capture_stack_empty() and _no_hooks_left(model)

    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.act(x)
            raise RuntimeError("boom")

    failing = Failing()
    failing.train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_preactivations(failing, [x], 2)
    assert _capture_stack_empty() and _no_hooks_left(failing)
    assert failing.training

    # A later extraction sees only its own model's calls (nothing stale captured in between).
    F.relu(torch.randn(2, 3))
    acts = extract_preactivations(model, [x], 2)
    assert acts.layer_names == MIXED_NAMES


def test_other_threads_are_not_captured() -> None:
    class SpawnsThread(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            worker = threading.Thread(target=lambda: nn.ReLU()(F.relu(torch.randn(x.shape[0], 5))))
            worker.start()
            worker.join()
            return self.act(x)

    acts = extract_preactivations(SpawnsThread(), [torch.randn(2, 3, 4, 4)], 2)
    assert acts.layer_names == ["act"]


def test_clear_errors() -> None:
    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(MeasureError, match="no ReLU"):
        extract_preactivations(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh()), [x], 4)

    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return F.relu(x) if self.calls == 1 else F.relu(F.relu(x))

    with pytest.raises(MeasureError, match="differ between batches"):
        extract_preactivations(DataDependent(), torch.split(x, 2), 4)
    with pytest.raises(ValueError, match="num_samples"):
        extract_preactivations(MixedNet(), [x], 3)
    with pytest.raises(ValueError, match="num_samples"):
        extract_preactivations(MixedNet(), [x], 5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = MixedNet()
    x = torch.randn(6, 3, 16, 16)
    on_cpu = extract_preactivations(model, torch.split(x, 4), 6)
    on_cuda = extract_preactivations(model, torch.split(x, 4), 6, device="cuda", store_device="cpu")
    assert on_cuda.pre.device.type == "cpu" and on_cuda.layer_of.device.type == "cpu"
    torch.testing.assert_close(on_cuda.pre, on_cpu.pre, rtol=5e-3, atol=5e-3)  # TF32 convs
    on_device = extract_preactivations(model, torch.split(x, 4), 6, device="cuda")
    assert on_device.pre.device.type == "cuda"
    assert on_device.layer_names == MIXED_NAMES
