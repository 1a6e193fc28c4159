"""What a collection admits: one entry per model name, and every entry scored on one probe.

Scores are comparable only between models measured on the same probe set, so a collection's probe is
derived from its entries' specs (no column holds it): ``dataset`` (and an uploaded dataset's content hash),
``split``, ``samples_per_class`` and ``seed``. An entry is the latest job of a model name. Entries whose
job failed or was cancelled bind nothing: such a name can be submitted again, and their probe is ignored.

A submission re-using a live model name is refused unless it asks to replace it; the replaced jobs stay in
the table (readable at ``/v1/jobs/{id}``), leave the collection's listing, rankings and plots (the
collection shows the latest job per name), and are cancelled if still queued or running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gscore.jobstore.db import Job
from gscore.jobstore.jobs_repo import CANCELLED, FAILED, QUEUED, RUNNING

PROBE_KEYS = ("dataset", "dataset_sha256", "split", "samples_per_class", "seed")
INACTIVE_STATES = (FAILED, CANCELLED)


def probe_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The probe a stored spec scores on: ``{key: value}`` for ``PROBE_KEYS`` (absent keys are None)."""
    return {key: spec.get(key) for key in PROBE_KEYS}


def describe_probe(probe: dict[str, Any]) -> str:
    """``dataset='digits', split='train', samples_per_class=10, seed=0`` (the content hash shortened)."""
    parts = []
    for key, value in probe.items():
        if key == "dataset_sha256":
            if value is not None:
                parts.append(f"dataset sha256 {str(value)[:12]}")
            continue
        parts.append(f"{key}={value!r}")
    return ", ".join(parts)


@dataclass
class CollectionConflict:
    """Why a job cannot join its collection: ``type`` is the problem type, ``detail`` what to do, ``field``
    the form field at fault."""

    type: str
    title: str
    detail: str
    field: str


@dataclass
class Admission:
    """The verdict on a new job: a conflict, or the jobs it replaces (to cancel when still live)."""

    conflict: CollectionConflict | None = None
    replaced: list[Job] = field(default_factory=list)


def admit(
    new: Job,
    rows: Sequence[Job],
    *,
    replace: bool,
    same_request: Callable[[Job], bool] = lambda job: False,
) -> Admission:
    """Decide whether ``new`` may join its collection, given the collection's ``rows``.

    Parameters
    ----------
    new : the job being submitted (already in the table; it is ignored in ``rows``).
    rows : every job of the collection, oldest first (``JobsRepo.collection_rows``).
    replace : the submission asked to replace an entry with the same model name.
    same_request : True for a job made by a concurrent retry of this very request (same Idempotency-Key
        and body), which is not a conflict.

    Returns
    -------
    Admission with ``conflict`` set (type ``model-name-taken`` or ``probe-mismatch``), or the jobs of the
    same model name that are queued or running (to cancel when ``replace``).
    """
    others = [job for job in rows if job.id != new.id and not same_request(job)]
    entries: dict[str, Job] = {}
    for job in others:
        entries.pop(job.model_name, None)
        entries[job.model_name] = job
    entry = entries.get(new.model_name)
    if entry is not None and entry.state not in INACTIVE_STATES and not replace:
        return Admission(
            CollectionConflict(
                "model-name-taken",
                "Model name taken",
                f"collection {new.collection!r} already has a model named {new.model_name!r} (job {entry.id}, "
                f"{entry.state}); send replace=true to replace it, or choose another model_name",
                "model_name",
            )
        )
    probe = probe_of(new.spec)
    for name, job in entries.items():
        if name == new.model_name or job.state in INACTIVE_STATES:
            continue
        if probe_of(job.spec) != probe:
            return Admission(
                CollectionConflict(
                    "probe-mismatch",
                    "Different probe than the collection",
                    f"collection {new.collection!r} is scored on {describe_probe(probe_of(job.spec))} (model "
                    f"{name!r}, job {job.id}); this job asks for {describe_probe(probe)}. Scores are "
                    "comparable only on one probe: use the collection's, or another collection",
                    "spec",
                )
            )
    replaced = [job for job in others if job.model_name == new.model_name and job.state in (QUEUED, RUNNING)]
    return Admission(replaced=replaced if replace else [])
