"""Where the work of an upload runs: never on the threads that answer health checks and polls.

    job = await run_upload_step(create_job, ctx, form, key, caller)      # blocking steps of an upload
    run_check(settings, check_checkpoint_upload, path, arch, max_bytes)  # inside them: a CPU-heavy check

- ``run_upload_step`` runs a blocking step (database, file moves, waiting on a check) in a worker thread
  under its own ``anyio.CapacityLimiter`` (``UPLOAD_THREADS``): uploads queue there, so the default thread
  pool that runs the sync routes (``GET /v1/jobs``, ``/healthz``, ...) is never filled by them.
- ``run_check`` runs a check that parses untrusted bytes (pickle opcodes, archive directories, headers,
  ONNX protobuf) in a pool of ``GSCORE_UPLOAD_CHECK_PROCESSES`` spawned processes at low CPU priority
  (``nice`` +10): that work never holds the API process's GIL, at most that many run at once, and a
  check that dies (out of memory) takes its process down, not the API. With 0 processes it runs in the
  calling thread (tests that patch the checks).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from gscore.service.problems import Problem
from gscore.settings import Settings

log = logging.getLogger("gscore.service")
T = TypeVar("T")
UPLOAD_THREADS = 8  # uploads in their blocking steps at once, per API process
CHECK_NICENESS = 10
PARENT_POLL_SECONDS = 1.0

_limiters: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
_pools: dict[int, ProcessPoolExecutor] = {}
_pools_lock = threading.Lock()


async def run_upload_step(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread of the uploads' own limiter (not the default thread pool)."""
    import asyncio

    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(UPLOAD_THREADS)
    return await anyio.to_thread.run_sync(functools.partial(function, *args), limiter=limiter)


def _init_check_process() -> None:
    """In each check process: low CPU priority, and exit when the API process is gone (a worker blocked on
    its task queue never sees the queue close, so without this a killed API would leave it behind)."""
    os.nice(CHECK_NICENESS)
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=exit_with_parent, name="exit-with-parent", daemon=True).start()


def _pool(processes: int) -> ProcessPoolExecutor:
    with _pools_lock:
        pool = _pools.get(processes)
        if pool is None:
            pool = _pools[processes] = ProcessPoolExecutor(
                processes, mp_context=multiprocessing.get_context("spawn"), initializer=_init_check_process
            )
        return pool


def _discard_pool(processes: int, pool: ProcessPoolExecutor) -> None:
    with _pools_lock:
        if _pools.get(processes) is pool:
            del _pools[processes]
    pool.shutdown(wait=False, cancel_futures=True)


def _import_checks() -> None:
    import gscore.inputs.checkpoints.preflight  # noqa: F401  (torch and the models: seconds, once per process)
    import gscore.inputs.checkpoints.upload_checks  # noqa: F401


def warm_up(settings: Settings) -> None:
    """Start the check processes and their imports in the background (torch: seconds per process), so the
    first uploads do not wait for them."""
    processes = settings.upload_check_processes
    if processes:
        pool = _pool(processes)
        for _ in range(processes):
            pool.submit(_import_checks)


def run_check(settings: Settings, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in the check pool (blocking: call it from a worker thread); its exceptions
    (``CheckpointError``, ``DatasetError``, ...) are raised here. ``function`` must be importable by name
    and its arguments and result picklable. A check process that dies is a 503 (the pool is replaced)."""
    processes = settings.upload_check_processes
    if processes == 0:
        return function(*args)
    pool = _pool(processes)
    try:
        return pool.submit(function, *args).result()
    except BrokenProcessPool:
        log.error("an upload check process died (out of memory?) while running %s", function.__name__)
        _discard_pool(processes, pool)
        raise Problem(
            503,
            "upload-check-unavailable",
            "Upload check unavailable",
            "the process checking the upload stopped (out of memory?); retry later",
            headers={"Retry-After": "5"},
        ) from None
