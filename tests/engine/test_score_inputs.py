"""What a result says about itself (the fit warning, on every route) and the inputs ``gscore.score``
accepts: numpy arrays like tensors, a measure name as a string, float labels with whole values."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import gscore
from gscore.cli.local import format_scores_table
from gscore.errors import DatasetError, SpecError
from gscore.inputs.checkpoints.loading import save_safetensors
from gscore.inputs.datasets import balanced_subset, load_probe_set
from gscore.models import build_model
from gscore.pipeline import MIN_FIT_ACCURACY, ScoreRequest, result_warnings
from gscore.pipeline import score as score_checkpoint

CNN = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CNN).eval()


@pytest.fixture(scope="module")
def probe():
    return balanced_subset(load_probe_set("digits", "train"), 10, seed=0)


def test_the_fit_warning_follows_the_protocol_threshold():
    assert MIN_FIT_ACCURACY == 0.99
    assert result_warnings(0.99, "train", 50) == []
    assert result_warnings(1.0, "train", 50) == []
    assert result_warnings(0.2, "test", 50) == []  # a test accuracy says nothing about fitting
    (warning,) = result_warnings(0.2, "train", 50)
    assert warning.startswith("training accuracy 0.2000 (on the 50 probed training samples) is below")
    assert "meant for models that fit their training data" in warning


def test_an_untrained_model_is_flagged_on_every_route(model, probe, tmp_path):
    """The checkpoint pipeline (CLI and HTTP worker) and gscore.score both carry the warning."""
    path = tmp_path / "untrained.safetensors"
    save_safetensors(model, path)
    request = ScoreRequest(
        checkpoint=path, arch=CNN, dataset="digits", measures=["c3"], samples_per_class=10, device="cpu"
    )
    from_checkpoint = score_checkpoint(request)
    accuracy = from_checkpoint["meta"]["probe_accuracy"]
    assert accuracy < 0.5  # 5 classes, random weights
    assert from_checkpoint["meta"]["result_warnings"] == result_warnings(accuracy, "train", 50)
    in_memory = gscore.score(model, "digits", ["c3"], samples_per_class=10, device="cpu")
    assert in_memory.warnings == from_checkpoint["meta"]["result_warnings"]
    table = format_scores_table(from_checkpoint)
    assert f"warning: training accuracy {accuracy:.4f}" in table.splitlines()[-1]
    # on the test split the accuracy is a test accuracy: no fit warning
    on_test = gscore.score(model, "digits", ["c3"], split="test", samples_per_class=10, device="cpu")
    assert "result_warnings" not in on_test.meta and on_test.warnings == []


def _fitted_copy(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """A copy whose last layer is a centred random projection of its features: its predictions on ``x``
    spread over several classes, so labelling ``x`` with them gives a model that fits its data."""
    fitted = copy.deepcopy(model)
    last = [module for module in fitted.modules() if isinstance(module, torch.nn.Linear)][-1]
    features = []
    hook = last.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    with torch.no_grad():
        fitted(x)
        hook.remove()
        projection = torch.randn(
            last.in_features, last.out_features, generator=torch.Generator().manual_seed(0)
        )
        last.weight.copy_(projection.T)
        last.bias.copy_(-(features[0].mean(0) @ projection))
    return fitted


def test_a_model_that_fits_its_probe_carries_no_warning(model, probe):
    x = next(probe.batches(len(probe)))  # what the probe feeds the model
    fitted = _fitted_copy(model, x)
    with torch.inference_mode():
        predicted = fitted(x).argmax(1)  # labels the model fits exactly
    assert len(predicted.unique()) >= 2
    result = gscore.score(fitted, (probe.x, predicted), ["c3"], device="cpu")
    assert result.meta["probe_accuracy"] == 1.0
    assert result.warnings == [] and "result_warnings" not in result.meta


def test_numpy_arrays_give_the_same_numbers_as_tensors(model, probe):
    by_tensors = gscore.score(model, (probe.x, probe.y, probe.sub), ["c2", "c3"], device="cpu")
    by_arrays = gscore.score(
        model, (probe.x.numpy(), probe.y.numpy(), probe.sub.numpy()), ["c2", "c3"], device="cpu"
    )
    assert by_arrays.scores == by_tensors.scores
    assert by_arrays.meta["probe_accuracy"] == by_tensors.meta["probe_accuracy"]
    # float64 images are used as float32, like a float tensor
    assert probe.x.dtype == torch.float32
    pixels = probe.x.numpy().astype(np.float64)
    from_floats = gscore.score(model, (pixels, probe.y.numpy()), ["c3"], device="cpu")
    assert from_floats.scores["c3"] == pytest.approx(by_tensors.scores["c3"], rel=1e-6)
    read_only = probe.y.numpy().copy()
    read_only.flags.writeable = False
    assert gscore.score(model, (probe.x, read_only), ["c3"], device="cpu").scores == {
        "c3": by_tensors.scores["c3"]
    }


def test_a_measure_name_is_one_measure(model, probe):
    one = gscore.score(model, (probe.x, probe.y), "c3", device="cpu")
    assert list(one.scores) == ["c3"]
    two = gscore.score(model, (probe.x, probe.y), "c3, c4", device="cpu")
    assert list(two.scores) == ["c3", "c4"]
    assert two.scores["c3"] == one.scores["c3"]
    with pytest.raises(SpecError, match="measure names"):
        gscore.score(model, (probe.x, probe.y), [3], device="cpu")  # type: ignore[list-item]


def test_float_labels_with_whole_values_are_accepted(model, probe):
    as_ints = gscore.score(model, (probe.x, probe.y, probe.sub), ["c2", "c3"], device="cpu")
    as_floats = gscore.score(
        model, (probe.x, probe.y.double(), probe.sub.numpy().astype(np.float32)), ["c2", "c3"], device="cpu"
    )
    assert as_floats.scores == as_ints.scores


@pytest.mark.parametrize("position, name", [(1, "y"), (2, "sub")])
def test_other_float_labels_are_refused_with_a_message_that_says_so(model, probe, position, name):
    labels = [probe.x, probe.y.float(), probe.sub.float()]
    labels[position] = labels[position].clone()
    labels[position][3] = 1.5
    with pytest.raises(DatasetError, match=rf"data: {name} must hold integer class labels.*not whole.*1\.5"):
        gscore.score(model, tuple(labels), ["c3"], device="cpu")
    labels[position][3] = float("nan")
    with pytest.raises(DatasetError, match="not whole numbers"):
        gscore.score(model, tuple(labels), ["c3"], device="cpu")


def test_other_label_and_array_problems_are_clear(model, probe):
    with pytest.raises(DatasetError, match=r"data: y must be \[N\] class labels"):
        gscore.score(model, (probe.x, probe.y[:, None]), ["c3"], device="cpu")
    with pytest.raises(DatasetError, match="numeric array"):
        gscore.score(model, (probe.x, np.array(["a"] * len(probe))), ["c3"], device="cpu")
    with pytest.raises(DatasetError, match=r"heldout: x must be \[N, C, H, W\]"):
        gscore.score(
            model, (probe.x, probe.y), ["c3"], heldout=(probe.x[:, 0].numpy(), probe.y), device="cpu"
        )
