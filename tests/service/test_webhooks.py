"""Webhooks (gscore.jobstore.webhooks, .notifications) against a real HTTP receiver on 127.0.0.1: the event of
a job's final state arrives once, signed so that the README's receiver code accepts it (and refuses a
tampered body); a receiver that is down for the first attempts gets it later on the backoff schedule; a
hanging receiver delays neither other events nor the API; a disallowed host is refused at submission.

In process (``create_app`` + TestClient, jobs finished through the job table as a worker does it); the
restart of a real API and worker with deliveries pending is tests/stack/test_webhooks_stack.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import DIGITS_ARCH, assert_problem, free_port, submit_job
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pipelines_lib import WEBHOOK_SECRET as SECRET
from pipelines_lib import WebhookReceiver, readme_webhook_verifier, service_settings

from gscore.cli.remote import _print_job
from gscore.jobstore.db import utcnow
from gscore.jobstore.jobs_repo import SUCCEEDED, JobsRepo
from gscore.jobstore.notifications import (
    DELIVERED,
    GAVE_UP,
    PENDING,
    NotificationsRepo,
    NotifierThread,
    deliver_due,
)
from gscore.jobstore.webhooks import SIGNATURE_HEADER, deliver, event_body, job_event, make_http_client, sign
from gscore.service.app import create_app

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
RESULT = {
    "scores": {"c3": 0.25, "c4": None},
    "status": {
        "c3": {"status": "ok", "reason": None, "warnings": []},
        "c4": {"status": "undefined", "reason": "no test split", "warnings": []},
    },
    "meta": {},
}


@pytest.fixture()
def app(tmp_path: Path) -> FastAPI:
    return create_app(service_settings(tmp_path), run_reaper=False)


@pytest.fixture()
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def submit(client: TestClient, checkpoint: Path, notify_url: str, **fields: str) -> dict[str, Any]:
    response = submit_job(client, checkpoint, SPEC, notify_url=notify_url, **fields)
    assert response.status_code == 202, response.text
    return response.json()


def finish(app: FastAPI, job_id: str, state: str = SUCCEEDED) -> None:
    """Claim the job and record its outcome, as a worker does."""
    repo: JobsRepo = app.state.context.repo
    claim = repo.claim(job_id, worker="test-worker", lease_seconds=60)
    assert claim is not None
    error = None if state == SUCCEEDED else {"type": "engine-error", "title": "Failed", "detail": "boom"}
    assert repo.finish(claim, state, result=RESULT if state == SUCCEEDED else None, error=error)


def outbox(app: FastAPI) -> NotificationsRepo:
    return NotificationsRepo(app.state.context.sessions)


def wait_for_notification(client: TestClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The job's notification once it is no longer pending (its outcome is recorded after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        notification = client.get(f"/v1/jobs/{job_id}").json()["notification"]
        if notification["state"] != PENDING or time.monotonic() > deadline:
            return notification
        time.sleep(0.05)


def test_disallowed_host_is_refused_at_submission(client: TestClient, digits_checkpoint: Path) -> None:
    for url, host in [
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("https://internal.corp:8443/hook", "internal.corp"),
    ]:
        response = submit_job(client, digits_checkpoint, SPEC, notify_url=url)
        problem = assert_problem(response, 422, "notify-url-refused", field="notify_url")
        assert repr(host) in problem["detail"] and "GSCORE_WEBHOOK_ALLOWED_HOSTS" in problem["detail"]
    response = submit_job(client, digits_checkpoint, SPEC, notify_url="ftp://127.0.0.1/hook")
    assert "http:// or https://" in assert_problem(response, 422, "notify-url-refused")["detail"]
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was created


def test_webhooks_off_without_allowed_hosts(tmp_path: Path, digits_checkpoint: Path) -> None:
    app = create_app(service_settings(tmp_path, webhook_allowed_hosts=""), run_reaper=False)
    with TestClient(app) as client:
        response = submit_job(client, digits_checkpoint, SPEC, notify_url="http://127.0.0.1:9/hook")
        assert "webhooks are off" in assert_problem(response, 422, "notify-url-refused")["detail"]


def test_allowed_hosts_need_a_secret_at_start(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="GSCORE_WEBHOOK_ALLOWED_HOSTS is set but GSCORE_WEBHOOK_SECRET is not"
    ):
        service_settings(tmp_path, webhook_secret=None)


def test_event_arrives_once_per_final_state_with_a_valid_signature(
    app: FastAPI,
    client: TestClient,
    receiver: WebhookReceiver,
    digits_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    verify = readme_webhook_verifier()
    job = submit(client, digits_checkpoint, receiver.url(), collection="sweep", model_name="m1")
    assert job["notification"] == {
        "url": receiver.url(),
        "state": PENDING,
        "attempts": 0,
        "last_status_code": None,
        "last_error": None,
        "next_attempt_at": None,
        "delivered_at": None,
    }
    settings = app.state.context.settings
    with make_http_client(settings) as http:
        assert deliver_due(outbox(app), http, settings) == {}  # still queued: no event yet
        finish(app, job["id"])
        assert deliver_due(outbox(app), http, settings) == {job["id"]: DELIVERED}
        assert deliver_due(outbox(app), http, settings) == {}  # delivered once, never again
    assert receiver.requests == 1
    headers, body = receiver.events[0]
    event = verify(body, headers[SIGNATURE_HEADER], SECRET)
    assert event["type"] == "job.succeeded" and headers["Gscore-Event-Id"] == event["id"]
    assert event["job"] | {"url": None} == {
        "id": job["id"],
        "url": None,
        "state": "succeeded",
        "collection": "sweep",
        "model_name": "m1",
        "checkpoint_sha256": job["checkpoint_sha256"],
        "hyperparameters": {},
        "test_accuracy": None,
        "train_accuracy": None,
        "scores": RESULT["scores"],
        "status": RESULT["status"],
        "error": None,
    }
    shown = client.get(f"/v1/jobs/{job['id']}").json()["notification"]
    assert shown["state"] == DELIVERED and shown["attempts"] == 1 and shown["last_status_code"] == 200
    assert shown["last_error"] is None and shown["delivered_at"] is not None
    _print_job(client.get(f"/v1/jobs/{job['id']}").json(), as_json=False)  # what `gscore status` prints
    assert "  webhook delivered, 1 attempt(s): answered 200\n" in capsys.readouterr().out


def test_cancelled_and_failed_jobs_send_their_final_state(
    app: FastAPI, client: TestClient, receiver: WebhookReceiver, digits_checkpoint: Path
) -> None:
    verify = readme_webhook_verifier()
    cancelled = submit(client, digits_checkpoint, receiver.url("/a"), collection="s", model_name="a")
    failed = submit(client, digits_checkpoint, receiver.url("/b"), collection="s", model_name="b")
    assert client.delete(f"/v1/jobs/{cancelled['id']}").json()["state"] == "cancelled"
    finish(app, failed["id"], "failed")
    settings = app.state.context.settings
    with make_http_client(settings) as http:
        states = deliver_due(outbox(app), http, settings)
    assert states == {cancelled["id"]: DELIVERED, failed["id"]: DELIVERED}
    events = {e["job"]["id"]: e for e in (verify(b, h[SIGNATURE_HEADER], SECRET) for h, b in receiver.events)}
    assert events[cancelled["id"]]["type"] == "job.cancelled"
    assert events[failed["id"]]["type"] == "job.failed"
    assert events[failed["id"]]["job"]["error"]["detail"] == "boom"
    assert events[failed["id"]]["job"]["scores"] is None


def test_receiver_down_for_the_first_attempts_gets_the_event_later(
    app: FastAPI, client: TestClient, digits_checkpoint: Path
) -> None:
    port = free_port()  # nothing listens there yet: connection refused
    url = f"http://127.0.0.1:{port}/events"
    job = submit(client, digits_checkpoint, url)
    finish(app, job["id"])
    settings, repo = app.state.context.settings, outbox(app)
    start = utcnow()
    with make_http_client(settings) as http:
        assert deliver_due(repo, http, settings, now=start) == {job["id"]: PENDING}
        shown = client.get(f"/v1/jobs/{job['id']}").json()["notification"]
        assert shown["attempts"] == 1 and shown["last_status_code"] is None
        assert "ConnectError" in shown["last_error"]
        # backoff: 10 s after the first failure, then 20 s
        assert deliver_due(repo, http, settings, now=start + timedelta(seconds=9)) == {}
        assert deliver_due(repo, http, settings, now=start + timedelta(seconds=10)) == {job["id"]: PENDING}
        assert deliver_due(repo, http, settings, now=start + timedelta(seconds=29)) == {}
        receiver = WebhookReceiver(port)  # the receiver comes back, answering 503 once more
        receiver.fail_next = 1
        try:
            assert deliver_due(repo, http, settings, now=start + timedelta(seconds=30)) == {
                job["id"]: PENDING
            }
            shown = client.get(f"/v1/jobs/{job['id']}").json()["notification"]
            assert shown["attempts"] == 3 and shown["last_status_code"] == 503
            later = start + timedelta(seconds=30 + 40)
            assert deliver_due(repo, http, settings, now=later) == {job["id"]: DELIVERED}
        finally:
            receiver.close()
    assert receiver.requests == 2 and len(receiver.events) == 1
    assert json.loads(receiver.events[0][1])["job"]["id"] == job["id"]
    shown = client.get(f"/v1/jobs/{job['id']}").json()["notification"]
    assert shown == shown | {"state": DELIVERED, "attempts": 4, "last_status_code": 200, "last_error": None}
    metrics = client.get("/metrics").text
    assert 'gscore_webhook_events{state="delivered"} 1.0' in metrics
    assert 'gscore_webhook_events{state="pending"} 0.0' in metrics


def test_an_event_is_given_up_after_the_last_attempt(
    app: FastAPI, client: TestClient, digits_checkpoint: Path
) -> None:
    job = submit(client, digits_checkpoint, f"http://127.0.0.1:{free_port()}/down")
    finish(app, job["id"])
    settings, repo = app.state.context.settings, outbox(app)
    now = utcnow()
    with make_http_client(settings) as http:
        for _ in range(settings.webhook_max_attempts):
            states = deliver_due(repo, http, settings, now=now)
            now += timedelta(days=1)
    assert states == {job["id"]: GAVE_UP}
    shown = client.get(f"/v1/jobs/{job['id']}").json()["notification"]
    assert shown["state"] == GAVE_UP and shown["attempts"] == 4 and shown["next_attempt_at"] is None


def test_a_hanging_receiver_delays_neither_other_events_nor_the_api(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    settings = service_settings(tmp_path, webhook_max_in_flight=2, webhook_poll_seconds=0.05)
    app = create_app(settings, run_reaper=False)
    hanging, healthy = WebhookReceiver(), WebhookReceiver()
    hanging.hang = True
    notifier = NotifierThread(app.state.context.sessions, settings)
    try:
        with TestClient(app) as client:
            stuck = submit(client, digits_checkpoint, hanging.url(), collection="s", model_name="stuck")
            finish(app, stuck["id"])
            notifier.start()
            hanging.wait_for(lambda r: r.requests == 1)  # the notifier is now blocked on it
            other = submit(client, digits_checkpoint, healthy.url(), collection="s", model_name="other")
            assert other["state"] == SUCCEEDED  # answered from the first job's result: final at once
            healthy.wait_for(lambda r: len(r.events) == 1)  # while the first receiver still hangs
            assert not hanging.released.is_set() and hanging.events == []
            assert client.get("/healthz").status_code == 200
            assert wait_for_notification(client, other["id"])["state"] == DELIVERED
            assert client.get(f"/v1/jobs/{stuck['id']}").json()["notification"]["attempts"] == 0
            hanging.release()
            hanging.wait_for(lambda r: len(r.events) == 1)
    finally:
        notifier.stop()
        hanging.close()
        healthy.close()


def test_redirects_are_not_followed(tmp_path: Path, receiver: WebhookReceiver) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.send_response(307)
            self.send_header("Location", receiver.url("/elsewhere"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    Thread(target=server.serve_forever, daemon=True).start()
    settings = service_settings(tmp_path)
    event = {"id": "evt_1", "type": "job.succeeded", "job": {"id": "j"}}
    try:
        with make_http_client(settings) as http:
            outcome = deliver(http, f"http://127.0.0.1:{server.server_address[1]}/hook", event, settings)
    finally:
        server.shutdown()
        server.server_close()
    assert outcome.status_code == 307 and "not followed" in (outcome.error or "")
    assert receiver.requests == 0


def test_an_allowed_host_with_a_link_local_address_is_never_connected_to(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, webhook_allowed_hosts="169.254.169.254")  # an operator's mistake
    event = {"id": "evt_1", "type": "job.succeeded", "job": {"id": "j"}}
    with make_http_client(settings) as http:
        outcome = deliver(http, "http://169.254.169.254/latest/meta-data/", event, settings)
    assert outcome.status_code is None
    assert outcome.error == "'169.254.169.254' resolves to 169.254.169.254, which webhooks never connect to"


def test_readme_receiver_refuses_a_tampered_body_a_wrong_secret_and_a_replay(
    app: FastAPI, client: TestClient, digits_checkpoint: Path
) -> None:
    verify = readme_webhook_verifier()
    job = submit(client, digits_checkpoint, "https://receiver.example/hook")
    finish(app, job["id"])
    body = event_body(job_event(app.state.context.repo.get(job["id"])))
    now = 1_800_000_000
    header = sign(body, SECRET, now)
    assert verify(body, header, SECRET, now=now + 10)["job"]["id"] == job["id"]
    tampered = body.replace(b'"c3":0.25', b'"c3":0.99')
    assert tampered != body
    for args, message in [
        ((tampered, header, SECRET), "bad signature"),
        ((body, header, "another-secret"), "bad signature"),
        ((body, header.replace("t=", "t=1"), SECRET), "bad signature"),  # the timestamp is signed too
        ((body, "v1=abc", SECRET), "malformed"),
    ]:
        with pytest.raises(ValueError, match=message):
            verify(*args, now=now)
    with pytest.raises(ValueError, match="replay"):
        verify(body, header, SECRET, now=now + 3600)
