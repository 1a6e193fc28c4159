"""`make test` hands the slowest files out first (tests/conftest.py): every file it names exists, once."""

from __future__ import annotations

from conftest import REPO_ROOT, SLOWEST_FILES


def test_every_slowest_file_exists_once() -> None:
    missing = [name for name in SLOWEST_FILES if not (REPO_ROOT / "tests" / name).is_file()]
    assert missing == [], f"renamed or removed: update SLOWEST_FILES in tests/conftest.py: {missing}"
    assert len(set(SLOWEST_FILES)) == len(SLOWEST_FILES)
