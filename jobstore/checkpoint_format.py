"""A cheap format check of an uploaded checkpoint's first bytes. The API never unpickles anything;
the worker loads checkpoints with the engine's safe reader."""

from __future__ import annotations

import struct

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = 0x80
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def checkpoint_format_problem(head: bytes, size: int) -> str | None:
    """None if ``head`` looks like a torch zip checkpoint or a safetensors file, else why it is refused."""
    if head.startswith(ZIP_MAGIC):
        return None
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= min(MAX_SAFETENSORS_HEADER, size - 8) and head[8:9] == b"{":
            return None
    if head[:1] and head[0] == PICKLE_PROTOCOL_OPCODE:
        return (
            "legacy (non-zip) pickle checkpoints are refused: save with torch.save (torch >= 1.6 zip format) "
            "or, better, with safetensors"
        )
    return "not a checkpoint: expected a safetensors file or a torch.save zip archive"
