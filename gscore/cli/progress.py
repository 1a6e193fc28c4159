"""The progress a person watches while ``gscore submit --wait`` / ``gscore status --wait`` poll a job.

The worker stores the engine's last ``progress(stage, done, total)`` call in the job row
(``GET /v1/jobs/{id}`` -> ``progress``). Stages: ``load``, ``extract`` (samples), ``measures``
(activation measures done) and one stage per other measure, named after it (sharpness: bisection
steps, reported from the start of the measure's set-up). The bar shows exactly what was reported, so
it reaches 100% only when the engine says the stage is done; a new stage starts a new bar.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

STAGE_UNITS = {"load": "file", "extract": "sample", "measures": "measure", "test-delay": "s"}
DEFAULT_UNIT = "step"  # a measure's own stage (sharpness: bisection steps)


def stage_description(job: dict[str, Any]) -> str:
    """``"running worst_sharpness"``, ``"queued"``, ``"running"`` (no stage yet)."""
    stage = (job.get("progress") or {}).get("stage")
    if job["state"] != "running" or not stage:
        return str(job["state"])
    return f"running {stage}"


class ProgressBar:
    """A tqdm bar per (state, stage) on ``file`` (stderr), fed with each polled job."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        self.bar: Any = None
        self.key: tuple[str, str | None] | None = None

    def __call__(self, job: dict[str, Any]) -> None:
        from tqdm import tqdm

        progress = job.get("progress") or {}
        stage = progress.get("stage") if job["state"] == "running" else None
        done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
        key = (str(job["state"]), stage)
        if key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(
                total=total or None,
                desc=stage_description(job),
                unit=STAGE_UNITS.get(stage or "", DEFAULT_UNIT),
                file=self.file,
                leave=False,
                dynamic_ncols=True,
            )
        if stage is None:
            self.bar.refresh()
            return
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = min(done, total) if total else done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
