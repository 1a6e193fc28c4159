"""Content-addressed storage of uploaded checkpoints and datasets, written while streaming with a size cap."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class UploadTooLarge(Exception):
    """An upload went past the configured byte limit (it was not kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds {limit} bytes")
        self.limit = limit


class UploadSink:
    """A temp file that counts and hashes what is written and refuses to grow past ``max_bytes``."""

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".part")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""  # the first bytes, for format sniffing

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        self._hash.update(data)
        self._file.write(data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class Storage:
    """``root/checkpoints/<sha256>``, ``root/datasets/<sha256>.npz`` and ``root/tmp`` for uploads in flight."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoints_dir = root / "checkpoints"
        self.datasets_dir = root / "datasets"
        self.tmp_dir = root / "tmp"
        for directory in (self.checkpoints_dir, self.datasets_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def new_sink(self, max_bytes: int) -> UploadSink:
        return UploadSink(self.tmp_dir, max_bytes)

    def checkpoint_path(self, sha256: str) -> Path:
        return self.checkpoints_dir / sha256

    def dataset_path(self, sha256: str) -> Path:
        return self.datasets_dir / f"{sha256}.npz"

    def keep_checkpoint(self, sink: UploadSink) -> Path:
        """Move a finished upload to its content address (an identical file already there is kept)."""
        return self._keep(sink, self.checkpoint_path(sink.sha256))

    def keep_dataset(self, sink: UploadSink) -> Path:
        return self._keep(sink, self.dataset_path(sink.sha256))

    @staticmethod
    def _keep(sink: UploadSink, target: Path) -> Path:
        sink.close()
        if target.exists():
            sink.path.unlink(missing_ok=True)
        else:
            os.replace(sink.path, target)
        return target
