"""Warm what a submission needs before the API says it is ready.

A submission's checks import the engine (torch, the architecture registry, the checkpoint checks) on first use;
done at start-up instead, in a thread of its own, the first ``POST /v1/jobs`` is as fast as the next. ``/readyz``
reports the ``engine`` check as ``warming`` until this has finished.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("gscore.service")
WARMUP_ARCH = {"family": "cnn", "in_channels": 1, "width": 4, "depth": 1, "num_classes": 2}


def warm_engine() -> None:
    """Import the submission path's engine modules and build one architecture's state shapes (meta device)."""
    import gscore.pipeline  # noqa: F401  (torch, the models, the datasets)
    from gscore.inputs.checkpoints import loading  # noqa: F401
    from gscore.inputs.checkpoints.preflight import expected_state_shapes

    expected_state_shapes(WARMUP_ARCH)


class EngineWarmup:
    """Runs :func:`warm_engine` once in a daemon thread; ``status`` is ``warming``, ``ok`` or ``failed: ...``."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="gscore-warmup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            warm_engine()
        except Exception as exc:  # the submissions report their own errors; readiness says what failed
            log.exception("engine warm-up failed")
            self._error = f"failed: {type(exc).__name__}: {exc}"
        finally:
            self._done.set()

    @property
    def status(self) -> str:
        if not self._done.is_set():
            return "warming"
        return self._error or "ok"

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)
