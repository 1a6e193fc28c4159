"""Cheap, torch-free reads of an uploaded checkpoint that decide whether to refuse it at submission.

Nothing here unpickles or loads a weight; the worker loads checkpoints with the engine's safe reader
(``gscore.inputs.checkpoints.loading``). What is read:

- the first bytes (``checkpoint_format_problem``): a torch.save zip archive or a safetensors file;
- a safetensors header (``read_safetensors_shapes``, with ``safetensors.safe_open``), so the
  parameter names and shapes are known without reading a tensor;
- a zip's member names (``zip_member_names``), which tell a torch.export ``.pt2`` archive apart;
- the pickle opcodes of a torch zip's ``data.pkl`` (``pickle_globals``, with ``pickletools.genops``): the
  ``module.name`` of every global the pickle would import, to compare with torch's weights_only allowlist.
"""

from __future__ import annotations

import pickletools
import struct
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Collection
from pathlib import Path

from safetensors import SafetensorError, safe_open

from gscore.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = 0x80
MAX_SAFETENSORS_HEADER = 8 * 1024 * 1024  # thousands of tensors take < 1 MiB; parsing holds the GIL
MAX_PICKLE_BYTES = 16 * 1024 * 1024  # a state_dict's data.pkl is KBs; a bigger one holds Python objects
MAX_LISTED = 5


def checkpoint_format_problem(head: bytes, size: int) -> str | None:
    """None if ``head`` looks like a torch zip checkpoint or a safetensors file, else why it is refused."""
    if head.startswith(ZIP_MAGIC):
        return None
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= min(MAX_SAFETENSORS_HEADER, size - 8) and head[8:9] == b"{":
            return None
        if MAX_SAFETENSORS_HEADER < header_len <= size - 8 and head[8:9] == b"{":
            return (
                f"the safetensors header is {header_len} bytes, over the limit of {MAX_SAFETENSORS_HEADER} "
                "(a state_dict's header takes KBs); refused before parsing"
            )
    if head[:1] and head[0] == PICKLE_PROTOCOL_OPCODE:
        return (
            "legacy (non-zip) pickle checkpoints are refused: save with torch.save (torch >= 1.6 zip format) "
            "or, better, with safetensors"
        )
    return (
        "not a checkpoint: expected a safetensors file or a torch.save zip archive (an .onnx model is sent "
        "as the 'model' file part, without an arch)"
    )


def read_safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a safetensors file, from its header alone.

    Parameters
    ----------
    path : a safetensors file; ``safetensors.safe_open`` parses and validates its header (the same
        parser the worker's ``safetensors.torch.load_file`` uses), no tensor is read.

    Returns
    -------
    dict mapping each tensor name to its shape (a tuple of ints; ``()`` for a scalar), in the order
    ``safe_open(...).keys()`` gives (the order the worker's loaded state_dict has); the optional
    ``__metadata__`` entry is left out.

    Raises CheckpointError when the header is truncated, invalid or does not fit the file, or the file
    holds no tensor.
    """
    try:
        with safe_open(str(path), framework="numpy") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"not a valid safetensors file: {exc}"[:300]) from None
    if not shapes:
        raise CheckpointError("checkpoint contains no tensors")
    return shapes


def zip_member_names(path: str | Path) -> list[str] | None:
    """The member names of a zip archive (its central directory only), or None if it is no readable zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """``(opcode name, "module.name")`` for every opcode of a pickle that imports a global.

    Parameters
    ----------
    data : the pickle's bytes; they are only tokenized (``pickletools.genops``), never unpickled.

    Returns
    -------
    list, in pickle order, Python 2 names mapped as the unpickler maps them (``__builtin__.set`` ->
    ``builtins.set``). ``GLOBAL`` and ``INST`` carry the name inline; a ``STACK_GLOBAL`` takes it from
    the two strings pushed before it and is reported as ``"?"`` (the weights-only unpickler refuses that
    opcode whatever it names).

    Raises CheckpointError for a truncated or corrupt pickle.
    """
    found: list[tuple[str, str]] = []
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                module, _, name = str(argument).partition(" ")
                module, name = _python3_name(module, name)
                found.append((opcode.name, f"{module}.{name}"))
            elif opcode.name == "STACK_GLOBAL":
                found.append((opcode.name, "?"))
    except (ValueError, EOFError) as exc:  # genops raises ValueError on unknown or truncated opcodes
        raise CheckpointError(f"the checkpoint's pickle is truncated or corrupt: {exc}"[:300]) from None
    return found


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 pickles name Python 2 modules (``__builtin__``); the unpickler maps them as pickle does."""
    if (module, name) in NAME_MAPPING:
        return NAME_MAPPING[(module, name)]
    return IMPORT_MAPPING.get(module, module), name


def refused_pickle_globals(path: str | Path, allowed: Collection[str]) -> list[str]:
    """The globals of a torch zip checkpoint's pickles that the weights-only unpickler would refuse.

    Parameters
    ----------
    path : a torch.save zip archive.
    allowed : ``"module.name"`` strings the worker's ``torch.load(..., weights_only=True)`` accepts
        (``gscore.inputs.checkpoints.preflight.allowed_pickle_globals()``).

    Returns
    -------
    The refused names (``GLOBAL``/``INST`` names outside ``allowed``, and ``"STACK_GLOBAL"`` for that
    opcode), in order, without repeats; empty for a plain state_dict. Raises CheckpointError for a zip
    that cannot be read or whose pickle is over ``MAX_PICKLE_BYTES`` or corrupt.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if info.filename.endswith(".pkl")]
            if not members:
                raise CheckpointError("not a torch.save archive: the zip holds no data.pkl")
            refused: dict[str, None] = {}
            for info in members:
                if info.file_size > MAX_PICKLE_BYTES:
                    raise CheckpointError(
                        f"the checkpoint's {info.filename} is {info.file_size} bytes (a state_dict needs far "
                        f"less than {MAX_PICKLE_BYTES}); save model.state_dict() alone, or use safetensors"
                    )
                with archive.open(info) as member:
                    data = member.read(MAX_PICKLE_BYTES + 1)
                for opcode, name in pickle_globals(data):
                    if opcode == "STACK_GLOBAL":
                        refused["STACK_GLOBAL"] = None
                    elif name not in allowed:
                        refused[name] = None
            return list(refused)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise CheckpointError(
            f"cannot read this torch.save archive (truncated or corrupt?): {exc}"[:300]
        ) from None


def listing(names: list[str]) -> str:
    """``"a, b, c"`` with at most ``MAX_LISTED`` names and a count of the rest."""
    text = ", ".join(names[:MAX_LISTED])
    return text + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
