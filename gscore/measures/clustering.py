"""The four intraclass-clustering measures c1-c4, exact and without any N x N matrix.

Definitions: docs/measures.md (the paper's definitions, with every convention the paper leaves open). Inputs:
``pre`` [N, M] pre-activations (any float dtype, CPU or CUDA; everything is computed on its device),
``layer_of`` [M] integer layer index of each neuron, ``y`` [N] integer class labels (the superclass for
c1/c2), ``sub`` [N] integer subclass labels nested in ``y``. Label values need not be 0..K-1.

Conventions (from docs/measures.md unless marked "choice"):

- mean/std over samples with ddof = 0; ``topk_mean`` = mean of the k largest signed values (all of
  them when fewer than k); a ratio whose denominator is 0 counts as 0; medians are numpy's (the mean
  of the two middle values for an even count).
- Dead neuron: pre < 0 on every probe sample, i.e. ``max_n pre < 0`` (strict, docs/measures.md "below 0"
  and the authors' ``np.all(acts < 0.)``). A neuron whose maximum is exactly 0 (e.g. constant 0) is
  live. Dead neurons count 0 in c1 and c3 and are dropped from their layer in c4.
- A set on which a neuron takes a single value has std exactly 0 (detected exactly with min == max,
  so float rounding never turns a 0/0 into a large ratio).
- Cosine distance per scikit-learn: rows divided by their L2 norm, all-zero rows stay zero (distance 1
  to every other row), distance 0 to itself.
- c2 silhouette values per scikit-learn's ``silhouette_samples``: a sample alone in its subclass gets
  0, and so does a sample whose a and b are both 0 (sklearn's 0/0 -> nan -> 0). Choice: a and b both
  below 1e-12 count as both 0 (they are float rounding of identical directions).
- c4 Sigma_l(E): population std over the |E|(|E|-1)/2 unordered pairs of distinct samples. Choice: a
  variance below 1e-12 times ||U^T U||_F^2 / pairs (the mean squared similarity with the self-pair terms
  the moment formula cancels, whose rounding it carries) counts as 0 (e.g. a 2-sample class has exactly
  one pair, hence Sigma = 0, also when the pair's similarity is small).

Inputs that make a measure undefined raise ``MeasureError`` (choices, following scikit-learn and the
definitions): k < 1; shape, dtype or length mismatches; NaN/inf in ``pre``; c1/c2: ``sub`` not nested
in ``y``, or a superclass with a single subclass (the rest R of the superclass is empty; sklearn's
silhouette needs >= 2 labels); c2 also a superclass whose every sample is its own subclass (sklearn
needs n_labels <= n_samples - 1); c3/c4: fewer than 2 classes; c4: a class with fewer than 2 samples
(no pair, Sigma undefined), or no live neuron in any layer. A single superclass is fine for c1/c2.

Exact and fast (docs/measures.md "Exact, on the whole probe set"), float64 throughout: c1/c3 use per-group counts, sums,
sums of squares, min and max, in column blocks (values shifted by a sample of the same superclass /
class first, so the cancellation in E[x^2] - E[x]^2 stays small); c3's std over D combines the class
statistics. c2 uses, per layer, the per-subclass sums T_j of the unit rows: the summed distance from x
to subclass j is n_j - u_x . T_j (its own subclass: minus the self term, over n - 1). c4 uses, per
layer and class, ||sum u||^2 and ||U^T U||_F^2 (a C_l x C_l Gram matrix): they give the mean and mean
square of u_x . u_y over distinct pairs, hence Sigma; its layer space is computed as
relu(x - mean - q) / std (q = percentile of x - mean), which equals standardizing first up to rounding.
Cost: O(N M) for c1/c3, O(N M K) for c2 (K subclasses per superclass), O(N sum_l C_l^2) for c4.
Memory: O(N x block) for c1/c3 and O(N x widest layer) float64 for c2/c4 (never a copy of all of
``pre``). On a CPU shared with other busy processes, torch's multi-threaded ops can stall on
descheduled threads (seen here: 30-80x slower); ``torch.set_num_threads(1)`` avoids it.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from gscore.errors import MeasureError
from gscore.measures.types import MeasureOutcome, MeasureUndefined

if TYPE_CHECKING:
    from gscore.measures.context import MeasureContext

__all__ = ["layer_silhouette", "layer_variance", "neuron_variance", "subclass_selectivity", "topk_mean"]

# float64 elements per temporary in the column-blocked passes of c1 and c3 (32 MiB).
_BLOCK_ELEMENTS = 1 << 22
# c4: a pair-distance variance at most this fraction of ||U^T U||_F^2 / pairs is rounding noise.
_RELATIVE_VARIANCE_FLOOR = 1e-12
# c2: mean distances a, b both at most this are float rounding of 0 (silhouette 0/0 -> 0).
_DISTANCE_FLOOR = 1e-12

Columns = slice | Tensor


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def topk_mean(values: Tensor, k: int, dim: int = -1) -> Tensor:
    """Mean of the k largest (signed) entries of ``values`` along ``dim``; all of them if fewer than k.

    Parameters
    ----------
    values : Tensor
        Any shape with at least one entry along ``dim``.
    k : int
        Number of largest entries averaged (>= 1).
    dim : int
        The reduced dimension.

    Returns
    -------
    Tensor
        ``values`` with ``dim`` reduced (float; integer input is averaged in float64).
    """
    k = _check_k(k)
    if values.ndim == 0 or values.shape[dim] == 0:
        raise MeasureError("topk_mean needs at least one value along the reduced dimension")
    if not values.is_floating_point():
        values = values.double()
    return values.topk(min(k, values.shape[dim]), dim=dim).values.mean(dim=dim)


@torch.no_grad()
def subclass_selectivity(pre: Tensor, y: Tensor, sub: Tensor, k: int = 30) -> float:
    """c1: ``median_i topk_mean_n sel_n(i)`` over subclasses i, neurons n (k = 30 by default).

    ``sel_n(i) = (mean_C - mean_R) / (std_C + std_R)`` of neuron n's pre-activations, C = samples of
    subclass i, R = the other samples of its superclass; 0 for a zero denominator and dead neurons.

    Parameters
    ----------
    pre : Tensor [N, M]
        Pooled pre-activations, float, finite, N >= 2.
    y : Tensor [N]
        Integer superclass labels.
    sub : Tensor [N]
        Integer subclass labels nested in ``y`` (each superclass has >= 2 subclasses).
    k : int
        Neurons averaged per subclass (top-k, >= 1).

    Returns
    -------
    float
        c1 (higher predicts better generalization). Raises ``MeasureError`` for inputs that make it undefined.
    """
    k = _check_k(k)
    pre, col_max, _ = _check_pre(pre)
    n, m = pre.shape
    y = _check_labels(y, n, pre.device, "y")
    sub = _check_labels(sub, n, pre.device, "sub")
    h = _hierarchy(y, sub, "c1")
    n_sub = h.sub_counts.shape[0]
    # Shift each sample by a sample of its superclass: a neuron constant on a superclass becomes 0.
    shift_rows = _first_rows(h.sup_index, h.sup_counts.shape[0])[h.sup_index]
    count_c = h.sub_counts.double()[:, None]
    count_r = (h.sup_counts[h.sup_of_sub] - h.sub_counts).double()[:, None]
    siblings, is_sibling = _sibling_table(h)
    selectivity = torch.empty((n_sub, m), dtype=torch.float64, device=pre.device)
    for cols in _column_blocks(n, m):
        x = _float64_copy(pre[:, cols])
        max_c, min_c = _group_max_min(x, h.sub_index, n_sub)
        x -= x[shift_rows]
        sums_c = _group_sum(x, h.sub_index, n_sub)
        squares_c = _group_sum(x.square_(), h.sub_index, n_sub)
        del x
        sums_r = _group_sum(sums_c, h.sup_of_sub, h.sup_counts.shape[0])[h.sup_of_sub] - sums_c
        squares_r = _group_sum(squares_c, h.sup_of_sub, h.sup_counts.shape[0])[h.sup_of_sub] - squares_c
        max_r = max_c[siblings].masked_fill_(~is_sibling[:, :, None], -math.inf).amax(1)
        min_r = min_c[siblings].masked_fill_(~is_sibling[:, :, None], math.inf).amin(1)
        mean_c, std_c = _mean_std(sums_c, squares_c, count_c, max_c == min_c)
        mean_r, std_r = _mean_std(sums_r, squares_r, count_r, max_r == min_r)
        selectivity[:, cols] = _safe_ratio(mean_c - mean_r, std_c + std_r)
    selectivity[:, col_max < 0] = 0.0  # dead neurons
    return _median(topk_mean(selectivity, k, dim=1))


@torch.no_grad()
def layer_silhouette(pre: Tensor, layer_of: Tensor, y: Tensor, sub: Tensor, k: int = 5) -> float:
    """c2: ``median_i topk_mean_l sil_l(i)`` over subclasses i, layers l (k = 5 by default).

    ``sil_l(i)``: mean over the samples of subclass i of their silhouette values (scikit-learn's
    ``silhouette_samples``, cosine distance) within their superclass, clustered by subclass, in the
    space ``relu(pre[:, layer_of == l])``.

    Parameters
    ----------
    pre : Tensor [N, M]
        Pooled pre-activations, float, finite.
    layer_of : Tensor [M]
        Integer layer index of each column.
    y, sub : Tensor [N]
        Integer superclass and nested subclass labels.
    k : int
        Layers averaged per subclass (top-k, >= 1).

    Returns
    -------
    float
        c2 (higher predicts better generalization).
    """
    k = _check_k(k)
    pre, _, _ = _check_pre(pre)
    n, m = pre.shape
    layers = _layer_columns(layer_of, m, pre.device)
    y = _check_labels(y, n, pre.device, "y")
    sub = _check_labels(sub, n, pre.device, "sub")
    h = _hierarchy(y, sub, "c2")
    too_fine = (h.subs_per_sup >= h.sup_counts).nonzero()
    if too_fine.numel():
        raise MeasureError(
            f"c2: superclass {h.sup_values[too_fine[0, 0]].item()} has as many subclasses as samples; "
            "a silhouette needs 2 to n_samples - 1 subclasses per superclass"
        )
    n_sub, n_sup = h.sub_counts.shape[0], h.sup_counts.shape[0]
    # Rows grouped by superclass, and by subclass inside it (subclass ids are superclass-major).
    order = torch.argsort(h.sub_index, stable=True)
    sub_of_row = h.sub_index[order]
    sup_of_row = h.sup_of_sub[sub_of_row]
    first_sub = torch.cumsum(h.subs_per_sup, 0) - h.subs_per_sup
    slot_of_row = sub_of_row - first_sub[sup_of_row]  # subclass position inside its superclass
    max_slots = int(h.subs_per_sup.max())
    slot_of_sub = torch.arange(n_sub, device=pre.device) - first_sub[h.sup_of_sub]
    slot_counts = torch.zeros((n_sup, max_slots), dtype=torch.float64, device=pre.device)
    slot_counts[h.sup_of_sub, slot_of_sub] = h.sub_counts.double()
    counts_by_slot = slot_counts[sup_of_row]  # [N, K] sizes of the subclasses of the row's superclass
    slots = torch.arange(max_slots, device=pre.device)
    other_slot = (counts_by_slot > 0) & (slots[None, :] != slot_of_row[:, None])
    own_count = h.sub_counts.double()[sub_of_row]
    sup_bounds = _bounds(h.sup_counts)
    sub_bounds = _bounds(h.subs_per_sup)

    sil = torch.empty((n_sub, len(layers)), dtype=torch.float64, device=pre.device)
    for index, cols in enumerate(layers):
        unit, nonzero = _unit_rows(_layer_rows(pre, cols, order).to(torch.float64).clamp_min_(0))
        sub_sums = _group_sum(unit, sub_of_row, n_sub)
        dots = torch.zeros((n, max_slots), dtype=torch.float64, device=pre.device)
        for (r0, r1), (s0, s1) in zip(sup_bounds, sub_bounds, strict=True):
            dots[r0:r1, : s1 - s0] = unit[r0:r1] @ sub_sums[s0:s1].T
        del unit
        values = _silhouette_values(dots, slot_of_row, own_count, counts_by_slot, other_slot, nonzero)
        sil[:, index] = _group_sum(values, sub_of_row, n_sub) / h.sub_counts
    return _median(topk_mean(sil, k, dim=1))


@torch.no_grad()
def neuron_variance(pre: Tensor, y: Tensor, k: int = 30) -> float:
    """c3: ``mean_i topk_mean_n std_{C_i}(pre_n) / std_D(pre_n)`` over classes i of ``y``, neurons n.

    Ratio 0 for a zero denominator and for dead neurons.

    Parameters
    ----------
    pre : Tensor [N, M]
        Pooled pre-activations, float, finite.
    y : Tensor [N]
        Integer class labels (>= 2 classes).
    k : int
        Neurons averaged per class (top-k, >= 1; default 30).

    Returns
    -------
    float
        c3 (higher predicts better generalization).
    """
    k = _check_k(k)
    pre, col_max, col_min = _check_pre(pre)
    n, m = pre.shape
    y = _check_labels(y, n, pre.device, "y")
    class_index, class_counts = _classes(y, "c3")
    n_cls = class_counts.shape[0]
    first_rows = _first_rows(class_index, n_cls)
    count = class_counts.double()[:, None]
    ratio = torch.empty((n_cls, m), dtype=torch.float64, device=pre.device)
    for cols in _column_blocks(n, m):
        x = _float64_copy(pre[:, cols])
        max_c, min_c = _group_max_min(x, class_index, n_cls)
        shift = x[first_rows]  # [K, B]: a sample of each class
        x -= shift[class_index]
        sums = _group_sum(x, class_index, n_cls)
        squares = _group_sum(x.square_(), class_index, n_cls)
        del x
        mean_c, std_c = _mean_std(sums, squares, count, max_c == min_c)
        # std over D from the class statistics: n var_D = sum_c n_c (var_c + (mean_c - mean_D)^2)
        mean_c += shift
        mean_d = (count * mean_c).sum(0) / n
        var_d = (count * (std_c.square() + (mean_c - mean_d).square())).sum(0) / n
        std_d = var_d.sqrt_().masked_fill_(col_max[cols] == col_min[cols], 0.0)
        block = _safe_ratio(std_c, std_d.expand_as(std_c))
        block[:, col_max[cols] < 0] = 0.0  # dead neurons
        ratio[:, cols] = block
    return topk_mean(ratio, k, dim=1).mean().item()


@torch.no_grad()
def layer_variance(pre: Tensor, layer_of: Tensor, y: Tensor, k: int = 5) -> float:
    """c4: ``mean_i topk_mean_l Sigma_l(C_i) / Sigma_l(D)`` over classes i, kept layers l (k = 5).

    Layer space: live neurons of the layer, each standardized over D (std 0 -> 0), minus its p-th
    percentile over D (numpy linear), relu; p = max(0, min(75, round(100 - 1000 / C))) for C live
    neurons. Sigma_l(E) = population std of the cosine distances over unordered pairs of distinct
    samples of E. A layer without live neuron is dropped.

    Parameters
    ----------
    pre : Tensor [N, M]
        Pooled pre-activations, float, finite.
    layer_of : Tensor [M]
        Integer layer index of each column.
    y : Tensor [N]
        Integer class labels (>= 2 classes, each with >= 2 samples).
    k : int
        Layers averaged per class (top-k, >= 1; default 5).

    Returns
    -------
    float
        c4 (higher predicts better generalization).
    """
    k = _check_k(k)
    pre, col_max, col_min = _check_pre(pre)
    n, m = pre.shape
    layers = _layer_columns(layer_of, m, pre.device)
    y = _check_labels(y, n, pre.device, "y")
    class_index, class_counts = _classes(y, "c4")
    small = (class_counts < 2).nonzero()
    if small.numel():
        raise MeasureError(
            f"c4: class {torch.unique(y)[small[0, 0]].item()} has a single sample; Sigma(C_i) needs "
            "at least one pair of samples per class"
        )
    order = torch.argsort(class_index, stable=True)  # each class in a contiguous range of rows
    class_of_row = class_index[order]
    n_cls = class_counts.shape[0]
    bounds = _bounds(class_counts)
    counts = class_counts.double()
    total = torch.tensor(float(n), dtype=torch.float64, device=pre.device)
    live = col_max >= 0
    constant = col_max == col_min
    ratios: list[Tensor] = []
    for cols in layers:
        layer_live = live[cols]
        width = int(layer_live.sum())
        if width == 0:
            continue
        x, layer_constant = _layer_rows(pre, cols, order), constant[cols]
        if width < x.shape[1]:
            x, layer_constant = x[:, layer_live], layer_constant[layer_live]
        p = _percentile_level(width)
        unit = _thresholded_standardized(x, layer_constant, p)  # [C, N]
        del x
        nonzero = _normalize_columns(unit)
        sum_sq, gram_sq, all_sum_sq, all_gram_sq = _class_moments(unit, bounds)
        del unit
        nonzero_c = _group_sum(nonzero.double(), class_of_row, n_cls)
        sigma_class = _pair_std(sum_sq, gram_sq, nonzero_c, counts)
        sigma_all = _pair_std(all_sum_sq, all_gram_sq, nonzero_c.sum(), total)
        ratios.append(_safe_ratio(sigma_class, sigma_all.expand_as(sigma_class)))
    if not ratios:
        raise MeasureError("c4: every neuron of every layer is dead (pre < 0 on every sample)")
    return topk_mean(torch.stack(ratios, dim=1), k, dim=1).mean().item()


# ----------------------------------------------------------------------------------------------------
# Validation and label bookkeeping
# ----------------------------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool):
        raise MeasureError(f"k must be an integer >= 1, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise MeasureError(f"k must be an integer >= 1, got {k!r}") from None
    if k < 1:
        raise MeasureError(f"k must be an integer >= 1, got {k}")
    return k


def _check_pre(pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(pre, column max [M], column min [M]); MeasureError unless 2-D float [N >= 2, M >= 1], finite."""
    pre = torch.as_tensor(pre)
    if pre.ndim != 2:
        raise MeasureError(f"pre must be a 2-D [N, M] tensor, got shape {tuple(pre.shape)}")
    if not pre.is_floating_point():
        raise MeasureError(f"pre must be a floating-point tensor, got {pre.dtype}")
    if pre.shape[0] < 2 or pre.shape[1] < 1:
        raise MeasureError(f"pre needs at least 2 samples and 1 neuron, got shape {tuple(pre.shape)}")
    col_max, col_min = pre.amax(0), pre.amin(0)  # NaN propagates, so this also finds NaN
    if not bool(torch.isfinite(col_min).all() & torch.isfinite(col_max).all()):
        raise MeasureError("pre contains NaN or infinite values")
    return pre, col_max, col_min


def _check_labels(labels: Tensor, n: int, device: torch.device, name: str) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise MeasureError(
            f"{name} must be a 1-D tensor of {n} labels (one per row of pre), got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise MeasureError(f"{name} must hold integer labels, got {labels.dtype}")
    return labels.to(device=device, dtype=torch.int64)


def _classes(y: Tensor, measure: str) -> tuple[Tensor, Tensor]:
    """(class id 0..K-1 of each sample [N], class sizes [K]); at least 2 classes."""
    _, index, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if counts.shape[0] < 2:
        raise MeasureError(f"{measure}: y has {counts.shape[0]} class; at least 2 are needed")
    return index, counts


@dataclass(frozen=True)
class _Hierarchy:
    """Superclass/subclass bookkeeping. Subclass ids are superclass-major: the subclasses of
    superclass g are ids first_g .. first_g + subs_per_sup[g] - 1."""

    sup_values: Tensor  # [G] superclass label values
    sup_index: Tensor  # [N] superclass id of each sample
    sub_index: Tensor  # [N] subclass id of each sample
    sup_of_sub: Tensor  # [S] superclass id of each subclass (non-decreasing)
    sub_counts: Tensor  # [S] samples per subclass
    sup_counts: Tensor  # [G] samples per superclass
    subs_per_sup: Tensor  # [G] subclasses per superclass


def _hierarchy(y: Tensor, sub: Tensor, measure: str) -> _Hierarchy:
    sup_values, sup_index = torch.unique(y, return_inverse=True)
    sub_values, sub_raw = torch.unique(sub, return_inverse=True)
    n_sub, n_sup = sub_values.shape[0], sup_values.shape[0]
    low = torch.full((n_sub,), n_sup, dtype=torch.int64, device=y.device)
    low = low.scatter_reduce(0, sub_raw, sup_index, "amin")
    high = torch.full((n_sub,), -1, dtype=torch.int64, device=y.device)
    high = high.scatter_reduce(0, sub_raw, sup_index, "amax")
    mixed = (low != high).nonzero()
    if mixed.numel():
        s = mixed[0, 0]
        raise MeasureError(
            f"{measure}: sub is not nested in y: subclass {sub_values[s].item()} has samples in "
            f"superclasses {sup_values[low[s]].item()} and {sup_values[high[s]].item()}"
        )
    order = torch.argsort(low * n_sub + torch.arange(n_sub, device=y.device))
    new_id = torch.empty_like(order)
    new_id[order] = torch.arange(n_sub, device=y.device)
    sub_index = new_id[sub_raw]
    sup_of_sub = low[order]
    subs_per_sup = torch.bincount(sup_of_sub, minlength=n_sup)
    single = (subs_per_sup < 2).nonzero()
    if single.numel():
        raise MeasureError(
            f"{measure}: superclass {sup_values[single[0, 0]].item()} has a single subclass; each "
            "subclass is compared with the rest of its superclass, so every superclass needs at "
            "least 2 subclasses"
        )
    return _Hierarchy(
        sup_values=sup_values,
        sup_index=sup_index,
        sub_index=sub_index,
        sup_of_sub=sup_of_sub,
        sub_counts=torch.bincount(sub_index, minlength=n_sub),
        sup_counts=torch.bincount(sup_index, minlength=n_sup),
        subs_per_sup=subs_per_sup,
    )


def _sibling_table(h: _Hierarchy) -> tuple[Tensor, Tensor]:
    """([S, K] ids of the subclasses of each subclass's superclass, [S, K] mask: real and not itself)."""
    n_sub = h.sub_counts.shape[0]
    device = h.sub_counts.device
    first_sub = torch.cumsum(h.subs_per_sup, 0) - h.subs_per_sup
    slots = torch.arange(int(h.subs_per_sup.max()), device=device)
    table = first_sub[h.sup_of_sub][:, None] + slots[None, :]
    real = slots[None, :] < h.subs_per_sup[h.sup_of_sub][:, None]
    is_sibling = real & (table != torch.arange(n_sub, device=device)[:, None])
    return table.clamp_max(n_sub - 1), is_sibling


def _layer_columns(layer_of: Tensor, m: int, device: torch.device) -> list[Columns]:
    """Columns of each layer (ascending layer index): a slice when contiguous, else an index tensor."""
    layer_of = torch.as_tensor(layer_of)
    if layer_of.ndim != 1 or layer_of.shape[0] != m:
        raise MeasureError(
            f"layer_of must be a 1-D tensor of {m} layer indices (one per column of pre), "
            f"got shape {tuple(layer_of.shape)}"
        )
    if layer_of.is_floating_point() or layer_of.is_complex() or layer_of.dtype == torch.bool:
        raise MeasureError(f"layer_of must hold integer layer indices, got {layer_of.dtype}")
    layer_of = layer_of.detach().to("cpu", torch.int64)
    if int(layer_of.min()) < 0:
        raise MeasureError("layer_of must hold layer indices >= 0")
    columns: list[Columns] = []
    for value in torch.unique(layer_of).tolist():
        index = (layer_of == value).nonzero().squeeze(1)
        start, stop = int(index[0]), int(index[-1]) + 1
        columns.append(slice(start, stop) if stop - start == index.shape[0] else index.to(device))
    return columns


def _layer_rows(pre: Tensor, cols: Columns, order: Tensor) -> Tensor:
    """A new [N, C] tensor: the columns ``cols`` of ``pre`` with the rows in ``order``."""
    layer = pre[:, cols] if isinstance(cols, slice) else pre.index_select(1, cols)
    return layer.index_select(0, order)


def _column_blocks(n: int, m: int) -> list[slice]:
    width = max(1, _BLOCK_ELEMENTS // n)
    return [slice(start, min(start + width, m)) for start in range(0, m, width)]


def _bounds(sizes: Tensor) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of the given sizes."""
    stops = torch.cumsum(sizes, 0).tolist()
    return list(zip([0, *stops[:-1]], stops, strict=True))


def _first_rows(group: Tensor, n_groups: int) -> Tensor:
    """[G] index of the first sample of each group."""
    n = group.shape[0]
    first = torch.full((n_groups,), n, dtype=torch.int64, device=group.device)
    return first.scatter_reduce(0, group, torch.arange(n, device=group.device), "amin")


# ----------------------------------------------------------------------------------------------------
# Numerics
# ----------------------------------------------------------------------------------------------------


def _float64_copy(x: Tensor) -> Tensor:
    """A float64 copy that in-place arithmetic may change (``.double()`` of float64 input is no copy)."""
    return x.to(torch.float64, copy=True)


def _group_sum(x: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Per-group sums over dim 0: [N, ...] -> [G, ...]."""
    return torch.zeros((n_groups, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, group, x)


def _group_max_min(x: Tensor, group: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Per-group column max and min of x [N, B] -> two [G, B]."""
    index = group[:, None].expand_as(x)
    shape = (n_groups, x.shape[1])
    high = torch.full(shape, -math.inf, dtype=x.dtype, device=x.device).scatter_reduce_(0, index, x, "amax")
    low = torch.full(shape, math.inf, dtype=x.dtype, device=x.device).scatter_reduce_(0, index, x, "amin")
    return high, low


def _mean_std(sums: Tensor, squares: Tensor, count: Tensor, constant: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std from sums and sums of squares; exactly 0 std where ``constant``."""
    mean = sums / count
    std = (squares / count - mean * mean).clamp_min_(0).sqrt_()
    return mean, std.masked_fill_(constant, 0.0)


def _safe_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, 0 where the denominator is 0."""
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, 1.0), 0.0)


def _median(values: Tensor) -> float:
    """numpy's median of a 1-D tensor (mean of the two middle values for an even count)."""
    ordered = values.sort().values
    mid = ordered.shape[0] // 2
    if ordered.shape[0] % 2:
        return ordered[mid].item()
    return ((ordered[mid - 1] + ordered[mid]) / 2).item()


def _unit_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of float64 x divided by their L2 norm in place (zero rows stay 0); also [N] row != 0."""
    norms = torch.linalg.vector_norm(x, dim=1)
    nonzero = norms > 0
    x /= torch.where(nonzero, norms, 1.0)[:, None]
    return x, nonzero


def _silhouette_values(
    dots: Tensor,
    own_slot: Tensor,
    own_count: Tensor,
    counts_by_slot: Tensor,
    other_slot: Tensor,
    nonzero: Tensor,
) -> Tensor:
    """Silhouette value of every sample from u_x . T_j for the subclasses j of its superclass.

    ``dots`` [N, K]: u_x . (sum of the unit rows of the j-th subclass of x's superclass); the summed
    cosine distance from x to that subclass is n_j - dots (x's own term u_x . u_x = [x != 0] removed
    for its own subclass, whose mean is over n - 1 samples).
    """
    own_dots = dots.gather(1, own_slot[:, None]).squeeze(1) - nonzero.double()
    alone = own_count < 2
    intra = ((own_count - 1) - own_dots) / (own_count - 1).clamp_min(1)
    inter = (1 - dots / counts_by_slot.clamp_min(1)).masked_fill_(~other_slot, math.inf).amin(1)
    intra, inter = intra.clamp(0, 2), inter.clamp(0, 2)  # sklearn clips cosine distances to [0, 2]
    larger = torch.maximum(intra, inter)
    zero = alone | (larger <= _DISTANCE_FLOOR)
    return torch.where(zero, 0.0, (inter - intra) / torch.where(zero, 1.0, larger))


def _cpu_fast_path(x: Tensor) -> bool:
    """Whether to use the CPU-specific routes (numpy partition, blocked transpose); the torch-only
    routes give the same numbers on any device (the tests run both on CPU)."""
    return x.device.type == "cpu"


def _percentile_rows(x: Tensor, p: float) -> Tensor:
    """numpy.percentile(x, p, axis=1) (linear interpolation) for float64 x [C, N] -> [C]."""
    n = x.shape[1]
    virtual = (n - 1) * (p / 100)
    below = math.floor(virtual)
    gamma = virtual - below
    need_high = gamma > 0 and below + 1 < n
    high: Tensor | None = None
    if _cpu_fast_path(x):  # numpy's introselect is ~10x faster than torch.kthvalue on CPU
        part = np.partition(x.numpy(), below, axis=1)
        low = torch.from_numpy(part[:, below].copy())
        if need_high:  # everything right of position `below` is >= it: the next order statistic
            high = torch.from_numpy(part[:, below + 1 :].min(axis=1))
    else:
        low = x.kthvalue(below + 1, dim=1).values
        if need_high:
            high = x.kthvalue(below + 2, dim=1).values
    if high is None:
        return low
    diff = high - low
    # numpy's _lerp: a + (b - a) t, or b - (b - a)(1 - t) for t >= 0.5
    return high - diff * (1 - gamma) if gamma >= 0.5 else low + diff * gamma


def _percentile_level(width: int) -> int:
    """c4's percentile for a layer of ``width`` live neurons: max(0, min(75, round(100 - 1000 / C)))
    (Python's round), i.e. 25% of the samples active, or about 10 active neurons in layers under 40."""
    return max(0, min(75, round(100 - 1000 / width)))


def _transposed_float64(x: Tensor) -> Tensor:
    """float64 copy of x [N, C] as [C, N]; on CPU in blocks of rows (cache-friendly, ~2x faster)."""
    out = torch.empty((x.shape[1], x.shape[0]), dtype=torch.float64, device=x.device)
    step = 256 if _cpu_fast_path(x) else max(1, x.shape[0])
    for start in range(0, x.shape[0], step):
        out[:, start : start + step].copy_(x[start : start + step].T)
    return out


def _thresholded_standardized(x: Tensor, constant: Tensor, p: float) -> Tensor:
    """c4 layer space of x [N, C], returned transposed as float64 [C, N]: each neuron standardized over
    the N samples (``constant`` [C] neurons -> 0), minus its p-th percentile, relu.

    Computed as relu(x - mean - q) / std with q the percentile of x - mean: the same numbers as
    standardizing first (percentiles commute with a positive scale) up to rounding.
    """
    z = _transposed_float64(x)
    z -= z.mean(1, keepdim=True)
    std = torch.linalg.vector_norm(z, dim=1) / math.sqrt(z.shape[1])
    z -= _percentile_rows(z, p)[:, None]
    inverse_std = torch.where(constant | (std == 0), 0.0, 1 / torch.where(std > 0, std, 1.0))
    return z.clamp_min_(0).mul_(inverse_std[:, None])


def _normalize_columns(z: Tensor) -> Tensor:
    """Divide each column (sample) of z [C, N] by its L2 norm in place (zero columns stay 0).
    Returns [N] bool: column != 0."""
    norms = torch.mv(z.square().T, torch.ones(z.shape[0], dtype=z.dtype, device=z.device)).sqrt_()
    nonzero = norms > 0
    z /= torch.where(nonzero, norms, 1.0)
    return nonzero


def _class_moments(unit: Tensor, bounds: list[tuple[int, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sums for Sigma from the unit columns of unit [C, N], classes in the column ranges ``bounds``.

    Returns, per class i [K]: ||sum u||^2 and ||U_i^T U_i||_F^2 (from the C x C Gram matrix); then over
    all samples: ||sum u||^2 and ||U^T U||_F^2 (U^T U = sum of the class Gram matrices). Gram matrices
    go to a preallocated buffer and their norms are dot products, so the loop allocates nothing. (No
    scipy/numpy BLAS here: their thread pools fight torch's and can make this 30x slower.)
    """
    width = unit.shape[0]
    options = {"dtype": unit.dtype, "device": unit.device}
    gram = torch.empty((width, width), **options)
    gram_all = torch.zeros((width, width), **options)
    flat = gram.view(-1)
    sums = torch.empty((len(bounds), width), **options)
    gram_sq = torch.empty(len(bounds), **options)
    for index, (r0, r1) in enumerate(bounds):
        block = unit[:, r0:r1]
        torch.mm(block, block.T, out=gram)
        torch.dot(flat, flat, out=gram_sq[index])
        gram_all += gram
        torch.sum(block, dim=1, out=sums[index])
    flat_all = gram_all.view(-1)
    return sums.square().sum(1), gram_sq, sums.sum(0).square().sum(), flat_all.dot(flat_all)


def _pair_std(sum_sq: Tensor, gram_sq: Tensor, nonzero: Tensor, count: Tensor) -> Tensor:
    """Population std of the cosine distances over the pairs of distinct samples of each set.

    ``sum_sq`` = ||sum_x u_x||^2, ``gram_sq`` = ||U^T U||_F^2, ``nonzero`` = number of nonzero rows
    (each contributes u.u = 1 to the first and (u.u)^2 = 1 to the second), ``count`` = set size.
    distance = 1 - u_x . u_y, so its variance is that of the similarities over the ordered pairs.
    """
    pairs = count * (count - 1)
    mean = (sum_sq - nonzero) / pairs
    mean_square = (gram_sq - nonzero) / pairs
    var = mean_square - mean * mean
    # The rounding of mean_square - mean^2 scales with gram_sq / pairs (the self terms cancelled above
    # included), which can dwarf mean_square when the similarities are small.
    var = torch.where(var > _RELATIVE_VARIANCE_FLOOR * gram_sq / pairs, var, 0.0)
    return var.sqrt()


# ----------------------------------------------------------------------------------------------------
# Measure-table functions: ``compute(ctx, params) -> MeasureOutcome`` (gscore.measures.types)
# ----------------------------------------------------------------------------------------------------

# A class or subclass with fewer samples than this makes a mean/std-based score noisy.
MIN_GROUP_SAMPLES = 5


def _group_size_warnings(labels: Tensor | None, what: str) -> list[str]:
    if labels is None:
        return []
    _, counts = torch.unique(labels, return_counts=True)
    small = int((counts < MIN_GROUP_SAMPLES).sum())
    if not small:
        return []
    return [f"{small} {what}(es) have fewer than {MIN_GROUP_SAMPLES} samples (smallest: {int(counts.min())})"]


def _topk_warning(k: int, available: int, unit: str) -> list[str]:
    if k < available:
        return []
    return [f"k = {k} >= the {available} {unit}s: top-k is the plain mean over all of them"]


def _two_subclasses_each(y: Tensor, sub: Tensor) -> bool:
    """Whether every superclass of ``y`` has exactly two subclasses in ``sub``."""
    _, sup_of = torch.unique(y, return_inverse=True)
    pairs = torch.unique(torch.stack([sup_of, sub]), dim=1)[0]
    return bool((torch.bincount(pairs) == 2).all())


@dataclass(frozen=True)
class _ClusteringInputs:
    """What every c1-c4 function reads: ``pre`` [N, M], ``layer_of`` [M], labels on ``pre``'s device, k."""

    pre: Tensor
    layer_of: Tensor
    y: Tensor
    sub: Tensor | None
    k: int
    neurons: int
    layers: int


def _clustering_inputs(ctx: MeasureContext, params: dict[str, Any]) -> _ClusteringInputs:
    activations = ctx.activations()
    pre, probe = activations.pre, ctx.probe
    return _ClusteringInputs(
        pre=pre,
        layer_of=activations.layer_of,
        y=probe.y.to(pre.device),
        sub=probe.sub.to(pre.device) if probe.sub is not None else None,
        k=int(params["k"]),
        neurons=int(pre.shape[1]),
        layers=activations.num_layers,
    )


def c1_measure(ctx: MeasureContext, params: dict[str, Any]) -> MeasureOutcome:
    """c1 (:func:`subclass_selectivity`) for the measure table; undefined when it is 0 by construction."""
    run = _clustering_inputs(ctx, params)
    warnings = _topk_warning(run.k, run.neurons, "neuron") + _group_size_warnings(run.sub, "subclass")
    if run.k >= run.neurons and _two_subclasses_each(run.y, run.sub):
        raise MeasureUndefined(
            f"c1 is 0 by construction here: every superclass has two subclasses and k = {run.k} >= the "
            f"{run.neurons} neurons, so the two subclasses' selectivities are exact opposites and their "
            "median is 0; use a smaller k or a wider model"
        )
    ctx.check_cancel()
    return MeasureOutcome(float(subclass_selectivity(run.pre, run.y, run.sub, k=run.k)), warnings=warnings)


def c2_measure(ctx: MeasureContext, params: dict[str, Any]) -> MeasureOutcome:
    """c2 (:func:`layer_silhouette`) for the measure table."""
    run = _clustering_inputs(ctx, params)
    warnings = _topk_warning(run.k, run.layers, "layer") + _group_size_warnings(run.sub, "subclass")
    ctx.check_cancel()
    value = layer_silhouette(run.pre, run.layer_of, run.y, run.sub, k=run.k)
    return MeasureOutcome(float(value), warnings=warnings)


def c3_measure(ctx: MeasureContext, params: dict[str, Any]) -> MeasureOutcome:
    """c3 (:func:`neuron_variance`) for the measure table."""
    run = _clustering_inputs(ctx, params)
    warnings = _topk_warning(run.k, run.neurons, "neuron") + _group_size_warnings(run.y, "class")
    ctx.check_cancel()
    return MeasureOutcome(float(neuron_variance(run.pre, run.y, k=run.k)), warnings=warnings)


def c4_measure(ctx: MeasureContext, params: dict[str, Any]) -> MeasureOutcome:
    """c4 (:func:`layer_variance`) for the measure table."""
    run = _clustering_inputs(ctx, params)
    warnings = _topk_warning(run.k, run.layers, "layer") + _group_size_warnings(run.y, "class")
    ctx.check_cancel()
    return MeasureOutcome(float(layer_variance(run.pre, run.layer_of, run.y, k=run.k)), warnings=warnings)
