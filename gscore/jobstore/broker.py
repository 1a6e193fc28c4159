"""The Celery app and the score task's name, configured from the one settings object (broker, queues, acks,
limits). The API and the reaper publish with it; ``gscore.worker.tasks`` registers the task on it."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from gscore.settings import Settings

SCORE_TASK = "gscore.score_job"
QUEUES = ("gpu", "cpu")
VISIBILITY_MARGIN_SECONDS = 600
# a publish retries a lost connection twice, 0.2 s then 0.7 s apart: with the socket and connect timeouts
# (GSCORE_BROKER_TIMEOUT_SECONDS) every publish ends within a bounded time
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``; the API uses it to publish, workers also register the task on it."""
    broker_url = settings.resolved_broker_url
    if broker_url.startswith("sqla+sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("gscore", broker=broker_url, set_as_current=False)
    timeout = settings.broker_timeout_seconds
    if broker_url.startswith("sqla+"):
        # kombu's SQL transport passes these to create_engine: wait for SQLite's write lock (bounded)
        transport_options: dict = (
            {"connect_args": {"timeout": timeout}}
            if "sqlite" in broker_url
            else {"pool_timeout": timeout, "pool_pre_ping": True}
        )
    else:
        # Redis redelivers an unacked message after the visibility timeout: it must outlast the hard limit,
        # or a long job would be handed to a second worker while the first still runs. (A message taken by
        # a worker that died before claiming its job is not waited for: the job is still queued in the
        # table and the reaper publishes it again, see jobstore.reaper.) Socket timeouts: a paused or
        # black-holed Redis fails a call after ``timeout`` s instead of hanging it (BRPOP waits 1 s).
        transport_options = {
            "visibility_timeout": settings.job_time_limit + VISIBILITY_MARGIN_SECONDS,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
        }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # the job table holds results and states
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # bounded by the attempt counter in the job table
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_default_queue=settings.default_queue,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=timeout,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_enable_remote_control=not broker_url.startswith("sqla"),  # no fanout on the SQL transport
        enable_utc=True,
    )
    return app


def prepare_broker_tables(settings: Settings) -> None:
    """Create the embedded (SQL) broker's tables and queue rows now, once, so that processes starting
    together do not race on them (kombu creates them lazily: ``UNIQUE constraint failed: kombu_queue.name``,
    ``table kombu_queue already exists``). Call it under :func:`gscore.jobstore.startup.startup_lock`; a no-op
    on Redis."""
    if not settings.resolved_broker_url.startswith("sqla+"):
        return
    app = create_celery(settings)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in QUEUES:
            channel._new_queue(name)  # kombu's get-or-create of the queue row (and create_all of the tables)
