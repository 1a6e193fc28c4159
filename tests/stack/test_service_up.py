"""``gscore up``: the API and one worker from one command; SIGINT (Ctrl-C) stops both cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import DIGITS_ARCH, REPO_ROOT, free_port, stack_env, submit_job, wait_for_job


def test_up_serves_scores_and_stops_on_ctrl_c(tmp_path: Path, digits_checkpoint: Path) -> None:
    port = free_port()
    log = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gscore.cli", "up", "--port", str(port)],
        cwd=REPO_ROOT,
        env=stack_env(tmp_path / "data"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.3)
            spec = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
            job = submit_job(client, digits_checkpoint, spec).json()
            done = wait_for_job(client, job["id"], ("succeeded", "failed"))
            assert done["state"] == "succeeded", done
        assert (tmp_path / "data" / "gscore.db").exists() and (tmp_path / "data" / "broker.db").exists()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = (tmp_path / "up.log").read_text()
    assert "Shutting down" in output and "Warm shutdown" in output
    listing = subprocess.run(
        ["pgrep", "-f", "--", f"serve --host 127.0.0.1 --port {port}"], capture_output=True, text=True
    )
    assert listing.returncode == 1 and listing.stdout.strip() == ""  # no API process left
