"""Output-margin and norm measures (Jiang et al. 2020, appendix C) and the distances to an initial checkpoint.

The math is plain functions on tensors (``output_margins``, ``margin_quantile``, ``spectral_norms``,
``path_norm_value``, ``cosine_distance``...); the ``*_measure`` functions read the run's
:class:`gscore.measures.context.MeasureContext` (the logits of the shared extraction pass, the model, the
initial model) and return a :class:`MeasureOutcome`. Definitions: docs/measures.md, "Peer measures".
Weights are those of the BatchNorm-folded network (:mod:`gscore.measures.batchnorm_folding`), in float64.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from gscore.measures.batchnorm_folding import LINEAR_TYPES, FoldedNetwork, fold_batchnorms, weight_matrices
from gscore.measures.types import MeasureOutcome, MeasureUndefined
from gscore.models.normalization import Normalize

__all__ = [
    "INITIAL_CHECKPOINT_HINT",
    "cosine_distance",
    "margin_quantile",
    "output_margins",
    "path_norm_value",
    "spectral_norms",
]

INITIAL_CHECKPOINT_HINT = (
    "it needs the initial checkpoint (the same architecture at its initialization): send it as the "
    "initial_checkpoint file part of POST /v1/jobs, --initial-checkpoint in gscore score / gscore submit, "
    "or initial= in gscore.score / Client.submit"
)


# -- plain functions ------------------------------------------------------------------------------------
def output_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N] float64: the logit of each sample's label minus its largest other logit (``logits`` [N, C])."""
    logits = logits.to(torch.float64)
    labels = labels.to(logits.device, torch.int64)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf)
    return true - others.amax(dim=1)


def margin_quantile(margins: torch.Tensor) -> float:
    """gamma: the k-th smallest margin, k = max(1, floor(N / 10)) (1-based)."""
    k = max(1, margins.numel() // 10)
    return float(margins.kthvalue(k).values)


def spectral_norms(matrices: list[torch.Tensor]) -> list[float]:
    """The largest singular value of each matrix (float64)."""
    return [float(torch.linalg.matrix_norm(w.to(torch.float64), ord=2)) for w in matrices]


def frobenius_norms(matrices: list[torch.Tensor]) -> list[float]:
    return [float(torch.linalg.matrix_norm(w.to(torch.float64), ord="fro")) for w in matrices]


def _without_input_normalization(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`Normalize` (the prepended input normalization) an identity."""
    stripped = copy.deepcopy(model)
    for name, module in list(stripped.named_modules()):
        if name and isinstance(module, Normalize):
            parent, _, attribute = name.rpartition(".")
            setattr(stripped.get_submodule(parent) if parent else stripped, attribute, nn.Identity())
    if isinstance(stripped, Normalize):
        return nn.Identity()
    return stripped


def path_norm_value(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> float:
    """P: the sum of the outputs of a copy of ``model`` with every parameter squared, in eval mode, on one
    all-ones input [1, *image_shape] (float64 where the model runs in it, else float32). The input
    normalization (:class:`Normalize`) is left out: the network starts at its first layer."""
    squared = _without_input_normalization(model).eval()
    with torch.no_grad():
        for parameter in squared.parameters():
            parameter.copy_(parameter * parameter)
    for dtype in (torch.float64, torch.float32):
        try:
            network = copy.deepcopy(squared).to(device=device, dtype=dtype)
            with torch.inference_mode():
                out = network(torch.ones((1, *image_shape), dtype=dtype, device=device))
            return float(out.to(torch.float64).sum())
        except RuntimeError:
            if dtype == torch.float32:
                raise
    raise AssertionError("unreachable")


def cosine_distance(w: torch.Tensor, w0: torch.Tensor) -> float:
    """``1 - <w, w0> / (||w|| ||w0||)`` of the flattened tensors, in float64 (NaN when one is all zeros)."""
    a, b = w.detach().flatten().to(torch.float64), w0.detach().flatten().to(torch.float64)
    denominator = float(a.norm() * b.norm())
    return 1.0 - float(a @ b) / denominator if denominator > 0 else math.nan


# -- the run's shared inputs ----------------------------------------------------------------------------
def _margins(ctx: Any) -> tuple[float, dict[str, Any]]:
    activations = ctx.activations()
    if activations.logits is None:
        raise MeasureUndefined("the model's output is not a [B, num_classes] tensor: the margin is undefined")
    margins = output_margins(activations.logits, ctx.probe.y)
    gamma = margin_quantile(margins)
    k = max(1, margins.numel() // 10)
    meta = {"gamma": gamma, "k": k, "samples": int(margins.numel()), "negative": int((margins < 0).sum())}
    return gamma, meta


def _positive_margin(ctx: Any, name: str) -> tuple[float, dict[str, Any]]:
    gamma, meta = _margins(ctx)
    if not gamma > 0:
        raise MeasureUndefined(
            f"{name} is undefined: the margin gamma = {gamma:.6g} is not positive (at least a tenth of the "
            "probe samples are misclassified or on the decision boundary)"
        )
    return gamma, meta


def _example_batch(ctx: Any) -> torch.Tensor:
    return next(ctx.probe.batches(2)).to(ctx.device)


def _folded(ctx: Any, which: str = "model") -> FoldedNetwork:
    """The folded network of ``ctx.model`` (or ``ctx.initial_model``), cached for the run."""
    key = ("folded", which)
    if key not in ctx.cache:
        model = ctx.model if which == "model" else ctx.initial_model
        ctx.cache[key] = fold_batchnorms(model, _example_batch(ctx))
    return ctx.cache[key]


def _folded_matrices(ctx: Any, which: str = "model") -> tuple[list[tuple[str, torch.Tensor]], dict[str, Any]]:
    folded = _folded(ctx, which)
    if folded.model is None:
        raise MeasureUndefined(f"{folded.reason}; the norm measures need the folded weights")
    matrices = weight_matrices(folded.model)
    if not matrices:
        raise MeasureUndefined(
            "the model has no convolution or linear layer: the norm measures are undefined"
        )
    return matrices, folded.meta() | {"weight_matrices": len(matrices)}


def _norms(ctx: Any, spectral: bool = True) -> tuple[list[float] | None, list[float], dict[str, Any]]:
    """(spectral norms (None unless ``spectral``), Frobenius norms, meta) of the folded weights; cached."""
    if "frobenius_norms" not in ctx.cache:
        matrices, meta = _folded_matrices(ctx)
        ctx.cache["frobenius_norms"] = (frobenius_norms([w for _name, w in matrices]), meta)
    fro, meta = ctx.cache["frobenius_norms"]
    if spectral and "spectral_norms" not in ctx.cache:
        matrices, _ = _folded_matrices(ctx)
        ctx.cache["spectral_norms"] = spectral_norms([w for _name, w in matrices])
    return ctx.cache.get("spectral_norms") if spectral else None, fro, meta


def _initial_model(ctx: Any, name: str) -> nn.Module:
    initial = getattr(ctx, "initial_model", None)
    if initial is None:
        raise MeasureUndefined(
            f"{name} is undefined without an initial checkpoint: {INITIAL_CHECKPOINT_HINT}"
        )
    return initial


# -- measures -------------------------------------------------------------------------------------------
def margin_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``margin`` (+1): gamma, the k-th smallest output margin on the probe set (may be negative)."""
    gamma, meta = _margins(ctx)
    warnings = [] if gamma > 0 else [f"gamma = {gamma:.6g} <= 0: the over-margin measures are undefined"]
    return MeasureOutcome(gamma, meta, warnings)


def spectral_product_over_margin_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``spectral_product_over_margin`` (-1): sum_l log ||W_l||_2^2 - 2 log gamma."""
    spectral, _fro, meta = _norms(ctx)
    assert spectral is not None
    gamma, _ = _positive_margin(ctx, "spectral_product_over_margin")
    value = sum(2 * math.log(s) for s in spectral) - 2 * math.log(gamma)
    return MeasureOutcome(value, meta | {"gamma": gamma, "spectral_norms": spectral})


def frobenius_product_over_margin_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``frobenius_product_over_margin`` (-1): sum_l log ||W_l||_F^2 - 2 log gamma."""
    _spectral, fro, meta = _norms(ctx, spectral=False)
    gamma, _ = _positive_margin(ctx, "frobenius_product_over_margin")
    value = sum(2 * math.log(f) for f in fro) - 2 * math.log(gamma)
    return MeasureOutcome(value, meta | {"gamma": gamma})


def _path_norm_squared(ctx: Any) -> tuple[float, dict[str, Any]]:
    if "path_norm" not in ctx.cache:
        folded = _folded(ctx)
        if folded.model is None:
            raise MeasureUndefined(f"{folded.reason}; the path norm needs the folded network")
        shape = tuple(ctx.probe.x.shape[1:])
        ctx.cache["path_norm"] = (path_norm_value(folded.model, shape, ctx.device), folded.meta())
    return ctx.cache["path_norm"]


def path_norm_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``path_norm`` (-1): sqrt(P), P the squared network's summed output on an all-ones input."""
    squared_sum, meta = _path_norm_squared(ctx)
    if squared_sum < 0:  # only a network with non-ReLU activations can give this
        raise MeasureUndefined(f"the squared network's output sums to {squared_sum:.6g} < 0: no path norm")
    return MeasureOutcome(math.sqrt(squared_sum), meta | {"P": squared_sum})


def path_norm_over_margin_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``path_norm_over_margin`` (-1): P / gamma^2."""
    squared_sum, meta = _path_norm_squared(ctx)
    gamma, _ = _positive_margin(ctx, "path_norm_over_margin")
    return MeasureOutcome(squared_sum / gamma**2, meta | {"P": squared_sum, "gamma": gamma})


def param_norm_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``param_norm`` (-1): sum_l ||W_l||_F^2."""
    _spectral, fro, meta = _norms(ctx, spectral=False)
    return MeasureOutcome(sum(f * f for f in fro), meta)


def fro_over_spec_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``fro_over_spec`` (-1): sum_l ||W_l||_F^2 / ||W_l||_2^2."""
    spectral, fro, meta = _norms(ctx)
    assert spectral is not None
    if any(s == 0 for s in spectral):
        raise MeasureUndefined("a weight matrix is all zeros: ||W||_F^2 / ||W||_2^2 is undefined")
    return MeasureOutcome(sum((f / s) ** 2 for f, s in zip(fro, spectral, strict=True)), meta)


def _matched(
    final: list[tuple[str, torch.Tensor]], initial: list[tuple[str, torch.Tensor]]
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Pairs of same-named, same-shaped weights; else MeasureUndefined saying what differs."""
    initial_by_name = dict(initial)
    if [name for name, _ in final] != [name for name, _ in initial]:
        raise MeasureUndefined(
            "the initial checkpoint's model has other layers than the scored model; send the same "
            "architecture at its initialization"
        )
    pairs = []
    for name, w in final:
        w0 = initial_by_name[name]
        if w.shape != w0.shape:
            raise MeasureUndefined(
                f"layer {name!r} has shape {tuple(w.shape)} but {tuple(w0.shape)} in the initial checkpoint"
            )
        pairs.append((name, w, w0))
    return pairs


def distance_to_init_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``distance_to_init`` (-1): sum_l ||W_l - W0_l||_F^2, both networks folded with their own statistics."""
    _initial_model(ctx, "distance_to_init")
    final, meta = _folded_matrices(ctx)
    initial, _ = _folded_matrices(ctx, "initial")
    pairs = _matched(final, initial)
    value = sum(float((w - w0).pow(2).sum()) for _name, w, w0 in pairs)
    return MeasureOutcome(value, meta)


def raw_kernels(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``[(name, weight)]`` of every conv and linear module, unfolded, in module order."""
    return [(name, m.weight.detach()) for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)]


def layer_rotation_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``layer_rotation`` (+1): the mean over conv/linear layers of the cosine distance between the final and
    the initial kernel (raw, flattened)."""
    initial = _initial_model(ctx, "layer_rotation")
    final_kernels = raw_kernels(ctx.model)
    if not final_kernels:
        raise MeasureUndefined("the model has no convolution or linear layer: layer rotation is undefined")
    pairs = _matched(final_kernels, raw_kernels(initial))
    distances = {name: cosine_distance(w, w0) for name, w, w0 in pairs}
    defined = {name: d for name, d in distances.items() if not math.isnan(d)}
    warnings = [
        f"layer {name!r} has an all-zero kernel: skipped" for name in distances if name not in defined
    ]
    if not defined:
        raise MeasureUndefined("every kernel is all zeros in the model or the initial checkpoint")
    value = sum(defined.values()) / len(defined)
    return MeasureOutcome(value, {"layers": len(defined), "rotation": defined}, warnings)
