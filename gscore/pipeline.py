"""Checkpoint + architecture spec + dataset -> scores. The one entry point the CLI and the worker call.

CONTRACT (being implemented by the lead; signatures are stable):

    request = ScoreRequest(checkpoint=Path, arch=dict, dataset="digits" | "/path/x.npz", ...)
    validate_request(request)          # cheap checks, raises GScoreError subclasses
    result = score(request, progress=cb, should_cancel=cb)
    result == {"scores": {"c3": 0.41, ...}, "meta": {...}}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
CancelCheck = Callable[[], bool]


@dataclass
class ScoreRequest:
    checkpoint: Path
    arch: dict[str, Any]
    dataset: str  # built-in name (digits, cifar10, cifar100, cifar100-coarse) or a path to an .npz
    split: str = "train"
    measures: list[str] | None = None  # None: the default set (c1-c4; hierarchy ones skipped when absent)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-measure parameters, e.g. {"c1": {"k": 10}}
    samples_per_class: int | None = None
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    data_dir: Path | None = None  # where built-in datasets live; default settings.resolved_datasets_dir


def validate_request(request: ScoreRequest) -> None:
    """Cheap checks that need no checkpoint read: arch spec, measures, params, dataset availability."""
    raise NotImplementedError


def score(
    request: ScoreRequest,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Any]:
    """Run the whole scoring; returns {"scores": {name: float}, "meta": {...}}."""
    raise NotImplementedError
