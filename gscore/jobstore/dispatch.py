"""Publishing jobs to the Celery queues (the API and every reaper do it; only workers consume).

The job table is the outbox: a job row is committed first, then published. A publish that fails, hangs
past its timeout, or never happens (the process died in between) leaves the job ``queued``, and the
reaper publishes it again (:func:`gscore.jobstore.reaper.republish_unstarted`). So the API never waits on the
broker: :meth:`Dispatcher.publish_soon` hands the message to a background thread and returns.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

from gscore.jobstore.broker import PUBLISH_RETRY_POLICY, SCORE_TASK

log = logging.getLogger("gscore.dispatch")
PUBLISH_THREADS = 2
MAX_PENDING_PUBLISHES = 10_000  # beyond this, publishes are left to the reaper's republish pass
FAULT_EXIT_CODE = 137


class Dispatcher:
    """Sends ``score_job(job_id)`` to a queue, inline (:meth:`enqueue`) or in the background.

    Parameters
    ----------
    celery_app
        The app from :func:`gscore.jobstore.broker.create_celery` (its transport options bound every call).
    test_fault
        ``GSCORE_TEST_FAULT``; ``"exit-before-publish"`` makes :meth:`publish_soon` end the process
        (chaos tests: the API dies between committing a job and publishing it).
    """

    def __init__(self, celery_app: Celery, test_fault: str = "") -> None:
        self.celery_app = celery_app
        self.test_fault = test_fault
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0

    def enqueue(self, job_id: str, queue: str) -> None:
        """Publish now; raises the broker's error after the bounded retry policy."""
        self.celery_app.send_task(
            SCORE_TASK, args=[job_id], queue=queue, retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )

    def publish_soon(self, job_id: str, queue: str) -> None:
        """Publish in a background thread; a failure is logged (the job stays queued and is republished)."""
        if self.test_fault == "exit-before-publish":
            log.error("TEST FAULT: exiting before publishing job %s", job_id)
            os._exit(FAULT_EXIT_CODE)
        with self._lock:
            if self._pending >= MAX_PENDING_PUBLISHES:
                log.warning("job %s: %d publishes pending; left to the republish pass", job_id, self._pending)
                return
            self._pending += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="gscore-publish")
        self._executor.submit(self._publish_logged, job_id, queue)

    def _publish_logged(self, job_id: str, queue: str) -> None:
        try:
            self.enqueue(job_id, queue)
            log.info("job %s: published to %s", job_id, queue)
        except Exception as exc:
            log.warning(
                "job %s: publish failed (%s: %s); it stays queued and is republished later",
                job_id,
                type(exc).__name__,
                exc,
            )
        finally:
            with self._lock:
                self._pending -= 1

    def broker_reachable(self, timeout: float = 2.0) -> bool:
        """Whether a connection to the broker opens within ``timeout`` seconds (one try)."""
        try:
            with self.celery_app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
                if connection.transport.driver_type == "redis":
                    connection.default_channel.client.ping()  # a paused Redis accepts TCP but never answers
            return True
        except Exception:
            return False

    def shutdown(self) -> None:
        """Stop the background thread without waiting for a hung publish."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
