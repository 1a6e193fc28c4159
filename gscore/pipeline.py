"""Checkpoint + architecture spec + dataset -> scores: the one entry point the CLI and the worker call.

    request = ScoreRequest(checkpoint=Path("m.safetensors"), arch={...}, dataset="digits")
    validate_request(request)          # cheap checks, raises GScoreError subclasses
    result = score(request, progress=cb, should_cancel=cb)
    result == {"scores": {"c3": 0.41, ...}, "status": {"c3": {"status": "ok", ...}}, "meta": {...}}

Stages reported through ``progress(stage, done, total)``: ``load``, ``extract``
(samples), then one stage per measure, named after it (c1-c4: 0/1 then 1/1;
sharpness: bisection steps). ``meta.seconds`` times ``load``, ``extract``,
``measures`` (c1-c4 together) and each other measure.

Every measure of the request gets a status (``result["status"][name]``: ``ok``,
``undefined`` or ``failed`` with a ``reason`` and ``warnings``); its score is None
unless ``ok``. The run fails only when no requested measure could be computed.
Warnings about the whole result go to ``meta["result_warnings"]`` (:func:`result_warnings`: a
training accuracy below the protocol's ``MIN_FIT_ACCURACY``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gscore.devices import resolve_device
from gscore.errors import DatasetError, GScoreError, JobCancelled, MeasureError, SpecError
from gscore.inputs import datasets
from gscore.inputs.checkpoints.loading import LoadReport
from gscore.inputs.extraction import Activations
from gscore.inputs.model_loading import load_scored_model
from gscore.measures.context import CancelCheck, MeasureContext, ProbeKey, ProgressCallback
from gscore.measures.table import DEFAULT_MEASURES, MEASURES, expand_measure_names
from gscore.measures.types import (
    FAILED,
    FAMILIES,
    OK,
    SPLITS,
    UNDEFINED,
    MeasureResult,
    MeasureUndefined,
    check_parameter,
)
from gscore.models import ArchSpec, input_normalization, parse_arch_spec
from gscore.ranking import DEFAULT_MIN_TRAIN_ACCURACY

log = logging.getLogger(__name__)

# The protocol's training accuracy (the measures are defined for models trained to about 100%): a result
# whose training accuracy is below it says so; rankings leave such models out by default.
MIN_FIT_ACCURACY = DEFAULT_MIN_TRAIN_ACCURACY

DEFAULT_MAX_MODEL_BYTES = 512 * 1024 * 1024  # as the service's default GSCORE_MAX_UPLOAD_BYTES


@dataclass
class ScoreRequest:
    checkpoint: Path
    arch: dict[str, Any]
    dataset: str  # built-in name (digits, cifar10, cifar100, cifar100-coarse) or a path to an .npz
    split: str = "train"
    measures: list[str] | None = None  # None: the default set (hierarchy ones skipped when absent); names,
    # families (norm, spectral...) or "all"
    initial_checkpoint: Path | None = None  # the same architecture at initialization (distance_to_init...)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"c1": {"k": 10}}
    samples_per_class: int | None = None
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    data_dir: Path | None = None  # where built-in datasets live; default datasets.DEFAULT_DATASETS_DIR
    max_model_bytes: int = (
        DEFAULT_MAX_MODEL_BYTES  # largest ONNX model file read (checkpoints: capped on upload)
    )


@dataclass
class ScoringOutcome:
    """Everything a run produced: the JSON-able result plus the activations (for --dump-activations)."""

    result: dict[str, Any]
    activations: Activations | None  # when activation measures ran on the request's probe set
    y: torch.Tensor | None = None
    sub: torch.Tensor | None = None


def _data_dir(request: ScoreRequest) -> Path:
    return Path(request.data_dir) if request.data_dir is not None else datasets.DEFAULT_DATASETS_DIR


def _dataset_has_hierarchy(request: ScoreRequest) -> bool:
    """Cheap look-up without loading the data: the built-in catalogue, or the keys of the .npz."""
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
    requested = expand_measure_names(list(request.measures))
    unknown = [m for m in requested if m not in MEASURES]
    if unknown:
        raise SpecError(
            f"unknown measure(s) {', '.join(map(repr, unknown))}; known: {', '.join(MEASURES)}, the families "
            f"{', '.join(FAMILIES)}, or all",
            field="measures",
        )
    if not has_hierarchy:  # a family's or all's hierarchy measures are skipped; named ones are refused below
        named = set(request.measures)
        skipped = [m for m in requested if MEASURES[m].needs_hierarchy and m not in named]
        notes += [
            f"{name} skipped: the dataset has no label hierarchy (no subclass labels)" for name in skipped
        ]
        requested = [m for m in requested if m not in skipped]
        if not requested:
            raise SpecError("the families named hold no measure this dataset allows", field="measures")
    needing = [m for m in requested if MEASURES[m].needs_hierarchy]
    if needing and not has_hierarchy:
        raise MeasureError(
            f"{', '.join(needing)} need(s) a label hierarchy (subclass labels `sub`), which dataset "
            f"{request.dataset!r} does not have; use c3/c4 or a dataset with a hierarchy "
            "(digits, cifar100-coarse, or an .npz with `sub`)"
        )
    return requested, notes


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
            problem = check_parameter(name, key, value, defaults[key], MEASURES[name].rules.get(key))
            if problem:
                raise SpecError(problem, field=f"params.{name}.{key}")
        resolved[name] = {**defaults, **given}
    return resolved


def validate_request(request: ScoreRequest) -> None:
    """Cheap checks that need no checkpoint read: arch spec, split, measures, params, dataset availability."""
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


def load_model(
    request: ScoreRequest,
    default_normalization: Any,
    image_shape: tuple[int, ...] | None = None,
    checkpoint: Path | None = None,
) -> tuple[nn.Module, LoadReport]:
    """Build the architecture and load the checkpoint safely (or convert the ONNX file of an
    ``{"family": "onnx"}`` spec), then prepend its input normalization; the report says which wrapper
    prefix (``module.``...) was removed from the checkpoint's keys, if any. ``checkpoint``: another file
    of the same architecture than ``request.checkpoint`` (the initial checkpoint)."""
    spec = parse_arch_spec(request.arch)
    model, report = load_scored_model(
        spec,
        checkpoint or request.checkpoint,
        max_bytes=request.max_model_bytes,
        image_shape=image_shape,
    )
    normalization = input_normalization(spec, default_normalization)
    if normalization is not None:
        model = nn.Sequential(normalization, model)
    return model.eval(), report


def check_model_fits(
    model: nn.Module, arch: dict[str, Any] | ArchSpec, probe: datasets.ProbeSet, device: torch.device
) -> None:
    """One forward pass on the first probe samples: the model must take the dataset's images and have
    at least one output per class of ``y`` (the labels it was trained on); else a SpecError."""
    spec = parse_arch_spec(arch)
    shape = list(probe.x.shape[1:])
    where = f"dataset {probe.name!r} has images of shape {shape} ([C, H, W])"
    hint = "; check the arch spec and the dataset the checkpoint was trained on"
    channels = getattr(spec, "in_channels", None)
    if channels is not None and channels != shape[0]:
        field_name = "arch.in_channels" if "in_channels" in type(spec).model_fields else "arch"
        raise SpecError(
            f"the model takes {channels} input channel(s) but {where}{hint}",
            field=field_name,
        )
    check_logits(model, probe, device, field="arch", classes_field="arch.num_classes", hint=hint)


def check_logits(
    model: nn.Module,
    probe: datasets.ProbeSet,
    device: torch.device,
    *,
    field: str,
    classes_field: str | None = None,
    hint: str = "",
) -> None:
    """One forward pass on the first probe samples: the model must take the probe's images and return
    logits [B, >= probe.num_classes]; else a SpecError on ``field`` (``classes_field``, named in the
    message, when only the number of outputs is wrong), the forward-pass message ending in ``hint``."""
    shape = list(probe.x.shape[1:])
    try:
        with torch.inference_mode():
            logits = model(next(probe.batches(2)).to(device))
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(
            f"the model cannot run on images of shape {shape} ([C, H, W]) of dataset {probe.name!r} "
            f"({reason}){hint}",
            field=field,
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SpecError(f"the model must return logits [B, num_classes], got {got}", field=field)
    if logits.shape[1] < probe.num_classes:
        named = f" ({classes_field})" if classes_field else ""
        raise SpecError(
            f"the model has {logits.shape[1]} outputs{named} but dataset {probe.name!r} has "
            f"{probe.num_classes} classes (labels 0..{probe.num_classes - 1}); score a checkpoint on the "
            "labels it was trained on",
            field=classes_field or field,
        )


def run(
    request: ScoreRequest,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> ScoringOutcome:
    """The whole scoring run; see :func:`score` for the result's shape."""
    report = progress or (lambda stage, done, total: None)
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
    model, load_report = load_model(request, probe.default_normalization, tuple(probe.x.shape[1:]))
    model = model.to(device)
    check_model_fits(model, request.arch, probe, device)
    initial_model = None
    if request.initial_checkpoint is not None:
        initial_model = load_initial_model(request, probe, device)
    report("load", 1, 1)
    load_seconds = time.perf_counter() - started
    _check_cancel(should_cancel)
    dataset_label = request.dataset if not request.dataset.endswith(".npz") else Path(request.dataset).name
    plan = RunPlan(
        model=model,
        probe=probe,
        measures=measures,
        params=params,
        dataset=request.dataset,
        dataset_label=dataset_label,
        data_dir=data_dir,
        splits={request.split: split_set},
        samples_per_class=request.samples_per_class,
        seed=request.seed,
        batch_size=request.batch_size,
        device=device,
        notes=tuple(notes),
        initial_model=initial_model,
        extra_meta={"checkpoint_prefix_removed": load_report.removed_prefix}
        if load_report.removed_prefix
        else {},
    )
    return evaluate(plan, report, should_cancel, timings={"load": load_seconds})


def load_initial_model(request: ScoreRequest, probe: datasets.ProbeSet, device: torch.device) -> nn.Module:
    """The initial checkpoint's model (same arch and input normalization), on ``device``; its errors say
    ``initial_checkpoint`` (a SpecError's field, a checkpoint error's detail)."""
    assert request.initial_checkpoint is not None
    try:
        model, _ = load_model(
            request, probe.default_normalization, tuple(probe.x.shape[1:]), request.initial_checkpoint
        )
    except SpecError as exc:
        raise SpecError(f"initial_checkpoint: {exc.detail}", field="initial_checkpoint") from None
    except GScoreError as exc:
        raise type(exc)(f"initial_checkpoint: {exc.detail}") from None
    return model.to(device)


@dataclass(frozen=True)
class RunPlan:
    """One scoring run as decided before any measure runs: the model, the data, the measures.

    ``model`` is in eval mode on ``device`` with its input normalization prepended; ``probe`` is the (subset
    of the) split the measures read; ``splits`` the whole splits already loaded; other splits are read from
    ``dataset`` when a measure asks for them (``None``: in-memory data). ``params`` are the measures'
    resolved parameters. ``initial_model``: the same architecture at initialization (prepared like
    ``model``), for the measures that compare to it. ``extra_meta`` is added to the result's meta.
    """

    model: nn.Module
    probe: datasets.ProbeSet
    measures: list[str]
    params: dict[str, dict[str, Any]]
    dataset: str | None
    dataset_label: str
    data_dir: Path
    splits: dict[str, datasets.ProbeSet]
    samples_per_class: int | None
    seed: int
    batch_size: int
    device: torch.device
    notes: tuple[str, ...] = ()
    initial_model: nn.Module | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)


def evaluate(
    plan: RunPlan,
    progress: ProgressCallback,
    should_cancel: CancelCheck | None = None,
    timings: dict[str, float] | None = None,
) -> ScoringOutcome:
    """Score ``plan``: every measure with its parameters, each input prepared once; ``timings`` are the
    seconds of the stages already done (load). A measure whose ``split`` parameter names a split the data
    does not have (the held-out default of the intrinsic-dimension measures on an ``.npz`` without
    ``x_test``) runs on ``probe.split``, with a note."""
    model, probe, measures, device, seed = plan.model, plan.probe, plan.measures, plan.device, plan.seed
    params = dict(plan.params)
    dataset, splits, initial_model = plan.dataset, plan.splits, plan.initial_model
    notes = list(plan.notes)
    for name in measures:
        wanted = params[name].get("split") if MEASURES[name].rules.get("split") == "split" else None
        if wanted is None or wanted in splits:
            continue
        if dataset is None or not datasets.has_split(dataset, wanted):
            params[name] = {**params[name], "split": probe.split}
            notes.append(f"{name}: the data has no {wanted} split; computed on the {probe.split} split")
    ctx = MeasureContext(
        model=model,
        device=device,
        dataset=dataset,
        data_dir=plan.data_dir,
        probe=probe,
        probe_key=ProbeKey(probe.split, None, seed),
        samples_per_class=plan.samples_per_class,
        batch_size=plan.batch_size,
        seed=seed,
        plan=[(MEASURES[name], params[name]) for name in measures],
        progress=progress,
        should_cancel=should_cancel,
        initial_model=initial_model,
    )
    ctx.timings.update(timings or {})
    for split, whole in splits.items():
        ctx.set_split_set(split, whole)
    results = compute_measures(ctx)

    meta: dict[str, Any] = {
        "dataset": plan.dataset_label,
        "split": probe.split,
        "samples": len(probe),
        "classes": probe.num_classes,
        "device": str(device),
        "parameters": params,
        "seed": seed,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "probe_accuracy": round(ctx.probe_accuracy(), 6),
    }
    meta.update(plan.extra_meta)
    if initial_model is not None:
        meta["initial_checkpoint"] = True
    folded = ctx.cache.get(("folded", "model"))
    if folded is not None:
        meta["batchnorm_folding"] = folded.meta()["batchnorm_folding"]
    if notes:
        meta["notes"] = notes
    if found := result_warnings(meta["probe_accuracy"], probe.split, len(probe)):
        meta["result_warnings"] = found
    activations = ctx.extracted()
    if activations is not None and activations.pre.shape[1] > 0:
        meta["neurons"] = int(activations.pre.shape[1])
        meta["layers"] = activations.num_layers
    sharpness = {
        r.name: r.meta for r in results if MEASURES[r.name].kind == "perturbation" and r.status == OK
    }
    if sharpness:
        meta["sharpness"] = sharpness
    details = {r.name: r.meta for r in results if MEASURES[r.name].kind != "perturbation" and r.meta}
    if details:
        meta["measures"] = details
    warnings = {r.name: r.warnings for r in results if r.warnings}
    if warnings:
        meta["warnings"] = warnings
    meta["seconds"] = {stage: round(seconds, 4) for stage, seconds in ctx.timings.items()}
    meta["seconds"]["total"] = round(sum(ctx.timings.values()), 4)
    result = {
        "scores": {r.name: r.value for r in results},
        "status": {r.name: r.status_document() for r in results},
        "meta": meta,
    }
    return ScoringOutcome(result, activations, probe.y, probe.sub)


def result_warnings(probe_accuracy: float, split: str, samples: int) -> list[str]:
    """Warnings about a whole result: on the training split, a ``probe_accuracy`` (the training accuracy
    on the ``samples`` probed) below ``MIN_FIT_ACCURACY``, since every measure assumes a model that fits
    its training data. Empty when there is nothing to say (or the probe is the test split)."""
    if split != "train" or probe_accuracy >= MIN_FIT_ACCURACY:
        return []
    return [
        f"training accuracy {probe_accuracy:.4f} (on the {samples} probed training samples) is below the "
        f"protocol's {MIN_FIT_ACCURACY:g}: the measures are meant for models that fit their training data "
        "(about 100% training accuracy), so these scores may not predict generalization; rankings leave "
        "models below it out of the coefficients"
    ]


def compute_measures(ctx: MeasureContext) -> list[MeasureResult]:
    """Compute every measure of ``ctx.plan`` in order, each with its status; the inputs they need are
    prepared on first use and shared (:class:`MeasureContext`). Raises ``MeasureError`` when none of
    them could be computed, ``JobCancelled`` when the run is cancelled."""
    results: list[MeasureResult] = []
    for measure, params in ctx.plan:
        ctx.check_cancel()
        if measure.kind == "activations" or measure.needs & {"logits", "last_linear"}:
            try:
                ctx.activations()  # the extraction is its own stage, timed apart from the measures
            except MeasureError:
                pass  # each activation measure reports the reason below
            ctx.report(measure.name, 0, 1)  # progress names the measure running (others report their own)
        started = time.perf_counter()
        results.append(_compute_one(ctx, measure.name, measure.compute, params))
        stage = "measures" if measure.kind == "activations" else measure.name
        ctx.timings[stage] = ctx.timings.get(stage, 0.0) + time.perf_counter() - started
        if measure.kind == "activations":
            ctx.report(measure.name, 1, 1)
    if results and all(r.status != OK for r in results):
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in results)
        raise MeasureError(
            reasons if len(results) == 1 else f"no requested measure could be computed ({reasons})"
        )
    return results


def _compute_one(
    ctx: MeasureContext, name: str, compute: Callable[..., Any], params: dict[str, Any]
) -> MeasureResult:
    try:
        outcome = compute(ctx, dict(params))
    except JobCancelled:
        raise
    except MeasureUndefined as exc:
        return MeasureResult(name, UNDEFINED, reason=str(exc))
    except GScoreError as exc:
        return MeasureResult(name, FAILED, reason=str(exc))
    except torch.OutOfMemoryError:
        return MeasureResult(name, FAILED, reason=f"out of memory on {ctx.device} while computing {name}")
    except (RuntimeError, ValueError, ArithmeticError, IndexError) as exc:
        log.exception("measure %s failed", name)
        return MeasureResult(name, FAILED, reason=f"{type(exc).__name__}: {exc}")
    value = float(outcome.value)
    if not np.isfinite(value):
        return MeasureResult(name, FAILED, reason=f"{name} is not finite ({value})", meta=outcome.meta)
    return MeasureResult(name, OK, value=value, meta=outcome.meta, warnings=list(outcome.warnings))


def score(
    request: ScoreRequest,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Any]:
    """Run the whole scoring; returns ``{"scores": {name: float | None}, "status": {...}, "meta": {...}}``.

    ``status[name]`` is ``{"status": "ok" | "undefined" | "failed", "reason", "warnings"}``; ``meta``
    holds samples, classes, neurons, layers, device, ``probe_accuracy`` (top-1 on the probe set, the
    training accuracy when ``split`` is ``train``), the measure parameters used, per-measure details
    (``sharpness``, ``measures``), ``warnings``, notes on skipped measures and ``seconds`` per stage.
    """
    return run(request, progress, should_cancel).result
