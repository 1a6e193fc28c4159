"""Tests of the representations captured by gscore.inputs.extraction in the pre-activation pass: the last
nn.Linear input (LLID), the stage outputs (PID) and the predictions, against hooks written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gscore import models
from gscore.errors import MeasureError
from gscore.inputs.extraction import extract_preactivations


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def hooked_reference(
    model: nn.Module, stage_modules: list[nn.Module], head: nn.Module | None, batches: list[torch.Tensor]
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
    """Flattened outputs of ``stage_modules``, flattened input of ``head`` and the argmax of the logits,
    batch by batch in eval mode, from plain forward hooks."""
    stage_chunks: list[list[torch.Tensor]] = [[] for _ in stage_modules]
    head_chunks: list[torch.Tensor] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, out, s=s: stage_chunks[s].append(out.flatten(1).clone()))
        for s, module in enumerate(stage_modules)
    ]
    if head is not None:
        handles.append(
            head.register_forward_pre_hook(lambda _m, i: head_chunks.append(i[0].flatten(1).clone()))
        )
    model.eval()
    predictions = []
    with torch.no_grad():
        for x in batches:
            predictions.append(model(x).argmax(1))
    for handle in handles:
        handle.remove()
    head_input = torch.cat(head_chunks) if head is not None else None
    return [torch.cat(chunks) for chunks in stage_chunks], head_input, torch.cat(predictions)


def test_resnet18_representations_match_hooks() -> None:
    model = torchvision.models.resnet18(num_classes=10, weights=None)
    batches = list(torch.split(torch.randn(6, 3, 32, 32), 4))
    stages = [model.relu, model.layer1, model.layer2, model.layer3, model.layer4]
    expected_stages, expected_head, expected_predictions = hooked_reference(model, stages, model.fc, batches)

    acts = extract_preactivations(model, batches, num_samples=6, representations=True)

    assert [name for name, _ in acts.stage_outputs] == [
        "relu",
        "layer1.1.relu#2",
        "layer2.1.relu#2",
        "layer3.1.relu#2",
        "layer4.1.relu#2",
    ]
    assert [tuple(t.shape) for _, t in acts.stage_outputs] == [
        (6, 64 * 16 * 16),
        (6, 64 * 8 * 8),
        (6, 128 * 4 * 4),
        (6, 256 * 2 * 2),
        (6, 512),
    ]
    for (_name, got), expected in zip(acts.stage_outputs, expected_stages, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert acts.last_linear_name == "fc"
    torch.testing.assert_close(acts.last_linear_input, expected_head, rtol=0, atol=0)
    assert acts.predictions is not None and acts.predictions.dtype == torch.int64
    assert torch.equal(acts.predictions, expected_predictions)
    # the pre-activations are those of a plain extraction
    plain = extract_preactivations(model, batches, num_samples=6)
    assert plain.last_linear_input is None and plain.stage_outputs == []
    torch.testing.assert_close(acts.pre, plain.pre, rtol=0, atol=0)
    assert acts.layer_names == plain.layer_names
    assert torch.equal(plain.predictions, expected_predictions)  # always recorded


def test_paper_vgg_representations_match_hooks() -> None:
    spec = models.parse_arch_spec({"family": "vgg", "depth": 9, "width": 32, "num_classes": 10})
    model = models.build_model(spec)
    batches = list(torch.split(torch.randn(5, 3, 16, 16), 3))
    expected_stages, expected_head, expected_predictions = hooked_reference(
        model, list(model.stages), model.classifier, batches
    )

    acts = extract_preactivations(model, batches, num_samples=5, representations=True, preactivations=False)

    assert [name for name, _ in acts.stage_outputs] == [f"stages.{s}.1.relu" for s in range(4)]
    assert [t.shape[1] for _, t in acts.stage_outputs] == [32 * 16 * 16, 64 * 8 * 8, 128 * 4 * 4, 256 * 2 * 2]
    for (_name, got), expected in zip(acts.stage_outputs, expected_stages, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert acts.last_linear_name == "classifier"
    torch.testing.assert_close(acts.last_linear_input, expected_head, rtol=0, atol=0)
    assert torch.equal(acts.predictions, expected_predictions)
    assert acts.pre.shape == (5, 0) and acts.layer_names == [] and acts.layer_of.numel() == 0


class RunsOfResolutions(nn.Module):
    """8x8 (two ReLU calls), 4x4 (one, followed by an in-place edit), then [B, C] ReLU, two linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.conv3 = nn.Conv2d(5, 6, 3, padding=1)
        self.hidden = nn.Linear(6, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv1(x))
        b = torch.relu(self.conv2(a))
        c = F.relu(self.conv3(F.max_pool2d(b, 2)))
        c.add_(1.0)  # in place after the ReLU: the stage output is the ReLU's output, before this
        h = self.hidden(c.mean(dim=(2, 3))).relu()
        return self.out(h * 2)


def test_stage_runs_in_place_edits_and_last_linear() -> None:
    model = RunsOfResolutions().eval()
    x = torch.randn(7, 3, 8, 8)
    acts = extract_preactivations(model, torch.split(x, 3), num_samples=7, representations=True)

    with torch.no_grad():
        a = F.relu(model.conv1(x))
        b = F.relu(model.conv2(a))
        c = F.relu(model.conv3(F.max_pool2d(b, 2)))
        h = F.relu(model.hidden((c + 1.0).mean(dim=(2, 3))))
    assert [name for name, _ in acts.stage_outputs] == ["model:relu#2", "model:relu#3", "model:relu#4"]
    expected = [b.flatten(1), c.flatten(1), h]
    for (_name, got), want in zip(acts.stage_outputs, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert acts.last_linear_name == "out"
    torch.testing.assert_close(acts.last_linear_input, h * 2, rtol=1e-6, atol=1e-6)
    assert torch.equal(acts.predictions, model.out(h * 2).argmax(1))


def test_no_linear_no_relu_and_non_classifier_outputs() -> None:
    x = torch.randn(4, 3, 8, 8)
    conv_head = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    acts = extract_preactivations(conv_head, [x], 4, representations=True)
    assert acts.last_linear_input is None and acts.last_linear_name is None
    assert [name for name, _ in acts.stage_outputs] == ["1"]
    with torch.no_grad():
        assert torch.equal(acts.predictions, conv_head(x).argmax(1))

    linear_only = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(MeasureError, match="no ReLU"):
        extract_preactivations(linear_only, [x], 4, representations=True)
    acts = extract_preactivations(linear_only, [x], 4, representations=True, preactivations=False)
    assert acts.stage_outputs == [] and acts.pre.shape == (4, 0)
    torch.testing.assert_close(acts.last_linear_input, x.flatten(1), rtol=0, atol=0)

    feature_map = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())  # output [B, 2, 6, 6]: no predictions
    assert extract_preactivations(feature_map, [x], 4).predictions is None


def test_representations_that_change_between_batches_are_a_clear_error() -> None:
    class SizeDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(x)
            if x.shape[0] == 1:
                return self.fc(h.mean(dim=(2, 3)))
            return self.fc(self.fc(h.mean(dim=(2, 3))).repeat(1, 2))

    with pytest.raises(MeasureError, match="nn.Linear calls differ between batches"):
        extract_preactivations(
            SizeDependent(), torch.split(torch.randn(3, 4, 5, 5), 2), 3, representations=True
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_representations_match_cpu() -> None:
    model = RunsOfResolutions()
    x = torch.randn(6, 3, 8, 8)
    on_cpu = extract_preactivations(model, torch.split(x, 4), 6, representations=True)
    on_cuda = extract_preactivations(model, torch.split(x, 4), 6, device="cuda", representations=True)
    assert on_cuda.last_linear_input.device.type == "cuda" and on_cuda.predictions.device.type == "cuda"
    torch.testing.assert_close(
        on_cuda.last_linear_input.cpu(), on_cpu.last_linear_input, rtol=5e-3, atol=5e-3
    )
    for (_, got), (_, want) in zip(on_cuda.stage_outputs, on_cpu.stage_outputs, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=5e-3, atol=5e-3)
