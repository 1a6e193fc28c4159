"""The API warms the engine a submission needs at start-up, and ``/readyz`` says ready only after it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from fastapi.testclient import TestClient
from test_routes_inprocess import inprocess_settings

from gscore.service import warmup
from gscore.service.app import create_app


def test_readyz_says_warming_until_the_engine_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setattr(warmup, "warm_engine", lambda: release.wait(60))
    app = create_app(inprocess_settings(tmp_path), run_reaper=False)
    with TestClient(app) as client:
        before = client.get("/readyz")
        release.set()
        assert app.state.context.warmup.wait(60)
        after = client.get("/readyz")
    assert (before.status_code, before.json()["checks"]["engine"]) == (503, "warming")
    assert (after.status_code, after.json()["checks"]) == (
        200,
        {"database": "ok", "broker": "ok", "storage": "ok", "engine": "ok"},
    )


def test_a_failed_warm_up_is_named_by_readyz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("no module named 'torch'")

    monkeypatch.setattr(warmup, "warm_engine", broken)
    app = create_app(inprocess_settings(tmp_path), run_reaper=False)
    assert app.state.context.warmup.wait(60)
    with TestClient(app) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["engine"] == "failed: ImportError: no module named 'torch'"


def test_a_fresh_api_process_has_the_submission_path_imported_once_ready(tmp_path: Path) -> None:
    """In a new interpreter: create the app, wait for its warm-up, and look at what is imported, before any
    request (a first ``POST /v1/jobs`` then imports nothing new)."""
    script = f"""
import sys
from gscore.service.app import create_app
from gscore.settings import Settings
app = create_app(Settings(data_dir={str(tmp_path)!r}, device="cpu"), run_reaper=False)
assert app.state.context.warmup.wait(120), "warm-up did not finish"
print(app.state.context.warmup.status)
print(" ".join(sorted(m for m in sys.modules if m in {{"torch", "gscore.pipeline", "gscore.models",
    "gscore.inputs.checkpoints.preflight", "gscore.inputs.checkpoints.loading"}})))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    status, modules = done.stdout.splitlines()[-2:]
    assert status == "ok"
    assert modules.split() == [
        "gscore.inputs.checkpoints.loading",
        "gscore.inputs.checkpoints.preflight",
        "gscore.models",
        "gscore.pipeline",
        "torch",
    ]
