"""The measure table and per-measure status: one extraction for every activation measure, a measure that
cannot be computed does not fail the others, warnings for degenerate settings, the probe accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gscore.measures.context as measure_inputs
from gscore.errors import MeasureError
from gscore.inputs.datasets import load_probe_set
from gscore.measures.table import MEASURES
from gscore.measures.types import Measure, MeasureOutcome, check_parameter
from gscore.models import build_model
from gscore.pipeline import ScoreRequest, score

CNN = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}


@pytest.fixture(scope="module")
def checkpoint(digits_checkpoint: Path) -> Path:
    """The shared tiny digits CNN (tests/conftest.py; the same arch as ``CNN``)."""
    return digits_checkpoint


def request(checkpoint: Path, measures: list[str], **kw) -> ScoreRequest:
    return ScoreRequest(
        checkpoint=checkpoint, arch=CNN, dataset="digits", measures=measures, device="cpu", **kw
    )


def test_every_entry_names_an_importable_function():
    for measure in MEASURES.values():
        assert callable(measure.compute), measure.name
        assert measure.orientation in (1, -1)


def test_one_extraction_for_all_activation_measures(checkpoint, monkeypatch):
    calls = []
    original = measure_inputs.extract_preactivations

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(measure_inputs, "extract_preactivations", counting)
    result = score(request(checkpoint, ["c1", "c2", "c3", "c4"], samples_per_class=20))
    assert len(calls) == 1
    assert set(result["status"]) == {"c1", "c2", "c3", "c4"}


def test_degenerate_c1_is_undefined_and_the_rest_ok(checkpoint):
    # 16 neurons <= k = 30 and two subclasses per digits superclass: c1's median is 0 by construction
    result = score(request(checkpoint, ["c1", "c3"], samples_per_class=20))
    assert result["status"]["c1"]["status"] == "undefined"
    assert "0 by construction" in result["status"]["c1"]["reason"]
    assert result["scores"]["c1"] is None
    assert result["status"]["c3"]["status"] == "ok" and isinstance(result["scores"]["c3"], float)
    # c3's k = 30 >= 16 neurons: flagged
    assert any("plain mean" in w for w in result["status"]["c3"]["warnings"])
    assert result["meta"]["warnings"]["c3"] == result["status"]["c3"]["warnings"]
    smaller_k = score(request(checkpoint, ["c1"], samples_per_class=20, params={"c1": {"k": 10}}))
    assert smaller_k["status"]["c1"] == {"status": "ok", "reason": None, "warnings": []}


def test_a_failing_measure_leaves_the_others(checkpoint):
    # an untrained 5-class model is right about 20% of the time: it cannot lose 50% accuracy
    result = score(
        request(
            checkpoint,
            ["c3", "random_sharpness"],
            samples_per_class=10,
            params={"random_sharpness": {"samples": 50, "steps": 2, "draws": 2, "target_drop": 0.5}},
        )
    )
    assert result["status"]["c3"]["status"] == "ok"
    assert result["status"]["random_sharpness"]["status"] == "undefined"
    assert "below the target drop" in result["status"]["random_sharpness"]["reason"]
    assert result["scores"]["random_sharpness"] is None


def test_the_run_fails_only_when_no_measure_could_be_computed(checkpoint):
    with pytest.raises(MeasureError, match="0 by construction"):
        score(request(checkpoint, ["c1"], samples_per_class=10))


def test_probe_accuracy_is_the_models_accuracy_on_the_probe(checkpoint):
    result = score(request(checkpoint, ["c3"], samples_per_class=20))
    torch.manual_seed(0)
    model = build_model(CNN).eval()
    from gscore.inputs.datasets import balanced_subset

    probe = balanced_subset(load_probe_set("digits", "train"), 20, seed=0)
    with torch.inference_mode():
        predicted = model(torch.cat(list(probe.batches(64)))).argmax(1)
    assert result["meta"]["probe_accuracy"] == pytest.approx(
        float((predicted == probe.y).double().mean()), abs=1e-6
    )
    # the same figure without any extraction (sharpness only): a plain forward pass
    sharp = score(
        request(
            checkpoint,
            ["random_sharpness"],
            samples_per_class=20,
            params={"random_sharpness": {"samples": 50, "steps": 1, "draws": 1}},
        )
    )
    assert sharp["meta"]["probe_accuracy"] == result["meta"]["probe_accuracy"]


def test_a_new_measure_is_one_entry(checkpoint, monkeypatch):
    def mean_activation(ctx, params) -> MeasureOutcome:
        return MeasureOutcome(
            float(ctx.activations().pre.mean()) * params["scale"], meta={"seen": len(ctx.probe)}
        )

    import sys
    import types

    module = types.ModuleType("fake_measure_module")
    module.mean_activation = mean_activation
    monkeypatch.setitem(sys.modules, "fake_measure_module", module)
    entry = Measure(
        "mean_pre",
        "mean pre-activation",
        +1,
        frozenset({"activations"}),
        "activations",
        "fake_measure_module:mean_activation",
        {"scale": 2.0},
    )
    monkeypatch.setitem(MEASURES, "mean_pre", entry)
    result = score(request(checkpoint, ["mean_pre", "c3"], samples_per_class=10))
    assert result["status"]["mean_pre"]["status"] == "ok"
    assert result["meta"]["measures"]["mean_pre"] == {"seen": 50}
    assert result["meta"]["parameters"]["mean_pre"] == {"scale": 2.0}


@pytest.mark.parametrize(
    ("key", "value", "rule", "ok"),
    [
        ("split", "test", "split", True),
        ("split", "val", "split", False),
        ("resamples", 0, "count0", True),
        ("resamples", -1, "count0", False),
        ("samples", None, "optional_count", True),
        ("samples", 0, "optional_count", False),
        ("fraction", 0.9, "fraction", True),
        ("fraction", 1.5, "fraction", False),
        ("seed", 0, None, True),
        ("k", 0, None, False),
        ("k", True, None, False),
    ],
)
def test_parameter_rules(key, value, rule, ok):
    default = {"k": 30, "seed": 0}.get(key)
    assert (check_parameter("m", key, value, default, rule) is None) is ok
