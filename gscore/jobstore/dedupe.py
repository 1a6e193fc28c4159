"""Idempotent jobs: the dedupe key of a checkpoint + normalized spec, and the one duplicate check.

The API runs the check when a job is submitted (a duplicate is created ``succeeded`` at once) and the worker
runs it again when it claims a job (an identical job may have finished while this one waited in the queue).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gscore.jobstore.jobs_repo import JobsRepo


def dedupe_key(checkpoint_sha256: str, spec: dict[str, Any]) -> str:
    """The key under which a job's result is reused.

    Parameters
    ----------
    checkpoint_sha256 : str
        Hex sha256 of the checkpoint file's bytes.
    spec : dict
        The normalized spec as stored with the job (``gscore.jobstore.specs.normalized_spec``).

    Returns
    -------
    str
        Hex sha256 of the canonical JSON (sorted keys, no spaces) of ``{"checkpoint": ..., "spec": ...}``.
    """
    canonical = json.dumps(
        {"checkpoint": checkpoint_sha256, "spec": spec}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def deduplicated_result(result: dict[str, Any], source_job_id: str) -> dict[str, Any]:
    """A copy of ``result`` (``{"scores": ..., "status": ..., "meta": ...}``) whose meta says which job
    computed it."""
    return {
        **result,
        "scores": dict(result["scores"]),
        "meta": {**result.get("meta", {}), "deduplicated_from": source_job_id},
    }


def duplicate_result(
    repo: JobsRepo, dedupe_key: str, *, excluding_job_id: str | None = None, owner: str | None = None
) -> dict[str, Any] | None:
    """The stored result of an earlier identical job, if one succeeded.

    Parameters
    ----------
    repo : JobsRepo
        The job table.
    dedupe_key : str
        The key of the job being submitted or run (:func:`dedupe_key`).
    excluding_job_id : str, optional
        A job that must not answer for itself (the worker passes the job it claimed).
    owner : str, optional
        The API key name the job belongs to (None: made without a key); only that owner's jobs answer.

    Returns
    -------
    dict or None
        The oldest succeeded job's result with ``meta.deduplicated_from`` set to that job's id, or None when
        no other job with this key succeeded with a result.
    """
    previous = repo.find_succeeded(dedupe_key, owner)
    if previous is None or previous.id == excluding_job_id or not previous.result:
        return None
    return deduplicated_result(previous.result, previous.id)
