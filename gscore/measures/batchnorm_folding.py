"""The effective weights of the norm measures: BatchNorm folded into the layer whose output it normalizes.

    folded = fold_batchnorms(model, example)   # FoldedNetwork: a folded copy, or why it cannot be folded
    matrices = weight_matrices(folded.model)   # [(name, [out, in * kh * kw] float64)]

Folding (docs/measures.md, "Effective weights"): per output channel c of a BatchNorm in eval mode,
``s = gamma_c / sqrt(running_var_c + eps)``, ``W'[c] = s * W[c]``, ``b'[c] = s * (b[c] - running_mean_c) +
beta_c`` (a missing bias counts as 0), and the BatchNorm becomes an identity. Which layer feeds which
BatchNorm is observed in one forward pass on ``example`` with module hooks: a BatchNorm folds when its input
is the very tensor one convolution or linear call returned, that layer is called once, feeds no other
BatchNorm, and the BatchNorm is called once and has running statistics. Anything else (a BatchNorm after an
add, a pooling, a concatenation; a shared layer) is reported by name and nothing is folded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FoldedNetwork", "LINEAR_TYPES", "fold_batchnorms", "weight_matrices"]

LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class FoldedNetwork:
    """``model``: a folded copy (eval mode), or None when some BatchNorm cannot be folded (``reason``
    names it). ``folded``: ``[(layer name, batchnorm name)]`` folded pairs."""

    model: nn.Module | None
    folded: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None

    def meta(self) -> dict[str, object]:
        """What ``meta`` says about the folding."""
        if self.model is None:
            return {"batchnorm_folding": self.reason}
        if not self.folded:
            return {"batchnorm_folding": "the model has no BatchNorm: nothing folded"}
        return {"batchnorm_folding": f"{len(self.folded)} folded", "folded": [list(p) for p in self.folded]}


def _feeding_layers(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, str | None], dict[str, int]]:
    """One forward pass: for each BatchNorm call, the conv/linear module whose output it normalized (None
    when its input is not a conv/linear output), and how often each conv/linear/BatchNorm module was called."""
    producers: dict[int, tuple[str, int]] = {}  # id of a conv/linear output -> (module name, its version)
    outputs: list[torch.Tensor] = []  # keeps the outputs alive so that ids stay unique during the pass
    feeding: dict[str, str | None] = {}
    calls: dict[str, int] = {}
    handles = []

    def after_layer(name: str):  # noqa: ANN202
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor):
                producers[id(output)] = (name, output._version)
                outputs.append(output)

        return hook

    def before_batchnorm(name: str):  # noqa: ANN202
        def hook(_module: nn.Module, args: tuple[object, ...]) -> None:
            calls[name] = calls.get(name, 0) + 1
            x = args[0] if args else None
            produced = producers.get(id(x)) if isinstance(x, torch.Tensor) else None
            # an in-place operation in between (x.relu_()) keeps the tensor but not its version
            feeding[name] = produced[0] if produced and produced[1] == x._version else None

        return hook

    try:
        for name, module in model.named_modules():
            if isinstance(module, LINEAR_TYPES):
                handles.append(module.register_forward_hook(after_layer(name)))
            elif isinstance(module, _BatchNorm):
                handles.append(module.register_forward_pre_hook(before_batchnorm(name)))
        with torch.no_grad():  # not inference mode: its tensors have no version counter
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return feeding, calls


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attribute, module)


def _fold_pair(layer: nn.Module, bn: _BatchNorm) -> None:
    """Fold ``bn`` (eval statistics) into ``layer`` in place: weights and bias scaled per output channel."""
    assert bn.running_mean is not None and bn.running_var is not None
    weight = layer.weight.detach()
    dtype = torch.float64
    scale = bn.running_var.to(dtype).add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().to(dtype)
    shift = bn.bias.detach().to(dtype) if bn.bias is not None else torch.zeros_like(scale)
    bias = layer.bias.detach().to(dtype) if layer.bias is not None else torch.zeros_like(scale)
    new_weight = weight.to(dtype) * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    new_bias = scale * (bias - bn.running_mean.to(dtype)) + shift
    layer.weight = nn.Parameter(new_weight.to(weight.dtype), requires_grad=False)
    layer.bias = nn.Parameter(new_bias.to(weight.dtype), requires_grad=False)


def fold_batchnorms(model: nn.Module, example: torch.Tensor) -> FoldedNetwork:
    """A copy of ``model`` (eval mode) with every BatchNorm folded into the conv/linear layer feeding it.

    ``example``: one input batch the model takes ([B, C, H, W] on the model's device). The model itself is
    not modified. Returns a FoldedNetwork whose ``model`` is None, with the reason, when a BatchNorm cannot
    be folded (see the module docstring); a model without BatchNorm gives an unchanged copy.
    """
    batchnorms = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    if not batchnorms:
        return FoldedNetwork(copy.deepcopy(model).eval())
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        feeding, calls = _feeding_layers(model, example)
    finally:
        for module, training in was_training:
            module.training = training
    pairs: list[tuple[str, str]] = []
    fed: dict[str, str] = {}
    for bn_name, bn in batchnorms.items():
        layer_name = feeding.get(bn_name)
        problem = None
        if bn_name not in calls:
            continue  # never called: it changes nothing
        if bn.running_mean is None or bn.running_var is None:
            problem = "has no running statistics (track_running_stats=False)"
        elif calls[bn_name] != 1:
            problem = f"is called {calls[bn_name]} times in one forward pass"
        elif layer_name is None:
            problem = "does not take the direct output of a convolution or linear layer"
        elif calls.get(layer_name, 0) != 1:
            problem = f"follows {layer_name!r}, which is called {calls.get(layer_name, 0)} times in one pass"
        elif layer_name in fed:
            problem = f"follows {layer_name!r}, which also feeds BatchNorm {fed[layer_name]!r}"
        if problem:
            return FoldedNetwork(None, reason=f"BatchNorm {bn_name!r} cannot be folded: it {problem}")
        fed[layer_name] = bn_name
        pairs.append((layer_name, bn_name))
    folded = copy.deepcopy(model).eval()
    for layer_name, bn_name in pairs:
        _fold_pair(folded.get_submodule(layer_name), folded.get_submodule(bn_name))
        _set_module(folded, bn_name, nn.Identity())
    return FoldedNetwork(folded, pairs)


def weight_matrices(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``[(module name, W float64 [out, in * kh * kw])]`` of every conv and linear module, in module order
    (a module used twice counts once); biases and normalization parameters are not counted."""
    return [
        (name, module.weight.detach().to(torch.float64).reshape(module.weight.shape[0], -1))
        for name, module in model.named_modules()
        if isinstance(module, LINEAR_TYPES)
    ]
