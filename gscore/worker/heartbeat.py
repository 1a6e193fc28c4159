"""A thread that renews a running job's lease and watches its cancel flag."""

from __future__ import annotations

import logging
import threading
import time

from gscore.jobstore.jobs_repo import Claim, JobsRepo

log = logging.getLogger("gscore.worker")
CANCEL_POLL_SECONDS = 1.0


class Heartbeat(threading.Thread):
    """Renews the lease every ``lease_seconds / 3``; ``should_cancel()`` is the engine's cancel check."""

    def __init__(self, repo: JobsRepo, claim: Claim, lease_seconds: float) -> None:
        super().__init__(name=f"heartbeat-{claim.job_id[:8]}", daemon=True)
        self.repo, self.claim, self.lease_seconds = repo, claim, lease_seconds
        self.stopped = threading.Event()
        self.cancel_requested = False
        self.lease_lost = False
        self._last_poll = time.monotonic()

    def _beat(self) -> None:
        held, cancel = self.repo.heartbeat(self.claim, self.lease_seconds)
        self.cancel_requested = self.cancel_requested or cancel
        self._last_poll = time.monotonic()
        if not held and not self.lease_lost:
            self.lease_lost = True
            log.warning("job %s: lease lost (requeued elsewhere); stopping this attempt", self.claim.job_id)

    def run(self) -> None:
        interval = max(self.lease_seconds / 3, 0.2)
        while not self.stopped.wait(interval):
            try:
                self._beat()
            except Exception:  # keep beating through a database hiccup
                log.exception("job %s: heartbeat failed", self.claim.job_id)

    def should_cancel(self) -> bool:
        """True once the job is cancelled or its lease is lost; polls the table at most once a second."""
        if (
            not (self.cancel_requested or self.lease_lost)
            and time.monotonic() - self._last_poll > CANCEL_POLL_SECONDS
        ):
            try:
                self._beat()
            except Exception:
                log.exception("job %s: cancel check failed", self.claim.job_id)
        return self.cancel_requested or self.lease_lost

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.join(timeout=5)
