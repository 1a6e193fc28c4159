"""Jobs survive their worker: cancel, a worker SIGKILLed mid-job, on the embedded, Redis and Redis +
PostgreSQL (production) setups.

Each broker gets its own API + worker whose jobs wait GSCORE_TEST_JOB_DELAY_SECONDS (a test hook that
honours cancel) before scoring, so there is time to cancel or kill them while they run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DIGITS_ARCH, Stack, start_stack, submit_job, wait_for_job

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 20, "measures": ["c3", "c4"]}
FINAL = ("succeeded", "failed", "cancelled")
JOB_DELAY_SECONDS = 3.0


@pytest.fixture(scope="module", params=["embedded", "redis+postgres"])
def slow_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """embedded: SQLite job table and broker; redis+postgres: the production setup. Redis with the SQLite job
    table is no separate case here: its broker is the production one and its job table the embedded one."""
    # a 3 s lease: a killed worker's job is requeued within seconds (the recovery these tests watch)
    overrides = {"GSCORE_TEST_JOB_DELAY_SECONDS": str(JOB_DELAY_SECONDS), "GSCORE_LEASE_SECONDS": "3"}
    if "redis" in request.param:
        overrides["BROKER_URL"] = request.getfixturevalue("redis_url")
    if "postgres" in request.param:
        overrides["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    stack = start_stack(tmp_path_factory.mktemp(f"slow-{request.param.replace('+', '-')}"), **overrides)
    yield stack
    stack.stop()


def unique_spec() -> dict:
    """A spec no earlier job matched (so nothing is deduplicated)."""
    return {**SPEC, "seed": uuid.uuid4().int % 10_000 + 100}


def test_job_runs_and_duplicate_is_answered_from_the_table(
    slow_stack: Stack, digits_checkpoint: Path
) -> None:
    from gscore.pipeline import ScoreRequest, score

    spec = unique_spec()
    with slow_stack.client() as client:
        job = submit_job(client, digits_checkpoint, spec).json()
        running = wait_for_job(client, job["id"], ("running", *FINAL))
        assert running["state"] == "running" and running["progress"]["stage"] in ("starting", "test-delay")
        done = wait_for_job(client, job["id"], FINAL)
        assert done["state"] == "succeeded", done
        expected = score(
            ScoreRequest(
                checkpoint=digits_checkpoint,
                arch=DIGITS_ARCH,
                dataset="digits",
                samples_per_class=20,
                measures=["c3", "c4"],
                seed=spec["seed"],
                device="cpu",
            )
        )["scores"]
        assert done["result"]["scores"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
        # the submission's own answer is the stored result: no worker ran it (no clock involved)
        duplicate = submit_job(client, digits_checkpoint, spec).json()
        assert duplicate["state"] == "succeeded", duplicate
        assert duplicate["result"]["meta"]["deduplicated_from"] == job["id"]


def test_cancel_running_and_queued_jobs(slow_stack: Stack, digits_checkpoint: Path) -> None:
    with slow_stack.client() as client:
        first = submit_job(client, digits_checkpoint, unique_spec()).json()
        second = submit_job(client, digits_checkpoint, unique_spec()).json()
        wait_for_job(client, first["id"], ("running",))
        queued = client.delete(f"/v1/jobs/{second['id']}")  # the one worker is busy: still queued
        assert queued.status_code == 202 and queued.json()["state"] == "cancelled"
        answer = client.delete(f"/v1/jobs/{first['id']}")
        assert answer.status_code == 202 and answer.json()["cancel_requested"] is True
        cancelled = wait_for_job(client, first["id"], FINAL, timeout=30)
        assert cancelled["state"] == "cancelled" and cancelled["error"]["type"] == "cancelled"
        assert cancelled["result"] is None
        again = client.delete(f"/v1/jobs/{first['id']}")
        assert again.status_code == 202 and again.json()["state"] == "cancelled"
        assert wait_for_job(client, second["id"], FINAL)["attempts"] == 0  # never ran


def test_worker_killed_mid_job_is_requeued_and_succeeds(slow_stack: Stack, digits_checkpoint: Path) -> None:
    with slow_stack.client() as client:
        job = submit_job(client, digits_checkpoint, unique_spec()).json()
        running = wait_for_job(client, job["id"], ("running",))
        assert running["attempts"] == 1
        slow_stack.kill_worker()
        slow_stack.start_worker()
        done = wait_for_job(client, job["id"], FINAL, timeout=120)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
        assert set(done["result"]["scores"]) == {"c3", "c4"}
        assert "lease expired after attempt 1" in slow_stack.log("api.log") + slow_stack.log(
            f"worker-{slow_stack.worker_starts}.log"
        )
