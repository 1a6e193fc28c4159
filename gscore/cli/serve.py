"""Running the service: ``gscore up`` (API and one worker), ``gscore serve`` (the API), ``gscore worker``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

SHUTDOWN_GRACE_SECONDS = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gscore.cli.keys import check_bind_allowed
    from gscore.service.app import create_app

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    check_bind_allowed(args.host)  # no API key: loopback only
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    return 0


def _worker_check(timeout: float) -> int:
    """Exit 0 when a worker on this host answers a ping through the broker (Docker's health check)."""
    import socket

    from gscore.jobstore.broker import create_celery
    from gscore.settings import get_settings

    app = create_celery(get_settings())
    if not app.conf.worker_enable_remote_control:
        print(
            "gscore worker --check: the embedded broker has no remote control; nothing to ping",
            file=sys.stderr,
        )
        return 1
    host = socket.gethostname()
    replies = app.control.inspect(timeout=timeout, pattern=f"*@{host}", matcher="glob").ping() or {}
    if not replies:
        print(f"gscore worker --check: no worker on {host} answered within {timeout} s", file=sys.stderr)
        return 1
    print(" ".join(sorted(replies)))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from gscore.settings import get_settings
    from gscore.worker.tasks import create_worker_app

    if args.check:
        return _worker_check(args.check_timeout)

    logging.basicConfig(level=args.loglevel.upper(), format=LOG_FORMAT)
    app = create_worker_app(get_settings())
    queues = ",".join(q.strip() for q in args.queues.split(",") if q.strip())
    app.worker_main(
        [
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(args.concurrency),
            "--pool",
            args.pool,
            "--loglevel",
            args.loglevel,
            "--hostname",
            f"gscore-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    return 0


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM (graceful: uvicorn drains, Celery warm shutdown), then SIGQUIT/SIGKILL after a grace period."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # main process only; Celery then stops its pool itself
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    for name, process in processes.items():
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            print(
                f"gscore up: {name} did not stop in {SHUTDOWN_GRACE_SECONDS:.0f} s; killing it",
                file=sys.stderr,
            )
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _up(args: argparse.Namespace) -> int:
    from gscore.cli.keys import check_bind_allowed

    check_bind_allowed(args.host)  # before starting anything: no API key means loopback only
    command = [sys.executable, "-m", "gscore.cli"]
    processes = {
        "api": subprocess.Popen(
            [*command, "serve", "--host", args.host, "--port", str(args.port)], start_new_session=True
        ),
        "worker": subprocess.Popen(
            [*command, "worker", "--queues", "cpu,gpu", "--concurrency", "1"], start_new_session=True
        ),
    }
    stopping = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["signal"] = signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(
        f"gscore up: API on http://{args.host}:{args.port} (dashboard at /, docs at /docs), one worker; "
        "Ctrl-C stops both",
        file=sys.stderr,
    )
    exit_code = 0
    try:
        while not stopping["signal"]:
            ended = [name for name, process in processes.items() if process.poll() is not None]
            if ended:
                print(
                    f"gscore up: {ended[0]} exited with {processes[ended[0]].returncode}; stopping",
                    file=sys.stderr,
                )
                exit_code = 1
                break
            time.sleep(0.2)
    finally:
        _stop(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("up", help="run the API and one worker (embedded defaults); Ctrl-C stops both")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=_up)

    p = subparsers.add_parser("serve", help="run the HTTP API alone")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=_serve)

    p = subparsers.add_parser("worker", help="run a Celery worker alone")
    p.add_argument("--queues", default="cpu,gpu", help="comma-separated: gpu, cpu (default both)")
    p.add_argument("--concurrency", type=int, default=1, help="processes; use one worker per GPU")
    p.add_argument(
        "--pool",
        default="prefork",
        choices=["prefork", "solo", "threads"],
        help="prefork enforces time limits; solo runs jobs in the worker process",
    )
    p.add_argument("--loglevel", default="info")
    p.add_argument(
        "--check",
        action="store_true",
        help="do not run a worker: exit 0 if a worker on this host answers a ping (a health check; Redis)",
    )
    p.add_argument("--check-timeout", type=float, default=5.0, help="seconds to wait for --check's reply")
    p.set_defaults(func=_worker)
