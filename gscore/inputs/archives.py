"""Bounded reads of untrusted zip archives (``.npz`` datasets, ``torch.save`` checkpoints).

A zip member's declared size is a claim, not a fact, and a few KB of deflate can inflate to GBs. So,
before any data is read or allocated:

    infos = check_zip_budget(path, max_bytes, what="dataset", error=DatasetTooLarge)
    array = read_npy_member(archive, info, label="data.npz")   # header checked, then a bounded read

``check_zip_budget`` sums every member's ``ZipInfo.file_size`` (the central directory's claim) against
the cap; ``read_npy_member`` parses a ``.npy`` header, checks that shape x itemsize (Python integers: no
overflow) is what the member declares, and reads exactly that many bytes (``ZipExtFile.read`` never
returns more than asked, and zipfile stops at the declared size and checks the CRC), so a lying header
cannot inflate past the cap. Nothing here unpickles: object dtypes are refused.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gscore.errors import CheckpointError, DatasetError

READ_CHUNK_BYTES = 1 << 22
ZIP_MAGIC = b"PK\x03\x04"

__all__ = [
    "CheckpointTooLarge",
    "DatasetTooLarge",
    "check_input_archives",
    "check_zip_budget",
    "read_npy_member",
]


class DatasetTooLarge(DatasetError):
    """A dataset archive declares (or inflates to) more bytes than ``GSCORE_MAX_DATASET_BYTES``."""

    type = "dataset-too-large"
    title = "Dataset too large"
    http_status = 413


class CheckpointTooLarge(CheckpointError):
    """A checkpoint archive declares (or inflates to) more bytes than ``GSCORE_MAX_CHECKPOINT_BYTES``."""

    type = "checkpoint-too-large"
    title = "Checkpoint too large"
    http_status = 413


def _mib(size: int) -> str:
    return f"{size} bytes ({size / 2**20:.1f} MiB)"


def check_zip_budget(
    path: str | Path,
    max_bytes: int | None,
    *,
    what: str,
    error: type[DatasetError] | type[CheckpointError],
) -> list[zipfile.ZipInfo]:
    """The members of the zip at ``path``, once their declared uncompressed sizes fit ``max_bytes``.

    Parameters
    ----------
    path : a zip archive (only its central directory is read).
    max_bytes : cap on the sum of the members' ``file_size`` (None: no cap; the engine's callers that
        score their own files pass none, the service and its workers pass ``GSCORE_MAX_*_BYTES``).
    what : ``"dataset"`` or ``"checkpoint"``, for the message.
    error : raised (``DatasetTooLarge``/``CheckpointTooLarge``) naming the largest member and its size.

    Raises ``error`` when over the cap; ``zipfile.BadZipFile``/``OSError`` for an unreadable archive.
    """
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    total = sum(info.file_size for info in infos)
    if max_bytes is not None and total > max_bytes:
        largest = max(infos, key=lambda info: info.file_size)
        raise error(
            f"the {what} archive inflates to {_mib(total)}, over the limit of {_mib(max_bytes)}; its largest "
            f"member {largest.filename!r} is {_mib(largest.file_size)} uncompressed "
            f"({largest.compress_size} bytes stored)"
        )
    return infos


def check_input_archives(
    checkpoint: str | Path, dataset: str | Path | None, *, max_checkpoint_bytes: int, max_dataset_bytes: int
) -> None:
    """What a worker checks before the engine opens a job's files: a torch.save zip ``checkpoint`` (a
    safetensors or ONNX file is no zip and is left alone) and an ``.npz`` ``dataset`` fit their caps, from
    their zip directories alone (``CheckpointTooLarge`` / ``DatasetTooLarge``). A file that is no readable
    zip is left to the engine's reader, which reports it."""
    with open(checkpoint, "rb") as handle:
        is_zip = handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    try:
        if is_zip:
            check_zip_budget(checkpoint, max_checkpoint_bytes, what="checkpoint", error=CheckpointTooLarge)
        if dataset is not None:
            check_zip_budget(dataset, max_dataset_bytes, what="dataset", error=DatasetTooLarge)
    except zipfile.BadZipFile:
        return


def _read_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy format version {version}")


def read_npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> np.ndarray:
    """The array stored in member ``info`` (an ``.npy`` file) of an ``.npz`` archive.

    The ``.npy`` header is parsed first; its shape x itemsize must equal what the member declares after
    its header (``info.file_size``, which :func:`check_zip_budget` bounded), before a byte of data is read
    or allocated; then exactly that many bytes are read. Raises ``DatasetError`` for an object array (it
    would need pickle), a header numpy cannot parse, a header that declares more data than the member
    holds, data shorter than declared, or an array that cannot be allocated.
    """
    key = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as stream:
            shape, fortran_order, dtype = _read_header(stream)
            if dtype.hasobject:
                raise DatasetError(
                    f"{label}: {key} is an object array, which would need pickle to load; refused. "
                    "Store plain numeric arrays (numpy.savez with uint8/float x and integer labels)"
                )
            count = math.prod(shape)
            size = count * dtype.itemsize
            stored = info.file_size - stream.tell()
            if size != stored:
                raise DatasetError(
                    f"{label}: {key} declares shape {shape} of {dtype} ({_mib(size)}) but its member "
                    f"{info.filename!r} holds {_mib(max(stored, 0))} of data; refused"
                )
            array = np.empty(count, dtype=dtype)
            _read_exactly(stream, array.view(np.uint8), size, f"{label}: {key}")
    except ValueError as exc:  # numpy's header parser
        raise DatasetError(f"{label}: cannot read {key} ({exc})"[:300]) from None
    except MemoryError:  # numpy's _ArrayMemoryError: bad input, not a server fault
        raise DatasetError(f"{label}: {key} ({_mib(size)}) cannot be allocated on this machine") from None
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _read_exactly(stream: BinaryIO, target: np.ndarray, size: int, what: str) -> None:
    """Fill the uint8 array ``target`` (``size`` bytes) from ``stream`` in bounded chunks."""
    view = memoryview(target)
    filled = 0
    while filled < size:
        chunk = stream.read(min(size - filled, READ_CHUNK_BYTES))
        if not chunk:
            raise DatasetError(f"{what} is truncated: {filled} of {size} declared bytes")
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
