"""The reaper: requeue orphaned jobs (a running job whose lease expired lost its worker) and publish
again every queued job that did not start in time (its message was lost: the job table is the outbox).

Both are safe to run in every API replica and every worker at once: each change is a conditional
UPDATE that one caller wins, and a duplicate message is harmless (the claim decides who runs a job).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gscore.jobstore.db import Job, utcnow
from gscore.jobstore.dispatch import Dispatcher
from gscore.jobstore.jobs_repo import QUEUED, JobsRepo

if TYPE_CHECKING:
    from gscore.settings import Settings

log = logging.getLogger("gscore.reaper")


def reap_once(repo: JobsRepo, dispatcher: Dispatcher, max_attempts: int) -> int:
    """One pass over expired leases; returns how many jobs changed state."""
    changed = 0
    for job in repo.expired_leases():
        new_state = repo.requeue_expired(job, max_attempts=max_attempts)
        if new_state is None:
            continue  # another reaper, or the worker itself, got there first
        changed += 1
        log.warning(
            "job %s: lease expired after attempt %d on %s -> %s", job.id, job.attempts, job.worker, new_state
        )
        if new_state == QUEUED:
            dispatcher.enqueue(job.id, job.queue)
    return changed


def republish_wait(job: Job, after_seconds: float, max_interval_seconds: float) -> float:
    """Seconds a queued job waits after its last publish before it is published again.

    ``after_seconds`` at first, then as long as the job has waited so far (so a job behind a long queue
    gets a logarithmic number of duplicate messages), at most ``max_interval_seconds``.
    """
    waited = (job.updated_at - job.created_at).total_seconds()
    return min(max(after_seconds, waited), max(max_interval_seconds, after_seconds))


def republish_unstarted(
    repo: JobsRepo,
    dispatcher: Dispatcher,
    after_seconds: float,
    max_interval_seconds: float,
    *,
    everything: bool = False,
    now: datetime | None = None,
) -> int:
    """Publish again the queued jobs whose :func:`republish_wait` has passed (all of them if ``everything``,
    as at start-up); returns how many were published. A publish error propagates (the next pass retries)."""
    now = now or utcnow()
    published = 0
    candidates = repo.unstarted_queued(None if everything else now - timedelta(seconds=after_seconds))
    for job in candidates:
        due = job.updated_at + timedelta(seconds=republish_wait(job, after_seconds, max_interval_seconds))
        if not everything and due > now:
            continue
        if not repo.touch_queued(job.id, job.updated_at, now):
            continue  # started, cancelled, or republished by another reaper meanwhile
        try:
            dispatcher.enqueue(job.id, job.queue)
        except Exception:
            repo.touch_queued(job.id, now, job.updated_at)  # not published: due again on the next pass
            raise
        published += 1
        log.warning(
            "job %s: still queued %.0f s after its last publish; published again",
            job.id,
            (now - job.updated_at).total_seconds(),
        )
    return published


class ReaperThread(threading.Thread):
    """Runs :func:`reap_once` and :func:`republish_unstarted` every ``interval`` seconds until stopped.

    The first pass runs at once and republishes every queued job (``republish_at_start``).
    """

    def __init__(
        self,
        repo: JobsRepo,
        dispatcher: Dispatcher,
        max_attempts: int,
        interval: float,
        *,
        republish_after_seconds: float = 30.0,
        republish_max_interval_seconds: float = 300.0,
        republish_at_start: bool = True,
    ) -> None:
        super().__init__(name="gscore-reaper", daemon=True)
        self.repo, self.dispatcher = repo, dispatcher
        self.max_attempts, self.interval = max_attempts, interval
        self.republish_after_seconds = republish_after_seconds
        self.republish_max_interval_seconds = republish_max_interval_seconds
        self.republish_at_start = republish_at_start
        self.stopped = threading.Event()

    @classmethod
    def from_settings(cls, repo: JobsRepo, dispatcher: Dispatcher, settings: Settings) -> ReaperThread:
        """The reaper of a process (API or worker) configured by ``settings``."""
        return cls(
            repo,
            dispatcher,
            settings.max_attempts,
            settings.reaper_interval_seconds,
            republish_after_seconds=settings.republish_after_seconds,
            republish_max_interval_seconds=settings.republish_max_interval_seconds,
        )

    def run_pass(self, *, everything: bool = False) -> None:
        try:
            reap_once(self.repo, self.dispatcher, self.max_attempts)
        except Exception:  # a database or broker hiccup must not kill the thread
            log.exception("reaper pass failed")
        try:
            republish_unstarted(
                self.repo,
                self.dispatcher,
                self.republish_after_seconds,
                self.republish_max_interval_seconds,
                everything=everything,
            )
        except Exception:
            log.exception("republish pass failed")

    def run(self) -> None:
        self.run_pass(everything=self.republish_at_start)
        while not self.stopped.wait(self.interval):
            self.run_pass()

    def stop(self) -> None:
        self.stopped.set()
