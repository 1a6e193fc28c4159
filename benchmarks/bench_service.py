"""Service benchmark on loopback: status-poll throughput and p50/p99 latency with 32 concurrent clients,
and the time from submission to the job starting, for the embedded (SQLite) and the Redis setups.

    python benchmarks/bench_service.py [--setups embedded,redis] [--seconds 10] [--jobs 5]

Each setup starts a real API (`gscore serve`) and worker (`gscore worker`) with a temporary data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
ARCH = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}
CLIENTS = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gscore.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def checkpoint(directory: Path) -> Path:
    import torch

    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.models import build_model

    torch.manual_seed(0)
    path = directory / "bench.safetensors"
    save_safetensors(build_model(ARCH), path)
    return path


def submission_to_start(client: httpx.Client, path: Path, jobs: int) -> list[float]:
    """Seconds from created_at to started_at of ``jobs`` jobs submitted one after another."""
    delays = []
    for seed in range(jobs):
        spec = {
            "arch": ARCH,
            "dataset": "digits",
            "samples_per_class": 5,
            "measures": ["c3"],
            "seed": seed + int(time.time()),
        }
        with path.open("rb") as handle:
            job = client.post(
                "/v1/jobs", data={"spec": json.dumps(spec)}, files={"checkpoint": handle}
            ).json()
        while job["state"] in ("queued", "running"):
            time.sleep(0.05)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["state"] == "succeeded", job
        started, created = (
            datetime.fromisoformat(job[k].replace("Z", "+00:00")) for k in ("started_at", "created_at")
        )
        delays.append((started - created).total_seconds())
    return delays


async def poll_load(url: str, job_id: str, seconds: float) -> tuple[int, list[float]]:
    """CLIENTS concurrent pollers of GET /v1/jobs/{id} for ``seconds``; (requests, latencies)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        deadline = time.monotonic() + seconds

        async def poller() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await client.get(f"/v1/jobs/{job_id}")
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        await asyncio.gather(*(poller() for _ in range(CLIENTS)))
    return len(latencies), latencies


def bench(setup: str, seconds: float, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {**os.environ, "GSCORE_DATA_DIR": str(data), "GSCORE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
        if setup == "redis":
            env["BROKER_URL"] = os.environ.get("GSCORE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = start(["serve", "--port", str(port)], env, data / "api.log")
        worker = start(["worker", "--concurrency", "1"], env, data / "worker.log")
        try:

            def api_up() -> bool:
                try:
                    return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(api_up, 90, "the API")
            wait_until(
                lambda: " ready." in (data / "worker.log").read_text(errors="replace"),
                90,
                "the worker",
            )
            path = checkpoint(data)
            with httpx.Client(base_url=url, timeout=30) as client:
                submission_to_start(client, path, 1)  # warm up the worker's imports
                delays = submission_to_start(client, path, jobs)
                job_id = client.get("/v1/jobs", params={"limit": 1}).json()["jobs"][0]["id"]
            count, latencies = asyncio.run(poll_load(url, job_id, seconds))
        finally:
            for process in (worker, api):
                process.send_signal(signal.SIGTERM)
            for process in (worker, api):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    latencies.sort()
    return {
        "polls_per_s": count / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "start_median_s": statistics.median(delays),
        "start_max_s": max(delays),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="embedded,redis")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the polling load")
    parser.add_argument("--jobs", type=int, default=5, help="jobs timed from submission to start")
    args = parser.parse_args()
    print(
        f"{'setup':10s} {'polls/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'submit->start median s':>23s} {'max s':>7s}"
    )
    for setup in args.setups.split(","):
        r = bench(setup, args.seconds, args.jobs)
        print(
            f"{setup:10s} {r['polls_per_s']:9.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
            f"{r['start_median_s']:23.3f} {r['start_max_s']:7.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
