"""The ntk_* measures through the measure table: the plain functions' values, one kernel for all three."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gscore.measures.tangent_alignment as tangent
from gscore.inputs.datasets import balanced_subset, load_probe_set
from gscore.models import build_model
from gscore.pipeline import ScoreRequest, score

CNN = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}
NTK = ["ntk_alignment", "ntk_layer_alignment", "ntk_effective_rank"]


@pytest.fixture(scope="module")
def checkpoint(digits_checkpoint: Path) -> Path:
    """The shared tiny digits CNN (tests/conftest.py; the same arch as ``CNN``)."""
    return digits_checkpoint


def test_values_equal_the_plain_function_and_the_kernel_is_shared(checkpoint, monkeypatch):
    calls = []
    original = tangent.tangent_alignment

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tangent, "tangent_alignment", counting)
    params = {m: {"samples": 40} for m in NTK}
    result = score(
        ScoreRequest(
            checkpoint=checkpoint, arch=CNN, dataset="digits", measures=NTK, params=params, device="cpu"
        )
    )
    assert len(calls) == 1
    assert all(result["status"][m]["status"] == "ok" for m in NTK), result["status"]
    torch.manual_seed(0)
    model = build_model(CNN).eval()
    probe = balanced_subset(load_probe_set("digits", "train"), 8, seed=0)
    expected = original(model, torch.cat(list(probe.batches(64))), probe.y, probe.num_classes, seed=0)
    assert result["scores"]["ntk_alignment"] == pytest.approx(expected.alignment, rel=1e-6)
    assert result["scores"]["ntk_effective_rank"] == pytest.approx(expected.effective_rank, rel=1e-6)
    assert result["meta"]["measures"]["ntk_alignment"]["samples"] == 40
    assert {"trace_ratio_40", "trace_per_sample"} <= set(result["meta"]["measures"]["ntk_effective_rank"])
