"""``gscore worker --check`` (the worker container's own health check): exit 0 while a worker on this host
answers a ping through Redis, non-zero once it is gone, and a clear refusal on the embedded broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, Stack, stack_env


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gscore.cli", "worker", "--check", "--check-timeout", "2"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_pings_the_worker_of_this_host(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(data_dir=tmp_path, env=stack_env(tmp_path, BROKER_URL=redis_url))
    stack.start_worker()
    try:
        alive = _check(stack.env)
        assert alive.returncode == 0, alive.stderr
        assert alive.stdout.startswith("gscore-")
    finally:
        stack.stop()
    gone = _check(stack.env)
    assert gone.returncode == 1 and "no worker" in gone.stderr


def test_check_on_the_embedded_broker_says_why_it_cannot(tmp_path: Path) -> None:
    done = _check(stack_env(tmp_path))
    assert done.returncode == 1 and "embedded broker" in done.stderr
