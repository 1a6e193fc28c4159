"""Webhook events: which ``notify_url`` a job may name, the event of a finished job, its signature, and one
HTTP delivery. Plain functions; the outbox that schedules deliveries is :mod:`gscore.jobstore.notifications`.

The signature follows Stripe's scheme: header ``Gscore-Signature: t=<unix seconds>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256 over ``f"{t}.".encode() + body`` with ``GSCORE_WEBHOOK_SECRET``. A receiver
recomputes it over the raw body, compares in constant time, and refuses an old ``t`` (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from gscore.errors import SpecError

if TYPE_CHECKING:
    from gscore.jobstore.db import Job
    from gscore.settings import Settings

SIGNATURE_HEADER = "Gscore-Signature"
EVENT_ID_HEADER = "Gscore-Event-Id"
USER_AGENT = "gscore-webhooks/1"
MAX_URL_LENGTH = 2048
EVENT_NAMESPACE = uuid.UUID("6f0d6f0e-8a37-4c61-9f7e-2b1a3c5d7e90")  # event ids: uuid5(job id + state)


class NotifyUrlError(SpecError):
    """A ``notify_url`` this deployment will not deliver to (a 422 naming the field and the host)."""

    type = "notify-url-refused"
    title = "notify_url refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="notify_url")


@dataclass(frozen=True)
class DeliveryOutcome:
    """One attempt: the receiver's status code (None when no answer came) and an error text (None: 2xx)."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.error is None


def notify_url_host(url: str) -> str:
    """The lower-cased host of an ``http``/``https`` URL, or a NotifyUrlError."""
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise NotifyUrlError(f"notify_url must be one URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError as exc:
        raise NotifyUrlError(f"notify_url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyUrlError("notify_url must be an http:// or https:// URL with a host")
    return parts.hostname.lower()


def check_notify_url(url: str, settings: Settings) -> str:
    """``url`` if this deployment may deliver to it (its host is in ``GSCORE_WEBHOOK_ALLOWED_HOSTS`` and a
    ``GSCORE_WEBHOOK_SECRET`` is set), else a NotifyUrlError naming the host (a 422)."""
    host = notify_url_host(url)
    allowed = settings.webhook_hosts
    if host not in allowed:
        listed = ", ".join(sorted(allowed)) if allowed else "none: webhooks are off on this server"
        raise NotifyUrlError(
            f"notify_url host {host!r} is not allowed (GSCORE_WEBHOOK_ALLOWED_HOSTS: {listed})"
        )
    if not settings.webhook_secret:
        raise NotifyUrlError("this server cannot sign webhook events (GSCORE_WEBHOOK_SECRET is not set)")
    return url


def event_id(job_id: str, state: str) -> str:
    """The id of the event of ``job_id`` reaching ``state``: the same on every retry (receivers dedupe)."""
    return "evt_" + uuid.uuid5(EVENT_NAMESPACE, f"{job_id}:{state}").hex


def job_event(job: Job) -> dict[str, Any]:
    """The event of a finished job: scores and statuses when it succeeded, the error when it failed."""
    result = job.result or {}
    return {
        "id": event_id(job.id, job.state),
        "type": f"job.{job.state}",
        "created_at": job.finished_at.isoformat() if job.finished_at else None,
        "job": {
            "id": job.id,
            "url": f"/v1/jobs/{job.id}",
            "state": job.state,
            "collection": job.collection,
            "model_name": job.model_name,
            "checkpoint_sha256": job.checkpoint_sha256,
            "hyperparameters": job.hyperparameters or {},
            "test_accuracy": job.test_accuracy,
            "train_accuracy": job.train_accuracy,
            "scores": result.get("scores"),
            "status": result.get("status"),
            "error": job.error,
        },
    }


def event_body(event: dict[str, Any]) -> bytes:
    """The bytes sent (and signed): compact JSON with sorted keys, identical on every retry."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``Gscore-Signature`` header value of ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def delivery_headers(body: bytes, event: dict[str, Any], secret: str, timestamp: int | None = None) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: event["id"],
        SIGNATURE_HEADER: sign(body, secret, timestamp),
    }


def unsafe_address_reason(host: str, port: int) -> str | None:
    """Why ``host`` must not be connected to even though it is allowed (it resolves to a link-local,
    multicast or unspecified address, e.g. a cloud metadata endpoint), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host!r}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            return f"{host!r} resolves to {address}, which webhooks never connect to"
    return None


def make_http_client(settings: Settings) -> httpx.Client:
    """The HTTP client of deliveries: no redirects followed, no proxy from the environment, every phase
    bounded by ``GSCORE_WEBHOOK_TIMEOUT_SECONDS``, at most ``GSCORE_WEBHOOK_MAX_IN_FLIGHT`` connections."""
    limit = settings.webhook_max_in_flight
    return httpx.Client(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
    )


def deliver(client: httpx.Client, url: str, event: dict[str, Any], settings: Settings) -> DeliveryOutcome:
    """POST the signed ``event`` to ``url`` once; a 2xx answer delivers it. Never raises."""
    try:
        host = notify_url_host(url)
        if host not in settings.webhook_hosts:
            return DeliveryOutcome(None, f"host {host!r} is no longer in GSCORE_WEBHOOK_ALLOWED_HOSTS")
        if not settings.webhook_secret:
            return DeliveryOutcome(None, "GSCORE_WEBHOOK_SECRET is not set")
        parts = urlsplit(url)
        reason = unsafe_address_reason(host, parts.port or (443 if parts.scheme == "https" else 80))
        if reason:
            return DeliveryOutcome(None, reason)
        body = event_body(event)
        response = client.post(
            url, content=body, headers=delivery_headers(body, event, settings.webhook_secret)
        )
    except NotifyUrlError as exc:
        return DeliveryOutcome(None, str(exc))
    except httpx.HTTPError as exc:
        return DeliveryOutcome(None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return DeliveryOutcome(response.status_code, None)
    if response.is_redirect:
        where = response.headers.get("location", "")
        return DeliveryOutcome(response.status_code, f"redirect to {where[:200]!r} not followed")
    return DeliveryOutcome(response.status_code, f"the receiver answered {response.status_code}")
