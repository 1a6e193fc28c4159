"""A flag the worker's main process sets on SIGTERM (Celery's ``worker_shutting_down``) and its pool's
children read before they claim a job, so a worker that is stopping takes no new job."""

from __future__ import annotations

from multiprocessing.sharedctypes import RawValue


class ShutdownFlag:
    """A byte in shared memory: create it before the pool forks; children inherit the mapping."""

    def __init__(self) -> None:
        self._value = RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)
