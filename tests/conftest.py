"""Shared fixtures for the service tests: free ports, a real uvicorn API and a real Celery worker as
subprocesses with a temporary GSCORE_DATA_DIR, the tests' own Redis, a tiny digits checkpoint, and the
request/answer helpers shared with the in-process route tests (tests/test_routes_inprocess.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DIGITS_ARCH: dict[str, Any] = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}
REDIS_HOST = "127.0.0.1"
REDIS_TEST_DB = int(os.environ.get("GSCORE_TEST_REDIS_DB", "11"))
# a Redis for tests only (its databases are flushed); without it the tests start their own
REDIS_URL_ENV = "GSCORE_TEST_REDIS_URL"
POSTGRES_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
STARTUP_TIMEOUT = 90.0
STOP_GRACE_SECONDS = 2.0
MAX_UPLOAD_BYTES = 1024 * 1024


# The files that take longest, longest first (seconds summed over their tests, measured on the 2-core CI
# machine under load). `make test` runs files whole in two processes (xdist's loadfile) and hands them
# out in collection order, so these go first and the short files fill in at the end: started last, one
# of them would leave the other process idle for its whole length.
SLOWEST_FILES = (
    "stack/test_worker_recovery.py",
    "stack/test_dashboard_browser.py",
    "stack/test_ranking_service.py",
    "engine/test_sharpness.py",
    "stack/test_cli_watch.py",
    "stack/test_upload_stall.py",
    "engine/test_tangent_alignment.py",
    "stack/test_service_up.py",
    "engine/test_pipeline.py",
    "stack/test_service_hostile.py",
    "stack/test_webhooks_stack.py",
    "stack/test_sweeps.py",
    "engine/test_onnx_models.py",
    "jobstore/test_migrations.py",
    "service/test_upload_bombs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the files of SLOWEST_FILES first, in that order; the others keep theirs (a stable sort)."""
    rank = {name: index for index, name in enumerate(SLOWEST_FILES)}

    def file_rank(item: pytest.Item) -> int:
        tests = REPO_ROOT / "tests"
        relative = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else ""
        return rank.get(relative, len(SLOWEST_FILES))

    items.sort(key=file_rank)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisUnavailable(Exception):
    """Neither GSCORE_TEST_REDIS_URL nor a redis-server binary to start one."""


@contextlib.contextmanager
def own_redis(directory: Path) -> Iterator[tuple[str, int]]:
    """(host, port) of a Redis the tests may flush: ``GSCORE_TEST_REDIS_URL`` when set, else a
    ``redis-server`` started here on a free port (no persistence, files under ``directory``) and stopped
    afterwards. Never the shared Redis on 6379 that other processes use."""
    configured = os.environ.get(REDIS_URL_ENV)
    if configured:
        parts = urlsplit(configured)
        yield parts.hostname or REDIS_HOST, parts.port or 6379
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(f"no redis-server on PATH and {REDIS_URL_ENV} is not set")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [*args, "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_terminate_with_parent,
    )
    try:
        deadline = time.monotonic() + 20
        while not redis_reachable(REDIS_HOST, port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield REDIS_HOST, port
    finally:
        server.terminate()
        server.wait(timeout=10)


def _terminate_with_parent() -> None:
    """In a spawned API/worker: get SIGTERM when pytest dies, even if it is killed without teardown."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_gscore(
    env: dict[str, str], *args: str, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m gscore.cli ARGS`` in a new process with ``env``, from the repository; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "gscore.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        **kwargs,
    )


def _gscore(*args: str) -> list[str]:
    return [sys.executable, "-m", "gscore.cli.main", *args]


@dataclass
class Stack:
    """An API subprocess and a worker subprocess sharing one data directory (and broker)."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    worker_starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.data_dir / log_name).open("ab")
        return subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )

    def start_api(self) -> None:
        self.api = self._spawn(_gscore("serve", "--port", str(self.port)), "api.log")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.api.poll() is None, self.log("api.log")
            try:
                # ready to take submissions at full speed: the engine is warmed (the broker or the
                # database may be down on purpose in some tests, so only the engine's check counts)
                ready = httpx.get(f"{self.url}/readyz", timeout=5).json()
                if ready.get("checks", {}).get("engine") == "ok":
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"API did not start:\n{self.log('api.log')}")

    def start_worker(self) -> None:
        self.worker_starts += 1
        name = f"worker-{self.worker_starts}.log"
        self.worker = self._spawn(_gscore("worker", "--queues", "cpu,gpu", "--concurrency", "1"), name)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.worker.poll() is None, self.log(name)
            if " ready." in self.log(name):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker did not start:\n{self.log(name)}")

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool children (a machine or container dying)."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.data_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM (the main process only: Celery's warm shutdown), then SIGKILL of the whole process
        group after ``grace`` seconds. Teardown needs no graceful exit (tests of shutdown signal the
        processes themselves), so the grace is short: a warm shutdown took 4-8 s per stack."""
        for process in (self.worker, self.api):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in (self.worker, self.api):
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def stack_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GSCORE_", "BROKER_URL", "DATABASE_URL"))
    }
    env.update(
        {
            "GSCORE_DATA_DIR": str(data_dir),
            "GSCORE_DEVICE": "cpu",
            # long enough that a heartbeat starved on a loaded machine never loses a running job's lease
            # (tests of lease expiry set 3 s themselves)
            "GSCORE_LEASE_SECONDS": "10",
            "GSCORE_REAPER_INTERVAL_SECONDS": "0.5",
            "GSCORE_PROGRESS_INTERVAL_SECONDS": "0.1",
            "GSCORE_JOB_SOFT_TIME_LIMIT": "110",
            "GSCORE_JOB_TIME_LIMIT": "120",
            "GSCORE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def start_stack(data_dir: Path, **overrides: str) -> Stack:
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(data_dir=data_dir, env=stack_env(data_dir, **overrides))
    try:
        stack.start_api()
        stack.start_worker()
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API + worker in embedded mode (SQLite database and broker) with no test delay."""
    stack = start_stack(tmp_path_factory.mktemp("embedded"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(host, port) of the tests' own Redis (see :func:`own_redis`); skips when there is none."""
    try:
        with own_redis(tmp_path_factory.mktemp("redis")) as address:
            yield address
    except RedisUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_url(redis_server: tuple[str, int]) -> str:
    """A database of the tests' own Redis, empty at the start."""
    import redis

    host, port = redis_server
    redis.Redis(host=host, port=port, db=REDIS_TEST_DB).flushdb()
    return f"redis://{host}:{port}/{REDIS_TEST_DB}"


def throwaway_postgres_database(prefix: str = "gscore_test") -> Iterator[str]:
    """Yield the URL of a fresh PostgreSQL database, dropped afterwards; skips when no server answers."""
    import uuid

    import psycopg2

    try:
        admin = psycopg2.connect(connect_timeout=3, **POSTGRES_ADMIN)
    except psycopg2.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL is not reachable on {POSTGRES_ADMIN['host']}:5432 (.ci/run starts it): {exc}"
        )
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg2://{POSTGRES_ADMIN['user']}@{POSTGRES_ADMIN['host']}:5432/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, throw-away PostgreSQL database (dropped afterwards); skips when no server answers."""
    yield from throwaway_postgres_database()


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny digits CNN (random weights, seed 0) saved as safetensors."""
    import torch

    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "digits-cnn.safetensors"
    save_safetensors(build_model(DIGITS_ARCH), path)
    return path


def wait_for_job(client: httpx.Client, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    """Poll ``GET /v1/jobs/{id}`` until its state is one of ``states``."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}; last seen {job}")


def assert_problem(response: httpx.Response, status: int, type_: str, *, field: str | None = None) -> dict:
    """``response`` is an RFC 9457 problem document with this status and type (and ``field``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status and problem["type"] == type_
    assert problem["title"] and problem["detail"] and problem["instance"]
    if field is not None:
        assert problem["field"] == field, problem
    return problem


def submit_job(client: httpx.Client, checkpoint: Path, spec: dict[str, Any], **fields: str) -> httpx.Response:
    data = {"spec": json.dumps(spec), **fields}
    with checkpoint.open("rb") as handle:
        return client.post("/v1/jobs", data=data, files={"checkpoint": (checkpoint.name, handle)})
