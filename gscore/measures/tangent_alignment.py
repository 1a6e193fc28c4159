"""Tangent-feature alignment (Baratin et al., AISTATS 2021): the tangent kernel of a classifier,
its centred alignment with the labels, per module, and its spectrum.

Definitions (docs/measures.md, "Tangent-feature alignment", which follows ../shared/MEASURES.md):

- Tangent features ``phi_c(x) = d f_c(x) / d theta``: f = the logits (no softmax), theta = every trainable
  parameter (``requires_grad``), the model in eval mode (batch norm uses its running statistics, dropout
  is off). A module called several times (parameter sharing) contributes the sum over its calls, as the
  derivative does; tied parameters count once.
- Kernel ``K[c*N + i, c'*N + j] = <phi_c(x_i), phi_c'(x_j)>``: one NC x NC float64 matrix, index
  ``c * N + i`` (output-major), with its cross-output blocks. Centred: ``K_c = (I_C (x) H) K (I_C (x) H)``,
  ``H = I_N - 11^T / N``.
- Target: ``Y`` = one-hot labels over the kept outputs (also classes absent from the sample) minus their
  mean over the N samples, ``y[c*N + i] = Y[i, c]``.
- Alignment ``A = y^T K_c y / (||K_c||_F ||y||^2)``; per module the same with theta restricted to the
  module's own parameters (modules with trainable parameters, in the order of their first call).
- Spectrum of ``K_c`` (eigenvalues clamped at 0): effective rank ``exp(-sum p_k log p_k)``,
  ``p_k = s_k / sum s``; trace ratios ``T_k`` = sum of the k largest / sum, k = 40, 80, 160 (1 when
  k >= NC); and ``Tr K / N`` of the uncentred kernel over the kept outputs.
- More than ``max_outputs`` outputs (default 20): **choice** a seeded subset of ``max_outputs`` classes
  (``numpy.random.default_rng(seed).choice(C, max_outputs, replace=False)``, sorted); all N samples are
  kept, and ``Y`` has the columns of those classes. The result names the classes used.

Cost and memory (``memory_budget_mb``, default 1024): the NC x P Jacobian is never formed when it
exceeds the budget. Modules with parameters are packed, in call order, into groups whose float32 Jacobian
over all NC rows takes at most half the budget; a group's Jacobian is computed in tiles of (samples x
outputs) by ``torch.func.vmap`` over samples of ``jacrev`` over the outputs (reverse mode; the backward
pass stops at the group's first layer), each tile's rows and the activations of its vmapped pass in a
quarter of the budget (activations: the leaf-module outputs of one sample from the group's first call
on, measured in one forward pass, times ``_ACTIVATION_FACTOR``). ``K`` is
the sum over parameter tensors of ``J_t J_t^T`` in float64, the columns converted in chunks of at most an
eighth of the budget. A module whose Jacobian alone exceeds half the budget is its own group, computed tile
pair by tile pair with two tiles held at a time: tiles are recomputed, time traded for memory (cost
~ NC^2 P / budget rows instead of NC). Outside the budget: the model, the inputs and up to four NC x NC
float64 matrices (the kernel, one module's kernel, two temporaries). Everything runs on the model's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from gscore.errors import MeasureError
from gscore.measures.types import MeasureOutcome, MeasureUndefined

__all__ = [
    "DEFAULT_MAX_OUTPUTS",
    "DEFAULT_MEMORY_BUDGET_MB",
    "DEFAULT_SAMPLES",
    "TRACE_RATIO_RANKS",
    "TangentAlignment",
    "centre_kernel",
    "centred_targets",
    "choose_outputs",
    "kernel_target_alignment",
    "module_tangent_kernels",
    "modules_in_call_order",
    "ntk_alignment_measure",
    "ntk_effective_rank_measure",
    "ntk_layer_alignment_measure",
    "spectrum_summary",
    "tangent_alignment",
    "tangent_kernel",
]

DEFAULT_SAMPLES = 100
DEFAULT_MAX_OUTPUTS = 20
DEFAULT_MEMORY_BUDGET_MB = 1024
TRACE_RATIO_RANKS = (40, 80, 160)
# backward intermediates of one vmapped Jacobian row, as a multiple of one sample's forward activations
_ACTIVATION_FACTOR = 3

ModuleKernelCallback = Callable[[str, Tensor], None]
ProgressCallback = Callable[[int, int], None]


# ----------------------------------------------------------------------------------------------------
# Kernel construction
# ----------------------------------------------------------------------------------------------------
@dataclass
class _Module:
    name: str
    parameters: list[str]
    size: int  # trainable parameters of the module
    downstream_bytes: int  # leaf-module outputs of one sample from the module's first call on


@dataclass
class _Group:
    modules: list[_Module] = field(default_factory=list)

    @property
    def parameters(self) -> list[str]:
        return [name for module in self.modules for name in module.parameters]

    @property
    def size(self) -> int:
        return sum(module.size for module in self.modules)

    @property
    def downstream_bytes(self) -> int:
        """Activations the group's backward pass goes through (one sample)."""
        return max(module.downstream_bytes for module in self.modules)


def _trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _probe_forward(model: nn.Module, example: Tensor) -> tuple[list[_Module], int, Tensor]:
    """(modules with trainable parameters in first-call order, bytes of one sample's leaf-module outputs,
    the logits of ``example``)."""
    trainable = _trainable_parameters(model)
    owner: dict[str, str] = {}
    for module_name, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{local}" if module_name else local
            if full in trainable and p is trainable[full]:
                owner[full] = module_name
    by_module: dict[str, list[str]] = {}
    for full, module_name in owner.items():
        by_module.setdefault(module_name, []).append(full)

    called: list[str] = []
    activation_bytes = [0]
    bytes_before: dict[str, int] = {}
    hooks = []

    def record_call(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            if name in by_module and name not in called:
                called.append(name)
                bytes_before[name] = activation_bytes[0]

        return hook

    def record_output(_module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            activation_bytes[0] += output.numel() * output.element_size()

    try:
        for name, module in model.named_modules():
            hooks.append(module.register_forward_pre_hook(record_call(name)))
            if next(module.children(), None) is None:
                hooks.append(module.register_forward_hook(record_output))
        with torch.no_grad():
            logits = model(example)
    finally:
        for handle in hooks:
            handle.remove()
    # modules never called whose parameters the logits may still read (used functionally elsewhere)
    order = called + [name for name in by_module if name not in called]
    batch = max(1, example.shape[0])
    modules = [
        _Module(
            name or "(model)",
            by_module[name],
            sum(trainable[p].numel() for p in by_module[name]),
            (activation_bytes[0] - bytes_before.get(name, 0)) // batch,
        )
        for name in order
    ]
    return modules, activation_bytes[0] // batch, logits


def _pack_groups(modules: Sequence[_Module], rows: int, itemsize: int, budget_bytes: int) -> list[_Group]:
    """Modules in order, packed so that a group's Jacobian over ``rows`` rows takes at most budget / 2."""
    groups: list[_Group] = []
    current = _Group()
    for module in modules:
        if current.modules and (current.size + module.size) * rows * itemsize > budget_bytes // 2:
            groups.append(current)
            current = _Group()
        current.modules.append(module)
    if current.modules:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class _Tile:
    samples: slice
    outputs: slice
    rows: Tensor  # [samples * outputs] kernel indices c * N + i of the tile's rows (sample-major)


def _tiles(num_samples: int, num_outputs: int, rows_per_tile: int, device: torch.device) -> list[_Tile]:
    """(sample chunk x output chunk) tiles of at most ``rows_per_tile`` rows covering every (c, i)."""
    if rows_per_tile >= num_outputs:
        out_step, sample_step = num_outputs, max(1, rows_per_tile // num_outputs)
    else:
        out_step, sample_step = max(1, rows_per_tile), 1
    tiles = []
    for o0 in range(0, num_outputs, out_step):
        outputs = slice(o0, min(num_outputs, o0 + out_step))
        for s0 in range(0, num_samples, sample_step):
            samples = slice(s0, min(num_samples, s0 + sample_step))
            c = torch.arange(outputs.start, outputs.stop, device=device)
            i = torch.arange(samples.start, samples.stop, device=device)
            tiles.append(_Tile(samples, outputs, (c[None, :] * num_samples + i[:, None]).reshape(-1)))
    return tiles


class _GroupJacobian:
    """Jacobian tiles of the logits w.r.t. one group's parameters: ``tile(k)`` -> {name: [rows, P_t]}."""

    def __init__(
        self,
        model: nn.Module,
        base: dict[str, Tensor],
        names: list[str],
        inputs: Tensor,
        output_index: Tensor,
    ) -> None:
        self.inputs = inputs
        self.output_index = output_index
        self.group = {name: base[name] for name in names}
        rest = {name: t for name, t in base.items() if name not in self.group}

        def logits_of_one(group: dict[str, Tensor], x: Tensor, outputs: Tensor) -> Tensor:
            return functional_call(model, {**rest, **group}, (x.unsqueeze(0),))[0].index_select(0, outputs)

        self._per_sample = vmap(jacrev(logits_of_one), in_dims=(None, 0, None))

    def tile(self, tile: _Tile) -> dict[str, Tensor]:
        outputs = self.output_index[tile.outputs]
        jac = self._per_sample(self.group, self.inputs[tile.samples], outputs)  # {name: [b, co, *shape]}
        return {name: j.reshape(len(tile.rows), -1) for name, j in jac.items()}  # rows (i, c), a view


def _column_chunks(size: int, rows: int, chunk_bytes: int) -> list[slice]:
    """Column slices of a [rows, size] matrix whose float64 copy takes at most ``chunk_bytes``."""
    width = max(1, chunk_bytes // (8 * max(1, rows)))
    return [slice(start, min(size, start + width)) for start in range(0, size, width)]


def _block(
    left: dict[str, Tensor], right: dict[str, Tensor], names: list[str], dtype: torch.dtype, chunk_bytes: int
) -> Tensor:
    """sum_t left_t right_t^T in ``dtype``, the columns converted a chunk at a time."""
    rows_left, rows_right = left[names[0]].shape[0], right[names[0]].shape[0]
    block = torch.zeros(rows_left, rows_right, dtype=dtype, device=left[names[0]].device)
    for name in names:
        for columns in _column_chunks(left[name].shape[1], rows_left + rows_right, chunk_bytes):
            a = left[name][:, columns].to(dtype)
            b = a if right is left else right[name][:, columns].to(dtype)
            block.addmm_(a, b.T)
            del a, b
    return block


class _Progress:
    """Counts Jacobian tiles: ``check_cancel()`` before each, ``progress(done, total)`` after each."""

    def __init__(
        self, total: int, progress: ProgressCallback | None, check_cancel: Callable[[], None] | None
    ):
        self.total, self.done = total, 0
        self.progress, self.check_cancel = progress, check_cancel

    def before(self) -> None:
        if self.check_cancel is not None:
            self.check_cancel()

    def after(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


class _TileSource:
    """The tiles of one group: cached (group fits the budget) or recomputed on every request."""

    def __init__(self, jacobian: _GroupJacobian, tiles: list[_Tile], counter: _Progress) -> None:
        self.jacobian, self.tiles, self.counter = jacobian, tiles, counter
        self.store: dict[int, dict[str, Tensor]] = {}

    def cache_all(self) -> None:
        for k in range(len(self.tiles)):
            self.store[k] = self.get(k)

    def get(self, k: int) -> dict[str, Tensor]:
        if k in self.store:
            return self.store[k]
        self.counter.before()
        value = self.jacobian.tile(self.tiles[k])
        self.counter.after()
        return value


def _module_kernel(
    source: _TileSource, names: list[str], rows: int, dtype: torch.dtype, chunk_bytes: int
) -> Tensor:
    """[rows, rows] kernel of the parameter tensors ``names`` from the tiles of ``source``.

    Cached tiles: per tensor and column chunk, one product over all rows (in tile order, permuted to the
    kernel's order at the end). Recomputed tiles: tile pairs a <= b, two tiles held at a time.
    """
    tiles = source.tiles
    device = tiles[0].rows.device
    if source.store:
        order = torch.cat([tile.rows for tile in tiles])
        gram = torch.zeros(rows, rows, dtype=dtype, device=device)
        for name in names:
            size = source.store[0][name].shape[1]
            for columns in _column_chunks(size, rows, chunk_bytes):
                buffer = torch.empty(rows, columns.stop - columns.start, dtype=dtype, device=device)
                start = 0
                for k in range(len(tiles)):
                    piece = source.store[k][name][:, columns]
                    buffer[start : start + piece.shape[0]].copy_(piece)
                    start += piece.shape[0]
                gram.addmm_(buffer, buffer.T)
                del buffer
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(rows, device=device)
        return gram[inverse][:, inverse]
    kernel = torch.zeros(rows, rows, dtype=dtype, device=device)
    for a in range(len(tiles)):
        left = source.get(a)
        for b in range(a, len(tiles)):
            right = left if b == a else source.get(b)
            block = _block(left, right, names, dtype, chunk_bytes)
            kernel[tiles[a].rows[:, None], tiles[b].rows[None, :]] = block
            if b != a:
                kernel[tiles[b].rows[:, None], tiles[a].rows[None, :]] = block.T
            del right, block
        del left
    return kernel


def _plan(
    modules: Sequence[_Module],
    num_samples: int,
    num_outputs: int,
    itemsize: int,
    budget_bytes: int,
    device: torch.device,
) -> list[tuple[_Group, list[_Tile], bool]]:
    """(group, its tiles, whether its tiles are all held) for every group of modules (module docstring)."""
    rows = num_samples * num_outputs
    plans = []
    for group in _pack_groups(modules, rows, itemsize, budget_bytes):
        # a row of a tile: its Jacobian and the activations of its vmapped pass
        row_bytes = group.size * itemsize + _ACTIVATION_FACTOR * group.downstream_bytes
        rows_per_tile = max(1, (budget_bytes // 4) // max(1, row_bytes))
        tiles = _tiles(num_samples, num_outputs, rows_per_tile, device)
        plans.append((group, tiles, group.size * rows * itemsize <= budget_bytes // 2))
    return plans


def _sweep_kernels(
    model: nn.Module,
    inputs: Tensor,
    outputs: Sequence[int] | None,
    memory_budget_mb: float,
    on_module_kernel: ModuleKernelCallback | None,
    progress: ProgressCallback | None,
    check_cancel: Callable[[], None] | None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The full kernel [C'N, C'N]; ``on_module_kernel(name, kernel)`` gets each module's kernel in turn."""
    if memory_budget_mb <= 0 or not math.isfinite(memory_budget_mb):
        raise MeasureError(f"memory_budget_mb must be a positive number (got {memory_budget_mb!r})")
    trainable = _trainable_parameters(model)
    if not trainable:
        raise MeasureError("the model has no trainable parameters: its tangent kernel is empty")
    first = next(iter(trainable.values()))
    device, param_dtype = first.device, first.dtype
    if inputs.ndim < 2 or inputs.shape[0] < 1:
        raise MeasureError(f"inputs must be a batch [N, ...] with N >= 1, got shape {tuple(inputs.shape)}")
    inputs = inputs.to(device=device, dtype=param_dtype)
    num_samples = inputs.shape[0]
    budget_bytes = int(memory_budget_mb * 2**20)

    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        modules, _, logits = _probe_forward(model, inputs[:1])
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            raise MeasureError(
                "the model's output must be a tensor of logits [batch, classes], got "
                f"{type(logits).__name__}{' of shape ' + str(tuple(logits.shape)) if isinstance(logits, Tensor) else ''}"
            )
        num_logits = logits.shape[1]
        output_index = torch.arange(num_logits) if outputs is None else torch.as_tensor(list(outputs))
        if output_index.numel() < 1 or int(output_index.min()) < 0 or int(output_index.max()) >= num_logits:
            raise MeasureError(
                f"outputs must be indices in [0, {num_logits}) of the logits, got {list(outputs or [])}"
            )
        output_index = output_index.to(device=device, dtype=torch.int64)
        num_outputs = output_index.numel()
        rows = num_samples * num_outputs
        itemsize = first.element_size()

        base = {name: p.detach() for name, p in trainable.items()}
        plans = _plan(modules, num_samples, num_outputs, itemsize, budget_bytes, device)
        total = sum(len(t) if cached else len(t) * (len(t) + 1) // 2 for _, t, cached in plans)

        counter = _Progress(total, progress, check_cancel)
        kernel = torch.zeros(rows, rows, dtype=dtype, device=device)
        for group, tiles, cached in plans:
            source = _TileSource(
                _GroupJacobian(model, base, group.parameters, inputs, output_index), tiles, counter
            )
            if cached:
                source.cache_all()
            for module in group.modules:
                module_kernel = _module_kernel(source, module.parameters, rows, dtype, budget_bytes // 8)
                kernel += module_kernel
                if on_module_kernel is not None:
                    on_module_kernel(module.name, module_kernel)
                del module_kernel
        return kernel
    finally:
        for module, training in flags:
            module.training = training


def tangent_kernel(
    model: nn.Module,
    inputs: Tensor,
    *,
    outputs: Sequence[int] | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    progress: ProgressCallback | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> Tensor:
    """The (uncentred) tangent kernel of the logits w.r.t. every trainable parameter, in eval mode.

    Parameters
    ----------
    model
        Classifier returning logits [B, C]; its parameters, buffers and train/eval flags are unchanged.
    inputs
        [N, ...] inputs, moved to the model's device and parameter dtype.
    outputs
        Indices of the logits to keep (default all C, in order).
    memory_budget_mb
        Bound on the Jacobian tiles held at once (module docstring).
    progress, check_cancel
        ``progress(done, total)`` after each Jacobian tile; ``check_cancel()`` before each (it may raise).

    Returns
    -------
    Tensor
        [C' N, C' N] float64 on the model's device, ``K[c*N + i, c'*N + j] = <phi_c(x_i), phi_c'(x_j)>``,
        c, c' positions in ``outputs``.
    """
    return _sweep_kernels(model, inputs, outputs, memory_budget_mb, None, progress, check_cancel)


def module_tangent_kernels(
    model: nn.Module,
    inputs: Tensor,
    *,
    outputs: Sequence[int] | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
) -> dict[str, Tensor]:
    """Per-module tangent kernels (theta = the module's own trainable parameters), in first-call order.

    Returns
    -------
    dict[str, Tensor]
        module name ("(model)" for the root) -> [C' N, C' N] float64, same layout as :func:`tangent_kernel`;
        they sum to the full kernel. Holds one NC x NC matrix per module: for large models use
        :func:`tangent_alignment`, which keeps only per-module scalars.
    """
    kernels: dict[str, Tensor] = {}
    _sweep_kernels(model, inputs, outputs, memory_budget_mb, kernels.__setitem__, None, None)
    return kernels


def modules_in_call_order(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the modules with trainable parameters, in the order of their first call on ``example``."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        device = next(iter(_trainable_parameters(model).values()), example).device
        return [m.name for m in _probe_forward(model, example[:1].to(device))[0]]
    finally:
        for module, training in flags:
            module.training = training


# ----------------------------------------------------------------------------------------------------
# Alignment and spectrum (plain functions on the kernel)
# ----------------------------------------------------------------------------------------------------
def centre_kernel(kernel: Tensor, num_samples: int) -> Tensor:
    """``K_c = (I_C (x) H) K (I_C (x) H)``, H = I_N - 11^T / N, for a [CN, CN] kernel indexed c * N + i.

    Returns
    -------
    Tensor
        [CN, CN], same dtype and device.
    """
    size = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != size or size % num_samples:
        raise MeasureError(f"kernel must be [C*N, C*N] with N = {num_samples}, got {tuple(kernel.shape)}")
    c = size // num_samples
    blocks = kernel.reshape(c, num_samples, c, num_samples)
    blocks = blocks - blocks.mean(dim=1, keepdim=True)
    blocks = blocks - blocks.mean(dim=3, keepdim=True)
    return blocks.reshape(size, size)


def choose_outputs(num_classes: int, max_outputs: int, seed: int) -> list[int]:
    """All classes when ``num_classes <= max_outputs``, else a seeded sorted subset of ``max_outputs``."""
    if max_outputs < 1:
        raise MeasureError(f"max_outputs must be >= 1 (got {max_outputs})")
    if num_classes <= max_outputs:
        return list(range(num_classes))
    chosen = np.random.default_rng(seed).choice(num_classes, size=max_outputs, replace=False)
    return sorted(int(c) for c in chosen)


def centred_targets(labels: Tensor, num_classes: int, outputs: Sequence[int] | None = None) -> Tensor:
    """``y = vec(Y)``, Y [N, C'] = one-hot labels (columns ``outputs``, default all) minus their column means.

    Returns
    -------
    Tensor
        [C' N] float64, ``y[c*N + i] = Y[i, c]`` (the kernel's order).
    """
    labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise MeasureError(
            f"labels must be in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    one_hot = torch.nn.functional.one_hot(labels.cpu(), num_classes).to(torch.float64)
    if outputs is not None:
        one_hot = one_hot[:, list(outputs)]
    one_hot -= one_hot.mean(dim=0, keepdim=True)
    return one_hot.T.reshape(-1)


def kernel_target_alignment(centred_kernel: Tensor, targets: Tensor) -> float:
    """``A = y^T K_c y / (||K_c||_F ||y||^2)`` for a centred kernel [M, M] and centred targets y [M].

    Raises ``MeasureError`` when y = 0 (one class only) or K_c = 0 (the alignment is 0 / 0).
    """
    y = targets.to(device=centred_kernel.device, dtype=torch.float64)
    k = centred_kernel.to(torch.float64)
    y_norm2 = float(y @ y)
    if y_norm2 == 0.0:
        raise MeasureError("the centred targets are zero: the sample holds one class only")
    frobenius = float(torch.linalg.matrix_norm(k))
    if frobenius == 0.0:
        raise MeasureError("the centred tangent kernel is zero: the logits do not depend on these parameters")
    return float(y @ (k @ y)) / (frobenius * y_norm2)


def spectrum_summary(centred_kernel: Tensor, kernel_trace: float, num_samples: int) -> dict[str, float]:
    """Effective rank and trace ratios of K_c, and Tr K / N (module docstring).

    Returns
    -------
    dict
        ``effective_rank``, ``trace_ratio_40``, ``trace_ratio_80``, ``trace_ratio_160``, ``trace_per_sample``.
    """
    eigenvalues = torch.linalg.eigvalsh(centred_kernel.to(torch.float64)).clamp_min(0.0).flip(0).cpu()
    total = float(eigenvalues.sum())
    if total == 0.0:
        raise MeasureError("the centred tangent kernel is zero: its spectrum is empty")
    p = eigenvalues / total
    p = p[p > 0]
    summary = {"effective_rank": math.exp(-float((p * p.log()).sum()))}
    cumulative = eigenvalues.cumsum(0) / total
    for k in TRACE_RATIO_RANKS:
        summary[f"trace_ratio_{k}"] = 1.0 if k >= len(cumulative) else min(1.0, float(cumulative[k - 1]))
    summary["trace_per_sample"] = kernel_trace / num_samples
    return summary


# ----------------------------------------------------------------------------------------------------
# The measures' shared computation
# ----------------------------------------------------------------------------------------------------
@dataclass
class TangentAlignment:
    """Everything the three ``ntk_*`` measures report for one probe sample.

    ``layer_alignments`` maps module names (first-call order) to their alignment, None where the module's
    centred kernel is zero. ``outputs`` are the classes kept; ``output_reduction`` is "none" or
    "class_subset".
    """

    alignment: float
    layer_alignments: dict[str, float | None]
    effective_rank: float
    trace_ratios: dict[int, float]
    trace_per_sample: float
    num_samples: int
    outputs: list[int]
    output_reduction: str


def tangent_alignment(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    max_outputs: int = DEFAULT_MAX_OUTPUTS,
    seed: int = 0,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    progress: ProgressCallback | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> TangentAlignment:
    """Alignment, per-module alignments and spectrum of the tangent kernel on (inputs, labels), one sweep.

    Parameters
    ----------
    model
        Classifier whose logits [B, num_classes] are the dataset's classes (else ``MeasureError``).
    inputs, labels
        [N, ...] inputs and [N] integer labels in [0, num_classes); at least two distinct labels.
    max_outputs, seed
        Beyond ``max_outputs`` classes, a seeded subset of classes is kept (module docstring).
    memory_budget_mb, progress, check_cancel
        As in :func:`tangent_kernel`.

    Returns
    -------
    TangentAlignment
    """
    labels = torch.as_tensor(labels).reshape(-1)
    num_samples = int(inputs.shape[0])
    if labels.numel() != num_samples:
        raise MeasureError(f"{labels.numel()} labels for {num_samples} inputs")
    if torch.unique(labels).numel() < 2:
        raise MeasureError("the sample holds one class only: the centred targets are zero")
    outputs = choose_outputs(num_classes, max_outputs, seed)
    targets = centred_targets(labels, num_classes, outputs)

    layer_alignments: dict[str, float | None] = {}

    def score_module(name: str, module_kernel: Tensor) -> None:
        try:
            layer_alignments[name] = kernel_target_alignment(
                centre_kernel(module_kernel, num_samples), targets
            )
        except MeasureError:
            layer_alignments[name] = None

    first = next((p for p in model.parameters() if p.requires_grad), None)
    if first is not None:
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                logits = model(inputs[:1].to(device=first.device, dtype=first.dtype))
        finally:
            for module, training in flags:
                module.training = training
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] != num_classes:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise MeasureError(
                f"the model's outputs ({shape} for one input) are not logits of the dataset's {num_classes} classes"
            )
    kernel = _sweep_kernels(model, inputs, outputs, memory_budget_mb, score_module, progress, check_cancel)
    centred = centre_kernel(kernel, num_samples)
    alignment = kernel_target_alignment(centred, targets)
    spectrum = spectrum_summary(centred, float(kernel.diagonal().sum()), num_samples)
    return TangentAlignment(
        alignment=alignment,
        layer_alignments=layer_alignments,
        effective_rank=spectrum["effective_rank"],
        trace_ratios={k: spectrum[f"trace_ratio_{k}"] for k in TRACE_RATIO_RANKS},
        trace_per_sample=spectrum["trace_per_sample"],
        num_samples=num_samples,
        outputs=outputs,
        output_reduction="none" if len(outputs) == num_classes else "class_subset",
    )


# ----------------------------------------------------------------------------------------------------
# Measure functions (the measure table's entries call these)
# ----------------------------------------------------------------------------------------------------
MEASURE_DEFAULTS: dict[str, Any] = {
    "samples": DEFAULT_SAMPLES,
    "split": "train",
    "seed": 0,
    "max_outputs": DEFAULT_MAX_OUTPUTS,
    "memory_budget_mb": DEFAULT_MEMORY_BUDGET_MB,
}


def _shared(ctx: Any, params: dict[str, Any]) -> tuple[TangentAlignment, dict[str, Any]]:
    """The run's tangent alignment for these parameters, computed once per ctx (``ctx.cache``)."""
    p = {**MEASURE_DEFAULTS, **{k: v for k, v in params.items() if k in MEASURE_DEFAULTS}}
    key = (
        "tangent_alignment",
        p["split"],
        p["samples"],
        int(p["seed"]),
        int(p["max_outputs"]),
        float(p["memory_budget_mb"]),
    )
    cache = getattr(ctx, "cache", None)
    if cache is None:
        cache = {}
    if key not in cache:
        try:
            probe = ctx.probe_set(p["split"], p["samples"], int(p["seed"]))
            inputs = torch.cat(list(probe.batches(max(1, len(probe)))))
            result: TangentAlignment | MeasureUndefined = tangent_alignment(
                ctx.model,
                inputs,
                probe.y,
                probe.num_classes,
                max_outputs=int(p["max_outputs"]),
                seed=int(p["seed"]),
                memory_budget_mb=float(p["memory_budget_mb"]),
                progress=lambda done, total: ctx.report("tangent_kernel", done, total),
                check_cancel=ctx.check_cancel,
            )
        except MeasureError as exc:
            result = MeasureUndefined(exc.detail)
        cache[key] = result
    cached = cache[key]
    if isinstance(cached, Exception):
        raise cached
    meta = {
        "split": p["split"],
        "seed": int(p["seed"]),
        "samples": cached.num_samples,
        "outputs": len(cached.outputs),
        "output_reduction": cached.output_reduction,
        "max_outputs": int(p["max_outputs"]),
    }
    if cached.output_reduction == "class_subset":
        meta["classes"] = list(cached.outputs)
    return cached, meta


def ntk_alignment_measure(ctx: Any, params: dict[str, Any]) -> Any:
    """Centred kernel-target alignment of the full tangent kernel (orientation +1)."""
    result, meta = _shared(ctx, params)
    return MeasureOutcome(value=result.alignment, meta=meta)


def ntk_layer_alignment_measure(ctx: Any, params: dict[str, Any]) -> Any:
    """Mean over modules with parameters of their alignment; every module's value in ``meta["layers"]``."""
    result, meta = _shared(ctx, params)
    defined = [v for v in result.layer_alignments.values() if v is not None]
    if not defined:
        raise MeasureUndefined("no module has a non-zero centred tangent kernel")
    warnings = [
        f"module {name}: centred kernel is zero, alignment undefined (left out of the mean)"
        for name, v in result.layer_alignments.items()
        if v is None
    ]
    meta["layers"] = [{"module": name, "alignment": v} for name, v in result.layer_alignments.items()]
    return MeasureOutcome(value=float(np.mean(defined)), meta=meta, warnings=warnings)


def ntk_effective_rank_measure(ctx: Any, params: dict[str, Any]) -> Any:
    """Effective rank of the centred tangent kernel (orientation -1); trace ratios and Tr K / N in meta."""
    result, meta = _shared(ctx, params)
    for k, ratio in result.trace_ratios.items():
        meta[f"trace_ratio_{k}"] = ratio
    meta["trace_per_sample"] = result.trace_per_sample
    return MeasureOutcome(value=result.effective_rank, meta=meta)
