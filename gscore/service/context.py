"""What the routes share: settings, the job table, storage and the queue publisher."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import sessionmaker

from gscore.jobstore.datasets_repo import DatasetsRepo
from gscore.jobstore.dispatch import Dispatcher
from gscore.jobstore.jobs_repo import JobsRepo
from gscore.jobstore.storage import Storage
from gscore.service.metrics import ServiceMetrics
from gscore.service.warmup import EngineWarmup
from gscore.settings import Settings


@dataclass
class ServiceContext:
    settings: Settings
    sessions: sessionmaker
    repo: JobsRepo
    datasets: DatasetsRepo
    storage: Storage
    dispatcher: Dispatcher
    metrics: ServiceMetrics
    warmup: EngineWarmup


def get_context(request: Request) -> ServiceContext:
    return request.app.state.context
