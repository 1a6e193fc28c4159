"""``create_app(settings)``: the FastAPI application with its routes, error handlers, metrics and reaper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from gscore import __version__
from gscore.jobstore.broker import create_celery
from gscore.jobstore.datasets_repo import DatasetsRepo
from gscore.jobstore.db import make_session_factory
from gscore.jobstore.dispatch import Dispatcher
from gscore.jobstore.jobs_repo import JobsRepo
from gscore.jobstore.notifications import NotifierThread
from gscore.jobstore.reaper import ReaperThread
from gscore.jobstore.startup import prepare_state
from gscore.jobstore.storage import Storage
from gscore.service.context import ServiceContext
from gscore.service.deps import authenticate
from gscore.service.metrics import ServiceMetrics
from gscore.service.problems import install_problem_handlers
from gscore.service.routes import api_docs, catalog, collections, dashboard, datasets, health, jobs
from gscore.service.upload_work import warm_up
from gscore.service.warmup import EngineWarmup
from gscore.settings import Settings, get_settings

API_DESCRIPTION = (
    "Generalization scores for trained image classifiers. Submit a checkpoint with `POST /v1/jobs`, poll "
    "`GET /v1/jobs/{id}`. Errors are RFC 9457 `application/problem+json` documents."
)


def build_context(settings: Settings) -> ServiceContext:
    prepare_state(settings)  # the schema and the embedded broker's tables, once under locks, before serving
    sessions = make_session_factory(
        settings.resolved_database_url, migrate=False, timeout_seconds=settings.database_timeout_seconds
    )
    repo = JobsRepo(sessions)
    storage = Storage(settings.resolved_storage_dir)
    warmup = EngineWarmup()
    warmup.start()  # the engine's imports, in their own thread: /readyz says "warming" until they are done
    return ServiceContext(
        settings=settings,
        sessions=sessions,
        repo=repo,
        datasets=DatasetsRepo(sessions, storage),
        storage=storage,
        dispatcher=Dispatcher(create_celery(settings), settings.test_fault),
        metrics=ServiceMetrics(repo),
        warmup=warmup,
    )


def create_app(settings: Settings | None = None, *, run_reaper: bool = True) -> FastAPI:
    """The API for ``settings`` (default: from the environment)."""
    context = build_context(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = None
        if run_reaper:  # a serving API (in-process test apps start their check processes on first use)
            warm_up(context.settings)  # the upload check processes start and import their checks now
            reaper = ReaperThread.from_settings(context.repo, context.dispatcher, context.settings)
            reaper.start()  # its first pass publishes every queued job again (in its own thread)
        notifier = NotifierThread.start_if_enabled(context.sessions, context.settings) if run_reaper else None
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            if notifier is not None:
                notifier.stop()
            context.dispatcher.shutdown()

    app = FastAPI(  # /docs and /redoc are served offline by service.routes.api_docs
        title="gscore",
        version=__version__,  # the package's version (`gscore --version`)
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = context
    install_problem_handlers(app)
    app.middleware("http")(context.metrics.middleware)
    for module in (jobs, collections, datasets, catalog):  # /v1: an API key once any exists (service.deps)
        app.include_router(module.router, dependencies=[Depends(authenticate)])
    for module in (health, api_docs, dashboard):  # open: probes, /docs, the dashboard's static files
        app.include_router(module.router)
    return app
