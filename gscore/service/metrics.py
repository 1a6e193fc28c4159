"""Prometheus metrics: HTTP traffic of this replica, and job counts read from the table at scrape time
(so every API replica reports the same totals, whichever replica or worker changed them)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from gscore.jobstore.jobs_repo import STATES, JobsRepo
from gscore.jobstore.notifications import NotificationsRepo


class JobTableCollector(Collector):
    """``gscore_jobs{state}``, ``gscore_job_failures{type}``, ``gscore_job_stage_seconds{stage}`` (a
    summary: ``_sum`` and ``_count`` per stage) and ``gscore_webhook_events{state}`` computed from the
    database."""

    def __init__(self, repo: JobsRepo) -> None:
        self.repo = repo

    def collect(self) -> Iterator[GaugeMetricFamily | SummaryMetricFamily]:
        by_state = GaugeMetricFamily("gscore_jobs", "Jobs in the table by state", labels=["state"])
        counts = self.repo.count_by_state()
        for state in STATES:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        failures = GaugeMetricFamily("gscore_job_failures", "Failed jobs by error type", labels=["type"])
        for kind, count in sorted(self.repo.count_failures_by_type().items()):
            failures.add_metric([kind], count)
        yield failures
        stages = SummaryMetricFamily(
            "gscore_job_stage_seconds",
            "Seconds that succeeded jobs spent per engine stage (load, extract, measures, each sharpness, total)",
            labels=["stage"],
        )
        for stage, seconds, jobs in self.repo.stage_timings():
            stages.add_metric([stage], count_value=jobs, sum_value=seconds)
        yield stages
        webhooks = GaugeMetricFamily(
            "gscore_webhook_events", "Webhook events by notification state", labels=["state"]
        )
        for state, count in NotificationsRepo(self.repo.sessions).count_by_state().items():
            webhooks.add_metric([state], count)
        yield webhooks


class ServiceMetrics:
    """One registry per app (tests build several apps in one process)."""

    def __init__(self, repo: JobsRepo) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gscore_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gscore_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.submitted = Counter(
            "gscore_jobs_submitted", "Jobs submitted to this replica", ["outcome"], registry=self.registry
        )
        self.registry.register(JobTableCollector(repo))

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            self.requests.labels(request.method, route, str(status)).inc()
            self.latency.labels(request.method, route).observe(time.perf_counter() - started)
