"""What the routes share: settings, the job table, storage and the queue publisher."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import sessionmaker

from gscore.settings import Settings
from service.datasets_repo import DatasetsRepo
from service.dispatch import Dispatcher
from service.jobs_repo import JobsRepo
from service.metrics import ServiceMetrics
from service.storage import Storage


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
