"""The job table as outbox, in process: republishing queued jobs that did not start, the claim retried
through database faults, and dependency faults answered as 503 problem documents (never 500).

The multi-process versions of these (lost messages, killed processes, paused brokers) are the chaos suite,
tests/stack/test_chaos.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import DIGITS_ARCH, assert_problem, submit_job
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from gscore.jobstore.db import Job, make_session_factory, prepare_database, utcnow
from gscore.jobstore.jobs_repo import QUEUED, RUNNING, SUCCEEDED, JobsRepo
from gscore.jobstore.reaper import republish_unstarted, republish_wait
from gscore.service.app import create_app
from gscore.settings import Settings
from gscore.worker.execute import claim_with_retry

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}


class RecordingDispatcher:
    """Stands in for the broker: records what was published, or fails like an unreachable one."""

    def __init__(self, fail: bool = False) -> None:
        self.published: list[str] = []
        self.fail = fail

    def enqueue(self, job_id: str, queue: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.published.append(job_id)


def make_repo(tmp_path: Path) -> JobsRepo:
    settings = Settings(data_dir=tmp_path, database_url=None, broker_url=None)
    prepare_database(settings)
    return JobsRepo(make_session_factory(settings.resolved_database_url, migrate=False))


def new_job(repo: JobsRepo, state: str = QUEUED, age_seconds: float = 0.0, **fields: Any) -> str:
    job = repo.create(
        state=state,
        queue="cpu",
        checkpoint_sha256="0" * 64,
        checkpoint_size=1,
        spec={},
        dedupe_key=f"k{age_seconds}{state}",
        collection=None,
        model_name="m",
        hyperparameters={},
        **fields,
    )
    if age_seconds:  # as if created (and last published) that long ago
        past = utcnow() - timedelta(seconds=age_seconds)
        with repo.sessions() as session, session.begin():
            session.execute(update(Job).where(Job.id == job.id).values(created_at=past, updated_at=past))
    return job.id


def test_queued_jobs_not_started_in_time_are_published_again_once(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    stale = new_job(repo, age_seconds=45)
    fresh = new_job(repo, age_seconds=5)
    new_job(repo, state=RUNNING, age_seconds=100)
    new_job(repo, state=SUCCEEDED, age_seconds=100)
    dispatcher = RecordingDispatcher()
    assert republish_unstarted(repo, dispatcher, 30, 300) == 1
    assert dispatcher.published == [stale]
    # the publish moved its clock: a second reaper (or the next pass) does not publish it again
    assert republish_unstarted(repo, dispatcher, 30, 300) == 0
    # at start-up every queued job is published, running and finished ones never
    assert republish_unstarted(repo, dispatcher, 30, 300, everything=True) == 2
    assert sorted(dispatcher.published[1:]) == sorted([stale, fresh])


def test_two_reapers_racing_publish_a_job_once(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    job_id = new_job(repo, age_seconds=60)
    (seen,) = repo.unstarted_queued()
    assert repo.touch_queued(job_id, seen.updated_at, utcnow())
    assert not repo.touch_queued(job_id, seen.updated_at, utcnow())  # the other reaper read the same row


def test_a_failed_republish_is_due_again_on_the_next_pass(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    job_id = new_job(repo, age_seconds=60)
    with pytest.raises(ConnectionError):
        republish_unstarted(repo, RecordingDispatcher(fail=True), 30, 300)
    working = RecordingDispatcher()
    assert republish_unstarted(repo, working, 30, 300) == 1 and working.published == [job_id]


def test_republish_wait_doubles_with_the_time_queued_up_to_the_cap(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    job = repo.get(new_job(repo))
    assert job is not None
    created = job.created_at
    for waited, expected in ((0, 30), (10, 30), (30, 30), (100, 100), (1000, 300)):
        job.updated_at = created + timedelta(seconds=waited)
        assert republish_wait(job, 30, 300) == expected


class FlakyRepo:
    """A job table whose first ``failures`` claims fail like a database that is down."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def claim(self, job_id: str, *, worker: str, lease_seconds: float) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("UPDATE jobs", {}, ConnectionRefusedError("database down"))
        return f"claim of {job_id}"


def test_a_claim_is_retried_while_the_database_is_down_then_given_up(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, claim_retry_seconds=2.0)
    flaky = FlakyRepo(failures=2)
    assert claim_with_retry(flaky, "j", "w", settings) == "claim of j"  # type: ignore[arg-type]
    assert flaky.calls == 3
    down = FlakyRepo(failures=1000)
    with pytest.raises(OperationalError):
        claim_with_retry(down, "j", "w", Settings(data_dir=tmp_path, claim_retry_seconds=1.0))  # type: ignore[arg-type]
    assert 2 <= down.calls <= 4  # 0.25 s, 0.5 s pauses within 1 s


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path, database_url=None, broker_url=None, device="cpu")
    with TestClient(create_app(settings, run_reaper=False), raise_server_exceptions=False) as test_client:
        yield test_client


def test_unwritable_storage_is_a_503_and_readyz_names_it(client: TestClient, digits_checkpoint: Path) -> None:
    storage = client.app.state.context.storage
    storage.tmp_dir = Path("/sys/kernel")  # sysfs refuses new files, even to root (EACCES)
    response = submit_job(client, digits_checkpoint, SPEC)
    problem = assert_problem(response, 503, "storage-unavailable")
    assert response.headers["retry-after"] == "5" and "Permission denied" in problem["detail"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith("unwritable")
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["broker"] == "ok"


def test_a_corrupt_database_file_is_a_503_not_a_500(client: TestClient, tmp_path: Path) -> None:
    context = client.app.state.context
    context.sessions.kw["bind"].dispose()
    (tmp_path / "gscore.db").write_bytes(b"this is not an SQLite database" * 200)
    for name in ("gscore.db-wal", "gscore.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    response = client.get("/v1/jobs")
    assert_problem(response, 503, "database-unavailable")
    assert response.headers["retry-after"] == "5"
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz").json()
    assert ready["checks"]["database"].startswith("unreachable") and ready["checks"]["storage"] == "ok"
    assert json.loads(client.get("/healthz").text) == {"status": "ok", "checks": {}}
