"""The model a scoring run measures, from an arch spec and the file sent with it.

    model, report = load_scored_model(spec, path, max_bytes=settings.max_upload_bytes, image_shape=(C, H, W))

- ``{"family": "onnx"}``: ``path`` is an ``.onnx`` file (architecture and weights), read and converted by
  ``gscore.inputs.onnx_models.load_onnx_model``; its input is checked against ``image_shape``.
- every other family: ``gscore.models.build_model(spec)`` plus ``path`` as a state_dict checkpoint
  (``gscore.inputs.checkpoints.loading``; wrapper prefixes are removed and reported).

Input normalization is not applied here (``gscore.models.input_normalization(spec, ...)`` does it for every
family alike).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from gscore.inputs.checkpoints.loading import LoadReport, load_into, read_state_dict


def load_scored_model(
    spec: Any | Mapping[str, Any] | str,
    path: str | Path,
    *,
    max_bytes: int,
    image_shape: Sequence[int] | None = None,
) -> tuple[nn.Module, LoadReport]:
    """``(model in eval mode on CPU, LoadReport)`` for ``spec`` and the checkpoint or ONNX file ``path``.

    Parameters
    ----------
    spec : an arch spec (parsed or not).
    path : the checkpoint (``.safetensors``/``.pt``...) or, for ``family == "onnx"``, the ``.onnx`` file.
    max_bytes : largest accepted ONNX file (checkpoints are capped at upload time).
    image_shape : ``(C, H, W)`` of the dataset's images, checked against an ONNX graph's input.

    Raises SpecError, CheckpointError or CheckpointMismatchError with a message saying what to fix.
    """
    from gscore.models import OnnxSpec, build_model, parse_arch_spec

    spec = parse_arch_spec(spec)
    if isinstance(spec, OnnxSpec):
        from gscore.inputs.onnx_models import load_onnx_model

        return load_onnx_model(path, max_bytes=max_bytes, image_shape=image_shape), LoadReport()
    model = build_model(spec)
    report = load_into(model, read_state_dict(path))
    return model.eval(), report
