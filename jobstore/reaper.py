"""Requeue orphaned jobs: a running job whose lease expired lost its worker."""

from __future__ import annotations

import logging
import threading

from jobstore.dispatch import Dispatcher
from jobstore.jobs_repo import QUEUED, JobsRepo

log = logging.getLogger("gscore.reaper")


def reap_once(repo: JobsRepo, dispatcher: Dispatcher, max_attempts: int) -> int:
    """One pass; returns how many jobs changed state."""
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


class ReaperThread(threading.Thread):
    """Runs :func:`reap_once` every ``interval`` seconds until stopped."""

    def __init__(self, repo: JobsRepo, dispatcher: Dispatcher, max_attempts: int, interval: float) -> None:
        super().__init__(name="gscore-reaper", daemon=True)
        self.repo, self.dispatcher = repo, dispatcher
        self.max_attempts, self.interval = max_attempts, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                reap_once(self.repo, self.dispatcher, self.max_attempts)
            except Exception:  # a database or broker hiccup must not kill the thread
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self.stopped.set()
