"""The webhook outbox: a job with a ``notify_url`` has ``notify_state`` 'pending' until the event of its final
state is delivered ('delivered') or its attempts are used up ('failed').

Deliveries are found in the job table, never in a process's memory, so an API or worker that dies after
the job ended (or during a delivery) loses nothing: another process, or the same one restarted, delivers
it. Several processes may run :class:`NotifierThread` at once: an attempt starts with a conditional UPDATE
that one caller wins (it moves ``notify_next_at`` past the attempt's timeout: a lease), and its outcome is
recorded only if no other attempt was recorded meanwhile. At least once: a process killed between the
receiver's answer and the record sends the event again (receivers dedupe by event id).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import sessionmaker

from gscore.jobstore.db import Job, utcnow
from gscore.jobstore.jobs_repo import FINISHED_STATES
from gscore.jobstore.webhooks import DeliveryOutcome, deliver, job_event, make_http_client

if TYPE_CHECKING:
    import httpx

    from gscore.settings import Settings

PENDING, DELIVERED, GAVE_UP = "pending", "delivered", "failed"
NOTIFICATION_STATES = (PENDING, DELIVERED, GAVE_UP)
LEASE_TIMEOUTS = 4  # an attempt holds its event for 4 x the delivery timeout (connect + write + read, slack)
log = logging.getLogger("gscore.webhooks")


def notification_fields(notify_url: str | None) -> dict[str, Any]:
    """The job columns of a new job that asks (or not) for a webhook."""
    if not notify_url:
        return {}
    return {"notify_url": notify_url, "notify_state": PENDING, "notify_attempts": 0}


def retry_delay(attempts: int, settings: Settings) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: the backoff doubles each time,
    ``GSCORE_WEBHOOK_BACKOFF_SECONDS`` after the first, at most ``GSCORE_WEBHOOK_BACKOFF_MAX_SECONDS``."""
    return min(
        settings.webhook_backoff_seconds * 2 ** max(attempts - 1, 0), settings.webhook_backoff_max_seconds
    )


class NotificationsRepo:
    """The outbox columns of the job table, through short transactions."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def count_by_state(self) -> dict[str, int]:
        """{notification state: jobs}, every state present (0 when none)."""
        query = (
            select(Job.notify_state, func.count())
            .where(Job.notify_state.is_not(None))
            .group_by(Job.notify_state)
        )
        with self.sessions() as session:
            counts = {str(state): int(count) for state, count in session.execute(query)}
        return {state: counts.get(state, 0) for state in NOTIFICATION_STATES}

    def due(self, now: datetime, limit: int) -> list[Job]:
        """Finished jobs whose event is pending and due (never tried, or its retry time has come)."""
        query = (
            select(Job)
            .where(
                Job.notify_state == PENDING,
                Job.state.in_(FINISHED_STATES),
                or_(Job.notify_next_at.is_(None), Job.notify_next_at <= now),
            )
            .order_by(Job.finished_at, Job.id)
            .limit(limit)
        )
        with self.sessions() as session:
            return list(session.scalars(query))

    def start_attempt(self, job: Job, now: datetime, lease_seconds: float) -> bool:
        """Take the next attempt of ``job``'s event (as read by :meth:`due`); False if another process took
        it first. Holding it moves ``notify_next_at`` ``lease_seconds`` ahead: if this process dies during
        the attempt, the event is due again after that."""
        same_attempt = [
            Job.id == job.id,
            Job.notify_state == PENDING,
            Job.notify_attempts == job.notify_attempts,
        ]
        if job.notify_next_at is None:
            same_attempt.append(Job.notify_next_at.is_(None))
        else:
            same_attempt.append(Job.notify_next_at == job.notify_next_at)
        with self.sessions() as session, session.begin():
            outcome = session.execute(
                update(Job).where(*same_attempt).values(notify_next_at=now + timedelta(seconds=lease_seconds))
            )
        return outcome.rowcount == 1

    def record(self, job: Job, outcome: DeliveryOutcome, now: datetime, settings: Settings) -> str | None:
        """Record the attempt started on ``job``: delivered, retried later, or given up after
        ``GSCORE_WEBHOOK_MAX_ATTEMPTS``. Returns the new notification state (None if another attempt was
        recorded meanwhile: this one is dropped)."""
        attempts = job.notify_attempts + 1
        values: dict[str, Any] = {
            "notify_attempts": attempts,
            "notify_last_status": outcome.status_code,
            "notify_last_error": outcome.error[:512] if outcome.error else None,
        }
        if outcome.delivered:
            values.update(notify_state=DELIVERED, notify_delivered_at=now, notify_next_at=None)
        elif attempts >= settings.webhook_max_attempts:
            values.update(notify_state=GAVE_UP, notify_next_at=None)
        else:
            values.update(notify_next_at=now + timedelta(seconds=retry_delay(attempts, settings)))
        with self.sessions() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(
                    Job.id == job.id, Job.notify_state == PENDING, Job.notify_attempts == job.notify_attempts
                )
                .values(**values)
            )
        return values.get("notify_state", PENDING) if result.rowcount == 1 else None


def attempt_delivery(
    repo: NotificationsRepo, job: Job, client: httpx.Client, settings: Settings, now: datetime | None = None
) -> str | None:
    """One attempt for a job already started with :meth:`NotificationsRepo.start_attempt`: POST its event,
    record the outcome. Returns the new notification state (None: the record lost a race)."""
    assert job.notify_url is not None
    outcome = deliver(client, job.notify_url, job_event(job), settings)
    state = repo.record(job, outcome, now or utcnow(), settings)
    if outcome.delivered:
        log.info("job %s: webhook delivered (attempt %d)", job.id, job.notify_attempts + 1)
    else:
        log.warning(
            "job %s: webhook attempt %d failed: %s -> %s",
            job.id,
            job.notify_attempts + 1,
            outcome.error,
            state,
        )
    return state


def deliver_due(
    repo: NotificationsRepo, client: httpx.Client, settings: Settings, now: datetime | None = None
) -> dict[str, str | None]:
    """Deliver every due event once, one after the other in this thread (``now``: the clock the outbox
    reads, for tests of the retry schedule); returns {job id: new notification state}."""
    now = now or utcnow()
    lease = LEASE_TIMEOUTS * settings.webhook_timeout_seconds
    states: dict[str, str | None] = {}
    for job in repo.due(now, limit=1000):
        if repo.start_attempt(job, now, lease):
            states[job.id] = attempt_delivery(repo, job, client, settings, now)
    return states


class NotifierThread(threading.Thread):
    """Delivers due events every ``GSCORE_WEBHOOK_POLL_SECONDS`` from a bounded pool of
    ``GSCORE_WEBHOOK_MAX_IN_FLIGHT`` threads: a hanging receiver holds one slot until its timeout, and
    never a worker, a request, or the other events (they go through the free slots)."""

    def __init__(self, sessions: sessionmaker, settings: Settings) -> None:
        super().__init__(name="gscore-notifier", daemon=True)
        self.repo, self.settings = NotificationsRepo(sessions), settings
        self.slots = threading.BoundedSemaphore(settings.webhook_max_in_flight)
        self.pool = ThreadPoolExecutor(settings.webhook_max_in_flight, thread_name_prefix="gscore-webhook")
        self.client = make_http_client(settings)
        self.stopped = threading.Event()

    def run_pass(self) -> int:
        """Start an attempt for each due event there is a free slot for; returns how many started."""
        free = 0
        while self.slots.acquire(blocking=False):
            free += 1
        started = 0
        try:
            now = utcnow()
            lease = LEASE_TIMEOUTS * self.settings.webhook_timeout_seconds
            for job in self.repo.due(now, limit=free) if free else []:
                if self.repo.start_attempt(job, now, lease):
                    self.pool.submit(self._attempt, job)
                    started += 1
        finally:
            for _ in range(free - started):
                self.slots.release()
        return started

    def _attempt(self, job: Job) -> None:
        try:
            attempt_delivery(self.repo, job, self.client, self.settings)
        except Exception:  # a database hiccup: the lease expires and the event is due again
            log.exception("job %s: webhook attempt could not be recorded", job.id)
        finally:
            self.slots.release()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.run_pass()
            except Exception:  # a database hiccup must not kill the thread
                log.exception("webhook pass failed")
            self.stopped.wait(self.settings.webhook_poll_seconds)

    @classmethod
    def start_if_enabled(cls, sessions: sessionmaker, settings: Settings) -> NotifierThread | None:
        """A started notifier when this deployment has webhooks (``GSCORE_WEBHOOK_ALLOWED_HOSTS``), else None."""
        if not settings.webhook_hosts:
            return None
        notifier = cls(sessions, settings)
        notifier.start()
        return notifier

    def stop(self) -> None:
        self.stopped.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        # the client is left open: an attempt still in flight finishes (or times out) on its own
