"""``/healthz`` (the process answers), ``/readyz`` (database, broker and storage usable, the engine warmed),
``/metrics``.

``/healthz`` runs on the event loop and touches nothing. ``/readyz`` runs each check in a small thread
pool of its own (never the one requests share) and gives each ``READY_CHECK_TIMEOUT_SECONDS``: a hung
dependency is reported as such, it never hangs the answer.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gscore.service.context import ServiceContext
from gscore.service.deps import AdminCaller, Context
from gscore.service.schemas import Health

router = APIRouter(tags=["health"])
READY_CHECK_TIMEOUT_SECONDS = 3.0
_check_threads = ThreadPoolExecutor(max_workers=6, thread_name_prefix="gscore-readyz")


def check_database(ctx: ServiceContext) -> str:
    with ctx.sessions() as session:
        session.execute(text("SELECT 1"))
    return "ok"


def check_broker(ctx: ServiceContext) -> str:
    return (
        "ok" if ctx.dispatcher.broker_reachable(timeout=READY_CHECK_TIMEOUT_SECONDS - 0.5) else "unreachable"
    )


def check_storage(ctx: ServiceContext) -> str:
    """Write, flush and delete a small file where uploads are written."""
    with tempfile.NamedTemporaryFile(dir=ctx.storage.tmp_dir, prefix="readyz-", suffix=".probe") as probe:
        probe.write(b"gscore readiness probe\n")
        probe.flush()
    return "ok"


def check_engine(ctx: ServiceContext) -> str:
    """``ok`` once the engine a submission needs is imported (:mod:`gscore.service.warmup`)."""
    return ctx.warmup.status


async def _run_check(check: Callable[[ServiceContext], str], ctx: ServiceContext) -> str:
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(_check_threads, check, ctx), timeout=READY_CHECK_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return f"no answer in {READY_CHECK_TIMEOUT_SECONDS:.0f} s"
    except OSError as exc:
        return f"unwritable: {exc.strerror or type(exc).__name__}"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(response: Response, ctx: Context) -> Health:
    names = ("database", "broker", "storage", "engine")
    results = await asyncio.gather(
        *(_run_check(check, ctx) for check in (check_database, check_broker, check_storage, check_engine))
    )
    checks = dict(zip(names, results, strict=True))
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return Health(status="ready" if ready else "not ready", checks=checks)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (an admin API key once any key exists: they count every team's jobs)",
)
def metrics(ctx: Context, _admin: AdminCaller) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
