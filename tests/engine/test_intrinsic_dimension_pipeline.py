"""llid, pid and id_ratio through the measure table: the values of the plain estimator on the captured
representations, and one forward pass shared with c1-c4 when both read the same probe set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gscore.measures.context as measure_inputs
from gscore.inputs.datasets import load_probe_set
from gscore.inputs.extraction import extract_preactivations
from gscore.measures.intrinsic_dimension import intrinsic_dimension
from gscore.models import build_model
from gscore.pipeline import ScoreRequest, score

CNN = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}
ID_MEASURES = ["llid", "pid", "id_ratio"]


@pytest.fixture(scope="module")
def checkpoint(digits_checkpoint: Path) -> Path:
    """The shared tiny digits CNN (tests/conftest.py; the same arch as ``CNN``)."""
    return digits_checkpoint


def test_values_equal_the_estimator_on_the_held_out_representations(checkpoint):
    params = {m: {"resamples": 5} for m in ID_MEASURES}
    result = score(
        ScoreRequest(
            checkpoint=checkpoint,
            arch=CNN,
            dataset="digits",
            measures=ID_MEASURES,
            params=params,
            device="cpu",
        )
    )
    assert all(result["status"][m]["status"] == "ok" for m in ID_MEASURES), result["status"]
    torch.manual_seed(0)
    model = build_model(CNN).eval()
    test = load_probe_set("digits", "test")
    acts = extract_preactivations(model, test.batches(256), num_samples=len(test), representations=True)
    llid = intrinsic_dimension(acts.last_linear_input, resamples=5, fraction=0.9, seed=0)
    stages = [intrinsic_dimension(t, resamples=5, seed=0).mean for _, t in acts.stage_outputs]
    assert result["scores"]["llid"] == pytest.approx(llid.mean, abs=1e-12)
    assert result["scores"]["pid"] == pytest.approx(max([*stages, llid.mean]), abs=1e-12)
    assert result["scores"]["id_ratio"] == pytest.approx(result["scores"]["pid"] / llid.mean, abs=1e-12)
    assert result["meta"]["parameters"]["llid"]["split"] == "test"


def test_one_pass_serves_c1_c4_and_the_id_measures_on_one_probe(checkpoint, monkeypatch):
    calls: list[dict] = []
    original = measure_inputs.extract_preactivations

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(measure_inputs, "extract_preactivations", counting)
    params = {m: {"resamples": 2, "split": "train"} for m in ID_MEASURES}
    result = score(
        ScoreRequest(
            checkpoint=checkpoint,
            arch=CNN,
            dataset="digits",
            measures=["c3", "c4", *ID_MEASURES],
            params=params,
            samples_per_class=30,
            device="cpu",
        )
    )
    assert len(calls) == 1 and calls[0].get("representations") is True
    assert all(result["status"][m]["status"] == "ok" for m in ["c3", "c4", *ID_MEASURES])
    # held-out (the default) is a second probe set: a second pass, capturing only representations
    calls.clear()
    score(
        ScoreRequest(
            checkpoint=checkpoint,
            arch=CNN,
            dataset="digits",
            measures=["c3", "llid"],
            params={"llid": {"resamples": 2}},
            samples_per_class=30,
            device="cpu",
        )
    )
    assert len(calls) == 2 and calls[1].get("preactivations") is False


def test_bad_parameters_are_request_errors(checkpoint):
    from gscore.errors import SpecError
    from gscore.pipeline import validate_request

    for bad in ({"split": "validation"}, {"fraction": 0}, {"resamples": -1}, {"samples": 0}):
        with pytest.raises(SpecError):
            validate_request(
                ScoreRequest(
                    checkpoint=checkpoint, arch=CNN, dataset="digits", measures=["llid"], params={"llid": bad}
                )
            )


def test_without_a_test_split_the_id_measures_use_the_jobs_split(checkpoint, tmp_path):
    import numpy as np

    train = load_probe_set("digits", "train")
    npz = tmp_path / "train-only.npz"
    np.savez(npz, x=train.x.numpy(), y=train.y.numpy())
    result = score(
        ScoreRequest(
            checkpoint=checkpoint,
            arch=CNN,
            dataset=str(npz),
            measures=["c3", "llid"],
            params={"llid": {"resamples": 2}},
            samples_per_class=30,
            device="cpu",
        )
    )
    assert result["status"]["llid"]["status"] == "ok"
    assert result["meta"]["parameters"]["llid"]["split"] == "train"
    assert any("no test split" in note for note in result["meta"]["notes"])
