"""Checkpoint + architecture spec + dataset -> scores: the one entry point the CLI and the worker call.

    request = ScoreRequest(checkpoint=Path("m.safetensors"), arch={...}, dataset="digits")
    validate_request(request)          # cheap checks, raises GScoreError subclasses
    result = score(request, progress=cb, should_cancel=cb)
    result == {"scores": {"c3": 0.41, ...}, "meta": {...}}

Stages reported through ``progress(stage, done, total)``: ``load``, ``extract``
(samples), ``measures`` (measures done), and one stage per sharpness measure
(bisection steps).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gscore.devices import resolve_device
from gscore.errors import DatasetError, JobCancelled, MeasureError, SpecError
from gscore.measure_registry import CLUSTERING_MEASURES, DEFAULT_MEASURES, MEASURES

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
CancelCheck = Callable[[], bool]

SPLITS = ("train", "test")


@dataclass
class ScoreRequest:
    checkpoint: Path
    arch: dict[str, Any]
    dataset: str  # built-in name (digits, cifar10, cifar100, cifar100-coarse) or a path to an .npz
    split: str = "train"
    measures: list[str] | None = None  # None: the default set (c1-c4; hierarchy ones skipped when absent)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"c1": {"k": 10}}
    samples_per_class: int | None = None
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    data_dir: Path | None = None  # where built-in datasets live; default settings.resolved_datasets_dir


@dataclass
class ScoringOutcome:
    """Everything a run produced: the JSON-able result plus the activations (for --dump-activations)."""

    result: dict[str, Any]
    activations: Any | None  # gscore.extraction.Activations when activation measures ran
    y: torch.Tensor | None = None
    sub: torch.Tensor | None = None


def _data_dir(request: ScoreRequest) -> Path:
    if request.data_dir is not None:
        return Path(request.data_dir)
    from gscore.settings import get_settings

    return get_settings().resolved_datasets_dir


def _dataset_has_hierarchy(request: ScoreRequest) -> bool:
    """Cheap look-up without loading the data: the built-in catalogue, or the keys of the .npz."""
    from gscore import datasets

    name = request.dataset
    builtin_name = name.strip().lower()  # as datasets.load_probe_set reads names
    if builtin_name in datasets.BUILTIN_DATASET_NAMES:
        data_dir = _data_dir(request)
        datasets.check_installed(builtin_name, data_dir)
        info = next(d for d in datasets.builtin_datasets(data_dir) if d["name"] == builtin_name)
        return bool(info["hierarchy"])
    if not name.lower().endswith(".npz"):
        raise DatasetError(
            f"unknown dataset {name!r}: use one of {', '.join(datasets.BUILTIN_DATASET_NAMES)} "
            "or a path to an .npz file"
        )
    path = Path(name)
    if not path.is_file():
        raise DatasetError(f"dataset file {name} does not exist")
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
    except Exception as exc:  # not a zip / unreadable
        raise DatasetError(f"{name} is not a readable .npz file ({exc})") from None
    sub_key = "sub" if request.split == "train" else "sub_test"
    return sub_key in keys


def resolve_measures(request: ScoreRequest, has_hierarchy: bool) -> tuple[list[str], list[str]]:
    """(measures to run, notes about skipped ones). Explicit hierarchy measures without one: error."""
    notes: list[str] = []
    if request.measures is None:
        chosen = []
        for name in DEFAULT_MEASURES:
            if MEASURES[name].needs_hierarchy and not has_hierarchy:
                notes.append(f"{name} skipped: the dataset has no label hierarchy (no subclass labels)")
            else:
                chosen.append(name)
        return chosen, notes
    if not request.measures:
        raise SpecError("measures must name at least one measure", field="measures")
    unknown = [m for m in request.measures if m not in MEASURES]
    if unknown:
        raise SpecError(
            f"unknown measure(s) {', '.join(map(repr, unknown))}; known: {', '.join(MEASURES)}",
            field="measures",
        )
    needing = [m for m in request.measures if MEASURES[m].needs_hierarchy]
    if needing and not has_hierarchy:
        raise MeasureError(
            f"{', '.join(needing)} need(s) a label hierarchy (subclass labels `sub`), which dataset "
            f"{request.dataset!r} does not have; use c3/c4 or a dataset with a hierarchy "
            "(digits, cifar100-coarse, or an .npz with `sub`)"
        )
    return list(dict.fromkeys(request.measures)), notes


def measure_parameters(request: ScoreRequest, measures: list[str]) -> dict[str, dict[str, Any]]:
    """Registry defaults overridden by request.params; unknown measures/keys are spec errors."""
    for name in request.params:
        if name not in MEASURES:
            raise SpecError(f"params given for unknown measure {name!r}", field=f"params.{name}")
    resolved: dict[str, dict[str, Any]] = {}
    for name in measures:
        defaults = MEASURES[name].parameters
        given = request.params.get(name, {}) or {}
        if not isinstance(given, dict):
            raise SpecError(f"params.{name} must be an object", field=f"params.{name}")
        for key, value in given.items():
            if key not in defaults:
                raise SpecError(
                    f"unknown parameter {key!r} for {name}; allowed: {', '.join(defaults) or 'none'}",
                    field=f"params.{name}.{key}",
                )
            default = defaults[key]
            if isinstance(default, int) and not isinstance(default, bool):
                lowest, kind = (0, "an integer in [0, 2**64)") if key == "seed" else (1, "a positive integer")
                if not isinstance(value, int) or isinstance(value, bool) or not lowest <= value < 2**64:
                    raise SpecError(
                        f"params.{name}.{key} must be {kind} (got {value!r})", field=f"params.{name}.{key}"
                    )
            elif isinstance(default, float) and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf
            ):
                raise SpecError(
                    f"params.{name}.{key} must be a positive number (got {value!r})",
                    field=f"params.{name}.{key}",
                )
        resolved[name] = {**defaults, **given}
    return resolved


def validate_request(request: ScoreRequest) -> None:
    """Cheap checks that need no checkpoint read: arch spec, split, measures, params, dataset availability."""
    from models import parse_arch_spec

    parse_arch_spec(request.arch)
    _check_options(request)
    has_hierarchy = _dataset_has_hierarchy(request)
    measures, _ = resolve_measures(request, has_hierarchy)
    measure_parameters(request, measures)


def _check_options(request: ScoreRequest) -> None:
    if request.split not in SPLITS:
        raise SpecError(f"split must be one of {', '.join(SPLITS)} (got {request.split!r})", field="split")
    if request.samples_per_class is not None and request.samples_per_class < 1:
        raise SpecError("samples_per_class must be a positive integer", field="samples_per_class")
    if request.batch_size < 1:
        raise SpecError("batch_size must be a positive integer", field="batch_size")


def _check_cancel(should_cancel: CancelCheck | None) -> None:
    if should_cancel is not None and should_cancel():
        raise JobCancelled("the job was cancelled")


def load_model(request: ScoreRequest, default_normalization: Any) -> nn.Module:
    """Build the architecture, load the checkpoint safely, and prepend its input normalization."""
    from gscore.checkpoints import load_into, read_state_dict
    from models import build_model, input_normalization, parse_arch_spec

    spec = parse_arch_spec(request.arch)
    model = build_model(spec)
    load_into(model, read_state_dict(request.checkpoint))
    normalization = input_normalization(spec, default_normalization)
    if normalization is not None:
        model = nn.Sequential(normalization, model)
    return model.eval()


def check_model_fits(model: nn.Module, arch: Any, probe: Any, device: torch.device) -> None:
    """One forward pass on the first probe samples: the model must take the dataset's images and have
    at least one output per class of ``y`` (the labels it was trained on); else a SpecError."""
    from models import parse_arch_spec

    spec = parse_arch_spec(arch)
    shape = list(probe.x.shape[1:])
    where = f"dataset {probe.name!r} has images of shape {shape} ([C, H, W])"
    channels = getattr(spec, "in_channels", None)
    if channels is not None and channels != shape[0]:
        field_name = "arch.in_channels" if "in_channels" in type(spec).model_fields else "arch"
        raise SpecError(
            f"the model takes {channels} input channel(s) but {where}; "
            "check the arch spec and the dataset the checkpoint was trained on",
            field=field_name,
        )
    try:
        with torch.inference_mode():
            logits = model(next(probe.batches(2)).to(device))
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(
            f"the model cannot run on these inputs: {where} ({reason}); "
            "check the arch spec and the dataset the checkpoint was trained on",
            field="arch",
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SpecError(f"the model must return logits [B, num_classes], got {got}", field="arch")
    if logits.shape[1] < probe.num_classes:
        raise SpecError(
            f"the model has {logits.shape[1]} outputs (arch.num_classes) but dataset {probe.name!r} has "
            f"{probe.num_classes} classes (labels 0..{probe.num_classes - 1}); score a checkpoint on the "
            "labels it was trained on",
            field="arch.num_classes",
        )


def run(
    request: ScoreRequest,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> ScoringOutcome:
    """The whole scoring run; see :func:`score` for the result's shape."""
    from gscore import datasets

    report = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    device = resolve_device(request.device)
    _check_options(request)
    has_hierarchy = _dataset_has_hierarchy(request)
    measures, notes = resolve_measures(request, has_hierarchy)
    params = measure_parameters(request, measures)
    torch.manual_seed(request.seed)

    started = time.perf_counter()
    report("load", 0, 1)
    data_dir = _data_dir(request)
    split_set = datasets.load_probe_set(request.dataset, request.split, data_dir)
    probe = split_set
    if request.samples_per_class is not None:
        probe = datasets.balanced_subset(split_set, request.samples_per_class, seed=request.seed)
    model = load_model(request, probe.default_normalization).to(device)
    check_model_fits(model, request.arch, probe, device)
    report("load", 1, 1)
    timings["load"] = time.perf_counter() - started
    _check_cancel(should_cancel)

    scores: dict[str, float] = {}
    meta: dict[str, Any] = {
        "dataset": request.dataset if not request.dataset.endswith(".npz") else Path(request.dataset).name,
        "split": request.split,
        "samples": len(probe),
        "classes": probe.num_classes,
        "device": str(device),
        "parameters": params,
        "seed": request.seed,
        "torch": torch.__version__,
    }
    if notes:
        meta["notes"] = notes

    activations = None
    activation_measures = [m for m in measures if m in CLUSTERING_MEASURES]
    if activation_measures:
        activations = _activation_scores(
            model,
            probe,
            activation_measures,
            params,
            device,
            request.batch_size,
            report,
            should_cancel,
            scores,
            timings,
        )
        meta["neurons"] = int(activations.pre.shape[1])
        meta["layers"] = activations.num_layers

    sharpness_measures = [m for m in measures if MEASURES[m].kind == "perturbation"]
    if sharpness_measures:
        # sharpness samples the full training split: reuse it when that is what was loaded
        train = (
            split_set
            if request.split == "train"
            else datasets.load_probe_set(request.dataset, "train", data_dir)
        )
        meta["sharpness"] = _sharpness_scores(
            model,
            train,
            sharpness_measures,
            params,
            device,
            report,
            should_cancel,
            scores,
            timings,
        )

    meta["seconds"] = {stage: round(seconds, 4) for stage, seconds in timings.items()}
    meta["seconds"]["total"] = round(sum(timings.values()), 4)
    result = {"scores": {m: scores[m] for m in measures}, "meta": meta}
    return ScoringOutcome(result, activations, probe.y, probe.sub)


def _activation_scores(
    model: nn.Module,
    probe: Any,
    measures: list[str],
    params: dict[str, dict[str, Any]],
    device: torch.device,
    batch_size: int,
    report: ProgressCallback,
    should_cancel: CancelCheck | None,
    scores: dict[str, float],
    timings: dict[str, float],
) -> Any:
    from gscore import measures as clustering
    from gscore.extraction import extract_preactivations

    started = time.perf_counter()
    activations = extract_preactivations(
        model,
        probe.batches(batch_size),
        num_samples=len(probe),
        device=device,
        progress=lambda done, total: report("extract", done, total),
        should_cancel=should_cancel,
    )
    timings["extract"] = time.perf_counter() - started

    started = time.perf_counter()
    pre, layer_of = activations.pre, activations.layer_of
    y = probe.y.to(pre.device)
    sub = probe.sub.to(pre.device) if probe.sub is not None else None
    compute = {
        "c1": lambda k: clustering.subclass_selectivity(pre, y, sub, k=k),
        "c2": lambda k: clustering.layer_silhouette(pre, layer_of, y, sub, k=k),
        "c3": lambda k: clustering.neuron_variance(pre, y, k=k),
        "c4": lambda k: clustering.layer_variance(pre, layer_of, y, k=k),
    }
    for index, name in enumerate(measures):
        report("measures", index, len(measures))
        _check_cancel(should_cancel)
        scores[name] = float(compute[name](params[name]["k"]))
    report("measures", len(measures), len(measures))
    timings["measures"] = time.perf_counter() - started
    return activations


def _sharpness_scores(
    model: nn.Module,
    train: Any,
    measures: list[str],
    params: dict[str, dict[str, Any]],
    device: torch.device,
    report: ProgressCallback,
    should_cancel: CancelCheck | None,
    scores: dict[str, float],
    timings: dict[str, float],
) -> dict[str, Any]:
    """Sharpness runs on a seeded class-balanced sample of ``train``, the full TRAINING split
    (docs/measures.md); measures with the same sample size and seed share one sample."""
    from gscore import datasets
    from gscore.sharpness import SHARPNESS_MEASURES

    @functools.cache
    def sample_of(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = datasets.balanced_subset(train, per_class, seed=seed)
        return torch.cat(list(sample.batches(max(1, len(sample))))), sample.y

    details: dict[str, Any] = {}
    for name in measures:
        started = time.perf_counter()
        options = dict(params[name])
        per_class = max(1, math.ceil(int(options.pop("samples")) / train.num_classes))
        x, y = sample_of(per_class, int(options.get("seed", 0)))
        result = SHARPNESS_MEASURES[name](
            model,
            x,
            y,
            device=device,
            progress=lambda done, total, stage=name: report(stage, done, total),
            should_cancel=should_cancel,
            **options,
        )
        scores[name] = float(result.value)
        details[name] = {
            "scale": result.scale,
            "base_accuracy": result.base_accuracy,
            "steps": result.steps,
            "samples": len(y),
            "parameters": result.parameters,
            "diagnostics": result.diagnostics,  # converged, bracket, error at the scale, evaluations
        }
        timings[name] = time.perf_counter() - started
    return details


def score(
    request: ScoreRequest,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Any]:
    """Run the whole scoring; returns ``{"scores": {name: float}, "meta": {...}}``.

    ``meta`` holds samples, classes, neurons, layers, device, the measure parameters used,
    notes on skipped measures and ``seconds`` per stage.
    """
    return run(request, progress, should_cancel).result
