"""Slow brute-force references for c1-c4 (docs/measures.md), used by the tests and benchmarks/bench_measures.py.

They follow the definitions literally with numpy and scikit-learn: explicit loops over subclasses,
classes and layers, ``sklearn.metrics.silhouette_samples(metric="cosine")`` for c2 and full pairwise
``cosine_distances`` matrices for c4 (O(N^2) memory and time: keep N to a few thousand). They share no
code with ``gscore.measures.clustering``, whose exact fast forms they check. Same argument order and defaults as
``gscore.measures.clustering``; inputs may be numpy arrays or torch tensors; results are Python floats.

The only conventions added to plain numpy: a set on which a neuron takes a single value has std
exactly 0 (numpy's two-pass std can return ~1e-17 there, turning 0/0 into noise), and a ratio with a
zero denominator is 0. Invalid input (e.g. a superclass with one subclass) raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import silhouette_samples
from sklearn.metrics.pairwise import cosine_distances


def _array(values: Any, dtype: type) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _std(x: np.ndarray) -> np.ndarray:
    """Population std of each column; exactly 0 for a constant column."""
    return np.where(np.ptp(x, axis=0) == 0, 0.0, np.std(x, axis=0))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _topk_mean(values: np.ndarray, k: int) -> float:
    return float(np.mean(np.sort(values)[::-1][:k]))


def _superclass_of(y: np.ndarray, sub: np.ndarray, subclass: int) -> int:
    owners = np.unique(y[sub == subclass])
    if owners.shape[0] != 1:
        raise ValueError(f"subclass {subclass} is not nested in a single superclass")
    return int(owners[0])


def reference_c1(pre: Any, y: Any, sub: Any, k: int = 30) -> float:
    """c1 = median over subclasses i of topk_mean over neurons of (mean_C - mean_R) / (std_C + std_R)."""
    pre = _array(pre, np.float64)
    y, sub = _array(y, np.int64), _array(sub, np.int64)
    dead = np.all(pre < 0, axis=0)
    per_subclass = []
    for subclass in np.unique(sub):
        in_c = sub == subclass
        in_r = (y == _superclass_of(y, sub, subclass)) & ~in_c
        if not in_r.any():
            raise ValueError(f"subclass {subclass} is the only subclass of its superclass")
        numerator = pre[in_c].mean(axis=0) - pre[in_r].mean(axis=0)
        selectivity = _ratio(numerator, _std(pre[in_c]) + _std(pre[in_r]))
        selectivity[dead] = 0.0
        per_subclass.append(_topk_mean(selectivity, k))
    return float(np.median(per_subclass))


def reference_c2(pre: Any, layer_of: Any, y: Any, sub: Any, k: int = 5) -> float:
    """c2 = median over subclasses of topk_mean over layers of the subclass's mean silhouette value.

    Silhouette values from scikit-learn (cosine) on the samples of each superclass, labelled by
    subclass, in the space relu(pre[:, layer_of == l]).
    """
    pre = _array(pre, np.float64)
    layer_of = _array(layer_of, np.int64)
    y, sub = _array(y, np.int64), _array(sub, np.int64)
    layers = np.unique(layer_of)
    subclasses = np.unique(sub)
    for subclass in subclasses:
        _superclass_of(y, sub, subclass)
    sil = np.zeros((subclasses.shape[0], layers.shape[0]))
    for superclass in np.unique(y):
        in_s = y == superclass
        labels = sub[in_s]
        for j, layer in enumerate(layers):
            act = np.maximum(pre[in_s][:, layer_of == layer], 0.0)
            values = silhouette_samples(act, labels, metric="cosine")
            for i, subclass in enumerate(subclasses):
                if (labels == subclass).any():
                    sil[i, j] = values[labels == subclass].mean()
    return float(np.median([_topk_mean(row, k) for row in sil]))


def reference_c3(pre: Any, y: Any, k: int = 30) -> float:
    """c3 = mean over classes of topk_mean over neurons of std_C / std_D (0 for dead neurons)."""
    pre = _array(pre, np.float64)
    y = _array(y, np.int64)
    dead = np.all(pre < 0, axis=0)
    std_all = _std(pre)
    per_class = []
    for label in np.unique(y):
        ratio = _ratio(_std(pre[y == label]), std_all)
        ratio[dead] = 0.0
        per_class.append(_topk_mean(ratio, k))
    return float(np.mean(per_class))


def _pairwise_std(act: np.ndarray) -> float:
    """Population std of the cosine distances over all unordered pairs of distinct rows."""
    distances = cosine_distances(act)
    return float(np.std(distances[np.triu_indices(act.shape[0], k=1)]))


def reference_c4(pre: Any, layer_of: Any, y: Any, k: int = 5) -> float:
    """c4 = mean over classes of topk_mean over layers of Sigma_l(C_i) / Sigma_l(D).

    Per layer: drop dead neurons (a layer left empty is dropped), standardize each neuron, subtract its
    numpy percentile p = max(0, min(75, round(100 - 1000 / C))), relu; Sigma = std of the pairwise
    cosine distances.
    """
    pre = _array(pre, np.float64)
    layer_of = _array(layer_of, np.int64)
    y = _array(y, np.int64)
    classes = np.unique(y)
    ratios = []  # one [classes] row per kept layer
    for layer in np.unique(layer_of):
        act = pre[:, layer_of == layer]
        act = act[:, ~np.all(act < 0, axis=0)]
        if act.shape[1] == 0:
            continue
        std = _std(act)
        act = np.where(std == 0, 0.0, (act - act.mean(axis=0)) / np.where(std == 0, 1.0, std))
        p = max(0, min(75, round(100 - 1000 / act.shape[1])))
        act = np.maximum(act - np.percentile(act, p, axis=0), 0.0)
        sigma_all = _pairwise_std(act)
        ratios.append(
            [_ratio(np.float64(_pairwise_std(act[y == c])), np.float64(sigma_all)) for c in classes]
        )
    per_layer = np.array(ratios, dtype=np.float64)  # [layers, classes]
    return float(np.mean([_topk_mean(per_layer[:, i], k) for i in range(classes.shape[0])]))
