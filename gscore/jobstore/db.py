"""SQLAlchemy tables (jobs, uploaded datasets, stage timings, idempotency keys, API keys), the engine/session
factory, and :func:`prepare_database`: the one place that creates or upgrades the schema (Alembic, under a lock).
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

if TYPE_CHECKING:
    from gscore.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000
DATABASE_TIMEOUT_SECONDS = 5.0  # connect and pool timeout (GSCORE_DATABASE_TIMEOUT_SECONDS in services)
STATEMENT_TIMEOUT_FACTOR = 6  # PostgreSQL statement_timeout = 6 x the connect timeout (30 s by default)
MIGRATIONS_LOCATION = "gscore.jobstore:migrations"
BASELINE_REVISION = "0001"  # the first release's schema (made by create_all, no alembic_version table)
POSTGRES_MIGRATION_LOCK = zlib.crc32(b"gscore-migrations")  # pg_advisory_lock key of the schema upgrade
log = logging.getLogger("gscore.db")
# Alembic's own INFO lines (its plugins, "Context impl SQLiteImpl", each revision) are noise at every start;
# ours says which schema upgrade ran.
for _name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (portable between SQLite and PostgreSQL), read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One scoring job. This table, not Celery's result backend, is the truth about a job."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    queue: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    worker: Mapped[str | None] = mapped_column(String(255))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_stage: Mapped[str | None] = mapped_column(String(64))
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedupe_key: Mapped[str] = mapped_column(String(64), index=True)
    collection: Mapped[str | None] = mapped_column(String(128), index=True)
    model_name: Mapped[str] = mapped_column(String(256))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_type: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64), index=True)  # API key name; None: made keyless
    # the webhook outbox (gscore.jobstore.notifications): pending until the event of the job's final state is
    # delivered (or given up: failed); None without a notify_url
    notify_url: Mapped[str | None] = mapped_column(String(2048))
    notify_state: Mapped[str | None] = mapped_column(String(16), index=True)
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0)
    notify_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notify_last_status: Mapped[int | None] = mapped_column(Integer)
    notify_last_error: Mapped[str | None] = mapped_column(String(512))
    notify_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UploadedDataset(Base):
    """A probe set uploaded through the API and stored content-addressed."""

    __tablename__ = "datasets"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True, default="")  # owner; '' when keyless
    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # unique per owner
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str | None] = mapped_column(String(64))  # API key name; None: uploaded keyless


class StageTiming(Base):
    """Running totals of the seconds that succeeded jobs spent in each engine stage (for ``/metrics``)."""

    __tablename__ = "stage_timings"

    stage: Mapped[str] = mapped_column(String(64), primary_key=True)
    seconds_sum: Mapped[float] = mapped_column(Float, default=0.0)
    jobs: Mapped[int] = mapped_column(Integer, default=0)


class IdempotencyKey(Base):
    """The job created for an ``Idempotency-Key``: a retried POST gets the first answer."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """An API key: its public id, the owner name its jobs are filed under, and the sha256 of its secret."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    admin: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # no memory-mapped I/O: a read-only or full disk must be an error (503), not a SIGBUS that kills us
    cursor.execute("PRAGMA mmap_size=0")
    cursor.close()


def make_engine(url: str, timeout_seconds: float = DATABASE_TIMEOUT_SECONDS) -> Engine:
    """An engine for ``url`` whose every call is bounded in time.

    SQLite gets WAL mode and a busy timeout (one writer at a time); PostgreSQL a connect timeout and a
    statement timeout (``STATEMENT_TIMEOUT_FACTOR`` x ``timeout_seconds``). Waiting for a pooled
    connection gives up after ``timeout_seconds`` (``sqlalchemy.exc.TimeoutError``).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_timeout=timeout_seconds,
        )
        event.listen(engine, "connect", _tune_sqlite)
    elif url.startswith("postgresql"):
        statement_ms = int(timeout_seconds * STATEMENT_TIMEOUT_FACTOR * 1000)
        connect_args = {
            "connect_timeout": max(int(round(timeout_seconds)), 1),
            "options": f"-c statement_timeout={statement_ms}",
        }
        engine = create_engine(
            url, pool_pre_ping=True, pool_timeout=timeout_seconds, connect_args=connect_args
        )
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_timeout=timeout_seconds)
    return engine


def make_session_factory(
    url: str, *, migrate: bool = True, timeout_seconds: float = DATABASE_TIMEOUT_SECONDS
) -> sessionmaker:
    """A session factory bound to ``url`` (an engine of :func:`make_engine` with ``timeout_seconds``); with
    ``migrate`` the schema is first brought to the latest revision (:func:`migrate_database`: a no-op apart
    from a lock and one query when it is current)."""
    if migrate:
        migrate_database(url)
    return sessionmaker(make_engine(url, timeout_seconds), expire_on_commit=False)


def prepare_database(settings: Settings) -> str:
    """Create or upgrade the database of ``settings`` before the API or a worker serves.

    Parameters
    ----------
    settings : Settings
        Its ``resolved_database_url`` is migrated; ``data_dir`` is created (the SQLite files live there).

    Returns
    -------
    str
        The schema revision the database is at afterwards (the latest one).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return migrate_database(settings.resolved_database_url)


def migrate_database(url: str) -> str:
    """Upgrade the database at ``url`` to the latest Alembic revision, once, under a lock.

    Every process (API replicas, workers) may call it at once: PostgreSQL serialises them with an advisory
    lock, SQLite with a file lock next to the database file (``<db>.migrate.lock``). A database made by the
    first release (its tables, no ``alembic_version``) is stamped with the baseline revision first, so it is
    upgraded in place with its rows intact.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the job store.

    Returns
    -------
    str
        The revision the database is at (the latest one).
    """
    engine = make_engine(url)
    try:
        with _migration_lock(engine) as connection:
            return _upgrade(connection)
    finally:
        engine.dispose()


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_LOCATION)
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> str:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from gscore.jobstore.migrations.baseline import baseline_metadata

    config = _alembic_config(connection)
    head = ScriptDirectory.from_config(config).get_current_head()
    current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return str(head)
    tables = set(inspect(connection).get_table_names())
    if current is None and "jobs" in tables:
        log.warning("database made before migrations existed: stamping revision %s", BASELINE_REVISION)
        baseline_metadata().create_all(connection, checkfirst=True)  # any table that release had not made yet
        connection.commit()
        command.stamp(config, BASELINE_REVISION)
        connection.commit()
    log.info("upgrading the database schema from %s to %s", current or "nothing", head)
    command.upgrade(config, "head")
    connection.commit()
    return str(head)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection held while this process alone may change the schema."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": POSTGRES_MIGRATION_LOCK})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": POSTGRES_MIGRATION_LOCK})
                connection.commit()
        return
    database = make_url(str(engine.url)).database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":  # one process only (in-memory), or a server with DDL locks
        with engine.connect() as connection:
            yield connection
        return
    import fcntl

    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
