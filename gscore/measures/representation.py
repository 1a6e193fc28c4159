"""The representation measures of the winning PGDL 2020 entry (Natekar & Sharma): Davies-Bouldin index of the
class clusters and label-wise mixup loss. Definitions: docs/measures.md, "Peer measures".

``davies_bouldin`` reads the shared extraction pass (the last ``nn.Linear`` input, or the pooled first ReLU
output); ``mixup_loss`` runs the model on within-class midpoints of the probe set.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import davies_bouldin_score

from gscore.measures.types import MeasureOutcome, MeasureUndefined

__all__ = ["class_pairs", "davies_bouldin_measure", "mixup_loss_measure", "within_class_samples"]

LAYERS = ("penultimate", "first")


def davies_bouldin_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``davies_bouldin`` (-1): scikit-learn's ``davies_bouldin_score(F, y)`` on the probe set, F the input
    of the last ``nn.Linear`` (``layer="penultimate"``) or the 4 x 4 max-pooled first ReLU output
    (``layer="first"``)."""
    layer = params["layer"]
    activations = ctx.activations()
    if layer == "first":
        features, where = activations.first_relu_output, "the first ReLU-type call's output"
        if features is None:
            raise MeasureUndefined("the model calls no ReLU-type activation: davies_bouldin (layer=first)")
    else:
        features, where = activations.last_linear_input, f"the input of {activations.last_linear_name!r}"
        if features is None:
            raise MeasureUndefined("the model calls no nn.Linear module: davies_bouldin (layer=penultimate)")
    labels = ctx.probe.y.numpy()
    classes = np.unique(labels)
    if classes.size < 2 or classes.size >= labels.size:
        raise MeasureUndefined(
            f"davies_bouldin needs 2 to N-1 classes among the N={labels.size} probe samples "
            f"(got {classes.size})"
        )
    value = davies_bouldin_score(features.cpu().to(torch.float64).numpy(), labels)
    return MeasureOutcome(
        float(value), {"layer": layer, "representation": where, "dim": int(features.shape[1])}
    )


def within_class_samples(labels: torch.Tensor, per_class: int, seed: int) -> dict[int, torch.Tensor]:
    """{class: indices of at most ``per_class`` of its samples}, chosen by a seeded permutation (all of them,
    in order, when the class has fewer)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = {}
    for c in torch.unique(labels).tolist():
        members = (labels == c).nonzero().squeeze(1)
        if members.numel() > per_class:
            members = members[torch.randperm(members.numel(), generator=generator)[:per_class]].sort().values
        chosen[int(c)] = members
    return chosen


def class_pairs(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, second) indices of every pair i < j of ``members``."""
    pairs = list(itertools.combinations(members.tolist(), 2))
    return torch.tensor([i for i, _ in pairs]), torch.tensor([j for _, j in pairs])


def mixup_loss_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``mixup_loss`` (-1): for each class, the mean cross-entropy of its label on the midpoints
    ``(x_i + x_j) / 2`` of every pair of (at most ``per_class``) of its probe samples; the mean over the
    classes with at least 2 samples. Midpoints of the raw inputs equal those after the (affine) input
    normalization."""
    probe = ctx.probe
    chosen = within_class_samples(probe.y, int(params["per_class"]), int(params["seed"]))
    skipped = sorted(c for c, members in chosen.items() if members.numel() < 2)
    warnings = [f"class {c} has one probe sample: skipped" for c in skipped]
    losses: dict[int, float] = {}
    batch_size = max(1, int(ctx.batch_size))
    for index, (c, members) in enumerate(sorted(chosen.items())):
        ctx.check_cancel()
        ctx.report("mixup_loss", index, len(chosen))
        if members.numel() < 2:
            continue
        first, second = class_pairs(members)
        total, count = 0.0, 0
        for start in range(0, first.numel(), batch_size):
            i, j = first[start : start + batch_size], second[start : start + batch_size]
            x = (_as_float(probe.x[i]) + _as_float(probe.x[j])) / 2
            with torch.inference_mode():
                logits = ctx.model(x.to(ctx.device))
            target = torch.full((x.shape[0],), c, dtype=torch.int64, device=logits.device)
            total += float(F.cross_entropy(logits.to(torch.float64), target, reduction="sum"))
            count += x.shape[0]
        losses[c] = total / count
    ctx.report("mixup_loss", len(chosen), len(chosen))
    if not losses:
        raise MeasureUndefined("no class has 2 or more probe samples: mixup_loss is undefined")
    value = sum(losses.values()) / len(losses)
    per_class = {str(c): loss for c, loss in losses.items()}
    return MeasureOutcome(value, {"classes": len(losses), "per_class_loss": per_class}, warnings)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Images as the probe set's batches give them: uint8 scaled by 1/255, floats as they are."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
