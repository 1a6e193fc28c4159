"""The engine's progress callback, written to the job row at most every ``interval`` seconds."""

from __future__ import annotations

import logging
import time

from gscore.jobstore.jobs_repo import Claim, JobsRepo

log = logging.getLogger("gscore.worker")


class ProgressWriter:
    """``progress(stage, done, total)``; a new stage or a finished one is always written."""

    def __init__(self, repo: JobsRepo, claim: Claim, interval: float) -> None:
        self.repo, self.claim, self.interval = repo, claim, interval
        self._last_write = 0.0
        self._last_stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self._last_stage and done < total and now - self._last_write < self.interval:
            return
        self._last_write, self._last_stage = now, stage
        try:
            self.repo.set_progress(self.claim, stage, int(done), int(total))
        except Exception:  # progress is best effort; the job goes on
            log.exception("job %s: progress write failed", self.claim.job_id)
