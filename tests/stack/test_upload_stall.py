"""Hostile uploads never stall the API: while a 56 MB safetensors header and 50 simultaneous small torch
zips (each needing a pickle scan) arrive at a real uvicorn server, ``/healthz`` and ``GET /v1/jobs``
keep answering in well under a second.

What makes this hold (not luck): the header is refused from its first bytes (over the header cap), the
uploads' blocking steps wait in their own thread limiter (``gscore.service.upload_work``), never in the pool
that runs the sync routes, and the scans run in a bounded pool of low-priority processes. The poller
and the uploaders run in processes of their own (the uploaders at low priority: the load generator must
not starve the server it loads, nor the measuring client); the poller runs until every upload has been
answered (it waits on that, not on a clock).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import struct
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
import pytest
from conftest import DIGITS_ARCH, Stack, stack_env

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
UPLOADS = 50
SLOWEST_POLL_SECONDS = 1.0
HEADER_BYTES = 56 * 1024 * 1024


@pytest.fixture()
def api(tmp_path: Path) -> Stack:
    data_dir = tmp_path / "stall"
    data_dir.mkdir()
    stack = Stack(data_dir=data_dir, env=stack_env(data_dir, GSCORE_MAX_UPLOAD_BYTES=str(64 * 1024 * 1024)))
    stack.start_api()  # no worker: the jobs stay queued
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        while client.get("/readyz").status_code != 200:  # the engine's imports (warming) are done
            time.sleep(0.1)
    yield stack
    stack.stop()


def torch_zip_checkpoint() -> bytes:
    import torch

    from gscore.models import build_model

    buffer = io.BytesIO()
    torch.save(build_model(DIGITS_ARCH).state_dict(), buffer)
    return buffer.getvalue()


def huge_header_safetensors() -> bytes:
    body = b'{"__metadata__":{"pad":"' + b"x" * (HEADER_BYTES - 40) + b'"}}'
    body += b" " * (HEADER_BYTES - len(body))
    return struct.pack("<Q", len(body)) + body


def poll_until(url: str, stop: Event, results: Queue) -> None:
    """In its own process (no GIL shared with the uploading threads): poll ``/healthz`` and ``GET /v1/jobs``
    until ``stop`` is set; put each path's latencies on ``results``."""
    latencies: dict[str, list[float]] = {"/healthz": [], "/v1/jobs": []}
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            for path, seen in latencies.items():
                started = time.monotonic()
                assert client.get(path).status_code == 200
                seen.append(time.monotonic() - started)
            time.sleep(0.02)
    results.put(latencies)


def upload_all(url: str, checkpoint: bytes, header: bytes) -> list[int]:
    """In its own low-priority process (the load generator must not starve the server it measures): POST
    the huge header and ``UPLOADS`` checkpoints at once; their statuses, in order."""
    os.nice(10)

    def upload(index: int) -> int:
        content = header if index == 0 else checkpoint
        with httpx.Client(base_url=url, timeout=300) as client:
            response = client.post(
                "/v1/jobs",
                data={"spec": json.dumps({**SPEC, "seed": index})},
                files={"checkpoint": (f"c{index}.pt", content)},
            )
        return response.status_code

    with ThreadPoolExecutor(UPLOADS + 1) as pool:
        return list(pool.map(upload, range(UPLOADS + 1)))


def test_polls_answer_fast_while_hostile_uploads_arrive(api: Stack) -> None:
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    poller = context.Process(target=poll_until, args=(api.url, stop, results))
    poller.start()
    try:
        with ProcessPoolExecutor(1, mp_context=context) as uploader:
            uploads = uploader.submit(upload_all, api.url, torch_zip_checkpoint(), huge_header_safetensors())
            statuses = uploads.result()
    finally:
        stop.set()
        latencies = results.get(timeout=60)
        poller.join(timeout=30)
    assert statuses[0] == 422 and statuses[1:] == [202] * UPLOADS, statuses
    for path, seen in latencies.items():
        assert seen, path
        assert max(seen) < SLOWEST_POLL_SECONDS, f"{path}: slowest {max(seen):.2f} s of {len(seen)} polls"
    with httpx.Client(base_url=api.url) as client:
        assert len(client.get("/v1/jobs", params={"limit": 200}).json()["jobs"]) == UPLOADS


def child_pids(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children |= {int(child) for child in (task / "children").read_text().split()}
    return children


def test_the_check_processes_end_with_the_api(api: Stack) -> None:
    """Stopping the API (SIGTERM, then SIGKILL of whatever is left of the API process itself) leaves no
    check process behind."""
    assert api.api is not None
    with httpx.Client(base_url=api.url, timeout=120) as client:  # one check makes sure the pool is up
        response = client.post(
            "/v1/jobs",
            data={"spec": json.dumps(SPEC)},
            files={"checkpoint": ("c.pt", torch_zip_checkpoint())},
        )
        assert response.status_code == 202, response.text
    children = child_pids(api.api.pid)
    assert len(children) >= 2  # the check processes (and multiprocessing's resource tracker)
    api.api.kill()  # the API alone dies, as with an OOM kill: no shutdown code runs
    api.api.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert left == [], left
