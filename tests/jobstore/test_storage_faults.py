"""Storage keeps uploads with a copy-then-rename when the storage directory is another filesystem (no
cross-device rename, no 500), and SQLite runs without memory-mapped I/O (a read-only or full disk must be
an error, not a SIGBUS)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from gscore.jobstore import storage as storage_module
from gscore.jobstore.db import make_session_factory
from gscore.jobstore.storage import Storage


def test_an_upload_is_kept_across_filesystems_by_copy_then_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``os.replace`` across devices raises EXDEV (simulated: from the upload's temp dir to any other);
    the file is then copied beside its target and renamed there, and the temp file is removed."""
    storage = Storage(tmp_path / "storage")
    real_replace = os.replace
    renames: list[tuple[str, str]] = []

    def replace(source: str | Path, target: str | Path) -> None:
        if Path(source).parent != Path(target).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        renames.append((str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(storage_module.os, "replace", replace)
    content = os.urandom(3 * 1024 * 1024 + 7)
    sink = storage.new_sink(max_bytes=len(content))
    sink.write(content)
    kept = storage.keep_checkpoint(sink)
    assert kept == storage.checkpoint_path(hashlib.sha256(content).hexdigest())
    assert kept.read_bytes() == content
    assert not sink.path.exists() and list(storage.tmp_dir.iterdir()) == []
    assert [Path(target) for _, target in renames] == [kept]  # renamed within the target's directory
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no temp file left beside it


def test_sqlite_runs_without_memory_mapped_io(tmp_path: Path) -> None:
    sessions = make_session_factory(f"sqlite:///{tmp_path / 'gscore.db'}")
    with sessions() as session:
        assert session.execute(text("PRAGMA mmap_size")).scalar() == 0
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
