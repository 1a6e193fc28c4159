"""Content-addressed storage of uploaded checkpoints and datasets, written while streaming with a size cap."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

COPY_CHUNK_BYTES = 1 << 20


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
        """Put the upload at ``target`` atomically: renamed when on the same filesystem, else copied to a
        temp file beside ``target`` (its filesystem) and renamed there; never a cross-device rename."""
        sink.close()
        if target.exists():
            sink.path.unlink(missing_ok=True)
            return target
        try:
            os.replace(sink.path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_then_rename(sink.path, target)
            sink.path.unlink(missing_ok=True)
        return target


def _copy_then_rename(source: Path, target: Path) -> None:
    """Copy ``source`` to a temp file in ``target``'s directory, flush it to disk, rename it to ``target``."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, COPY_CHUNK_BYTES)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
