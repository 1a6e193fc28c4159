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
from sqlalchemy.exc import DisconnectionError, InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from gscore.errors import GScoreError, JobCancelled
from gscore.inputs.archives import check_input_archives
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
# the database's faults (down, hung, I/O error, read-only), not the job's; IntegrityError & co. are bugs
DATABASE_FAULTS = (OperationalError, InterfaceError, InternalError, DisconnectionError, PoolTimeoutError)


@dataclass
class WorkerContext:
    settings: Settings
    repo: JobsRepo
    storage: Storage


_contexts: dict[tuple[int, str], WorkerContext] = {}


def worker_context(settings: Settings) -> WorkerContext:
    """One context per process and settings (database connections must not cross a fork; a process that
    runs jobs of two services, as the in-process tests do, gets each one's database)."""
    key = (os.getpid(), settings.model_dump_json())
    if key not in _contexts:
        for stale in [k for k in _contexts if k[0] != key[0]]:  # made before a fork
            del _contexts[stale]
        sessions = make_session_factory(  # prepare_database ran
            settings.resolved_database_url, migrate=False, timeout_seconds=settings.database_timeout_seconds
        )
        _contexts[key] = WorkerContext(settings, JobsRepo(sessions), Storage(settings.resolved_storage_dir))
    return _contexts[key]


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
    initial = ctx.storage.checkpoint_path(initial_sha) if initial_sha else None
    checkpoint = ctx.storage.checkpoint_path(job.checkpoint_sha256)
    settings = ctx.settings
    for model_file in (checkpoint, initial):  # the caps again, before the engine inflates anything
        if model_file is not None and model_file.exists():  # (a missing file is the engine's to report)
            check_input_archives(
                model_file,
                dataset_path if dataset_path is not None and dataset_path.exists() else None,
                max_checkpoint_bytes=settings.max_checkpoint_bytes,
                max_dataset_bytes=settings.max_dataset_bytes,
            )
    request = score_request(spec, checkpoint, settings, dataset_path, initial_checkpoint=initial)
    result = score(request, progress=progress, should_cancel=heartbeat.should_cancel)
    result = {
        "scores": dict(result["scores"]),
        "status": dict(result.get("status", {})),  # per measure: ok | undefined | failed, reason, warnings
        "meta": dict(result.get("meta", {})),
    }
    result["meta"]["dataset"] = spec["dataset"]  # the uploaded name, not the stored file's
    return _json_safe(result)


class InfrastructureFault(Exception):
    """The database failed during an attempt: the job is not at fault and must not be failed for it."""


def _outcome(
    job: Job, ctx: WorkerContext, claim: Claim, heartbeat: Heartbeat
) -> tuple[str, dict | None, dict | None]:
    """(state, result, error) of one attempt. Raises ``InfrastructureFault`` when the database stayed down
    (after retries): only a fault of the job (its checkpoint, its data, its spec) fails it."""
    progress = ProgressWriter(ctx.repo, claim, ctx.settings.progress_interval_seconds)
    try:
        earlier_result = retry_database(
            lambda: duplicate_result(ctx.repo, job.dedupe_key, excluding_job_id=job.id, owner=job.owner),
            ctx.settings.claim_retry_seconds,
            f"job {job.id}: dedupe query",
        )
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
    except DATABASE_FAULTS as exc:
        raise InfrastructureFault(f"{type(exc).__name__}: {exc}"[:300]) from exc
    except Exception as exc:
        log.exception("job %s: unexpected error", job.id)
        detail = f"{type(exc).__name__}: {exc}"[:300]
        return FAILED, None, _error("internal-error", "Internal error", detail)


def retry_database(call: Callable[[], T], seconds: float, what: str) -> T:
    """``call()``, retried with backoff (0.25 s doubling to 2 s) while the database fails, for up to
    ``seconds``; then the last of ``DATABASE_FAULTS`` propagates."""
    deadline = time.monotonic() + seconds
    pause = CLAIM_RETRY_FIRST_PAUSE_SECONDS
    while True:
        try:
            return call()
        except DATABASE_FAULTS as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.2f s", what, type(exc).__name__, pause)
            time.sleep(pause)
            pause = min(pause * 2, CLAIM_RETRY_MAX_PAUSE_SECONDS)


def _release(ctx: WorkerContext, claim: Claim, fault: BaseException) -> str:
    """Give the job back (queued, the attempt not counted) after an infrastructure fault; if the database
    refuses that too, the lease expires and the reaper queues it again. The job is never failed for it."""
    log.error(
        "job %s: database fault during attempt %d (%s); job left claimable",
        claim.job_id,
        claim.attempt,
        fault,
    )
    try:
        retry_database(lambda: ctx.repo.release(claim), ctx.settings.claim_retry_seconds, "release")
    except DATABASE_FAULTS:
        log.error("job %s: could not release it; its lease expires and the reaper queues it", claim.job_id)
    return "released"


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
    except DATABASE_FAULTS as exc:  # the database stayed down: the job is still queued in the table
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
    try:
        job = retry_database(
            lambda: ctx.repo.get(job_id), settings.claim_retry_seconds, f"job {job_id}: read"
        )
    except DATABASE_FAULTS as exc:
        return _release(ctx, claim, exc)
    assert job is not None
    if claim.attempt > settings.max_attempts:
        detail = f"attempt {claim.attempt} exceeds max_attempts={settings.max_attempts} (GSCORE_MAX_ATTEMPTS)"
        ctx.repo.finish(claim, FAILED, error=_error("worker-lost", "Worker lost", detail))
        return FAILED
    log.info("job %s: attempt %d started on %s", job_id, claim.attempt, worker_name)
    started = time.monotonic()
    with Heartbeat(ctx.repo, claim, settings.lease_seconds) as heartbeat:
        try:
            state, result, error = _outcome(job, ctx, claim, heartbeat)
        except InfrastructureFault as fault:
            return _release(ctx, claim, fault)
        try:
            recorded = retry_database(
                lambda: ctx.repo.finish(claim, state, result=result, error=error),
                settings.claim_retry_seconds,
                f"job {job_id}: recording the outcome",
            )
        except DATABASE_FAULTS as exc:  # the lease expires and the reaper queues the job again
            log.error("job %s: could not record %s (%s); it runs again later", job_id, state, exc)
            return "finish-failed"
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
