"""What each measure is: its name, orientation, parameters and data needs.

This is the single place the CLI, the pipeline, the service (``/v1/measures``)
and the ranking code look up measures. Orientation is +1 when a higher value
predicts better generalization, -1 when it predicts worse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MeasureInfo:
    name: str
    title: str
    orientation: int
    needs_hierarchy: bool
    kind: str  # "activations" (from extracted pre-activations) or "perturbation" (sharpness)
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""


# Shared by the four sharpness measures: the size of the class-balanced training sample, bisection
# steps, the seed of the noise/sample, the accuracy drop sought and the stopping tolerance.
_SHARPNESS_PARAMETERS: dict[str, Any] = {
    "samples": 2000,
    "steps": 15,
    "seed": 0,
    "target_drop": 0.1,
    "tolerance": 0.01,
}
_RANDOM_PARAMETERS: dict[str, Any] = {**_SHARPNESS_PARAMETERS, "draws": 10, "upper": 2.0}
_WORST_PARAMETERS: dict[str, Any] = {
    **_SHARPNESS_PARAMETERS,
    "upper": 0.25,
    "ascent_steps": 10,
    "ascent_lr": 0.2,
}

MEASURES: dict[str, MeasureInfo] = {
    m.name: m
    for m in [
        MeasureInfo(
            "c1",
            "neuron-level subclass selectivity",
            +1,
            True,
            "activations",
            {"k": 30},
            "median over subclasses of the top-k mean of neuron selectivities",
        ),
        MeasureInfo(
            "c2",
            "layer-level silhouette",
            +1,
            True,
            "activations",
            {"k": 5},
            "median over subclasses of the top-k mean over layers of cosine silhouette values",
        ),
        MeasureInfo(
            "c3",
            "neuron-level variance",
            +1,
            False,
            "activations",
            {"k": 30},
            "mean over classes of the top-k mean of std_class / std_all per neuron",
        ),
        MeasureInfo(
            "c4",
            "layer-level variance",
            +1,
            False,
            "activations",
            {"k": 5},
            "mean over classes of the top-k mean over layers of the std of cosine distances ratio",
        ),
        MeasureInfo(
            "random_sharpness",
            "1/sigma' (random, all weights)",
            -1,
            False,
            "perturbation",
            dict(_RANDOM_PARAMETERS),
            "inverse of the largest magnitude-aware Gaussian noise scale that costs 0.1 training accuracy",
        ),
        MeasureInfo(
            "worst_sharpness",
            "1/alpha' (worst case, all weights)",
            -1,
            False,
            "perturbation",
            dict(_WORST_PARAMETERS),
            "inverse of the largest magnitude-aware box radius whose worst case costs 0.1 training accuracy",
        ),
        MeasureInfo(
            "random_sharpness_kernels",
            "1/sigma'' (random, kernels, batch statistics)",
            -1,
            False,
            "perturbation",
            dict(_RANDOM_PARAMETERS),
            "as 1/sigma' perturbing only conv/linear kernels, normalization in batch-statistics mode",
        ),
        MeasureInfo(
            "worst_sharpness_kernels",
            "1/alpha'' (worst case, kernels, batch statistics)",
            -1,
            False,
            "perturbation",
            dict(_WORST_PARAMETERS),
            "as 1/alpha' perturbing only conv/linear kernels, normalization in batch-statistics mode",
        ),
    ]
}

CLUSTERING_MEASURES: tuple[str, ...] = ("c1", "c2", "c3", "c4")
DEFAULT_MEASURES: tuple[str, ...] = CLUSTERING_MEASURES


def orientation(name: str) -> int:
    """+1 or -1; unknown measures (user-supplied scores) default to +1."""
    info = MEASURES.get(name)
    return info.orientation if info else 1
