"""Publishing jobs to the Celery queues (the API and every reaper do it; only workers consume)."""

from __future__ import annotations

from celery import Celery

from jobstore.broker import SCORE_TASK


class Dispatcher:
    """Sends ``score_job(job_id)`` to a queue."""

    def __init__(self, celery_app: Celery) -> None:
        self.celery_app = celery_app

    def enqueue(self, job_id: str, queue: str) -> None:
        self.celery_app.send_task(
            SCORE_TASK,
            args=[job_id],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2},
        )

    def broker_reachable(self, timeout: float = 2.0) -> bool:
        try:
            with self.celery_app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
            return True
        except Exception:
            return False
