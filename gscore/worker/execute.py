"""Running one job: claim it, heartbeat, call the engine, record the outcome in the job table."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError

from gscore.errors import GScoreError, JobCancelled
from gscore.jobstore.db import Job, make_session_factory
from gscore.jobstore.dedupe import duplicate_result
from gscore.jobstore.jobs_repo import CANCELLED, FAILED, SUCCEEDED, Claim, JobsRepo
from gscore.jobstore.specs import score_request
from gscore.jobstore.storage import Storage
from gscore.settings import Settings
from gscore.worker.heartbeat import Heartbeat
from gscore.worker.progress import ProgressWriter

log = logging.getLogger("gscore.worker")
CLAIM_RETRY_FIRST_PAUSE_SECONDS = 0.25
CLAIM_RETRY_MAX_PAUSE_SECONDS = 2.0
T = TypeVar("T")


@dataclass
class WorkerContext:
    settings: Settings
    repo: JobsRepo
    storage: Storage


_contexts: dict[int, WorkerContext] = {}


def worker_context(settings: Settings) -> WorkerContext:
    """One context per process (database connections must not cross a fork)."""
    pid = os.getpid()
    if pid not in _contexts:
        _contexts.clear()
        sessions = make_session_factory(  # prepare_database ran
            settings.resolved_database_url, migrate=False, timeout_seconds=settings.database_timeout_seconds
        )
        _contexts[pid] = WorkerContext(settings, JobsRepo(sessions), Storage(settings.resolved_storage_dir))
    return _contexts[pid]


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no such numbers), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _error(type_: str, title: str, detail: str) -> dict[str, str]:
    return {"type": type_, "title": title, "detail": detail}


def _test_delay(seconds: float, progress: ProgressWriter, heartbeat: Heartbeat) -> None:
    """TEST HOOK (GSCORE_TEST_JOB_DELAY_SECONDS): wait before scoring, honouring cancel."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        remaining = deadline - time.monotonic()
        progress("test-delay", int(seconds - remaining), int(seconds))
        if heartbeat.should_cancel():
            raise JobCancelled("the job was cancelled")
        time.sleep(min(0.1, max(remaining, 0)))


TEST_GATE_STEPS = 3


def _test_gate(gate: Path, progress: ProgressWriter, heartbeat: Heartbeat) -> None:
    """TEST HOOK (GSCORE_TEST_JOB_GATE_DIR): report stage ``test-gate`` and take step ``i`` only once the
    test has created the file ``gate/i`` (or ``gate/open``), honouring cancel: progress a test can watch
    step by step, whatever the machine's load."""
    for step in range(TEST_GATE_STEPS):
        while not ((gate / str(step + 1)).exists() or (gate / "open").exists()):
            progress("test-gate", step, TEST_GATE_STEPS)
            if heartbeat.should_cancel():
                raise JobCancelled("the job was cancelled")
            time.sleep(0.05)


def _score(job: Job, ctx: WorkerContext, progress: ProgressWriter, heartbeat: Heartbeat) -> dict[str, Any]:
    from gscore.pipeline import score

    spec = job.spec
    dataset_sha = spec.get("dataset_sha256")
    dataset_path = ctx.storage.dataset_path(dataset_sha) if dataset_sha else None
    initial_sha = spec.get("initial_checkpoint_sha256")
    request = score_request(
        spec,
        ctx.storage.checkpoint_path(job.checkpoint_sha256),
        ctx.settings,
        dataset_path,
        initial_checkpoint=ctx.storage.checkpoint_path(initial_sha) if initial_sha else None,
    )
    result = score(request, progress=progress, should_cancel=heartbeat.should_cancel)
    result = {
        "scores": dict(result["scores"]),
        "status": dict(result.get("status", {})),  # per measure: ok | undefined | failed, reason, warnings
        "meta": dict(result.get("meta", {})),
    }
    result["meta"]["dataset"] = spec["dataset"]  # the uploaded name, not the stored file's
    return _json_safe(result)


def _outcome(
    job: Job, ctx: WorkerContext, claim: Claim, heartbeat: Heartbeat
) -> tuple[str, dict | None, dict | None]:
    """(state, result, error) of one attempt."""
    progress = ProgressWriter(ctx.repo, claim, ctx.settings.progress_interval_seconds)
    try:
        earlier_result = duplicate_result(ctx.repo, job.dedupe_key, excluding_job_id=job.id, owner=job.owner)
        if earlier_result is not None:  # an identical job finished while this one was queued
            progress("deduplicated", 0, 0)
            return SUCCEEDED, earlier_result, None
        if ctx.settings.test_job_delay_seconds > 0:
            _test_delay(ctx.settings.test_job_delay_seconds, progress, heartbeat)
        if ctx.settings.test_job_gate_dir is not None:
            _test_gate(ctx.settings.test_job_gate_dir, progress, heartbeat)
        return SUCCEEDED, _score(job, ctx, progress, heartbeat), None
    except JobCancelled as exc:
        if heartbeat.lease_lost and not heartbeat.cancel_requested:
            return FAILED, None, _error("lease-lost", "Lease lost", "this attempt lost its lease")
        return CANCELLED, None, exc.to_dict()
    except GScoreError as exc:
        return FAILED, None, exc.to_dict()
    except SoftTimeLimitExceeded:
        limit = ctx.settings.job_soft_time_limit
        return (
            FAILED,
            None,
            _error(
                "time-limit",
                "Time limit exceeded",
                f"the job ran past its soft time limit of {limit} s (GSCORE_JOB_SOFT_TIME_LIMIT)",
            ),
        )
    except Exception as exc:
        log.exception("job %s: unexpected error", job.id)
        detail = f"{type(exc).__name__}: {exc}"[:300]
        return FAILED, None, _error("internal-error", "Internal error", detail)


def retry_database(call: Callable[[], T], seconds: float, what: str) -> T:
    """``call()``, retried with backoff (0.25 s doubling to 2 s) while the database fails, for up to
    ``seconds``; then the last ``DBAPIError`` propagates."""
    deadline = time.monotonic() + seconds
    pause = CLAIM_RETRY_FIRST_PAUSE_SECONDS
    while True:
        try:
            return call()
        except DBAPIError as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.2f s", what, type(exc).__name__, pause)
            time.sleep(pause)
            pause = min(pause * 2, CLAIM_RETRY_MAX_PAUSE_SECONDS)


def claim_with_retry(repo: JobsRepo, job_id: str, worker_name: str, settings: Settings) -> Claim | None:
    """``repo.claim`` through :func:`retry_database` for up to ``settings.claim_retry_seconds``."""
    return retry_database(
        lambda: repo.claim(job_id, worker=worker_name, lease_seconds=settings.lease_seconds),
        settings.claim_retry_seconds,
        f"job {job_id}: claim",
    )


def execute_job(job_id: str, settings: Settings, worker_name: str) -> str:
    """Run ``job_id`` if it can be claimed; returns what happened (for logs)."""
    if settings.test_fault == "exit-before-claim":
        log.error("TEST FAULT: worker killed after taking the message of job %s, before claiming it", job_id)
        os.killpg(os.getpgrp(), signal.SIGKILL)  # the whole worker (main process and pool), as a machine dies
    try:
        ctx = worker_context(settings)
        claim = claim_with_retry(ctx.repo, job_id, worker_name, settings)
    except DBAPIError as exc:  # the database stayed down: the job is still queued in the table
        log.error(
            "job %s: could not claim for %.0f s (%s); left queued, it is published again later",
            job_id,
            settings.claim_retry_seconds,
            type(exc).__name__,
        )
        return "claim-failed"
    if claim is None:
        log.info("job %s: not claimable (finished, cancelled or running elsewhere); message dropped", job_id)
        return "skipped"
    job = ctx.repo.get(job_id)
    assert job is not None
    if claim.attempt > settings.max_attempts:
        detail = f"attempt {claim.attempt} exceeds max_attempts={settings.max_attempts} (GSCORE_MAX_ATTEMPTS)"
        ctx.repo.finish(claim, FAILED, error=_error("worker-lost", "Worker lost", detail))
        return FAILED
    log.info("job %s: attempt %d started on %s", job_id, claim.attempt, worker_name)
    started = time.monotonic()
    with Heartbeat(ctx.repo, claim, settings.lease_seconds) as heartbeat:
        state, result, error = _outcome(job, ctx, claim, heartbeat)
        recorded = retry_database(
            lambda: ctx.repo.finish(claim, state, result=result, error=error),
            settings.claim_retry_seconds,
            f"job {job_id}: recording the outcome",
        )
        if not recorded:
            log.warning(
                "job %s: attempt %d finished as %s after losing its lease; not recorded",
                job_id,
                claim.attempt,
                state,
            )
            return "lease-lost"
    log.info(
        "job %s: %s in %.1f s%s",
        job_id,
        state,
        time.monotonic() - started,
        f" ({error['type']}: {error['detail']})" if error else "",
    )
    return state
