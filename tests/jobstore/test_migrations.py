"""Schema migrations: a database of the first release (made by ``create_all``, no ``alembic_version``) is
upgraded in place with its jobs and scores intact; concurrent ``prepare_database`` from several processes on
fresh state all succeed; the migrated schema is exactly the models' (SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import REPO_ROOT, throwaway_postgres_database
from sqlalchemy import inspect, select, text

from gscore.jobstore.db import Base, make_engine, make_session_factory, prepare_database
from gscore.jobstore.jobs_repo import JobsRepo
from gscore.jobstore.migrations.baseline import baseline_metadata
from gscore.settings import Settings

HEAD = "0004"
SCORES = {"c1": 0.125, "c3": -2.5, "c4": 3.75}


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a throw-away PostgreSQL database (skips without a server)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gscore.db'}"
        return
    pytest.importorskip("psycopg2")
    yield from throwaway_postgres_database("gscore_mig")


def _first_release_database(url: str) -> None:
    """The first release's tables with one succeeded job (with scores), an uploaded dataset, a stage timing
    and an idempotency key, as that release wrote them."""
    engine = make_engine(url)
    metadata = baseline_metadata()
    metadata.create_all(engine)
    now = datetime(2026, 1, 2, 3, 4, 5)
    job = {
        "id": "00000000-0000-0000-0000-000000000001",
        "state": "succeeded",
        "queue": "cpu",
        "created_at": now,
        "updated_at": now,
        "started_at": now,
        "finished_at": now,
        "attempts": 1,
        "cancel_requested": False,
        "progress_stage": "done",
        "progress_done": 3,
        "progress_total": 3,
        "checkpoint_sha256": "a" * 64,
        "checkpoint_size": 1234,
        "spec": {"dataset": "digits", "measures": ["c1", "c3", "c4"]},
        "dedupe_key": "b" * 64,
        "collection": "sweep",
        "model_name": "m1",
        "hyperparameters": {"lr": 0.1},
        "test_accuracy": 0.9,
        "train_accuracy": 1.0,
        "result": {"scores": SCORES, "status": {}, "meta": {"seconds": {"c1": 1.5}}},
    }
    with engine.begin() as connection:
        connection.execute(metadata.tables["jobs"].insert(), [job])
        connection.execute(
            metadata.tables["datasets"].insert(),
            [
                {
                    "name": "mine",
                    "sha256": "c" * 64,
                    "size_bytes": 10,
                    "created_at": now,
                    "summary": {"classes": 3},
                }
            ],
        )
        connection.execute(
            metadata.tables["stage_timings"].insert(), [{"stage": "c1", "seconds_sum": 1.5, "jobs": 1}]
        )
        connection.execute(
            metadata.tables["idempotency_keys"].insert(),
            [{"key": "k1", "job_id": job["id"], "created_at": now}],
        )
    engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def test_first_release_database_upgrades_in_place(fresh_url: str, tmp_path: Path) -> None:
    _first_release_database(fresh_url)
    assert _revision(fresh_url) is None  # no alembic_version: made by create_all

    assert prepare_database(_settings(tmp_path, fresh_url)) == HEAD
    assert _revision(fresh_url) == HEAD
    repo = JobsRepo(make_session_factory(fresh_url, migrate=False))
    job = repo.get("00000000-0000-0000-0000-000000000001")
    assert job is not None and job.state == "succeeded" and job.owner is None
    assert job.result["scores"] == SCORES
    assert job.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert repo.collection_jobs("sweep")[0].model_name == "m1"
    assert repo.job_for_idempotency_key("k1").id == job.id  # keyless keys keep their stored form
    assert repo.stage_timings() == [("c1", 1.5, 1)]
    assert repo.find_succeeded("b" * 64).id == job.id  # keyless dedupe still finds the old job

    engine = make_engine(fresh_url)
    columns = {
        table: {c["name"] for c in inspect(engine).get_columns(table)} for table in ("jobs", "datasets")
    }
    assert "owner" in columns["jobs"] and "owner" in columns["datasets"]
    assert {"id", "name", "secret_sha256", "admin", "created_at", "revoked_at"} == {
        c["name"] for c in inspect(engine).get_columns("api_keys")
    }
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM datasets")).scalars().all() == ["mine"]
    engine.dispose()
    assert prepare_database(_settings(tmp_path, fresh_url)) == HEAD  # again: a no-op


def test_migrated_schema_is_the_models_schema(fresh_url: str, tmp_path: Path) -> None:
    prepare_database(_settings(tmp_path, fresh_url))
    engine = make_engine(fresh_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert differences == []
    assert versions == [HEAD]


CONCURRENT_SCRIPT = """
import sys, time
from pathlib import Path
from gscore.settings import Settings
from gscore.jobstore.db import prepare_database
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
print(prepare_database(Settings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2])))
"""


@pytest.mark.parametrize("processes", [4])
def test_concurrent_prepare_on_fresh_state_all_succeed(
    fresh_url: str, tmp_path: Path, processes: int
) -> None:
    start = time.time() + 3.0  # every process imports first, then all migrate at the same instant
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_SCRIPT, str(tmp_path), fresh_url, str(start)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outcomes = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outcomes, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == HEAD
    engine = make_engine(fresh_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
        assert set(inspect(connection).get_table_names()) >= {
            "jobs",
            "datasets",
            "api_keys",
            "idempotency_keys",
        }
        assert connection.execute(select(Base.metadata.tables["jobs"].c.id)).all() == []
    engine.dispose()


def test_a_fresh_start_logs_our_upgrade_line_and_none_of_alembics(tmp_path: Path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO)
    prepare_database(Settings(data_dir=tmp_path))
    names = [record.name for record in caplog.records]
    assert "gscore.db" in names, names
    assert [name for name in names if name.startswith("alembic")] == []
