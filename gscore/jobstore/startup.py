"""Race-free start-up: the API and every worker prepare the shared state once, under locks, before they
serve: the job tables (:func:`gscore.jobstore.db.prepare_database`, Alembic under its own lock) and the embedded
broker's tables (:func:`prepare_broker`, under a file lock in the data directory)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from gscore.jobstore.broker import prepare_broker_tables
from gscore.jobstore.db import prepare_database
from gscore.settings import Settings

LOCK_FILE_NAME = ".broker-startup.lock"


@contextmanager
def broker_startup_lock(settings: Settings) -> Iterator[None]:
    """An exclusive file lock in ``data_dir``, shared by every process of an embedded setup."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / LOCK_FILE_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_broker(settings: Settings) -> None:
    """Create the embedded broker's tables and queue rows once (a no-op on Redis)."""
    if not settings.resolved_broker_url.startswith("sqla+"):
        return
    with broker_startup_lock(settings):
        prepare_broker_tables(settings)


def prepare_state(settings: Settings) -> None:
    """Everything a process needs before it serves: the database schema, then the broker's tables."""
    prepare_database(settings)
    prepare_broker(settings)
