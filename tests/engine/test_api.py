"""``gscore.score`` on an in-memory model: the same numbers as the CLI/pipeline on the same weights."""

from __future__ import annotations

import pytest
import torch

import gscore
from gscore.errors import DatasetError, SpecError
from gscore.inputs.checkpoints.loading import save_safetensors
from gscore.inputs.datasets import balanced_subset, load_probe_set
from gscore.models import build_model
from gscore.pipeline import ScoreRequest
from gscore.pipeline import score as score_checkpoint

CNN = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}
MEASURES = ["c1", "c2", "c3", "c4", "random_sharpness"]
PARAMS = {"c1": {"k": 10}, "random_sharpness": {"samples": 100, "steps": 3, "draws": 2}}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CNN)


def test_same_numbers_as_the_checkpoint_pipeline(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(model, path)
    request = ScoreRequest(
        checkpoint=path,
        arch=CNN,
        dataset="digits",
        measures=MEASURES,
        params=PARAMS,
        samples_per_class=20,
        device="cpu",
    )
    expected = score_checkpoint(request)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    got = gscore.score(model, "digits", MEASURES, params=PARAMS, samples_per_class=20, device="cpu")
    assert got.scores == expected["scores"]
    assert got.status == expected["status"]
    assert got.meta["probe_accuracy"] == expected["meta"]["probe_accuracy"]
    # the caller's model is untouched: same weights, still in training mode
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tensors_give_the_same_numbers_as_the_dataset(model):
    probe = balanced_subset(load_probe_set("digits", "train"), 20, seed=0)
    by_name = gscore.score(model, "digits", ["c2", "c3"], samples_per_class=20, device="cpu")
    by_tensors = gscore.score(model, (probe.x, probe.y, probe.sub), ["c2", "c3"], device="cpu")
    assert by_tensors.scores == pytest.approx(by_name.scores, abs=1e-12)
    assert by_tensors.meta["dataset"] == "tensors"


def test_sharpness_on_tensors_uses_them_as_the_training_split(model):
    probe = balanced_subset(load_probe_set("digits", "train"), 20, seed=0)
    result = gscore.score(
        model,
        (probe.x, probe.y),
        ["random_sharpness"],
        params={"random_sharpness": {"samples": 50, "steps": 2, "draws": 2}},
        device="cpu",
    )
    assert result.status["random_sharpness"]["status"] == "ok"
    assert result.meta["sharpness"]["random_sharpness"]["samples"] == 50


def test_to_pandas(model):
    pd = pytest.importorskip("pandas")
    frame = gscore.score(model, "digits", ["c1", "c3"], samples_per_class=10, device="cpu").to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == ["c1", "c3"]
    assert frame.loc["c1", "status"] == "undefined" and frame.loc["c3", "status"] == "ok"


def test_bad_inputs_are_clear_errors(model):
    with pytest.raises(SpecError, match="nn.Module"):
        gscore.score("not a model", "digits")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="must be a dataset name"):
        gscore.score(model, [1, 2, 3])  # type: ignore[arg-type]
    wrong = build_model({**CNN, "in_channels": 3})
    with pytest.raises(SpecError, match="cannot run on images"):
        gscore.score(wrong, "digits", ["c3"], device="cpu")
