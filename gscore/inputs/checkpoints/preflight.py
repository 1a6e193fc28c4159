"""Checks of a checkpoint against its architecture that load no weights: what a service can refuse at
submission, before a worker spends time on the job.

    expected = expected_state_shapes({"family": "cnn", ...})   # {name: shape}, from a model on "meta"
    detail = state_shapes_mismatch(read_safetensors_shapes(path), expected)   # None when it fits
    allowed = allowed_pickle_globals()                          # what torch.load(weights_only=True) accepts

The comparison is ``gscore.inputs.checkpoints.loading.load_into``'s, on shapes instead of tensors: the same wrapper
prefixes are removed, a missing BatchNorm ``num_batches_tracked`` counter is tolerated, and the message is
the one the worker would give. Building the model on the ``meta`` device allocates no parameter memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gscore.inputs.checkpoints.loading import _mismatch_detail, strip_wrapper_prefix

Shapes = Mapping[str, tuple[int, ...]]


def expected_state_shapes(arch: Any) -> dict[str, tuple[int, ...]] | None:
    """``{state_dict key: shape}`` of the architecture ``arch``, or None for ``{"family": "onnx"}``.

    Parameters
    ----------
    arch : an arch spec (dict, JSON text or parsed); raises SpecError when invalid.

    Returns
    -------
    dict in ``model.state_dict()`` order, shapes as tuples of ints; built on the ``meta`` device.
    """
    from gscore.models import OnnxSpec, build_model, parse_arch_spec

    spec = parse_arch_spec(arch)
    if isinstance(spec, OnnxSpec):
        return None
    with torch.device("meta"):
        model = build_model(spec)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def state_shapes_mismatch(given: Shapes, expected: Shapes) -> str | None:
    """Why a checkpoint with tensors ``given`` does not load into a model with ``expected``, or None.

    Parameters
    ----------
    given : ``{name: shape}`` of the checkpoint (e.g. ``gscore.inputs.checkpoints.format.read_safetensors_shapes``).
    expected : ``{name: shape}`` of the architecture (:func:`expected_state_shapes`).

    Returns
    -------
    None when ``load_into`` would accept the keys and shapes (after removing a wrapper prefix), else its
    ``CheckpointMismatchError`` detail: missing keys, unexpected keys and shape mismatches.
    """
    stripped, _ = strip_wrapper_prefix(dict(given), expected.keys())
    missing = [k for k in expected if k not in stripped and not k.endswith("num_batches_tracked")]
    unexpected = [key for key in stripped if key not in expected]
    mismatched = [
        (key, tuple(stripped[key]), tuple(shape))
        for key, shape in expected.items()
        if key in stripped and tuple(stripped[key]) != tuple(shape)
    ]
    if not (missing or unexpected or mismatched):
        return None
    return _mismatch_detail(missing, unexpected, mismatched)


def allowed_pickle_globals() -> frozenset[str]:
    """The ``"module.name"`` globals that ``torch.load(..., weights_only=True)`` accepts in this process:
    torch's default allowlist plus those added with ``torch.serialization.add_safe_globals``."""
    from torch import _weights_only_unpickler as unpickler

    return frozenset(unpickler._get_allowed_globals()) | frozenset(unpickler._get_user_allowed_globals())
