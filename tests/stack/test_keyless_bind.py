"""A service without any API key refuses to bind to a non-loopback address (``gscore serve`` and ``gscore
up``, real processes: the refusal happens at start-up). The key cases themselves: tests/service/test_api_keys.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, free_port, stack_env


@pytest.mark.parametrize("verb", ["serve", "up"])
def test_keyless_service_refuses_a_non_loopback_bind(verb: str, tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "gscore.cli", verb, "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "gscore keys create" in done.stderr and "0.0.0.0" in done.stderr
