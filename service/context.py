"""What the routes share: settings, the job table, storage and the queue publisher."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import sessionmaker

from gscore.settings import Settings
from jobstore.datasets_repo import DatasetsRepo
from jobstore.dispatch import Dispatcher
from jobstore.jobs_repo import JobsRepo
from jobstore.storage import Storage
from service.metrics import ServiceMetrics


@dataclass
class ServiceContext:
    settings: Settings
    sessions: sessionmaker
    repo: JobsRepo
    datasets: DatasetsRepo
    storage: Storage
    dispatcher: Dispatcher
    metrics: ServiceMetrics


def get_context(request: Request) -> ServiceContext:
    return request.app.state.context
