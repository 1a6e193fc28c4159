"""The chaos suite's machinery: a loopback TCP proxy that can forward, black-hole or refuse, stacks of real
API and worker processes, the scenarios of issue 9, and the tally each scenario reports.

Used by tests/stack/test_chaos.py (assertions) and benchmarks/chaos.py (the full table). Everything runs on
127.0.0.1, with bounded process counts and deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from conftest import DIGITS_ARCH, Stack, free_port, stack_env

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
FINAL = ("succeeded", "failed", "cancelled")
REPUBLISH_AFTER_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 10.0  # no request of a scenario may take longer than this
CHAOS_REDIS_DB = 12  # apart from the other tests' database (conftest.REDIS_TEST_DB): scenarios flush it
COMPLETION_LINE = re.compile(
    r"job ([0-9a-f-]{36}): (?:(?:succeeded|failed|cancelled) in|attempt \d+ finished as)"
)


# ---- a TCP proxy we control -----------------------------------------------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``mode`` is ``forward``, ``blackhole`` (connections are
    accepted, nothing is forwarded or answered: a paused server) or ``refuse`` (connections are closed: a
    server that is down)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "forward"
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)
                if self.mode == "refuse":
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            client_writer.close()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer)
        )
        self._writers.difference_update((client_writer, server_writer))

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "blackhole", "refuse")
        self.mode = mode
        if mode == "refuse":  # drop what is open, as a server that went down does
            for writer in list(self._writers):
                self._loop.call_soon_threadsafe(writer.close)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# ---- stacks of real processes ---------------------------------------------------------------------------
@dataclass
class ChaosStack(Stack):
    """:class:`conftest.Stack` with any number of workers, each with its own environment overrides."""

    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, wait: bool = True, **overrides: str) -> subprocess.Popen[bytes]:  # type: ignore[override]
        self.worker_starts += 1
        name = f"worker-{self.worker_starts}.log"
        env, self.env = self.env, {**self.env, **overrides}
        try:
            process = self._spawn(
                [*_gscore_command(), "worker", "--queues", "cpu,gpu", "--concurrency", "1"], name
            )
        finally:
            self.env = env
        self.worker = process
        self.workers.append(process)
        if wait:
            wait_for_log(self, name, " ready.", process)
        return process

    def start_api_with(self, **overrides: str) -> None:
        env, self.env = self.env, {**self.env, **overrides}
        try:
            self.start_api()
        finally:
            self.env = env

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL of each process group after ``grace`` seconds (teardown needs no warm
        shutdown; the scenarios that test SIGTERM send it themselves and wait for its effect)."""
        processes = [p for p in (*self.workers, self.api) if p is not None and p.poll() is None]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already (it killed itself)
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def completions(self) -> Counter[str]:
        """How many attempts of each job ran to the end (recorded or not), from every worker's log."""
        counts: Counter[str] = Counter()
        for log in self.data_dir.glob("worker-*.log"):
            counts.update(COMPLETION_LINE.findall(log.read_text(errors="replace")))
        return counts


def _gscore_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "gscore.cli"]


def wait_for_log(
    stack: Stack, name: str, text: str, process: subprocess.Popen[bytes], timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in stack.log(name):
            return
        assert process.poll() is None, stack.log(name)
        time.sleep(0.2)
    raise AssertionError(f"{name} never logged {text!r}:\n{stack.log(name)}")


def new_stack(data_dir: Path, **overrides: str) -> ChaosStack:
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "GSCORE_LEASE_SECONDS": "3",
        "GSCORE_REPUBLISH_AFTER_SECONDS": str(REPUBLISH_AFTER_SECONDS),
        "GSCORE_BROKER_TIMEOUT_SECONDS": "2",
    }
    settings["GSCORE_DATABASE_TIMEOUT_SECONDS"] = "2"
    settings["GSCORE_CLAIM_RETRY_SECONDS"] = "3"
    return ChaosStack(data_dir=data_dir, env=stack_env(data_dir, **{**settings, **overrides}))


# ---- the tally ------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """What one scenario measured; ``lost`` counts accepted jobs that never succeeded."""

    scenario: str
    mode: str
    accepted: list[str] = field(default_factory=list)
    succeeded: int = 0
    ran_twice: int = 0
    status_503: int = 0
    other_5xx: int = 0
    slowest_request_s: float = 0.0
    notes: str = ""

    @property
    def lost(self) -> int:
        return len(self.accepted) - self.succeeded

    def record(self, response: httpx.Response | None, seconds: float) -> None:
        self.slowest_request_s = max(self.slowest_request_s, seconds)
        if response is None:
            return
        if response.status_code == 503:
            self.status_503 += 1
            assert response.headers.get("retry-after"), response.text
        elif response.status_code >= 500:
            self.other_5xx += 1

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.mode} | {len(self.accepted)} | {self.succeeded} | {self.lost} | "
            f"{self.ran_twice} | {self.status_503} | {self.other_5xx} | {self.slowest_request_s:.2f} | {self.notes} |"
        )


TABLE_HEADER = (
    "| scenario | mode | accepted (202) | succeeded | lost | ran twice | 503 | other 5xx | slowest request (s) | notes |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def submit(
    stack: Stack,
    tally: Tally,
    checkpoint: Path,
    key: str | None = None,
    seed: int | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> httpx.Response | None:
    """POST one job (a unique seed unless given); a 202 is added to ``tally.accepted``."""
    spec = {**SPEC, "seed": seed if seed is not None else uuid.uuid4().int % 1_000_000 + 1000}
    headers = {"Idempotency-Key": key} if key else {}
    started = time.monotonic()
    response = None
    try:
        with checkpoint.open("rb") as handle:
            response = httpx.post(
                f"{stack.url}/v1/jobs",
                data={"spec": json.dumps(spec)},
                files={"checkpoint": (checkpoint.name, handle)},
                headers=headers,
                timeout=timeout,
            )
    except httpx.TransportError:
        response = None
    tally.record(response, time.monotonic() - started)
    if response is not None and response.status_code == 202:
        tally.accepted.append(response.json()["id"])
    return response


def settle(stack: ChaosStack, tally: Tally, timeout: float = 90) -> Tally:
    """Wait until every accepted job is final (or ``timeout``), then count succeeded and ran-twice."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        while time.monotonic() < deadline:
            for job_id in tally.accepted:
                if states.get(job_id) not in FINAL:
                    answer = client.get(f"/v1/jobs/{job_id}")
                    if answer.status_code == 200:
                        states[job_id] = answer.json()["state"]
            if all(states.get(job_id) in FINAL for job_id in tally.accepted):
                break
            time.sleep(0.3)
    tally.succeeded = sum(states.get(job_id) == "succeeded" for job_id in tally.accepted)
    completions = stack.completions()
    tally.ran_twice = sum(completions[job_id] > 1 for job_id in tally.accepted)
    return tally


def timed_get(
    url: str, tally: Tally, timeout: float = REQUEST_TIMEOUT_SECONDS, count_status: bool = True
) -> httpx.Response | None:
    """GET ``url``; its time always counts, its status only with ``count_status`` (a /readyz 503 is its
    answer, not a fault)."""
    started = time.monotonic()
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.TransportError:
        response = None
    tally.record(response if count_status else None, time.monotonic() - started)
    return response


# ---- scenarios ------------------------------------------------------------------------------------------
def api_killed_between_commit_and_publish(data_dir: Path, checkpoint: Path, mode: str, **env: str) -> Tally:
    """The API dies after committing a job, before publishing it; a retry with the same Idempotency-Key
    after the restart answers that job, and it runs (published again at start-up)."""
    tally = Tally("API killed between commit and publish", mode)
    stack = new_stack(data_dir, **env)
    try:
        stack.start_api_with(GSCORE_TEST_FAULT="exit-before-publish")
        stack.start_worker()
        keys = {f"chaos-{uuid.uuid4()}": uuid.uuid4().int % 1_000_000 + 1000 for _ in range(3)}
        for key, seed in keys.items():
            assert submit(stack, tally, checkpoint, key, seed) is None  # the API died: no answer
            stack.api.wait(timeout=10)
            stack.start_api_with(GSCORE_TEST_FAULT="exit-before-publish")
        stack.api.send_signal(signal.SIGTERM)
        stack.api.wait(timeout=15)
        stack.start_api()
        for key, seed in keys.items():  # the client retries: same key and body -> the first request's job
            response = submit(stack, tally, checkpoint, key, seed)
            assert response is not None and response.status_code == 202, response and response.text
        return settle(stack, tally)
    finally:
        stack.stop()


def worker_killed_between_message_and_claim(data_dir: Path, checkpoint: Path, mode: str, **env: str) -> Tally:
    """A worker takes a message and dies before claiming the job (the message is held or invisible)."""
    tally = Tally("worker killed between message and claim", mode)
    stack = new_stack(data_dir, **env)
    try:
        stack.start_api()
        faulty = stack.start_worker(GSCORE_TEST_FAULT="exit-before-claim")
        for _ in range(3):
            submit(stack, tally, checkpoint)
        faulty.wait(timeout=30)  # it exits on the first message it takes
        stack.kill(faulty)
        stack.start_worker()
        return settle(stack, tally)
    finally:
        stack.stop()


def sigterm_worker_takes_no_new_job(data_dir: Path, checkpoint: Path, mode: str, **env: str) -> Tally:
    """SIGTERM to a worker running a job: it finishes that job and starts no other."""
    tally = Tally("worker SIGTERMed while jobs wait", mode)
    stack = new_stack(data_dir, GSCORE_TEST_JOB_DELAY_SECONDS="2", **env)
    try:
        stack.start_api()
        stopping = stack.start_worker()
        for _ in range(3):
            submit(stack, tally, checkpoint)
        with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            deadline = time.monotonic() + 60
            while client.get(f"/v1/jobs/{tally.accepted[0]}").json()["state"] == "queued":
                assert time.monotonic() < deadline
                time.sleep(0.1)
        stopping.send_signal(signal.SIGTERM)
        stopping.wait(timeout=60)
        started = stack.log("worker-1.log").count("started on")
        tally.notes = f"stopping worker started {started} job(s) in all"
        stack.start_worker()
        return settle(stack, tally)
    finally:
        stack.stop()


def fresh_start_together(data_dir: Path, checkpoint: Path, mode: str, **env: str) -> Tally:
    """The API and two workers started at the same instant on fresh state all come up and serve."""
    tally = Tally("API + 2 workers started together on fresh state", mode)
    stack = new_stack(data_dir, **env)
    try:
        stack.api = stack._spawn([*_gscore_command(), "serve", "--port", str(stack.port)], "api.log")
        workers = [stack.start_worker(wait=False) for _ in range(2)]
        for index, worker in enumerate(workers, start=1):
            wait_for_log(stack, f"worker-{index}.log", " ready.", worker)
        deadline = time.monotonic() + 60
        while not _ready(stack):
            assert stack.api.poll() is None and time.monotonic() < deadline, stack.log("api.log")
            time.sleep(0.2)
        for _ in range(4):
            submit(stack, tally, checkpoint)
        settle(stack, tally)
        alive = sum(worker.poll() is None for worker in workers)
        errors = sum("Traceback" in stack.log(name) for name in ("api.log", "worker-1.log", "worker-2.log"))
        tally.notes = f"{alive}/2 workers alive, {errors} logs with a traceback"
        return tally
    finally:
        stack.stop()


def _ready(stack: Stack) -> bool:
    try:
        return httpx.get(f"{stack.url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def broker_lost_its_messages(
    data_dir: Path, checkpoint: Path, mode: str, redis_url: str, **env: str
) -> Tally:
    """Redis restarted without persistence (its database flushed) while jobs wait: nothing is lost."""
    import redis

    tally = Tally("Redis restarted without persistence", mode)
    stack = new_stack(data_dir, BROKER_URL=redis_url, **env)
    try:
        stack.start_api()
        for _ in range(6):
            submit(stack, tally, checkpoint)
        time.sleep(0.5)  # published
        redis.Redis.from_url(redis_url).flushdb()
        stack.start_worker()
        return settle(stack, tally)
    finally:
        stack.stop()


def broker_hangs(
    data_dir: Path, checkpoint: Path, mode: str, redis_port: int, redis_db: int, **env: str
) -> Tally:
    """The API's broker black-holes (a paused Redis): 40 concurrent POSTs, /healthz and GETs all answer in
    time; once it answers again every accepted job runs."""
    tally = Tally("broker hangs, 40 concurrent POSTs", mode)
    proxy = TcpProxy(redis_port)
    stack = new_stack(data_dir, BROKER_URL=f"redis://127.0.0.1:{proxy.port}/{redis_db}", **env)
    try:
        stack.start_api()
        stack.env["BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/{redis_db}"  # the worker's path is fine
        stack.start_worker()
        proxy.set_mode("blackhole")
        with ThreadPoolExecutor(48) as pool:
            posts = [pool.submit(submit, stack, tally, checkpoint) for _ in range(40)]
            reads = [
                pool.submit(timed_get, f"{stack.url}{path}", tally) for path in ("/healthz", "/v1/jobs") * 4
            ]
            ready = pool.submit(timed_get, f"{stack.url}/readyz", tally, count_status=False)
            for future in (*posts, *reads):
                future.result()
            readyz = ready.result()
        assert readyz is not None and readyz.json()["checks"]["broker"] != "ok", readyz and readyz.text
        tally.notes = f"readyz during: {readyz.json()['checks']['broker']}"
        time.sleep(1)
        proxy.set_mode("forward")
        return settle(stack, tally, timeout=120)
    finally:
        stack.stop()
        proxy.close()


def database_down(
    data_dir: Path, checkpoint: Path, mode: str, postgres_url: str, redis_url: str, **env: str
) -> Tally:
    """PostgreSQL refuses connections for 8 s while jobs are submitted and claimed: POSTs meanwhile get 503
    + Retry-After (no row), accepted jobs all run."""
    tally = Tally("PostgreSQL down 8 s", mode)
    match = re.match(r"(.*@[^:/]+):(\d+)(/.*)", postgres_url)
    assert match, postgres_url
    proxy = TcpProxy(int(match.group(2)))
    url = f"{match.group(1)}:{proxy.port}{match.group(3)}"
    # leases (20 s) outlast the outage, as the 60 s default does: a running job is not handed to another worker
    stack = new_stack(
        data_dir,
        DATABASE_URL=url,
        BROKER_URL=redis_url,
        GSCORE_CLAIM_RETRY_SECONDS="12",
        GSCORE_LEASE_SECONDS="20",
        **env,
    )
    try:
        stack.start_api()
        stack.start_worker()
        for _ in range(4):
            submit(stack, tally, checkpoint)
        proxy.set_mode("refuse")
        down_until = time.monotonic() + 8
        while time.monotonic() < down_until:
            submit(stack, tally, checkpoint)
            timed_get(f"{stack.url}/healthz", tally)
            time.sleep(0.5)
        proxy.set_mode("forward")
        for _ in range(4):
            submit(stack, tally, checkpoint)
        return settle(stack, tally, timeout=120)
    finally:
        stack.stop()
        proxy.close()


def workers_killed_mid_run(data_dir: Path, checkpoint: Path, mode: str, kills: int = 4, **env: str) -> Tally:
    """Workers SIGKILLed while jobs run (leases expire, the reaper requeues): every job succeeds."""
    tally = Tally(f"workers SIGKILLed mid-run x{kills}", mode)
    stack = new_stack(data_dir, GSCORE_TEST_JOB_DELAY_SECONDS="1.5", **env)
    try:
        stack.start_api()
        stack.start_worker()
        for _ in range(6):
            submit(stack, tally, checkpoint)
        for _ in range(kills):
            time.sleep(2.0)
            stack.kill(stack.worker)
            stack.start_worker()
        return settle(stack, tally, timeout=180)
    finally:
        stack.stop()


def as_dict(tally: Tally) -> dict[str, Any]:
    return {
        "scenario": tally.scenario,
        "mode": tally.mode,
        "accepted": len(tally.accepted),
        "succeeded": tally.succeeded,
        "lost": tally.lost,
        "ran_twice": tally.ran_twice,
        "503": tally.status_503,
        "other_5xx": tally.other_5xx,
        "slowest_request_s": round(tally.slowest_request_s, 2),
        "notes": tally.notes,
    }


def fresh_postgres_url() -> str:
    """A new, empty PostgreSQL database on the local server (dropped by :func:`drop_postgres`)."""
    import psycopg2
    from conftest import POSTGRES_ADMIN

    name = f"gscore_chaos_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(connect_timeout=3, **POSTGRES_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    admin.close()
    return f"postgresql+psycopg2://{POSTGRES_ADMIN['user']}@{POSTGRES_ADMIN['host']}:5432/{name}"


def drop_postgres(url: str) -> None:
    import psycopg2
    from conftest import POSTGRES_ADMIN

    admin = psycopg2.connect(connect_timeout=3, **POSTGRES_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    admin.close()


def flushed_redis_url(host: str, port: int, db: int = CHAOS_REDIS_DB) -> str:
    """The chaos suite's database of the tests' own Redis (``conftest.own_redis``), emptied."""
    import redis

    redis.Redis(host=host, port=port, db=db).flushdb()
    return f"redis://{host}:{port}/{db}"
