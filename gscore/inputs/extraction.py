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

Representations (``representations=True``, same forward pass, for the intrinsic-dimension measures):

- ``last_linear_input``: the flattened input of the model's last ``nn.Linear`` *module* call (a forward
  pre-hook on every ``nn.Linear``; ``F.linear`` called directly does not count);
- ``stage_outputs``: the flattened *output* of the last ReLU-type call of each spatial resolution: calls
  are grouped into runs of consecutive calls whose tensors have the same spatial shape (``shape[2:]``;
  ``()`` for [B, C] calls), and the last call of each run is a stage, named like its layer.

``predictions`` (always): argmax over dim 1 of the model's output when it is a [B, C] tensor.

For the peer measures (same pass, each on request): ``last_linear=True`` captures ``last_linear_input`` alone
(no stage outputs); ``logits=True`` keeps the model's [B, C] output (float32); ``first_relu_output=True`` keeps
the output of the first ReLU-type call, max-pooled with a 4 x 4 window and stride 4 when it is [B, C, H, W]
with H, W >= 4 (as is otherwise), flattened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    """Global-max-pooled ReLU inputs of N samples, and what else the same forward pass captured.

    ``pre``: [N, M] float32 on the store device, M = neurons (channels) of all layers, layer by layer in
    call order ([N, 0] when pre-activations were not requested). ``layer_of``: [M] int64, the layer index
    0..L-1 of each column. ``layer_names``: [L].
    ``last_linear_input``: [N, D] float32, the flattened input of the last ``nn.Linear`` call (None when
    representations were not requested or no ``nn.Linear`` was called), from module ``last_linear_name``.
    ``stage_outputs``: ``[(layer name, [N, D_s] float32)]``, the flattened output of the last ReLU-type call
    at each spatial resolution, in call order (empty when not requested).
    ``predictions``: [N] int64, argmax of the model's [B, C] output (None when the output is not [B, C]).
    ``logits``: [N, C] float32, the model's output (when asked for and [B, C]); ``first_relu_output``:
    [N, D] float32, the pooled, flattened output of the first ReLU-type call (when asked for).
    """

    pre: torch.Tensor
    layer_of: torch.Tensor
    layer_names: list[str]
    last_linear_input: torch.Tensor | None = None
    last_linear_name: str | None = None
    stage_outputs: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    predictions: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    first_relu_output: torch.Tensor | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)


def _hardtanh_min_val(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """``min_val`` of a hardtanh call: (input, min_val=-1., max_val=1., inplace=False)."""
    if len(args) > 1:
        return float(args[1])
    return float(kwargs.get("min_val", -1.0))


class _ReluCapture(TorchFunctionMode):
    """Records, during one forward, the amax-pooled inputs of ReLU-type calls (``pool``), and with
    ``representations`` the stage outputs and the last ``nn.Linear`` input; names calls via module hooks.

    Which calls are stages and which ``nn.Linear`` call is the last one is learned on the first batch
    (``learn_plan``); later batches copy only those tensors.
    """

    def __init__(
        self,
        model: nn.Module,
        pool: bool = True,
        representations: bool = False,
        last_linear: bool = False,
        first_output: bool = False,
    ) -> None:
        super().__init__()
        self._model = model
        self._pool = pool
        self._representations = representations  # stage outputs (and the last linear input)
        self._last_linear = representations or last_linear
        self._first_output = first_output
        self.first_output: torch.Tensor | None = None  # [B, D]: the first ReLU call's pooled output
        self._module_stack: list[tuple[str, nn.Module]] = []
        self._hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        self.batch_size = 0
        self.features: list[torch.Tensor] = []  # per call: [B, C] pooled input (when pooling)
        self.names: list[str] = []  # per call
        self.widths: list[int] = []  # per call: channels (dim 1) of the input
        self._calls_per_name: dict[str, int] = {}
        # representations: stage plan (call indices) and last linear call, known after the first batch
        self.stage_calls: list[int] | None = None
        self.last_linear_call: int | None = None
        self.linear_calls_expected: int | None = None
        self.stages: list[tuple[int, str, torch.Tensor]] = []  # (call index, name, [B, D] output)
        self._pending: tuple[int, str, tuple[int, ...], torch.Tensor] | None = None
        self.linear_input: torch.Tensor | None = None
        self.linear_name: str | None = None
        self.linear_calls = 0

    # -- module hooks (layer naming, linear inputs) ------------------------------------------------
    def install_hooks(self) -> None:
        for qualified_name, module in self._model.named_modules():
            name = qualified_name or _ROOT_NAME
            self._hook_handles.append(module.register_forward_pre_hook(self._make_pre_hook(name)))
            self._hook_handles.append(module.register_forward_hook(self._pop_module, always_call=True))
            if self._last_linear and isinstance(module, nn.Linear):
                self._hook_handles.append(
                    module.register_forward_pre_hook(self._make_linear_hook(name), with_kwargs=True)
                )

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

    def _make_linear_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record_linear_input(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            index = self.linear_calls
            self.linear_calls += 1
            if self.last_linear_call is not None and index != self.last_linear_call:
                return
            x = args[0] if args else kwargs["input"]
            if x.dim() < 1 or x.shape[0] != self.batch_size:
                raise MeasureError(
                    f"nn.Linear {name!r} got a tensor of shape {tuple(x.shape)}; the last-layer "
                    f"representation needs batch-first [B={self.batch_size}, ...] inputs"
                )
            self.linear_input = x.reshape(x.shape[0], -1).to(torch.float32, copy=True)
            self.linear_name = name

        return record_linear_input

    # -- per batch ---------------------------------------------------------------------------------
    def start_batch(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.features = []
        self.names = []
        self.widths = []
        self._calls_per_name = {}
        self._module_stack.clear()
        self.stages = []
        self._pending = None
        self.linear_input = None
        self.linear_name = None
        self.linear_calls = 0
        self.first_output = None

    def finish_batch(self) -> None:
        """Commit the last stage of the first batch."""
        if self._pending is not None:
            index, name, _resolution, output = self._pending
            self.stages.append((index, name, output))
            self._pending = None

    def learn_plan(self) -> None:
        """After the first batch: remember which calls are stages and which linear call is the last."""
        self.stage_calls = [index for index, _name, _output in self.stages]
        self.linear_calls_expected = self.linear_calls
        self.last_linear_call = self.linear_calls - 1 if self.linear_calls else None

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
        if self._pool:
            # amax (or a copy) allocates a new tensor: taken before an in-place ReLU modifies x.
            pooled = x.amax(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x.clone()
            self.features.append(pooled)
        self.names.append(name)
        self.widths.append(int(x.shape[1]))

    def _record_output(self, index: int, output: torch.Tensor) -> None:
        """Keep a flattened float32 copy of a ReLU output that is (or may be) a stage output."""
        name = self.names[index]
        if self.stage_calls is not None:  # plan known: copy only the stage calls
            if index in self.stage_calls:
                self.stages.append((index, name, output.flatten(1).to(torch.float32, copy=True)))
            return
        resolution = tuple(output.shape[2:])
        if self._pending is not None and self._pending[2] != resolution:
            self.stages.append(self._pending[:2] + (self._pending[3],))
        # copied now: later in-place operations must not change it
        self._pending = (index, name, resolution, output.flatten(1).to(torch.float32, copy=True))

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
            index = len(self.names)
            self._record(func, args[0] if args else kwargs["input"])
            output = func(*args, **kwargs)
            if self._representations:
                self._record_output(index, output)
            if self._first_output and index == 0:
                self.first_output = first_relu_features(output)
            return output
        return func(*args, **kwargs)


def first_relu_features(output: torch.Tensor) -> torch.Tensor:
    """[B, D] float32: ``output`` [B, C, H, W] max-pooled with a 4 x 4 window and stride 4 (when H, W >= 4),
    flattened; other shapes flattened as they are."""
    if output.dim() == 4 and output.shape[2] >= 4 and output.shape[3] >= 4:
        output = F.max_pool2d(output, kernel_size=4, stride=4)
    return output.flatten(1).to(torch.float32, copy=True)


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


def _predictions_of(output: Any, batch_size: int) -> torch.Tensor | None:
    """argmax over dim 1 of a [B, C] output tensor; None for any other output."""
    if isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[0] == batch_size:
        return output.argmax(dim=1)
    return None


def _check_same_width(what: str, batch: torch.Tensor | None, buffer: torch.Tensor | None, start: int) -> None:
    """A later batch's capture has the first batch's width (or both are absent)."""
    got = None if batch is None else int(batch.shape[1])
    expected = None if buffer is None else int(buffer.shape[1])
    if got != expected:
        raise MeasureError(
            f"the {what} has {got} features in the batch starting at sample {start} instead of {expected}"
        )


def _check_representations(
    capture: _ReluCapture, stage_widths: list[int], linear_width: int | None, start: int
) -> None:
    """The stages and the last linear input of a later batch have the first batch's widths."""
    widths = [int(output.shape[1]) for _index, _name, output in capture.stages]
    if widths != stage_widths:
        raise MeasureError(
            f"the model's stage outputs differ between batches: the batch starting at sample {start} gave "
            f"flattened widths {widths} instead of {stage_widths} (inputs of different sizes?)"
        )
    if capture.linear_calls != capture.linear_calls_expected:
        raise MeasureError(
            f"the model's nn.Linear calls differ between batches: the batch starting at sample {start} made "
            f"{capture.linear_calls} instead of {capture.linear_calls_expected}"
        )
    got = None if capture.linear_input is None else int(capture.linear_input.shape[1])
    if got != linear_width:
        raise MeasureError(
            f"the input of the last nn.Linear call has {got} features in the batch starting at sample "
            f"{start} instead of {linear_width}"
        )


def extract_preactivations(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    num_samples: int,
    device: torch.device | str = "cpu",
    store_device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    *,
    representations: bool = False,
    preactivations: bool = True,
    last_linear: bool = False,
    logits: bool = False,
    first_relu_output: bool = False,
) -> Activations:
    """Run ``model`` (eval mode, inference mode) over ``batches`` and return its pooled ReLU inputs.

    ``batches``: float32 [B, ...] CPU tensors, already normalized; their B must add up to ``num_samples``.
    The model is moved to ``device`` (in place, like ``nn.Module.to``) and stays there; its per-module
    training flags are restored afterwards. ``pre`` ([N, M] float32) lives on ``store_device`` (default:
    ``device``) and is preallocated after the first batch; only one batch's activations exist at a time.
    ``progress(samples_done, num_samples)`` is called after each batch; ``should_cancel()`` is checked
    before each batch and raises ``JobCancelled`` when true.

    ``representations=True`` also captures, in the same pass, ``last_linear_input`` and ``stage_outputs``
    (see the module docstring; preallocated on the store device like ``pre``). ``preactivations=False``
    skips the pooled ReLU inputs: ``pre`` is then [N, 0], ``layer_names`` empty, and a model without
    ReLU-type calls is not an error. ``predictions`` ([N] int64) are always recorded when the model's
    output is a [B, C] tensor.

    Raises ``MeasureError`` when the model calls no ReLU-type activation (with ``preactivations``), or
    when the ReLU calls (count, order, names or channels), the stage widths or the ``nn.Linear`` calls
    differ between batches; ``ValueError`` when the batches do not hold exactly ``num_samples`` samples.

    Parameters
    ----------
    model : nn.Module
        Returns logits [B, C]; runs in eval mode under ``torch.inference_mode()``.
    batches : iterable of Tensor [B, ...]
        float32 inputs, normalized as the model expects; the B add up to ``num_samples``.
    num_samples : int
        N, the total number of samples.
    device, store_device : torch.device or str
        Where the model runs, and where the returned tensors live (default ``device``).
    progress : callable (samples_done, num_samples), optional
    should_cancel : callable () -> bool, optional
    representations : bool
        Also capture ``last_linear_input`` [N, D] and ``stage_outputs`` [(name, [N, D_s])].
    preactivations : bool
        Capture the pooled ReLU inputs ``pre`` [N, M] (False: ``pre`` is [N, 0]).
    last_linear, logits, first_relu_output : bool
        Also capture ``last_linear_input`` (without the stage outputs), ``logits`` [N, C] and
        ``first_relu_output`` [N, D] (see the module docstring).

    Returns
    -------
    Activations
        ``pre`` [N, M] float32, ``layer_of`` [M] int64, ``layer_names`` [L], ``predictions`` [N] int64
        (or None), and the representations when asked for.
    """
    device = torch.device(device)
    store = device if store_device is None else torch.device(store_device)
    on_cuda = device.type == "cuda"
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive (got {num_samples})")

    training_flags = _snapshot_training_flags(model)
    model.to(device)
    model.eval()
    capture = _ReluCapture(
        model,
        pool=preactivations,
        representations=representations,
        last_linear=last_linear,
        first_output=first_relu_output,
    )
    pre: torch.Tensor | None = None
    stage_buffers: list[tuple[str, torch.Tensor]] = []
    linear_buffer: torch.Tensor | None = None
    logits_buffer: torch.Tensor | None = None
    first_buffer: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    has_predictions = True
    layer_names: list[str] = []
    layer_widths: list[int] = []
    stage_widths: list[int] = []
    linear_width: int | None = None
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
            first = done == 0
            with torch.inference_mode():
                inputs = batch.to(device, non_blocking=on_cuda)
                capture.start_batch(batch_size)
                with capture:
                    output = model(inputs)
                capture.finish_batch()
                batch_predictions = _predictions_of(output, batch_size)
                batch_logits = output.to(torch.float32) if logits and batch_predictions is not None else None
                del output
                features, names, widths = capture.features, capture.names, capture.widths
                capture.features = []  # drop the references held by the capture
                if first:
                    if preactivations and not names:
                        raise MeasureError(
                            "the model calls no ReLU-type activation (relu, relu_, relu6, or hardtanh with "
                            "min_val=0 as module or function); intraclass clustering measures need ReLUs"
                        )
                    layer_names, layer_widths = names, widths
                    capture.learn_plan()
                    stage_widths = [int(out.shape[1]) for _index, _name, out in capture.stages]
                    if capture.linear_input is not None:
                        linear_width = int(capture.linear_input.shape[1])
                else:
                    _check_same_layers(names, widths, layer_names, layer_widths, done)
                    if representations or last_linear:
                        _check_representations(capture, stage_widths, linear_width, done)
                    _check_same_width(
                        "output of the first ReLU call", capture.first_output, first_buffer, done
                    )
                    _check_same_width("model output", batch_logits, logits_buffer, done)
                batch_pre = (
                    torch.cat([f.to(torch.float32) for f in features], dim=1) if preactivations else None
                )
                del features
            if first:  # allocated outside inference mode: normal tensors callers may modify
                pre = torch.empty(
                    (num_samples, sum(layer_widths) if preactivations else 0),
                    dtype=torch.float32,
                    device=store,
                )
                stage_buffers = [
                    (name, torch.empty((num_samples, int(out.shape[1])), dtype=torch.float32, device=store))
                    for _index, name, out in capture.stages
                ]
                if linear_width is not None:
                    linear_buffer = torch.empty(
                        (num_samples, linear_width), dtype=torch.float32, device=store
                    )
                predictions = torch.empty(num_samples, dtype=torch.int64, device=store)
                if capture.first_output is not None:
                    first_buffer = torch.empty(
                        (num_samples, int(capture.first_output.shape[1])), dtype=torch.float32, device=store
                    )
                if batch_logits is not None:
                    logits_buffer = torch.empty(
                        (num_samples, int(batch_logits.shape[1])), dtype=torch.float32, device=store
                    )
            assert pre is not None and predictions is not None
            if batch_pre is not None:
                pre[done : done + batch_size].copy_(batch_pre)
                del batch_pre
            for (_name, buffer), (_index, _stage, out) in zip(stage_buffers, capture.stages, strict=True):
                buffer[done : done + batch_size].copy_(out)
            capture.stages = []
            if linear_buffer is not None and capture.linear_input is not None:
                linear_buffer[done : done + batch_size].copy_(capture.linear_input)
            capture.linear_input = None
            if first_buffer is not None and capture.first_output is not None:
                first_buffer[done : done + batch_size].copy_(capture.first_output)
            capture.first_output = None
            if logits_buffer is not None and batch_logits is not None:
                logits_buffer[done : done + batch_size].copy_(batch_logits)
            batch_logits = None
            if batch_predictions is None:
                has_predictions = False
            elif has_predictions:
                predictions[done : done + batch_size].copy_(batch_predictions)
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
    if not preactivations:
        layer_names, layer_widths = [], []
    layer_of = torch.repeat_interleave(
        torch.arange(len(layer_widths), dtype=torch.int64), torch.tensor(layer_widths, dtype=torch.int64)
    ).to(store)
    return Activations(
        pre=pre,
        layer_of=layer_of,
        layer_names=layer_names,
        last_linear_input=linear_buffer,
        last_linear_name=capture.linear_name if linear_buffer is not None else None,
        stage_outputs=stage_buffers,
        predictions=predictions if has_predictions else None,
        logits=logits_buffer if has_predictions else None,
        first_relu_output=first_buffer,
    )
