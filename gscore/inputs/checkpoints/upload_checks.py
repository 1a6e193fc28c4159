"""Refuse at submission what a worker would refuse later: the content checks of an uploaded file.

    check_checkpoint_upload(path, arch)      # a `checkpoint` part: safetensors or torch.save zip
    check_model_upload(path, max_bytes)      # a `model` part: an .onnx file
    npz_dataset_summary(path, name, max_bytes)  # an uploaded .npz probe set: checked, summarized

Each raises a ``CheckpointError`` (``CheckpointMismatchError`` for keys/shapes that do not fit the arch)
with the message the worker would give. Nothing is unpickled and no weight is loaded:

- a ``.pt2`` (torch.export) archive is refused from its zip member names, pointing to ONNX;
- a torch.save zip has its pickles' opcodes scanned (``gscore.inputs.checkpoints.format.refused_pickle_globals``)
  for globals outside torch's weights_only allowlist: a pickled ``nn.Module`` or other Python objects;
- a safetensors file has its header's names and shapes compared with the arch's, built on the ``meta``
  device (``gscore.inputs.checkpoints.preflight``). The keys and shapes of a torch zip cannot be read without
  unpickling, so for those the worker's strict load reports a mismatch (the job fails with it);
- an .onnx file is read with ``gscore.inputs.onnx_models.read_onnx_file`` (external data, truncated protobuf,
  unsupported operators, size; no path an upload names is ever opened).

These need torch (the allowlist, the meta model, the ONNX checker module), imported on the first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gscore.errors import CheckpointError, CheckpointMismatchError, DatasetError
from gscore.inputs.archives import DatasetTooLarge
from gscore.inputs.checkpoints.format import (
    ZIP_MAGIC,
    listing,
    read_safetensors_shapes,
    refused_pickle_globals,
    zip_member_names,
)


def _refuse_torch_export_archive(path: Path) -> None:
    """CheckpointError (pointing to ONNX) for a torch.export ``.pt2`` zip: the engine's own test."""
    from gscore.inputs.checkpoints.loading import PT2_DETAIL, looks_like_torch_export_archive

    if looks_like_torch_export_archive(path):
        raise CheckpointError(PT2_DETAIL)


def _starts_with_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def check_checkpoint_upload(path: str | Path, arch: dict[str, Any], max_bytes: int | None = None) -> None:
    """Refuse a ``checkpoint`` upload the worker could not load into ``arch`` safely.

    Parameters
    ----------
    path : the uploaded file (a safetensors file or a torch.save zip; its format was sniffed already).
    arch : the job's arch spec (valid; not ``{"family": "onnx"}``).
    max_bytes : cap on a zip's uncompressed size (the service passes ``GSCORE_MAX_CHECKPOINT_BYTES``; None:
        none), checked from its directory before any member is inflated (``CheckpointTooLarge``, a 413).

    Raises CheckpointError for a ``.pt2`` archive or a pickle with non-allowlisted globals, and
    CheckpointMismatchError when a safetensors file's keys or shapes do not fit ``arch``.
    """
    path = Path(path)
    if _starts_with_zip(path):
        names = zip_member_names(path)
        if names is None:
            raise CheckpointError(
                "cannot read this torch.save archive: not a valid zip (truncated or corrupt?)"
            )
        _refuse_torch_export_archive(path)
        from gscore.inputs.archives import CheckpointTooLarge, check_zip_budget

        check_zip_budget(path, max_bytes, what="checkpoint", error=CheckpointTooLarge)
        from gscore.inputs.checkpoints.loading import UNSAFE_PICKLE_DETAIL
        from gscore.inputs.checkpoints.preflight import allowed_pickle_globals

        refused = refused_pickle_globals(path, allowed_pickle_globals())
        if refused:
            raise CheckpointError(UNSAFE_PICKLE_DETAIL.format(what=f" (it references {listing(refused)})"))
        return
    from gscore.inputs.checkpoints.preflight import expected_state_shapes, state_shapes_mismatch

    expected = expected_state_shapes(arch)
    if expected is None:
        return
    detail = state_shapes_mismatch(read_safetensors_shapes(path), expected)
    if detail:
        raise CheckpointMismatchError(detail)


def check_model_upload(path: str | Path, max_bytes: int, max_tensor_bytes: int | None = None) -> None:
    """Refuse a ``model`` upload that is no self-contained, convertible ONNX file.

    Parameters
    ----------
    path : the uploaded file.
    max_bytes : the upload cap (``Settings.max_upload_bytes``).
    max_tensor_bytes : cap on the bytes its tensors declare (the service passes
        ``GSCORE_MAX_CHECKPOINT_BYTES``; None: none).

    Raises CheckpointError for a torch.export ``.pt2`` archive (pointing to ONNX), a zip that is a torch
    checkpoint (it goes in the ``checkpoint`` part), and everything ``read_onnx_file`` refuses.
    """
    path = Path(path)
    if _starts_with_zip(path):
        _refuse_torch_export_archive(path)
        raise CheckpointError(
            "the 'model' part takes an .onnx file; this is a zip archive (a torch.save checkpoint goes in the "
            "'checkpoint' part, with an arch in the spec)"
        )
    from gscore.inputs.onnx_models import read_onnx_file

    read_onnx_file(path, max_bytes=max_bytes, max_tensor_bytes=max_tensor_bytes)


def npz_dataset_summary(path: str | Path, name: str, max_bytes: int) -> dict[str, Any]:
    """Read an uploaded ``.npz`` probe set as the worker will (bounded by ``max_bytes``, see
    ``gscore.inputs.archives``) and summarize it: ``classes``, ``hierarchy``, ``subclasses``, ``samples`` per split.
    Raises ``DatasetError`` (``DatasetTooLarge`` over the cap) for what the worker would refuse."""
    from gscore.inputs.datasets import read_npz_probe_set

    train = read_npz_probe_set(Path(path), split="train", name=name, max_bytes=max_bytes)
    samples = {"train": len(train)}
    try:
        samples["test"] = len(read_npz_probe_set(Path(path), split="test", name=name, max_bytes=max_bytes))
    except DatasetError as exc:
        if isinstance(exc, DatasetTooLarge):
            raise
        # the test split is optional
    return {
        "classes": train.num_classes,
        "hierarchy": train.sub is not None,
        "subclasses": None if train.sub is None else int(train.sub.unique().numel()),
        "samples": samples,
    }
