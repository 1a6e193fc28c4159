"""Webhooks across a restart: a real API and a real worker (subprocesses) finish a job while its receiver is
down, both are killed (SIGKILL) with the delivery pending, and after the API restarts the event reaches
the receiver, once, signed. The rest of the webhook behaviour is tested in process (tests/service/test_webhooks.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import DIGITS_ARCH, free_port, start_stack, submit_job, wait_for_job
from pipelines_lib import WEBHOOK_SECRET as SECRET
from pipelines_lib import WebhookReceiver, readme_webhook_verifier

from gscore.jobstore.webhooks import SIGNATURE_HEADER

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}


def test_deliveries_pending_when_api_and_worker_are_killed_are_made_after_restart(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    port = free_port()  # the receiver is down: nothing listens there yet
    stack = start_stack(
        tmp_path / "stack",
        GSCORE_WEBHOOK_SECRET=SECRET,
        GSCORE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        GSCORE_WEBHOOK_BACKOFF_SECONDS="0.2",
        GSCORE_WEBHOOK_BACKOFF_MAX_SECONDS="0.5",
        GSCORE_WEBHOOK_POLL_SECONDS="0.1",
        GSCORE_WEBHOOK_MAX_ATTEMPTS="10000",
    )
    receiver = None
    try:
        with stack.client() as client:
            response = submit_job(client, digits_checkpoint, SPEC, notify_url=f"http://127.0.0.1:{port}/hook")
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            job = wait_for_job(client, job_id, ("succeeded", "failed"))
            assert job["state"] == "succeeded", job
            deadline = time.monotonic() + 60
            while job["notification"]["attempts"] < 2 and time.monotonic() < deadline:
                job = client.get(f"/v1/jobs/{job_id}").json()
                time.sleep(0.1)
            assert job["notification"]["state"] == "pending" and job["notification"]["attempts"] >= 2, job
            assert "ConnectError" in job["notification"]["last_error"]
        assert stack.api is not None
        os.killpg(stack.api.pid, signal.SIGKILL)
        stack.api.wait(timeout=10)
        stack.kill_worker()

        receiver = WebhookReceiver(port)  # back up while nothing runs
        stack.start_api()  # the API alone is enough: every process with webhooks on delivers
        receiver.wait_for(lambda r: len(r.events) >= 1, timeout=90)
        with stack.client() as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                notification = client.get(f"/v1/jobs/{job_id}").json()["notification"]
                if notification["state"] != "pending":
                    break
                time.sleep(0.1)
        assert notification["state"] == "delivered" and notification["last_status_code"] == 200
        assert len(receiver.events) == 1  # one attempt at a time, and none after the delivery
        headers, body = receiver.events[0]
        event = readme_webhook_verifier()(body, headers[SIGNATURE_HEADER], SECRET)
        assert event["type"] == "job.succeeded" and event["job"]["id"] == job_id
        assert event["job"]["scores"] == job["result"]["scores"]
    finally:
        stack.stop()
        if receiver is not None:
            receiver.close()
