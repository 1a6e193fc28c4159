"""A database that fails once, at each call of submission and of the worker: no job is failed by it, a 503
leaves no job behind, and a keyed retry finds exactly one job.

Submission faults are injected at the statement (an engine ``before_cursor_execute`` hook raising
``OperationalError`` for the first statement that matches), in process (``TestClient``); worker faults
by patching ``JobsRepo`` methods (dedupe, claim, finish) and calling ``gscore.worker.execute.execute_job``
directly on a job the API queued.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DIGITS_ARCH, assert_problem
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from test_routes_inprocess import inprocess_settings

from gscore.jobstore.db import Job
from gscore.jobstore.jobs_repo import JobsRepo
from gscore.service.app import create_app

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 5, "measures": ["c3"]}


def database_down() -> OperationalError:
    return OperationalError("statement", {}, ConnectionRefusedError("the database went away"))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return inprocess_settings(
        tmp_path_factory.mktemp("faults"), upload_check_processes=0, claim_retry_seconds=1.0
    )


@pytest.fixture(scope="module")
def client(settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_reaper=False), raise_server_exceptions=False) as test_client:
        yield test_client


def fail_first_statement(client: TestClient, pattern: str) -> list[str]:
    """Make the first statement whose SQL contains ``pattern`` raise OperationalError (once); returns the
    list the failed statement is recorded in."""
    engine = client.app.state.context.sessions.kw["bind"]
    fired: list[str] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if pattern in statement and not fired:
            fired.append(statement)
            raise database_down()

    event.listen(engine, "before_cursor_execute", hook)
    _hooks.append((engine, hook))
    return fired


_hooks: list[tuple[Any, Callable]] = []


@pytest.fixture(autouse=True)
def _remove_hooks() -> Iterator[None]:
    yield
    while _hooks:
        engine, hook = _hooks.pop()
        event.remove(engine, "before_cursor_execute", hook)


def count_jobs(client: TestClient, collection: str) -> int:
    with client.app.state.context.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job).where(Job.collection == collection)))


def post(client: TestClient, checkpoint: Path, collection: str, key: str, seed: int) -> Any:
    with checkpoint.open("rb") as handle:
        return client.post(
            "/v1/jobs",
            data={"spec": json.dumps({**SPEC, "seed": seed}), "collection": collection},
            files={"checkpoint": (checkpoint.name, handle)},
            headers={"Idempotency-Key": key},
        )


@pytest.mark.parametrize(
    "pattern",
    [
        "FROM idempotency_keys",  # the route's look-up of the key
        "jobs.dedupe_key",  # dedupe against succeeded jobs
        "INSERT INTO jobs",  # the job row
        "INSERT INTO idempotency_keys",  # the key, in the job's transaction
        "jobs.collection =",  # the collection admission, in the job's transaction
    ],
)
def test_a_fault_at_each_submission_call_is_a_503_leaving_no_job(
    client: TestClient, digits_checkpoint: Path, pattern: str
) -> None:
    collection, key = f"fault-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    seed = abs(hash(pattern)) % 10_000
    fired = fail_first_statement(client, pattern)
    response = post(client, digits_checkpoint, collection, key, seed)
    assert fired, f"no statement matched {pattern!r}"
    assert_problem(response, 503, "database-unavailable")
    assert count_jobs(client, collection) == 0  # the 503 left no job behind
    retry = post(client, digits_checkpoint, collection, key, seed)
    assert retry.status_code == 202, retry.text
    again = post(client, digits_checkpoint, collection, key, seed)
    assert again.status_code == 202 and again.json()["id"] == retry.json()["id"]
    assert count_jobs(client, collection) == 1  # the keyed retries made exactly one job


def test_a_refused_admission_leaves_neither_job_nor_key(client: TestClient, digits_checkpoint: Path) -> None:
    collection = f"conflict-{uuid.uuid4().hex[:8]}"
    first = post(client, digits_checkpoint, collection, uuid.uuid4().hex, 1)
    assert first.status_code == 202
    key = uuid.uuid4().hex
    same_name = post(client, digits_checkpoint, collection, key, 2)  # the same model name again
    assert_problem(same_name, 409, "model-name-taken")
    assert count_jobs(client, collection) == 1
    elsewhere = f"{collection}-b"
    with digits_checkpoint.open("rb") as handle:  # the key was rolled back with the job: it is free again
        response = client.post(
            "/v1/jobs",
            data={"spec": json.dumps({**SPEC, "seed": 2}), "collection": elsewhere},
            files={"checkpoint": (digits_checkpoint.name, handle)},
            headers={"Idempotency-Key": key},
        )
    assert response.status_code == 202 and count_jobs(client, elsewhere) == 1


# ---- the worker ---------------------------------------------------------------------------------------


def queued_job(client: TestClient, checkpoint: Path) -> str:
    collection = f"worker-{uuid.uuid4().hex[:8]}"
    response = post(client, checkpoint, collection, uuid.uuid4().hex, int(uuid.uuid4().int % 100_000))
    assert response.status_code == 202 and response.json()["state"] == "queued"
    return response.json()["id"]


def failing(method: Callable, times: int) -> Callable:
    """``method`` that raises OperationalError on its first ``times`` calls."""
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise database_down()
        return method(*args, **kwargs)

    return wrapper


@pytest.fixture()
def run_worker(settings: Any) -> Callable[[str], str]:
    from gscore.worker import execute

    def run(job_id: str) -> str:  # worker_context is per settings: another test's data dir is never reused
        return execute.execute_job(job_id, settings, "test-worker")

    return run


@pytest.mark.parametrize("method", ["find_succeeded", "claim", "finish"])
def test_a_transient_fault_at_each_worker_call_is_retried(
    client: TestClient,
    digits_checkpoint: Path,
    run_worker: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    job_id = queued_job(client, digits_checkpoint)
    monkeypatch.setattr(JobsRepo, method, failing(getattr(JobsRepo, method), times=1))
    assert run_worker(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["attempts"] == 1, job


def test_a_dedupe_query_that_keeps_failing_leaves_the_job_claimable(
    client: TestClient,
    digits_checkpoint: Path,
    run_worker: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PostgreSQL-outage job: the database fails after the claim, for longer than the retries."""
    job_id = queued_job(client, digits_checkpoint)
    original = JobsRepo.find_succeeded
    monkeypatch.setattr(JobsRepo, "find_succeeded", failing(original, times=1000))
    assert run_worker(job_id) == "released"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "queued" and job["error"] is None and job["attempts"] == 0, job
    monkeypatch.setattr(JobsRepo, "find_succeeded", original)  # the database is back
    assert run_worker(job_id) == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded"


def test_a_finish_that_keeps_failing_never_fails_the_job(
    client: TestClient,
    digits_checkpoint: Path,
    run_worker: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = queued_job(client, digits_checkpoint)
    monkeypatch.setattr(JobsRepo, "finish", failing(JobsRepo.finish, times=1000))
    assert run_worker(job_id) == "finish-failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "running" and job["error"] is None  # its lease expires; the reaper requeues it


def test_a_fault_of_the_job_still_fails_it(
    client: TestClient,
    digits_checkpoint: Path,
    run_worker: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkpoint that cannot be read is the job's fault: failed, with the reason."""
    from gscore.errors import CheckpointError

    def unreadable(*_: Any, **__: Any) -> Any:
        raise CheckpointError("not a valid safetensors file: header truncated")

    job_id = queued_job(client, digits_checkpoint)
    monkeypatch.setattr("gscore.pipeline.score", unreadable)
    assert run_worker(job_id) == "failed"
    assert client.get(f"/v1/jobs/{job_id}").json()["error"]["type"] == "invalid-checkpoint"
