"""Operations on the job table: create, read, page, cancel, claim with a lease, heartbeat, finish, requeue.

Every state change is one conditional UPDATE (atomic on SQLite and PostgreSQL), so several API replicas,
workers and reapers can race without a lock. A claim hands out a lease token; heartbeats, progress and the
final write only apply while the caller still holds that token (a worker that lost its lease cannot
overwrite the job that another worker now runs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gscore.jobstore.db import IdempotencyKey, Job, StageTiming, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED_STATES = (SUCCEEDED, FAILED, CANCELLED)


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


class CancelConflict(Exception):
    """Cancelling a job that has already finished."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class IdempotencyKeyTaken(Exception):
    """Another request committed this Idempotency-Key first; ``job_id`` is its job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True)
class Claim:
    """What a worker holds while it runs a job."""

    job_id: str
    token: str
    attempt: int


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at, job_id = datetime.fromisoformat(created), str(job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor(cursor) from exc
    if "\x00" in job_id:
        raise InvalidCursor(cursor)
    return created_at, job_id


class JobsRepo:
    """The job table, through short transactions."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    # ---- reads -------------------------------------------------------------------------------------
    def get(self, job_id: str, visible_to: str | None = None) -> Job | None:
        """The job, or None when there is none or it belongs to an owner other than ``visible_to``
        (None: any owner)."""
        if "\x00" in job_id:  # no id has one (and PostgreSQL refuses NUL in a string)
            return None
        with self.sessions() as session:
            job = session.get(Job, job_id)
        return job if job is not None and _visible(job.owner, visible_to) else None

    def page(
        self,
        *,
        collection: str | None,
        state: str | None,
        limit: int,
        cursor: str | None,
        visible_to: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first; returns the page and the cursor of the next one (None at the end). Only the jobs of
        owner ``visible_to`` (None: every owner's)."""
        if collection is not None and "\x00" in collection:
            return [], None  # no collection name has one (refused at submission)
        query = _only_visible(
            select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1), visible_to
        )
        if collection is not None:
            query = query.where(Job.collection == collection)
        if state is not None:
            query = query.where(Job.state == state)
        if cursor:
            created, job_id = decode_cursor(cursor)
            query = query.where(
                or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
            )
        with self.sessions() as session:
            rows = list(session.scalars(query))
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].created_at, rows[-1].id)

    def find_succeeded(self, dedupe_key: str, owner: str | None = None) -> Job | None:
        """The oldest succeeded job with this dedupe key made by ``owner`` (None: made without a key), if any:
        dedupe never answers one team with another team's job."""
        query = (
            select(Job)
            .where(Job.dedupe_key == dedupe_key, Job.state == SUCCEEDED, _owned_by(owner))
            .order_by(Job.created_at)
            .limit(1)
        )
        with self.sessions() as session:
            return session.scalars(query).first()

    def collection_jobs(self, name: str, visible_to: str | None = None) -> list[Job]:
        """The latest job per model name in a collection (of owner ``visible_to``; None: any), oldest model
        first."""
        if "\x00" in name:
            return []
        query = _only_visible(select(Job).where(Job.collection == name).order_by(Job.created_at), visible_to)
        with self.sessions() as session:
            rows = list(session.scalars(query))
        latest: dict[str, Job] = {}
        for job in rows:
            latest.pop(job.model_name, None)
            latest[job.model_name] = job
        return list(latest.values())

    def collection_rows(self, name: str, owner: str | None) -> list[Job]:
        """Every job of owner ``owner`` (None: made keyless) in a collection, replaced entries included,
        oldest first: what ``gscore.jobstore.collection_rules.admit`` decides a new job's admission on."""
        if "\x00" in name:
            return []
        query = select(Job).where(Job.collection == name, _owned_by(owner)).order_by(Job.created_at, Job.id)
        with self.sessions() as session:
            return list(session.scalars(query))

    def collections(self, visible_to: str | None = None) -> list[tuple[str, int]]:
        """(name, distinct model names) of every collection with a job of owner ``visible_to`` (None: any)."""
        query = (
            select(Job.collection, func.count(func.distinct(Job.model_name)))
            .where(Job.collection.is_not(None))
            .group_by(Job.collection)
            .order_by(Job.collection)
        )
        query = _only_visible(query, visible_to)
        with self.sessions() as session:
            return [(name, int(count)) for name, count in session.execute(query)]

    def count_by_state(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state))
            return {state: int(count) for state, count in rows}

    def count_failures_by_type(self) -> dict[str, int]:
        query = select(Job.error_type, func.count()).where(Job.state == FAILED).group_by(Job.error_type)
        with self.sessions() as session:
            return {str(kind): int(count) for kind, count in session.execute(query)}

    def expired_leases(self) -> list[Job]:
        query = select(Job).where(Job.state == RUNNING, Job.lease_expires_at < utcnow())
        with self.sessions() as session:
            return list(session.scalars(query))

    def unstarted_queued(self, published_before: datetime | None = None) -> list[Job]:
        """Queued jobs last published (``updated_at``) before ``published_before`` (None: all), oldest first."""
        query = select(Job).where(Job.state == QUEUED).order_by(Job.updated_at)
        if published_before is not None:
            query = query.where(Job.updated_at < published_before)
        with self.sessions() as session:
            return list(session.scalars(query))

    def touch_queued(self, job_id: str, expected_updated_at: datetime, updated_at: datetime) -> bool:
        """Set a queued job's ``updated_at`` (its last publish) if it still reads ``expected_updated_at``:
        one of several reapers wins the right to publish it again. True if this caller won."""
        with self.sessions() as session, session.begin():
            outcome = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == QUEUED, Job.updated_at == expected_updated_at)
                .values(updated_at=updated_at)
            )
        return outcome.rowcount == 1

    # ---- submission ---------------------------------------------------------------------------------
    def create(self, **fields: Any) -> Job:
        now = utcnow()
        job = Job(
            id=str(uuid.uuid4()),
            created_at=now,
            updated_at=now,
            attempts=0,
            cancel_requested=False,
            progress_done=0,
            progress_total=0,
            **fields,
        )
        with self.sessions() as session, session.begin():
            session.add(job)
        return job

    def create_admitted(
        self,
        fields: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        admit: Callable[[Job, list[Job]], Sequence[str]] | None = None,
    ) -> Job:
        """Insert a job with its Idempotency-Key and its collection admission in one transaction: all of
        them are committed, or none (a database error or a refusal leaves no job behind).

        ``admit(job, rows)`` is called inside the transaction, after the insert, with every job of the new
        job's collection (as ``collection_rows`` gives them, itself included; on PostgreSQL under a lock per
        owner and collection, so of two racing submissions the second sees the first); it returns the ids
        of the jobs the new one replaces (cancelled in the same transaction) or raises to refuse (rolled
        back). Raises ``IdempotencyKeyTaken`` when another request committed the key first.
        """
        now = utcnow()
        base = {"attempts": 0, "cancel_requested": False, "progress_done": 0, "progress_total": 0}
        job = Job(id=str(uuid.uuid4()), created_at=now, updated_at=now, **{**base, **fields})
        try:
            with self.sessions() as session, session.begin():
                if job.collection is not None and session.get_bind().dialect.name == "postgresql":
                    lock = zlib.crc32(f"{job.owner}\n{job.collection}".encode())
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock})
                session.add(job)
                if idempotency_key:
                    scoped = scoped_idempotency_key(idempotency_key, job.owner)
                    session.add(IdempotencyKey(key=scoped, job_id=job.id, created_at=now))
                session.flush()
                if admit is not None and job.collection is not None:
                    rows = session.scalars(
                        select(Job)
                        .where(Job.collection == job.collection, _owned_by(job.owner))
                        .order_by(Job.created_at, Job.id)
                    )
                    for old_id in admit(job, list(rows)):
                        _cancel_in(session, old_id, now)
        except IntegrityError:
            if not idempotency_key:
                raise
            with self.sessions() as session:
                record = session.get(IdempotencyKey, scoped_idempotency_key(idempotency_key, job.owner))
            if record is None:
                raise
            raise IdempotencyKeyTaken(record.job_id) from None
        return job

    def job_for_idempotency_key(self, key: str, owner: str | None = None) -> Job | None:
        """The job that ``owner`` (None: no API key) made with this Idempotency-Key, if any."""
        key = scoped_idempotency_key(key, owner)
        with self.sessions() as session:
            record = session.get(IdempotencyKey, key)
            return session.get(Job, record.job_id) if record else None

    def remember_idempotency_key(self, key: str, job_id: str, owner: str | None = None) -> str:
        """Record ``key -> job_id`` for ``owner``; if another request won the race, return that request's job
        id."""
        key = scoped_idempotency_key(key, owner)
        try:
            with self.sessions() as session, session.begin():
                session.add(IdempotencyKey(key=key, job_id=job_id, created_at=utcnow()))
            return job_id
        except IntegrityError:
            with self.sessions() as session:
                record = session.get(IdempotencyKey, key)
                return record.job_id if record else job_id

    def forget_idempotency_key(self, key: str, job_id: str, owner: str | None = None) -> None:
        """Drop ``key`` if it still names ``job_id`` (a job that could not be queued: a retry may try again)."""
        key = scoped_idempotency_key(key, owner)
        with self.sessions() as session, session.begin():
            session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.key == key, IdempotencyKey.job_id == job_id)
            )

    def delete_unpublished(self, job_id: str) -> None:
        """Remove a job that was created but never published (it lost an Idempotency-Key race)."""
        with self.sessions() as session, session.begin():
            session.execute(delete(Job).where(Job.id == job_id))

    # ---- cancel -------------------------------------------------------------------------------------
    def request_cancel(self, job_id: str, visible_to: str | None = None) -> Job | None:
        """A queued job is cancelled at once; a running one gets its cancel flag (the worker stops). None when
        there is no such job, or it belongs to an owner other than ``visible_to`` (None: any owner)."""
        if "\x00" in job_id or self.get(job_id, visible_to) is None:
            return None
        with self.sessions() as session, session.begin():
            _cancel_in(session, job_id, utcnow())
        job = self.get(job_id)
        if job is not None and job.state in (SUCCEEDED, FAILED):
            raise CancelConflict(job.state)
        return job

    # ---- worker side --------------------------------------------------------------------------------
    def claim(self, job_id: str, *, worker: str, lease_seconds: float) -> Claim | None:
        """Take a queued job (or a running one whose lease expired) and start a new attempt."""
        now = utcnow()
        token = str(uuid.uuid4())
        claimable = or_(Job.state == QUEUED, and_(Job.state == RUNNING, Job.lease_expires_at < now))
        with self.sessions() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
                .values(
                    state=RUNNING,
                    attempts=Job.attempts + 1,
                    lease_token=token,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    worker=worker,
                    started_at=now,
                    updated_at=now,
                    progress_stage="starting",
                    progress_done=0,
                    progress_total=0,
                )
            )
            if result.rowcount != 1:
                return None
            attempt = session.scalar(select(Job.attempts).where(Job.id == job_id))
        return Claim(job_id=job_id, token=token, attempt=int(attempt or 0))

    def release(self, claim: Claim) -> bool:
        """Give back a claimed job that the infrastructure (not the job) stopped: queued again, the attempt not
        counted. False if the lease was lost meanwhile."""
        now = utcnow()
        with self.sessions() as session, session.begin():
            outcome = session.execute(
                update(Job)
                .where(Job.id == claim.job_id, Job.lease_token == claim.token, Job.state == RUNNING)
                .values(
                    state=QUEUED,
                    attempts=Job.attempts - 1,
                    lease_token=None,
                    lease_expires_at=None,
                    progress_stage="requeued",
                    updated_at=now,
                )
            )
        return outcome.rowcount == 1

    def heartbeat(self, claim: Claim, lease_seconds: float) -> tuple[bool, bool]:
        """Renew the lease; returns (still_held, cancel_requested)."""
        now = utcnow()
        with self.sessions() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(Job.id == claim.job_id, Job.lease_token == claim.token, Job.state == RUNNING)
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            )
            held = result.rowcount == 1
            cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == claim.job_id)))
        return held, cancel

    def set_progress(self, claim: Claim, stage: str, done: int, total: int) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(Job)
                .where(Job.id == claim.job_id, Job.lease_token == claim.token, Job.state == RUNNING)
                .values(progress_stage=stage, progress_done=done, progress_total=total, updated_at=utcnow())
            )

    def finish(
        self,
        claim: Claim,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record the outcome of the attempt that holds ``claim``; False if the lease was lost."""
        now = utcnow()
        with self.sessions() as session, session.begin():
            outcome = session.execute(
                update(Job)
                .where(Job.id == claim.job_id, Job.lease_token == claim.token, Job.state == RUNNING)
                .values(
                    state=state,
                    result=result,
                    error=error,
                    error_type=(error or {}).get("type"),
                    finished_at=now,
                    updated_at=now,
                    lease_expires_at=None,
                )
            )
            recorded = outcome.rowcount == 1
            if recorded and state == SUCCEEDED and result and not result["meta"].get("deduplicated_from"):
                for stage, seconds in result["meta"].get("seconds", {}).items():
                    _add_stage_seconds(session, stage, float(seconds))
        return recorded

    def stage_timings(self) -> list[tuple[str, float, int]]:
        """(stage, total seconds, jobs) over every succeeded, computed (not deduplicated) job."""
        with self.sessions() as session:
            rows = session.execute(
                select(StageTiming.stage, StageTiming.seconds_sum, StageTiming.jobs).order_by(
                    StageTiming.stage
                )
            )
            return [(stage, float(total), int(jobs)) for stage, total, jobs in rows]

    # ---- reaper -------------------------------------------------------------------------------------
    def requeue_expired(self, job: Job, *, max_attempts: int) -> str | None:
        """Requeue an orphaned job (lease expired) or fail it when its attempts are used up.

        Returns the new state if this caller won the race, else None.
        """
        now = utcnow()
        same_attempt = and_(
            Job.id == job.id,
            Job.state == RUNNING,
            Job.lease_token == job.lease_token,
            Job.lease_expires_at < now,
        )
        if job.cancel_requested:
            values: dict[str, Any] = {"state": CANCELLED, "finished_at": now}
        elif job.attempts >= max_attempts:
            error = {
                "type": "worker-lost",
                "title": "Worker lost",
                "detail": f"the worker running this job stopped responding {job.attempts} times "
                f"(max_attempts={max_attempts}); the job was not retried again",
            }
            values = {"state": FAILED, "finished_at": now, "error": error, "error_type": error["type"]}
        else:
            values = {"state": QUEUED, "progress_stage": "requeued"}
        with self.sessions() as session, session.begin():
            outcome = session.execute(
                update(Job).where(same_attempt).values(lease_token=None, updated_at=now, **values)
            )
        return values["state"] if outcome.rowcount == 1 else None


def scoped_idempotency_key(key: str, owner: str | None) -> str:
    """The stored form of an Idempotency-Key: the key itself without an owner (as before API keys existed),
    else a hash of owner and key, so that two teams' equal keys never meet."""
    if owner is None:
        return key
    return "owner-sha256:" + hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()


def _cancel_in(session: Session, job_id: str, now: datetime) -> None:
    """``request_cancel``'s two updates inside the caller's transaction (a finished job is left as it is)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == QUEUED)
        .values(state=CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == RUNNING)
        .values(cancel_requested=True, updated_at=now)
    )


def _visible(owner: str | None, visible_to: str | None) -> bool:
    return visible_to is None or owner == visible_to


def _owned_by(owner: str | None) -> Any:
    return Job.owner.is_(None) if owner is None else Job.owner == owner


def _only_visible(query: Select, visible_to: str | None) -> Select:
    """``query`` limited to the jobs of owner ``visible_to`` (None: every owner's)."""
    return query if visible_to is None else query.where(Job.owner == visible_to)


def _add_stage_seconds(session: Session, stage: str, seconds: float) -> None:
    """Add one job's seconds to a stage's running total (inside the caller's transaction)."""
    increment = (
        update(StageTiming)
        .where(StageTiming.stage == stage)
        .values(seconds_sum=StageTiming.seconds_sum + seconds, jobs=StageTiming.jobs + 1)
    )
    if session.execute(increment).rowcount == 1:
        return
    try:
        with session.begin_nested():  # first job of this stage; another worker may insert it too
            session.add(StageTiming(stage=stage, seconds_sum=seconds, jobs=1))
    except IntegrityError:
        session.execute(increment)
