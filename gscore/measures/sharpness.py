"""Magnitude-aware sharpness measures 1/sigma', 1/alpha', 1/sigma'', 1/alpha'' (Jiang et al. 2020).

Conventions (docs/measures.md, "Sharpness", which wins over any other wording):

- A perturbed tensor w moves on the scale ``s * (|w| + eps)`` elementwise, ``eps = MAGNITUDE_EPS = 1e-3``:
  Gaussian noise with that standard deviation (random, s = sigma) or a box ``|u| <= alpha (|w| + eps)``
  (worst case, s = alpha).
- "error" is the 0-1 training error on the sample (x, y) the caller passes (the pipeline passes a seeded,
  class-balanced sample of the training split, ``samples`` in the measure registry). A row of logits with a
  non-finite entry counts as an error. The target is ``threshold = base error + target_drop``.
- Bisection on the scale: bounds [0, upper]; while error(upper) < threshold the bracket moves up
  ([upper, 2 upper], at most ``MAX_WIDENINGS`` times); then at most ``steps`` midpoints, stopping at the
  first one whose error is within ``tolerance`` of the threshold. Without such a midpoint the scale is the
  centre of the final bracket. ``steps`` in the result counts midpoints evaluated (the upper-bound checks
  are in ``diagnostics["evaluations"]``).
- Random: error(sigma) is the mean over ``draws`` Monte-Carlo draws. The draws are common random numbers:
  every bisection step reuses the same standard-normal draws (the generator is re-seeded with ``seed`` on
  ``device``), so error(sigma) is a deterministic, almost monotone function of sigma. The draws stop early
  once the errors counted so far already put the mean above ``threshold + tolerance`` (the bisection only
  needs "too high" there; the scale and the reported errors are unchanged). On CUDA the draws
  are evaluated ``copies_per_pass`` at a time by ``torch.func.vmap`` over stacked perturbed parameters
  (on CPU one at a time, which is faster there; both give identical counts).
- Worst case: projected sign-gradient ascent on the mean training cross-entropy over u, starting at u = 0:
  ``ascent_steps`` steps of ``u <- clip(u + ascent_lr * alpha (|w| + eps) * sign(grad), box)``, i.e.
  ``ascent_lr`` is the step as a fraction of the box half-width (steepest ascent for the box, invariant to
  the loss scale and to rescaling the weights). The error at alpha is the largest error of the points
  visited; the ascent stops early only once that error is above ``threshold + tolerance`` (the bisection
  then moves down whatever later steps find). It is deterministic: ``seed`` is recorded but unused.
- all weights (1/sigma', 1/alpha'): every parameter is perturbed; the model runs in eval mode (normalization
  layers use their running statistics). kernels only (1/sigma'', 1/alpha''): only the weights of
  convolution and linear layers are perturbed, and normalization layers run in batch-statistics mode:
  statistics of each evaluated batch, running statistics neither used nor updated. The sample is evaluated
  in a class-interleaved order (deterministic, whatever the caller's order) split into ``ceil(N /
  batch_size)`` batches of near-equal size, so every batch's statistics see all classes in proportion
  (a batch of one sample through batch norm is a ``MeasureError``).
  Dropout and the like are always in eval mode.
- The model is never mutated: the functions work on a private deep copy (moved to ``device``) and pass
  parameters through ``torch.func.functional_call``; the caller's parameters, buffers and train/eval flags
  are untouched, also when an exception (e.g. ``JobCancelled``) escapes.
- ``value = 1 / scale``. The scale is in (0, upper * 2**MAX_WIDENINGS], so the value is finite, positive and
  never NaN; when even the widest bound does not reach the threshold, ``diagnostics["converged"]`` is False
  and the scale is that bound. A base accuracy below ``target_drop`` (the drop is unreachable) is a
  ``MeasureError``. Higher value = sharper = predicts worse generalization (orientation -1).
- Determinism: the same model, data, parameters, seed and device give the same numbers. On CUDA, cuDNN
  algorithm choice can change low-order bits between runs unless the caller makes cuDNN deterministic.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from gscore.devices import resolve_device
from gscore.errors import JobCancelled, MeasureError
from gscore.measures.table import MEASURES
from gscore.measures.types import MeasureOutcome, MeasureUndefined

if TYPE_CHECKING:
    from gscore.measures.context import MeasureContext

__all__ = [
    "MAGNITUDE_EPS",
    "MAX_WIDENINGS",
    "Bisection",
    "SharpnessResult",
    "perturbed_parameter_names",
    "random_sharpness",
    "random_sharpness_kernels",
    "worst_sharpness",
    "worst_sharpness_kernels",
]

MAGNITUDE_EPS = 1e-3
MAX_WIDENINGS = 10  # the upper bound may double this many times (x1024)
# defaults live in the measure table (one place for the CLI, the service and these functions)
DEFAULT_RANDOM_UPPER: float = MEASURES["random_sharpness"].parameters["upper"]
DEFAULT_WORST_UPPER: float = MEASURES["worst_sharpness"].parameters["upper"]
DEFAULT_ASCENT_STEPS: int = MEASURES["worst_sharpness"].parameters["ascent_steps"]
DEFAULT_ASCENT_LR: float = MEASURES["worst_sharpness"].parameters["ascent_lr"]

ProgressCallback = Callable[[int, int], None]  # (bisection steps done, total)
CancelCheck = Callable[[], bool]


@dataclass
class SharpnessResult:
    """One sharpness measure. ``value = 1 / scale`` (finite, > 0); ``parameters`` go to the result's meta."""

    value: float  # 1/sigma' or 1/alpha'
    scale: float  # sigma' or alpha'
    base_accuracy: float  # unperturbed training accuracy on the sample (in the measure's BN mode)
    steps: int  # bisection midpoints evaluated
    parameters: dict[str, Any]  # every parameter used
    # converged, final bracket, error at the returned scale (when evaluated), evaluations, widenings
    diagnostics: dict[str, Any] = field(default_factory=dict)


def perturbed_parameter_names(model: nn.Module, kernels_only: bool) -> list[str]:
    """Names (as in ``named_parameters()``) of the tensors a measure perturbs.

    Parameters
    ----------
    model : nn.Module
    kernels_only : bool
        False: all parameters; True: only the ``weight`` of convolution (``_ConvNd``) and ``nn.Linear``.

    Returns
    -------
    list of str
        Parameter names in ``named_parameters()`` order.
    """
    if not kernels_only:
        return [name for name, _ in model.named_parameters()]
    kernel_ids = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
        and isinstance(module.weight, nn.Parameter)
    }
    return [name for name, p in model.named_parameters() if id(p) in kernel_ids]


def _class_interleaved_order(labels: Tensor) -> Tensor:
    """A deterministic order that spreads every class evenly (sort by rank-within-class / class size,
    stable), so that each evaluated batch, and so its batch statistics, sees every class in proportion."""
    labels = labels.detach().reshape(-1).cpu()
    position = torch.empty(labels.numel(), dtype=torch.float64)
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).reshape(-1)
        position[members] = (torch.arange(members.numel(), dtype=torch.float64) + 0.5) / members.numel()
    return torch.sort(position, stable=True).indices


def _wrong(logits: Tensor, labels: Tensor) -> Tensor:
    """Boolean [..., B]: misclassified, or a non-finite logit."""
    return (logits.argmax(-1) != labels) | ~torch.isfinite(logits).all(-1)


class _Evaluator:
    """A private copy of the model on ``device`` plus the sample; counts errors of perturbed parameters.

    Perturbations are dicts name -> tensor over ``names`` only; the other parameters and all buffers are
    the copy's own. Counts are exact integers, so batched and one-at-a-time evaluation compare exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        kernels_only: bool,
        batch_size: int,
        device: torch.device,
    ) -> None:
        module = copy.deepcopy(model).to(device)
        module.eval()
        module.requires_grad_(False)
        if kernels_only:  # batch-statistics mode: batch stats, running stats neither used nor updated
            for sub in module.modules():
                if isinstance(sub, nn.modules.batchnorm._NormBase):
                    sub.train()
                    sub.track_running_stats = False
        self.module = module
        self.device = device
        self.names = perturbed_parameter_names(module, kernels_only)
        if not self.names:
            raise MeasureError(
                "the model has no parameters to perturb"
                + (" (no convolution or linear weights)" if kernels_only else "")
            )
        self.params: dict[str, Tensor] = {n: p.detach() for n, p in module.named_parameters()}
        self.buffers: dict[str, Tensor] = {n: b.detach() for n, b in module.named_buffers()}
        order = _class_interleaved_order(y)
        self.x = x[order].to(device)
        self.y = y[order].to(device)
        self.samples = int(self.y.numel())
        self.batch_size = batch_size
        parts = torch.arange(self.samples).tensor_split(-(-self.samples // batch_size))
        self._batch_slices = [(int(part[0]), int(part[-1]) + 1) for part in parts]
        smallest = min(stop - start for start, stop in self._batch_slices)
        if (
            kernels_only
            and smallest < 2
            and any(isinstance(sub, nn.modules.batchnorm._BatchNorm) for sub in module.modules())
        ):
            raise MeasureError(
                f"batch-statistics mode needs at least 2 samples per evaluated batch, got {smallest} "
                f"({self.samples} samples, batch_size {batch_size}): use more samples or a larger batch_size"
            )

    def _batches(self) -> list[tuple[Tensor, Tensor]]:
        return [(self.x[start:stop], self.y[start:stop]) for start, stop in self._batch_slices]

    def _forward(self, perturbed: dict[str, Tensor], xb: Tensor) -> Tensor:
        return functional_call(self.module, ({**self.params, **perturbed}, self.buffers), (xb,))

    @torch.no_grad()
    def wrong_counts(self, perturbed: dict[str, Tensor]) -> Tensor:
        """int64 [K]: errors of K copies at once; ``perturbed[name]`` has shape [K, *param.shape]."""
        forward = vmap(self._forward, in_dims=(0, None))
        counts = None
        for xb, yb in self._batches():
            batch_counts = _wrong(forward(perturbed, xb), yb).sum(-1)
            counts = batch_counts if counts is None else counts + batch_counts
        assert counts is not None
        return counts

    @torch.no_grad()
    def wrong_counts_loop(self, perturbed: dict[str, Tensor]) -> Tensor:
        """As ``wrong_counts``, one copy at a time (reference and benchmark baseline)."""
        copies = next(iter(perturbed.values())).shape[0]
        return torch.stack([self.wrong_count({n: t[k] for n, t in perturbed.items()}) for k in range(copies)])

    @torch.no_grad()
    def wrong_count(self, perturbed: dict[str, Tensor]) -> Tensor:
        """int64 scalar: errors of one copy (``{}`` = the unperturbed model)."""
        return sum(
            (_wrong(self._forward(perturbed, xb), yb).sum() for xb, yb in self._batches()),
            torch.zeros((), dtype=torch.int64, device=self.device),
        )

    def wrong_count_and_gradient(self, delta: dict[str, Tensor]) -> tuple[int, dict[str, Tensor]]:
        """Errors of w + delta and the gradient of the mean cross-entropy with respect to delta."""
        wrong = 0
        grads = {n: torch.zeros_like(t) for n, t in delta.items()}
        leaves = {n: t.detach().requires_grad_(True) for n, t in delta.items()}
        for xb, yb in self._batches():
            with torch.enable_grad():
                logits = self._forward({n: self.params[n] + leaves[n] for n in leaves}, xb)
                loss = F.cross_entropy(logits, yb, reduction="sum") / self.samples
                batch_grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            for n, g in zip(leaves, batch_grads, strict=True):
                if g is not None:
                    grads[n] += g
            wrong += int(_wrong(logits.detach(), yb).sum())
        return wrong, grads


_NON_NEGATIVE = frozenset({"tolerance", "seed"})  # every other number must be > 0
_INTEGERS = frozenset({"draws", "steps", "seed", "batch_size", "copies_per_pass", "ascent_steps"})


def _check_inputs(x: Tensor, y: Tensor, **numbers: float) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise MeasureError("x and y must be tensors")
    if y.ndim != 1 or x.shape[0] != y.shape[0] or y.numel() == 0:
        raise MeasureError(f"need x [N, ...] and y [N] with N > 0, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.dtype != torch.int64:
        raise MeasureError(f"y must be int64 class labels, got {y.dtype}")
    for name, value in numbers.items():
        if name in _INTEGERS and (isinstance(value, bool) or not isinstance(value, int)):
            raise MeasureError(f"sharpness parameter {name} must be an integer, got {value!r}")
        bound = ">= 0" if name in _NON_NEGATIVE else "> 0"
        if not math.isfinite(value) or value < 0 or (bound == "> 0" and value == 0):
            raise MeasureError(f"sharpness parameter {name} must be {bound}, got {value}")
    if numbers.get("target_drop", 0.5) >= 1:
        raise MeasureError(f"target_drop must be < 1, got {numbers['target_drop']}")


def _canceller(should_cancel: CancelCheck | None) -> Callable[[], None]:
    def check() -> None:
        if should_cancel is not None and should_cancel():
            raise JobCancelled("sharpness measure cancelled")

    return check


def _bisect(
    error_at: Callable[[float], float],
    *,
    threshold: float,
    steps: int,
    tolerance: float,
    upper: float,
    check_cancel: Callable[[], None],
    progress: ProgressCallback | None,
) -> tuple[float, int, dict[str, Any]]:
    """(scale, midpoints evaluated, diagnostics) for the crossing of error_at(scale) with threshold."""
    lo, hi = 0.0, upper
    widenings = 0
    check_cancel()
    error = error_at(hi)
    evaluations = 1
    while error < threshold - tolerance and widenings < MAX_WIDENINGS:
        check_cancel()
        lo, hi = hi, 2 * hi
        widenings += 1
        error = error_at(hi)
        evaluations += 1
    info: dict[str, Any] = {"widenings": widenings, "upper_used": hi}
    if error - threshold <= tolerance:  # upper bound within tolerance, or too flat even at the widest bound
        if progress is not None:
            progress(steps, steps)
        converged = threshold - error <= tolerance
        return (
            hi,
            0,
            {**info, "converged": converged, "bracket": [lo, hi], "error": error, "evaluations": evaluations},
        )
    if progress is not None:
        progress(0, steps)
    for step in range(1, steps + 1):
        check_cancel()
        mid = (lo + hi) / 2
        error = error_at(mid)
        evaluations += 1
        if progress is not None:
            progress(step, steps)
        if abs(error - threshold) <= tolerance:
            if progress is not None and step < steps:
                progress(steps, steps)
            info.update(converged=True, bracket=[lo, hi], error=error, evaluations=evaluations)
            return mid, step, info
        if error > threshold:
            hi = mid
        else:
            lo = mid
    info.update(converged=False, bracket=[lo, hi], error=None, evaluations=evaluations)
    return (lo + hi) / 2, steps, info


def _unit_scales(ev: _Evaluator, magnitude_aware: bool) -> dict[str, Tensor]:
    """|w| + eps per perturbed tensor (or ones for plain, non-magnitude-aware noise)."""
    if magnitude_aware:
        return {n: ev.params[n].abs() + MAGNITUDE_EPS for n in ev.names}
    return {n: torch.ones_like(ev.params[n]) for n in ev.names}


def _standard_normal_draws(ev: _Evaluator, count: int, generator: torch.Generator) -> dict[str, Tensor]:
    """[count, *shape] standard normals per perturbed tensor, drawn draw by draw, tensor by tensor (so the
    numbers do not depend on how draws are grouped into passes)."""
    per_draw = [
        {
            n: torch.randn(
                ev.params[n].shape, generator=generator, device=ev.device, dtype=ev.params[n].dtype
            )
            for n in ev.names
        }
        for _ in range(count)
    ]
    return {n: torch.stack([d[n] for d in per_draw]) for n in ev.names}


def _random_error(
    ev: _Evaluator,
    sigma: float,
    *,
    unit: dict[str, Tensor],
    draws: int,
    copies_per_pass: int,
    seed: int,
    batched: bool,
    threshold: float | None = None,
    tolerance: float = 0.0,
) -> float:
    """Mean 0-1 error over ``draws`` noise draws w + sigma * unit * z (z re-drawn from ``seed``).

    ``threshold``: once the errors counted so far alone put the mean above ``threshold + tolerance``
    (the bisection's own test ``error - threshold > tolerance``), stop and return that partial mean, a
    lower bound of the full mean that the bisection treats exactly as the full one ("too high"); the
    noise of later draws does not depend on earlier passes.
    One copy at a time (``batched=False``) checks after every draw, batched after every pass.
    """
    generator = torch.Generator(device=ev.device).manual_seed(seed)
    total = draws * ev.samples
    chunk = copies_per_pass if batched else 1
    wrong = 0
    for start in range(0, draws, chunk):
        z = _standard_normal_draws(ev, min(chunk, draws - start), generator)
        perturbed = {n: ev.params[n] + sigma * unit[n] * z[n] for n in ev.names}
        counts = ev.wrong_counts(perturbed) if batched else ev.wrong_counts_loop(perturbed)
        wrong += int(counts.sum())
        if threshold is not None and wrong / total - threshold > tolerance:
            break
    return wrong / total


def _worst_error(
    ev: _Evaluator,
    alpha: float,
    *,
    unit: dict[str, Tensor],
    ascent_steps: int,
    ascent_lr: float,
    threshold: float,
    tolerance: float,
    check_cancel: Callable[[], None],
) -> float:
    """Largest 0-1 error seen by projected sign-gradient ascent inside |u| <= alpha * unit; the ascent
    stops early once that error is above ``threshold + tolerance`` (the bisection then moves down
    whatever later steps find; stopping at the threshold itself would accept an alpha whose full ascent
    lands far above the tolerance band)."""
    radius = {n: alpha * unit[n] for n in ev.names}
    delta = {n: torch.zeros_like(ev.params[n]) for n in ev.names}
    worst = 0
    for _ in range(ascent_steps):
        check_cancel()
        wrong, grads = ev.wrong_count_and_gradient(delta)
        worst = max(worst, wrong)
        if worst / ev.samples - threshold > tolerance:
            return worst / ev.samples
        for n in ev.names:
            moved = delta[n] + ascent_lr * radius[n] * torch.nan_to_num(grads[n]).sign()
            delta[n] = torch.minimum(torch.maximum(moved, -radius[n]), radius[n])
    check_cancel()
    worst = max(worst, int(ev.wrong_count({n: ev.params[n] + delta[n] for n in ev.names})))
    return worst / ev.samples


def _base(ev: _Evaluator, target_drop: float) -> tuple[float, float]:
    """(base error, threshold); MeasureError when the accuracy cannot drop by target_drop."""
    base_error = int(ev.wrong_count({})) / ev.samples
    if 1 - base_error < target_drop:
        raise MeasureUndefined(
            f"training accuracy on the sample is {1 - base_error:.3f}, below the target drop {target_drop}: "
            "sharpness is undefined for this model"
        )
    return base_error, base_error + target_drop


def _result(
    scale: float, base_error: float, steps: int, parameters: dict[str, Any], diagnostics: dict[str, Any]
) -> SharpnessResult:
    return SharpnessResult(
        value=1.0 / scale,
        scale=scale,
        base_accuracy=1.0 - base_error,
        steps=steps,
        parameters=parameters,
        diagnostics=diagnostics,
    )


@dataclass
class _Setup:
    """What an error function needs: the evaluator, |w| + eps scales, the threshold, the cancel check."""

    ev: _Evaluator
    unit: dict[str, Tensor]
    threshold: float
    check_cancel: Callable[[], None]


@dataclass(frozen=True)
class Bisection:
    """How a sharpness measure searches its scale; the settings all four measures share.

    ``steps``, ``target_drop``, ``tolerance``: bisection steps, the accuracy drop sought and its tolerance;
    ``upper``: the first upper bound of the scale (widened by doubling, at most ``MAX_WIDENINGS`` times);
    ``seed``: the noise seed (recorded, unused by the worst case); ``kernels_only``: perturb conv/linear
    kernels only, normalization in batch-statistics mode; ``magnitude_aware``: noise scaled by |w| + eps
    (the measures' definition; False only for comparisons); ``batch_size``, ``device``: evaluation;
    ``progress(steps_done, steps)`` and ``should_cancel()``: the caller's hooks.
    """

    steps: int
    target_drop: float
    tolerance: float
    upper: float
    seed: int
    batch_size: int
    device: torch.device
    kernels_only: bool = False
    magnitude_aware: bool = True
    progress: ProgressCallback | None = None
    should_cancel: CancelCheck | None = None

    def recorded(self) -> dict[str, Any]:
        """The settings as the result's ``parameters`` record them."""
        return {
            "kernels_only": self.kernels_only,
            "target_drop": self.target_drop,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": str(self.device),
            "steps": self.steps,
            "tolerance": self.tolerance,
            "upper": self.upper,
            "max_widenings": MAX_WIDENINGS,
        }


def _solve(
    measure: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    error_at: Callable[[_Setup, float], float],
    search: Bisection,
    parameters: dict[str, Any],
) -> SharpnessResult:
    """Set up the private model copy and the unperturbed error, then bisect ``error_at(setup, scale)`` for
    the crossing of the threshold; the result records every parameter used (``parameters`` adds the
    measure's own)."""
    check_cancel = _canceller(search.should_cancel)
    if search.progress is not None:  # the stage starts now: set-up and widening are part of it
        search.progress(0, search.steps)
    ev = _Evaluator(
        model, x, y, kernels_only=search.kernels_only, batch_size=search.batch_size, device=search.device
    )
    base_error, threshold = _base(ev, search.target_drop)
    setup = _Setup(ev, _unit_scales(ev, search.magnitude_aware), threshold, check_cancel)
    scale, taken, diagnostics = _bisect(
        lambda scale: error_at(setup, scale),
        threshold=threshold,
        steps=search.steps,
        tolerance=search.tolerance,
        upper=search.upper,
        check_cancel=check_cancel,
        progress=search.progress,
    )
    recorded = {
        "measure": measure,
        **search.recorded(),
        "samples": ev.samples,
        "magnitude_eps": MAGNITUDE_EPS,
        "perturbed_tensors": len(ev.names),
        **parameters,
    }
    return _result(scale, base_error, taken, recorded, diagnostics)


def _random_sharpness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    search: Bisection,
    *,
    draws: int,
    copies_per_pass: int | None,
    batched: bool | None,
) -> SharpnessResult:
    copies_per_pass = draws if copies_per_pass is None else copies_per_pass
    _check_inputs(
        x,
        y,
        draws=draws,
        steps=search.steps,
        target_drop=search.target_drop,
        tolerance=search.tolerance,
        upper=search.upper,
        seed=search.seed,
        batch_size=search.batch_size,
        copies_per_pass=copies_per_pass,
    )
    if batched is None:
        batched = search.device.type == "cuda"

    def error_at(setup: _Setup, sigma: float) -> float:
        return _random_error(
            setup.ev,
            sigma,
            unit=setup.unit,
            draws=draws,
            copies_per_pass=copies_per_pass,
            seed=search.seed,
            batched=batched,
            threshold=setup.threshold,
            tolerance=search.tolerance,
        )

    specific: dict[str, Any] = {"draws": draws, "copies_per_pass": copies_per_pass, "batched": batched}
    if not search.magnitude_aware:
        specific["magnitude_aware"] = False
    name = "random_sharpness_kernels" if search.kernels_only else "random_sharpness"
    return _solve(name, model, x, y, error_at, search, specific)


def random_sharpness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    kernels_only: bool = False,
    draws: int = 10,
    steps: int = 15,
    target_drop: float = 0.1,
    tolerance: float = 0.01,
    upper: float = DEFAULT_RANDOM_UPPER,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    copies_per_pass: int | None = None,
    batched: bool | None = None,
) -> SharpnessResult:
    """1/sigma' (1/sigma'' with ``kernels_only``): inverse of the largest magnitude-aware Gaussian noise
    scale whose mean training error over ``draws`` draws exceeds the unperturbed error by ``target_drop``.

    ``batched=True``: ``copies_per_pass`` noisy copies (default: all ``draws``) run at once through
    ``vmap`` (activation memory about ``copies_per_pass * batch_size`` images); ``False``: one copy at a
    time. Both use the same noise and give the same result, exactly. ``None`` (default) picks batched on
    CUDA and one-by-one on CPU, where vmap's grouped convolutions measured 2.5-6x slower than the loop
    (benchmarks/bench_sharpness.py). Raises ``JobCancelled`` between evaluations when ``should_cancel()``
    is true, ``MeasureError`` for bad inputs, ``MeasureUndefined`` for a model whose accuracy is below
    ``target_drop``.

    Parameters
    ----------
    model : nn.Module
        The classifier; never modified (a private copy is perturbed).
    x : Tensor [N, C, H, W]
        The training sample, float32, already normalized as the model expects (or with the normalization
        inside ``model``).
    y : Tensor [N]
        Integer labels.
    draws, steps, target_drop, tolerance, upper, seed
        Noise draws per scale, bisection steps, accuracy drop sought, its tolerance, the first upper
        bound of sigma (widened by doubling, at most ``MAX_WIDENINGS`` times), the noise seed.
    batch_size, device, progress, should_cancel, copies_per_pass, batched
        Evaluation batch, device, ``progress(steps_done, steps)``, cancellation check, vmap batching.

    Returns
    -------
    SharpnessResult
        ``value`` = 1 / sigma' (lower predicts better generalization), ``scale`` = sigma', the unperturbed
        accuracy, steps taken, every parameter and the bisection's diagnostics.
    """
    search = Bisection(
        steps=steps,
        target_drop=target_drop,
        tolerance=tolerance,
        upper=upper,
        seed=seed,
        batch_size=batch_size,
        device=resolve_device(device),
        kernels_only=kernels_only,
        progress=progress,
        should_cancel=should_cancel,
    )
    return _random_sharpness(
        model, x, y, search, draws=draws, copies_per_pass=copies_per_pass, batched=batched
    )


def worst_sharpness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    kernels_only: bool = False,
    steps: int = 15,
    target_drop: float = 0.1,
    tolerance: float = 0.01,
    upper: float = DEFAULT_WORST_UPPER,
    ascent_steps: int = DEFAULT_ASCENT_STEPS,
    ascent_lr: float = DEFAULT_ASCENT_LR,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> SharpnessResult:
    """1/alpha' (1/alpha'' with ``kernels_only``): inverse of the largest box radius alpha such that
    projected gradient ascent finds u, ``|u| <= alpha (|w| + eps)``, whose training error exceeds the
    unperturbed one by ``target_drop``. Each ascent step is a full pass (forward and backward) over the
    sample; ``ascent_lr`` is the step as a fraction of the box half-width. ``seed`` is recorded, unused (the
    ascent is deterministic). Cancellation is checked between ascent steps.

    Parameters
    ----------
    model : nn.Module
        The classifier; never modified (a private copy is perturbed).
    x : Tensor [N, C, H, W]
        The training sample, float32, as the model expects it.
    y : Tensor [N]
        Integer labels.
    steps, target_drop, tolerance, upper, ascent_steps, ascent_lr, seed
        Bisection steps, accuracy drop sought, its tolerance, the first upper bound of alpha, projected
        sign-gradient ascent steps per evaluation and their size, the recorded seed.
    batch_size, device, progress, should_cancel
        Evaluation batch, device, ``progress(steps_done, steps)``, cancellation check.

    Returns
    -------
    SharpnessResult
        ``value`` = 1 / alpha' (lower predicts better generalization), ``scale`` = alpha', diagnostics.
    """
    _check_inputs(
        x,
        y,
        steps=steps,
        target_drop=target_drop,
        tolerance=tolerance,
        upper=upper,
        ascent_steps=ascent_steps,
        ascent_lr=ascent_lr,
        seed=seed,
        batch_size=batch_size,
    )
    search = Bisection(
        steps=steps,
        target_drop=target_drop,
        tolerance=tolerance,
        upper=upper,
        seed=seed,
        batch_size=batch_size,
        device=resolve_device(device),
        kernels_only=kernels_only,
        progress=progress,
        should_cancel=should_cancel,
    )

    def error_at(setup: _Setup, alpha: float) -> float:
        return _worst_error(
            setup.ev,
            alpha,
            unit=setup.unit,
            ascent_steps=ascent_steps,
            ascent_lr=ascent_lr,
            threshold=setup.threshold,
            tolerance=tolerance,
            check_cancel=setup.check_cancel,
        )

    name = "worst_sharpness_kernels" if kernels_only else "worst_sharpness"
    return _solve(name, model, x, y, error_at, search, {"ascent_steps": ascent_steps, "ascent_lr": ascent_lr})


def random_sharpness_kernels(model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> SharpnessResult:
    """1/sigma'': ``random_sharpness`` on conv/linear kernels only, normalization in batch-statistics mode."""
    return random_sharpness(model, x, y, **{**kw, "kernels_only": True})


def worst_sharpness_kernels(model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> SharpnessResult:
    """1/alpha'': ``worst_sharpness`` on conv/linear kernels only, normalization in batch-statistics mode."""
    return worst_sharpness(model, x, y, **{**kw, "kernels_only": True})


# ----------------------------------------------------------------------------------------------------
# Measure-table functions: ``compute(ctx, params) -> MeasureOutcome`` (gscore.measures.types)
# ----------------------------------------------------------------------------------------------------


def _sharpness_outcome(
    ctx: MeasureContext, params: dict[str, Any], measure: Callable[..., SharpnessResult]
) -> MeasureOutcome:
    """Run ``measure`` (one of the four functions above) on the run's seeded class-balanced sample of the
    whole TRAINING split (measures with the same ``samples`` and ``seed`` share it); details and warnings
    for meta. Progress is reported under the measure's name (the function's)."""
    options = dict(params)
    x, y = ctx.training_sample_of(int(options.pop("samples")), int(options.get("seed", 0)))
    name = measure.__name__
    result = measure(
        ctx.model,
        x,
        y,
        device=ctx.device,
        progress=lambda done, total: ctx.report(name, done, total),
        should_cancel=ctx.should_cancel,
        **options,
    )
    diagnostics = result.diagnostics
    warnings: list[str] = []
    widenings = int(diagnostics.get("widenings", 0))
    if widenings >= MAX_WIDENINGS and diagnostics.get("converged") is False:
        warnings.append(
            f"the accuracy never dropped by {params['target_drop']} up to scale {diagnostics.get('upper_used')}: "
            "the value is a bound (the model is flatter than this measure resolves)"
        )
    elif diagnostics.get("converged") is False:
        warnings.append(
            f"the bisection did not converge within {params['steps']} steps (final bracket "
            f"{diagnostics.get('bracket')}); the value is the bracket's midpoint"
        )
    if 0 < widenings < MAX_WIDENINGS:
        warnings.append(f"the search bound was widened {widenings} time(s) past `upper`")
    meta = {
        "scale": result.scale,
        "base_accuracy": result.base_accuracy,
        "steps": result.steps,
        "samples": len(y),
        "parameters": result.parameters,
        "diagnostics": diagnostics,  # converged, bracket, error at the scale, evaluations
    }
    return MeasureOutcome(float(result.value), meta=meta, warnings=warnings)


# The table's functions (``compute(ctx, params)``), one per measure: see the functions above for each.
random_sharpness_measure = partial(_sharpness_outcome, measure=random_sharpness)
worst_sharpness_measure = partial(_sharpness_outcome, measure=worst_sharpness)
random_sharpness_kernels_measure = partial(_sharpness_outcome, measure=random_sharpness_kernels)
worst_sharpness_kernels_measure = partial(_sharpness_outcome, measure=worst_sharpness_kernels)
