"""Pre-activations of every ReLU call, global-max-pooled, streamed batch by batch.

Conventions (docs/measures.md, "What the measures look at"):

- The model runs in eval mode under ``torch.inference_mode()``.
- Every *call* of a ReLU-type activation is one layer, in call order: a module called twice
  (torchvision's BasicBlock/Bottleneck reuse ``self.relu``) gives two layers. The logits are not a layer.
- A layer's neurons are the channels (dim 1) of the tensor fed into the activation. For an input of
  shape [B, C, *spatial] a neuron's value is the amax over all dims >= 2; [B, C] is used as is.
- In-place activations are captured before they modify their input.

ReLU-type means "zero below 0, identity just above 0", so that ``relu(pre)`` and the dead-neuron rule of
the measures hold. Intercepted calls (``RELU_TYPE_FUNCTIONS``):

- ReLU in every spelling: ``nn.ReLU`` (its forward calls ``F.relu``), ``F.relu`` (also ``inplace=True``),
  ``F.relu_`` / ``torch.relu_``, ``torch.relu``, ``Tensor.relu``, ``Tensor.relu_``;
- clipped ReLU: ``F.relu6``, ``torch._C._nn.relu6(_)``, and ``F.hardtanh(_)`` *with* ``min_val == 0``
  (``nn.ReLU6`` and ``nn.Hardtanh(0, t)`` call it). The cap is ignored: measures use ``relu(pre)``.

Not ReLU-type (they pass negative inputs, so "dead" and ``relu(pre)`` make no sense): leaky_relu, prelu,
rrelu, elu, selu, celu, gelu, silu, mish, hardswish, softplus, and hardtanh with ``min_val != 0``.
``torch.clamp(x, min=0)`` / ``clamp_min`` are arithmetic, not activation calls, and are not captured.

Mechanism: a ``torch.overrides.TorchFunctionMode`` sees module and functional calls alike (calls made
inside its handler are not re-intercepted, so ``F.relu`` -> ``torch.relu`` counts once). Torch function
modes are thread-local, so other threads' calls are never captured. Layer names come from forward
pre/post hooks on the model's own modules (no global hooks): the qualified name of the innermost module
running when the call happens (``"model"`` for the root), plus ``":<function>"`` when that module is not
itself an activation module, plus ``"#k"`` for its k-th call (k >= 2) in one forward. Examples:
``"relu"``, ``"layer1.0.relu"``, ``"layer1.0.relu#2"``, ``"block:relu_"``, ``"model:relu#3"``.
Mode and hooks are removed in ``finally`` blocks, also when the forward raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from gscore.errors import JobCancelled, MeasureError

__all__ = ["Activations", "RELU_TYPE_FUNCTIONS", "extract_preactivations"]

_HARDTANH_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {F.hardtanh, F.hardtanh_, torch._C._nn.hardtanh, torch._C._nn.hardtanh_}
)
RELU_TYPE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {
        F.relu,
        torch.relu,
        torch.relu_,  # is F.relu_
        torch.Tensor.relu,
        torch.Tensor.relu_,
        F.relu6,
        torch._C._nn.relu6,
        torch._C._nn.relu6_,
    }
    | _HARDTANH_FUNCTIONS
)
"""Functions whose input is captured (hardtanh only when ``min_val == 0``)."""

_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_ROOT_NAME = "model"


@dataclass
class Activations:
    """Global-max-pooled ReLU inputs of N samples.

    ``pre``: [N, M] float32 on the store device, M = neurons (channels) of all layers, layer by layer in
    call order. ``layer_of``: [M] int64, the layer index 0..L-1 of each column. ``layer_names``: [L].
    """

    pre: torch.Tensor
    layer_of: torch.Tensor
    layer_names: list[str]

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)


def _hardtanh_min_val(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """``min_val`` of a hardtanh call: (input, min_val=-1., max_val=1., inplace=False)."""
    if len(args) > 1:
        return float(args[1])
    return float(kwargs.get("min_val", -1.0))


class _ReluCapture(TorchFunctionMode):
    """Records amax-pooled inputs of ReLU-type calls during one forward; names them via module hooks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._model = model
        self._module_stack: list[tuple[str, nn.Module]] = []
        self._hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        self.batch_size = 0
        self.features: list[torch.Tensor] = []  # per call: [B, C] pooled input
        self.names: list[str] = []  # per call
        self._calls_per_name: dict[str, int] = {}

    # -- module hooks (layer naming) --------------------------------------------------------------
    def install_hooks(self) -> None:
        for qualified_name, module in self._model.named_modules():
            name = qualified_name or _ROOT_NAME
            self._hook_handles.append(module.register_forward_pre_hook(self._make_pre_hook(name)))
            self._hook_handles.append(module.register_forward_hook(self._pop_module, always_call=True))

    def remove_hooks(self) -> None:
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()

    def _make_pre_hook(self, name: str) -> Callable[[nn.Module, Any], None]:
        stack = self._module_stack

        def push_module(module: nn.Module, _inputs: Any) -> None:
            stack.append((name, module))

        return push_module

    def _pop_module(self, _module: nn.Module, _inputs: Any, _output: Any) -> None:
        if self._module_stack:
            self._module_stack.pop()

    # -- per batch ---------------------------------------------------------------------------------
    def start_batch(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.features = []
        self.names = []
        self._calls_per_name = {}
        self._module_stack.clear()

    def _layer_name(self, func: Callable[..., Any]) -> str:
        if self._module_stack:
            module_name, module = self._module_stack[-1]
            is_activation_module = isinstance(module, _ACTIVATION_MODULES)
        else:  # called outside any module of the model (e.g. a plain function passed as model)
            module_name, is_activation_module = _ROOT_NAME, False
        base = module_name if is_activation_module else f"{module_name}:{func.__name__}"
        count = self._calls_per_name.get(base, 0) + 1
        self._calls_per_name[base] = count
        return base if count == 1 else f"{base}#{count}"

    def _record(self, func: Callable[..., Any], x: torch.Tensor) -> None:
        name = self._layer_name(func)
        if x.dim() < 2 or x.shape[0] != self.batch_size:
            raise MeasureError(
                f"ReLU call {name!r} got a tensor of shape {tuple(x.shape)}; extraction needs batch-first "
                f"[B={self.batch_size}, C, ...] inputs to every ReLU-type activation"
            )
        # amax (or a copy) allocates a new tensor: taken before an in-place ReLU modifies x.
        pooled = x.amax(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x.clone()
        self.features.append(pooled)
        self.names.append(name)

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        if func in RELU_TYPE_FUNCTIONS and (
            func not in _HARDTANH_FUNCTIONS or _hardtanh_min_val(args, kwargs) == 0.0
        ):
            self._record(func, args[0] if args else kwargs["input"])
        return func(*args, **kwargs)


def _check_same_layers(
    names: list[str], widths: list[int], expected_names: list[str], expected_widths: list[int], start: int
) -> None:
    if names == expected_names and widths == expected_widths:
        return
    if len(names) != len(expected_names):
        what = f"{len(names)} ReLU calls instead of {len(expected_names)}"
    else:
        layer = next(
            i for i in range(len(names)) if (names[i], widths[i]) != (expected_names[i], expected_widths[i])
        )
        what = (
            f"ReLU call {layer} is {names[layer]!r} with {widths[layer]} channels instead of "
            f"{expected_names[layer]!r} with {expected_widths[layer]} channels"
        )
    raise MeasureError(
        f"the model's ReLU calls differ between batches (data-dependent control flow?): the batch starting "
        f"at sample {start} made {what}; every batch must run the same ReLU calls with the same channels"
    )


def _snapshot_training_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(module, module.training) for module in model.modules()]


def extract_preactivations(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    num_samples: int,
    device: torch.device | str = "cpu",
    store_device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Activations:
    """Run ``model`` (eval mode, inference mode) over ``batches`` and return its pooled ReLU inputs.

    ``batches``: float32 [B, ...] CPU tensors, already normalized; their B must add up to ``num_samples``.
    The model is moved to ``device`` (in place, like ``nn.Module.to``) and stays there; its per-module
    training flags are restored afterwards. ``pre`` ([N, M] float32) lives on ``store_device`` (default:
    ``device``) and is preallocated after the first batch; only one batch's activations exist at a time.
    ``progress(samples_done, num_samples)`` is called after each batch; ``should_cancel()`` is checked
    before each batch and raises ``JobCancelled`` when true.

    Raises ``MeasureError`` when the model calls no ReLU-type activation, or when the ReLU calls
    (count, order, names or channels) differ between batches; ``ValueError`` when the batches do not
    hold exactly ``num_samples`` samples.
    """
    device = torch.device(device)
    store = device if store_device is None else torch.device(store_device)
    on_cuda = device.type == "cuda"
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive (got {num_samples})")

    training_flags = _snapshot_training_flags(model)
    model.to(device)
    model.eval()
    capture = _ReluCapture(model)
    pre: torch.Tensor | None = None
    layer_names: list[str] = []
    layer_widths: list[int] = []
    done = 0
    try:
        capture.install_hooks()
        for batch in batches:
            if should_cancel is not None and should_cancel():
                raise JobCancelled(f"extraction cancelled after {done} of {num_samples} samples")
            batch_size = int(batch.shape[0])
            if done + batch_size > num_samples:
                raise ValueError(f"batches hold more than num_samples={num_samples} samples")
            if on_cuda and batch.device.type == "cpu" and not batch.is_pinned():
                batch = batch.pin_memory()
            with torch.inference_mode():
                inputs = batch.to(device, non_blocking=on_cuda)
                capture.start_batch(batch_size)
                with capture:
                    model(inputs)
                features, names = capture.features, capture.names
                capture.features = []  # drop the references held by the capture
                widths = [int(f.shape[1]) for f in features]
                if pre is None:
                    if not features:
                        raise MeasureError(
                            "the model calls no ReLU-type activation (relu, relu_, relu6, or hardtanh with "
                            "min_val=0 as module or function); intraclass clustering measures need ReLUs"
                        )
                    layer_names, layer_widths = names, widths
                else:
                    _check_same_layers(names, widths, layer_names, layer_widths, done)
                batch_pre = torch.cat([f.to(torch.float32) for f in features], dim=1)
                del features
            if pre is None:  # allocated outside inference mode: a normal tensor callers may modify
                pre = torch.empty((num_samples, sum(layer_widths)), dtype=torch.float32, device=store)
            pre[done : done + batch_size].copy_(batch_pre)
            del batch_pre
            done += batch_size
            if progress is not None:
                progress(done, num_samples)
    finally:
        capture.remove_hooks()
        for module, was_training in training_flags:
            module.training = was_training
    if done != num_samples:
        raise ValueError(f"batches held {done} samples, expected num_samples={num_samples}")
    assert pre is not None
    layer_of = torch.repeat_interleave(
        torch.arange(len(layer_widths), dtype=torch.int64), torch.tensor(layer_widths, dtype=torch.int64)
    ).to(store)
    return Activations(pre=pre, layer_of=layer_of, layer_names=layer_names)
