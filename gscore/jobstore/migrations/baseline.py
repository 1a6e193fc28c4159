"""The schema of the first release (tables that ``Base.metadata.create_all`` made before migrations existed).

Frozen: revision 0001 creates exactly these tables, and a database made by that release is recognised by
them and stamped 0001 before it is upgraded. Never edit it; change the schema in a new revision.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
)

BASELINE_TABLES = ("jobs", "datasets", "stage_timings", "idempotency_keys")


def baseline_metadata() -> MetaData:
    """A fresh ``MetaData`` holding the first release's four tables (jobs, datasets, stage timings,
    idempotency keys), with the same names, types and indexes."""
    metadata = MetaData()
    Table(
        "jobs",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("state", String(16), nullable=False, index=True),
        Column("queue", String(32), nullable=False),
        Column("created_at", DateTime, nullable=False, index=True),
        Column("updated_at", DateTime, nullable=False),
        Column("started_at", DateTime),
        Column("finished_at", DateTime),
        Column("attempts", Integer, nullable=False),
        Column("lease_token", String(36)),
        Column("lease_expires_at", DateTime, index=True),
        Column("worker", String(255)),
        Column("cancel_requested", Boolean, nullable=False),
        Column("progress_stage", String(64)),
        Column("progress_done", Integer, nullable=False),
        Column("progress_total", Integer, nullable=False),
        Column("checkpoint_sha256", String(64), nullable=False),
        Column("checkpoint_size", BigInteger, nullable=False),
        Column("spec", JSON, nullable=False),
        Column("dedupe_key", String(64), nullable=False, index=True),
        Column("collection", String(128), index=True),
        Column("model_name", String(256), nullable=False),
        Column("hyperparameters", JSON, nullable=False),
        Column("test_accuracy", Float),
        Column("train_accuracy", Float),
        Column("result", JSON),
        Column("error", JSON),
        Column("error_type", String(64)),
    )
    Table(
        "datasets",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("sha256", String(64), nullable=False),
        Column("size_bytes", BigInteger, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("summary", JSON, nullable=False),
    )
    Table(
        "stage_timings",
        metadata,
        Column("stage", String(64), primary_key=True),
        Column("seconds_sum", Float, nullable=False),
        Column("jobs", Integer, nullable=False),
    )
    Table(
        "idempotency_keys",
        metadata,
        Column("key", String(255), primary_key=True),
        Column("job_id", String(36), nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    return metadata
