"""Module-level app for ``celery -A worker.main worker`` (``gscore worker`` is the usual way)."""

from __future__ import annotations

from gscore.settings import get_settings
from gscore.worker.tasks import create_worker_app

app = create_worker_app(get_settings())
