"""One call for notebooks and training loops: score an in-memory model.

    import gscore
    result = gscore.score(model, "digits", measures=["c3", "c4"])
    result.scores["c3"], result.status["c3"]["status"], result.meta["probe_accuracy"]
    result.to_pandas()                     # one row per measure (pandas optional)

The numbers are the same as ``gscore score`` on the same weights (same dataset, split, seed and
parameters): both run :func:`gscore.pipeline.evaluate`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gscore.devices import resolve_device
from gscore.errors import DatasetError, SpecError
from gscore.inputs import datasets
from gscore.inputs.datasets import ProbeSet
from gscore.models.normalization import Normalize
from gscore.pipeline import (
    SPLITS,
    CancelCheck,
    ProgressCallback,
    RunPlan,
    ScoreRequest,
    check_logits,
    evaluate,
    measure_parameters,
    resolve_measures,
)

__all__ = ["ScoreResult", "score"]

Data = str | Path | ProbeSet | tuple[torch.Tensor | np.ndarray, ...]


@dataclass
class ScoreResult:
    """``scores`` {measure: value or None}, ``status`` {measure: {"status", "reason", "warnings"}}, ``meta``.

    ``warnings`` are about the whole result (``meta["result_warnings"]``: a model that does not fit its
    training data); each measure's own are in ``status[name]["warnings"]``."""

    scores: dict[str, float | None]
    status: dict[str, dict[str, Any]]
    meta: dict[str, Any]

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("result_warnings", []))

    def as_dict(self) -> dict[str, Any]:
        """The same JSON document as ``gscore score --json`` and a job's ``result``."""
        return {"scores": self.scores, "status": self.status, "meta": self.meta}

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per measure: value, status, reason, warnings (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        rows = [
            {
                "measure": name,
                "value": value,
                "status": self.status[name]["status"],
                "reason": self.status[name]["reason"],
                "warnings": "; ".join(self.status[name]["warnings"]),
            }
            for name, value in self.scores.items()
        ]
        return pd.DataFrame(rows).set_index("measure")


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    """A CPU tensor from a tensor or a numpy array (other array-likes are refused)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise DatasetError(f"{what} must be a numeric array, got dtype {value.dtype}")
        array = np.ascontiguousarray(value)
        return torch.from_numpy(array if array.flags.writeable else array.copy())
    raise DatasetError(f"{what} must be a torch.Tensor or a numpy array, got {type(value).__name__}")


def _labels(values: torch.Tensor, what: str) -> torch.Tensor:
    """Integer class labels as int64: integer dtypes as they are, floats only when every value is a whole
    number (``1.0``); other floats are refused, never truncated."""
    if values.ndim != 1:
        raise DatasetError(f"{what} must be [N] class labels, got shape {tuple(values.shape)}")
    if values.dtype == torch.bool or values.is_complex():
        raise DatasetError(f"{what} must hold integer class labels, got dtype {values.dtype}")
    if values.is_floating_point():
        whole = torch.isfinite(values) & (values == torch.round(values))
        if not bool(whole.all()):
            bad = values[~whole][:3].tolist()
            raise DatasetError(
                f"{what} must hold integer class labels; got float labels that are not whole numbers "
                f"(e.g. {', '.join(f'{v:g}' for v in bad)}): pass class indices 0..C-1, not "
                "probabilities or one-hot rows"
            )
    return values.to(torch.int64)


def _as_probe_set(data: Data, split: str, data_dir: Path, what: str) -> tuple[ProbeSet, str | None]:
    """(probe set, dataset name to read other splits from, or None for in-memory data)."""
    if isinstance(data, (str, Path)):
        name = str(data)
        return datasets.load_probe_set(name, split, data_dir), name
    if isinstance(data, ProbeSet):
        return data, None
    if (
        isinstance(data, Sequence)
        and len(data) in (2, 3)
        and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in data)
    ):
        x = _as_tensor(data[0], f"{what}: x")
        y = _labels(_as_tensor(data[1], f"{what}: y"), f"{what}: y")
        sub = _labels(_as_tensor(data[2], f"{what}: sub"), f"{what}: sub") if len(data) == 3 else None
        if x.ndim != 4:
            raise DatasetError(f"{what}: x must be [N, C, H, W] images, got shape {tuple(x.shape)}")
        x = x if x.dtype == torch.uint8 else x.to(torch.float32)
        try:
            probe = ProbeSet(
                name="tensors", split=split, x=x, y=y, sub=sub, num_classes=int(y.max()) + 1 if len(y) else 0
            )
        except ValueError as exc:
            raise DatasetError(f"{what}: {exc}") from None
        return probe, None
    raise DatasetError(
        f"{what} must be a dataset name or .npz path, a ProbeSet, or a tuple (x, y) / (x, y, sub) of tensors "
        f"or numpy arrays; got {type(data).__name__}"
    )


def _measure_names(measures: str | Sequence[str] | None) -> list[str] | None:
    """``"c3"`` is one measure and ``"c3,c4"`` two (as on the command line); a list is taken as is."""
    if measures is None:
        return None
    if isinstance(measures, str):
        return [name.strip() for name in measures.split(",") if name.strip()]
    names = list(measures)
    if not all(isinstance(name, str) for name in names):
        raise SpecError("measures must be measure names (strings)", field="measures")
    return names


def score(
    model: nn.Module,
    data: Data,
    measures: str | Sequence[str] | None = None,
    *,
    params: dict[str, dict[str, Any]] | None = None,
    split: str = "train",
    heldout: ProbeSet | tuple[torch.Tensor | np.ndarray, ...] | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    normalization: str | tuple[Sequence[float], Sequence[float]] | None = "dataset",
    data_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    initial: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> ScoreResult:
    """Score an in-memory classifier.

    Parameters
    ----------
    model : nn.Module
        Returns logits [B, num_classes] for images [B, C, H, W]. It is not modified: a copy is scored.
    data : str, Path, ProbeSet or tuple of tensors / numpy arrays
        A dataset name (``digits``, ``cifar10``...) or ``.npz`` path, read at ``split``; a ``ProbeSet``; or
        ``(x, y)`` / ``(x, y, sub)`` of tensors or numpy arrays with x [N, C, H, W] (uint8 pixels are
        scaled by 1/255, floats used as given), y [N] class labels, sub [N] subclass labels (needed by
        c1/c2). Labels are integers, or floats with whole values (``3.0``); other floats are refused.
    measures : str or list of str, optional
        Names from ``gscore.measures.table.MEASURES``, families (``norm``, ``spectral``...) or ``all``; a
        string is one name (``"c3"``) or several separated by commas (``"c3,c4"``); default c1-c4 (c1/c2
        only with a hierarchy), ``margin``, the norm measures and ``davies_bouldin``.
    params : dict, optional
        Per-measure parameter overrides, e.g. ``{"c1": {"k": 10}}``.
    split : {"train", "test"}
        The split ``data`` is (or is read at). Sharpness always uses the training split.
    heldout : ProbeSet or tuple of tensors, optional
        The held-out split for in-memory ``data`` (the intrinsic-dimension measures read it by default).
    samples_per_class, seed, batch_size, device
        As in ``gscore score``.
    normalization : "dataset", None or (mean, std)
        Put in front of the model: the dataset's constants (``"dataset"``, none for in-memory data), none,
        or explicit per-channel values.
    initial : nn.Module or state dict, optional
        The same architecture at its initialization (a module, or a state dict loaded strictly into a copy
        of ``model``), for ``distance_to_init`` and ``layer_rotation``; given the same normalization.

    Returns
    -------
    ScoreResult
        ``scores``, per-measure ``status`` and ``meta`` (``as_dict()`` is the CLI's JSON).
    """
    if not isinstance(model, nn.Module):
        raise SpecError(f"model must be a torch.nn.Module, got {type(model).__name__}", field="model")
    if split not in SPLITS:
        raise SpecError(f"split must be one of {', '.join(SPLITS)} (got {split!r})", field="split")
    data_dir = Path(data_dir) if data_dir is not None else datasets.DEFAULT_DATASETS_DIR
    whole, dataset = _as_probe_set(data, split, data_dir, "data")
    splits = {split: whole}
    if heldout is not None:
        other = "test" if split == "train" else "train"
        splits[other], _ = _as_probe_set(heldout, other, data_dir, "heldout")
    request = ScoreRequest(
        checkpoint=Path(),
        arch={},
        dataset=dataset or whole.name,
        split=split,
        measures=_measure_names(measures),
        params=params or {},
        samples_per_class=samples_per_class,
        seed=seed,
        batch_size=batch_size,
    )
    chosen, notes = resolve_measures(request, whole.has_hierarchy)
    resolved = measure_parameters(request, chosen)
    probe = whole
    if samples_per_class is not None:
        probe = datasets.balanced_subset(whole, samples_per_class, seed=seed)

    resolved_device = resolve_device(device)
    scored = copy.deepcopy(model).eval()
    if normalization == "dataset":
        constants = whole.default_normalization
        prefix = Normalize(*constants) if constants is not None else None
    elif normalization is None:
        prefix = None
    else:
        prefix = Normalize(*normalization)
    if prefix is not None:
        scored = nn.Sequential(prefix, scored)
    scored = scored.to(resolved_device).eval()
    check_logits(scored, probe, resolved_device, field="model")
    initial_model = None
    if initial is not None:
        initial_model = _initial_copy(model, initial)
        if prefix is not None:
            initial_model = nn.Sequential(copy.deepcopy(prefix), initial_model)
        initial_model = initial_model.to(resolved_device).eval()
    torch.manual_seed(seed)
    plan = RunPlan(
        model=scored,
        probe=probe,
        measures=chosen,
        params=resolved,
        dataset=dataset,
        dataset_label=whole.name
        if dataset is None or not str(dataset).endswith(".npz")
        else Path(dataset).name,
        data_dir=data_dir,
        splits=splits,
        samples_per_class=samples_per_class,
        seed=seed,
        batch_size=batch_size,
        device=resolved_device,
        notes=tuple(notes),
        initial_model=initial_model,
    )
    outcome = evaluate(plan, progress or (lambda stage, done, total: None), should_cancel)
    result = outcome.result
    return ScoreResult(result["scores"], result["status"], result["meta"])


def _initial_copy(model: nn.Module, initial: nn.Module | Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``initial`` (a module), or of ``model`` with the state dict ``initial`` loaded strictly."""
    if isinstance(initial, nn.Module):
        return copy.deepcopy(initial)
    if not isinstance(initial, Mapping):
        raise SpecError(
            f"initial must be a torch.nn.Module or a state dict, got {type(initial).__name__}",
            field="initial",
        )
    copied = copy.deepcopy(model)
    try:
        copied.load_state_dict(dict(initial), strict=True)
    except RuntimeError as exc:
        raise SpecError(
            f"initial does not fit the model: {str(exc).splitlines()[0]}", field="initial"
        ) from None
    return copied
