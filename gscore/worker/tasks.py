"""The Celery task and the worker process hooks (warm imports after fork, the reaper thread)."""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_ready, worker_shutdown, worker_shutting_down

from gscore.jobstore.broker import SCORE_TASK, create_celery
from gscore.jobstore.dispatch import Dispatcher
from gscore.jobstore.notifications import NotifierThread
from gscore.jobstore.reaper import ReaperThread
from gscore.jobstore.startup import prepare_state
from gscore.settings import Settings
from gscore.worker.execute import execute_job, worker_context
from gscore.worker.shutdown import ShutdownFlag

log = logging.getLogger("gscore.worker")
EMBEDDED_POLLING_INTERVAL_SECONDS = 0.2


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app with the score task registered and the process hooks connected.

    The database schema is created or upgraded first (once, under a lock: :func:`gscore.jobstore.db.prepare_database`),
    so no worker consumes a message before the tables exist.
    """
    prepare_state(settings)  # schema and embedded broker's tables, once, under locks (workers start together)
    app = create_celery(settings)
    if settings.resolved_broker_url.startswith("sqla+"):
        # kombu's SQL transport polls its table every second and passes every transport option to
        # create_engine, so its polling interval can only be set on the class: poll 5x a second
        from kombu.transport.sqlalchemy import Transport as SQLTransport

        SQLTransport.polling_interval = EMBEDDED_POLLING_INTERVAL_SECONDS

    shutting_down = ShutdownFlag()  # shared memory: set in the main process, read in the pool's children

    @app.task(name=SCORE_TASK, bind=True)
    def score_job(self: Any, job_id: str) -> str:
        if shutting_down.is_set():
            # a worker that got SIGTERM takes no new job: the message goes back for another worker
            log.info("job %s: worker shutting down; message requeued, job not claimed", job_id)
            raise Reject("worker shutting down", requeue=True)
        return execute_job(job_id, settings, self.request.hostname or socket.gethostname())

    @worker_shutting_down.connect(weak=False)
    def _refuse_new_jobs(**_: Any) -> None:
        shutting_down.set()

    reaper_holder: dict[str, Any] = {}

    @worker_process_init.connect(weak=False)
    def _warm_child(**_: Any) -> None:
        # after the fork: import torch and the engine here, never CUDA in the parent
        import torch

        import gscore.pipeline  # noqa: F401

        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)

    @worker_ready.connect(weak=False)
    def _start_reaper(**_: Any) -> None:
        reaper = ReaperThread.from_settings(worker_context(settings).repo, Dispatcher(app), settings)
        reaper.start()
        reaper_holder["reaper"] = reaper
        notifier = NotifierThread.start_if_enabled(worker_context(settings).repo.sessions, settings)
        if notifier is not None:  # webhooks of the jobs this worker ends go out even if the API is down
            reaper_holder["notifier"] = notifier

    @worker_shutdown.connect(weak=False)
    def _stop_reaper(**_: Any) -> None:
        for thread in reaper_holder.values():
            thread.stop()

    return app
