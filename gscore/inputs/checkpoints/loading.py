"""Safe checkpoint I/O: read a state_dict without executing code, load it strictly, save as safetensors.

Conventions:

- Formats: safetensors (chosen by the ``.safetensors`` suffix or by sniffing its header, so stored uploads
  may have any name) and everything else through ``torch.load(path, map_location="cpu",
  weights_only=True)``: ``weights_only=True`` is always passed explicitly (so the
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` environment variable cannot turn it off) and there is never a
  fallback to an unsafe load. Pickle loading needs torch >= 2.10 (earlier versions have known
  weights_only bypasses); safetensors files load on any version.
- Accepted layouts: a plain ``{name: tensor}`` mapping, or one nested under ``"state_dict"`` or ``"model"``
  (training checkpoints that also hold epoch/optimizer entries, e.g. a PyTorch Lightning ``.ckpt`` with
  ``optimizer_states``, ``hyper_parameters``, ``epoch``...; only the nested mapping is used).
- Wrapper prefixes: ``load_into`` matches a state_dict whose keys all carry one wrapper prefix
  (``WRAPPER_PREFIXES``: ``module.`` from DataParallel/DDP, ``_orig_mod.`` from torch.compile, ``model.``
  and ``net.`` from training wrappers such as Lightning), possibly stacked (``_orig_mod.module.``), when the
  unprefixed keys are exactly the architecture's; the returned ``LoadReport`` names the removed prefix.
  A prefix is never removed when the keys already fit, nor when the stripped keys do not fit.
- torch.export archives (``.pt2``, recognised by suffix or by their zip layout with ``archive_format``)
  are refused before any unpickling: ``torch.export.load`` unpickles parts of the archive with
  ``weights_only=False``. Export to ONNX instead (gscore/onnx_models.py).
- Everything that is not a mapping of str -> Tensor is refused with ``CheckpointError``; nothing is ever
  unpickled beyond what torch's weights-only unpickler allows.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as _safetensors_load_file
from safetensors.torch import save_file as _safetensors_save_file
from torch import nn
from torch.torch_version import TorchVersion

from gscore.errors import CheckpointError, CheckpointMismatchError

MIN_TORCH_FOR_PICKLE = "2.10"
NESTED_STATE_DICT_KEYS = ("state_dict", "model")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
PT2_MARKER_FILES = ("archive_format", "archive_version")  # members of a torch.export.save zip
MAX_LISTED = 5  # keys listed per category in a mismatch message

UNSAFE_PICKLE_DETAIL = (
    "this file is a pickled nn.Module or contains arbitrary Python objects{what}; it cannot be loaded "
    "safely. Save model.state_dict() (torch.save(model.state_dict(), path)) or use safetensors "
    "(safetensors.torch.save_file(model.state_dict(), path))"
)
PT2_DETAIL = (
    "this is a torch.export archive (.pt2); it is refused because loading it (torch.export.load) unpickles "
    "parts of the archive without weights_only protection. Export the model to ONNX instead "
    "(torch.onnx.export(model, (example_input,), 'model.onnx', dynamo=True)) and score the .onnx file, "
    "or upload model.state_dict() as .safetensors/.pt with an arch spec"
)


@dataclass(frozen=True)
class LoadReport:
    """What ``load_into`` did to fit the checkpoint to the architecture.

    ``removed_prefix``: the wrapper prefix stripped from every key (e.g. ``"module."`` or
    ``"_orig_mod.module."``), or None when the keys fitted as they were.
    """

    removed_prefix: str | None = None


def read_state_dict(path: str | Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into ``{parameter name: CPU tensor}`` without running any code from it.

    Keys are returned as stored (wrapper prefixes are removed by ``load_into``, which knows the
    architecture). Raises CheckpointError for a missing, empty, truncated, corrupt or unsafe file, a
    torch.export ``.pt2`` archive, or one whose content is not a state_dict (see the module docstring for
    accepted layouts); ``CheckpointTooLarge`` for a torch.save zip whose members inflate past ``max_bytes``
    (None: no cap; the service passes ``GSCORE_MAX_CHECKPOINT_BYTES``), checked from its directory before
    ``torch.load`` reads it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path.name}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a regular file: {path.name}")
    if path.stat().st_size == 0:
        raise CheckpointError("checkpoint file is empty (0 bytes)")
    if path.suffix.lower() == ".pt2" or looks_like_torch_export_archive(path):
        raise CheckpointError(PT2_DETAIL)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        loaded: Any = _read_safetensors(path)
    else:
        _check_archive_size(path, max_bytes)
        loaded = _read_torch_pickle(path)
    return _extract_state_dict(loaded)


def _check_archive_size(path: Path, max_bytes: int | None) -> None:
    """``CheckpointTooLarge`` when a zip's members declare more than ``max_bytes`` (torch.load inflates
    deflated records as readily as stored ones); anything that is no zip is left to ``torch.load``."""
    if max_bytes is None:
        return
    from gscore.inputs.archives import CheckpointTooLarge, check_zip_budget

    try:
        check_zip_budget(path, max_bytes, what="checkpoint", error=CheckpointTooLarge)
    except (zipfile.BadZipFile, OSError, ValueError):
        pass  # not a zip (a legacy pickle) or corrupt: torch.load reports it


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
    """Copy ``state_dict`` into ``model`` strictly (same keys, same shapes; dtypes are cast).

    When the keys do not fit as they are but all carry a wrapper prefix (``WRAPPER_PREFIXES``, possibly
    stacked) and the unprefixed keys are exactly the model's, the prefix is removed; the returned
    ``LoadReport.removed_prefix`` names it (None when nothing was removed). A missing BatchNorm ``num_batches_tracked`` counter (checkpoints from old or converted code) is tolerated
    and keeps the model's value. Raises CheckpointMismatchError naming missing keys, unexpected keys and
    shape mismatches (``key: checkpoint [..] vs model [..]``), a few of each with counts; the lists are also
    on the error as ``missing``, ``unexpected`` and ``shape_mismatches``.
    """
    expected = model.state_dict()
    given, removed_prefix = strip_wrapper_prefix(dict(state_dict), expected.keys())
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in given:
            given[key] = expected[key]
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    shape_mismatches = [
        (key, tuple(given[key].shape), tuple(expected[key].shape))
        for key in expected
        if key in given and tuple(given[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or shape_mismatches:
        error = CheckpointMismatchError(_mismatch_detail(missing, unexpected, shape_mismatches))
        error.missing, error.unexpected, error.shape_mismatches = missing, unexpected, shape_mismatches
        raise error
    try:
        model.load_state_dict(given, strict=True)
    except RuntimeError as exc:  # e.g. a tensor that cannot be cast to the parameter's dtype
        raise CheckpointMismatchError(f"checkpoint does not match the architecture: {exc}") from None
    return LoadReport(removed_prefix=removed_prefix)


def strip_wrapper_prefix(
    state_dict: dict[str, torch.Tensor], expected_keys: Iterable[str]
) -> tuple[dict[str, torch.Tensor], str | None]:
    """``(state_dict with the wrapper prefix removed, the prefix)`` when that makes the keys fit.

    Keys fit when they equal ``expected_keys`` up to missing BatchNorm ``num_batches_tracked`` counters.
    Prefixes from ``WRAPPER_PREFIXES`` are peeled one at a time while every key carries the same one;
    the first peel whose keys fit wins. Returns ``(state_dict, None)`` unchanged when the keys already fit
    or no peel makes them fit (``load_into`` then reports the mismatch on the original keys).
    """
    expected = set(expected_keys)
    required = {key for key in expected if not key.endswith("num_batches_tracked")}

    def fits(keys: set[str]) -> bool:
        return required <= keys <= expected

    if fits(set(state_dict)):
        return state_dict, None
    current, removed = state_dict, ""
    while current:
        prefix = next((p for p in WRAPPER_PREFIXES if all(key.startswith(p) for key in current)), None)
        if prefix is None:
            break
        current = {key[len(prefix) :]: value for key, value in current.items()}
        removed += prefix
        if fits(set(current)):
            return current, removed
    return state_dict, None


def looks_like_torch_export_archive(path: str | Path) -> bool:
    """True for a zip whose members include torch.export's ``archive_format``/``archive_version`` files.

    Only the zip's central directory is read (member names); nothing is extracted or unpickled.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # torch.load reports the corrupt archive
    return any(name.rsplit("/", 1)[-1] in PT2_MARKER_FILES for name in names)


def save_safetensors(model: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write ``model.state_dict()`` (or a state_dict) to ``path`` as safetensors, atomically.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing storage (tied weights) are
    cloned so every key is stored and the file loads back strictly with ``load_into``.
    """
    state_dict = model.state_dict() if isinstance(model, nn.Module) else model
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen_storages and tensor.numel() > 0:
            tensor = tensor.clone()
        seen_storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _safetensors_save_file(tensors, tmp_name, metadata={"format": "pt"})
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors starts with a little-endian u64 header length followed by a JSON object."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return 2 <= header_length <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return _safetensors_load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: never fall through to another loader
        with path.open("rb") as handle:
            head = handle.read(4)
        if head.startswith((b"PK\x03\x04", b"\x80")):  # a torch.save zip or a raw pickle
            raise CheckpointError(
                "this file is named .safetensors but holds a PyTorch torch.save() archive; rename it to .pt "
                "(it is then loaded with weights_only=True) or convert it with safetensors.torch.save_file"
            ) from None
        raise CheckpointError(
            f"not a valid safetensors file (truncated or corrupt?): {_short(exc)}"
        ) from None


def _read_torch_pickle(path: Path) -> Any:
    if TorchVersion(torch.__version__) < MIN_TORCH_FOR_PICKLE:
        raise CheckpointError(
            f"loading pickle-based checkpoints needs torch >= {MIN_TORCH_FOR_PICKLE} (this worker has "
            f"{torch.__version__}); upload a .safetensors file instead"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # never retry with weights_only=False
        message = str(exc)
        if "Weights only load failed" in message or "Unsupported global" in message:
            found = re.search(r"GLOBAL ([\w.]+)", message)
            what = f" (it references {found.group(1)})" if found else ""
            raise CheckpointError(UNSAFE_PICKLE_DETAIL.format(what=what)) from None
        raise CheckpointError(
            "cannot read this file as a PyTorch checkpoint (truncated, corrupt, or not a checkpoint): "
            f"{_short(exc)}"
        ) from None


def _extract_state_dict(loaded: Any) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"checkpoint holds a {type(loaded).__name__}, not a state_dict (a mapping of parameter name -> "
            "tensor); save model.state_dict()"
        )
    if not _is_tensor_mapping(loaded):
        for key in NESTED_STATE_DICT_KEYS:
            if isinstance(loaded.get(key), Mapping) and _is_tensor_mapping(loaded[key]):
                loaded = loaded[key]
                break
    bad = [
        key
        for key, value in loaded.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad:
        listed = ", ".join(f"{key!r} ({type(loaded[key]).__name__})" for key in bad[:MAX_LISTED]) + (
            f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        )
        raise CheckpointError(
            f"checkpoint is not a state_dict: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not "
            f"str -> tensor: {listed}. Save model.state_dict(), or nest it under 'state_dict' or 'model'"
        )
    if not loaded:
        raise CheckpointError("checkpoint contains no tensors")
    return dict(loaded)


def _is_tensor_mapping(value: Mapping[Any, Any]) -> bool:
    return bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _mismatch_detail(
    missing: list[str],
    unexpected: list[str],
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    def listing(items: list[str]) -> str:
        text = ", ".join(items[:MAX_LISTED])
        return text + (f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")

    def plural(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith('h') else 's'}"

    parts = []
    if missing:
        parts.append(f"{plural(len(missing), 'missing key')} ({listing(missing)})")
    if unexpected:
        parts.append(f"{plural(len(unexpected), 'unexpected key')} ({listing(unexpected)})")
    if shape_mismatches:
        shapes = [
            f"{key}: checkpoint {list(got)} vs model {list(want)}" for key, got, want in shape_mismatches
        ]
        parts.append(f"{plural(len(shape_mismatches), 'shape mismatch')} ({listing(shapes)})")
    detail = "checkpoint does not match the architecture: " + "; ".join(parts)
    hint = _prefix_hint(missing, unexpected)
    return detail + (f". {hint}" if hint else "")


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """Name a consistent extra key prefix (e.g. Lightning's 'model.'), else point at the arch spec."""
    if missing and unexpected:
        first = unexpected[0]
        for key in missing:
            if first.endswith("." + key):
                prefix = first[: -len(key)]
                if all(k.startswith(prefix) for k in unexpected):
                    return (
                        f"The checkpoint keys carry the prefix {prefix!r}; save the inner module's state_dict"
                    )
    return "Check that the arch spec (family, depth, width, num_classes, ...) is the one it was trained with"


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
