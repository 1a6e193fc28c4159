"""Turning a validated upload into a job: dedupe against succeeded jobs, record it, publish it."""

from __future__ import annotations

import logging
from typing import Any

from gscore.errors import CheckpointError, SpecError
from service.checkpoint_format import checkpoint_format_problem
from service.context import ServiceContext
from service.db import Job, utcnow
from service.jobs_repo import QUEUED, SUCCEEDED
from service.multipart import UploadedForm
from service.problems import Problem
from service.specs import dedupe_key, normalized_spec, parse_meta, parse_spec, score_request

log = logging.getLogger("gscore.service")
ALLOWED_FIELDS = {
    "checkpoint",
    "spec",
    "collection",
    "model_name",
    "hyperparameters",
    "test_accuracy",
    "train_accuracy",
}


def deduplicated_result(result: dict[str, Any], source_job_id: str) -> dict[str, Any]:
    return {
        "scores": dict(result["scores"]),
        "meta": {**result.get("meta", {}), "deduplicated_from": source_job_id},
    }


def create_job(ctx: ServiceContext, form: UploadedForm) -> Job:
    """Validate the form, store the checkpoint, and create the job (queued, or succeeded when deduplicated).

    Blocking (database, file moves, broker): call it from a worker thread.
    """
    unknown = sorted(set(form.fields) - ALLOWED_FIELDS)
    if unknown:
        raise SpecError(
            f"unknown form field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}",
            field=unknown[0],
        )
    if "checkpoint" not in form.files:
        raise SpecError("the file field 'checkpoint' is required", field="checkpoint")
    _, sink = form.files["checkpoint"]
    if sink.size == 0:
        raise CheckpointError("the checkpoint file is empty")
    refusal = checkpoint_format_problem(sink.head, sink.size)
    if refusal:
        raise CheckpointError(refusal)
    spec = parse_spec(form.fields.get("spec"))
    meta = parse_meta(form.fields)
    from gscore.datasets import BUILTIN_DATASET_NAMES
    from gscore.pipeline import validate_request

    dataset_sha, dataset_path = ctx.datasets.resolve(spec.dataset, BUILTIN_DATASET_NAMES)
    stored = normalized_spec(spec, dataset_sha)
    validate_request(score_request(stored, sink.path, ctx.settings, dataset_path))

    checkpoint = ctx.storage.keep_checkpoint(sink)
    key = dedupe_key(sink.sha256, stored)
    fields: dict[str, Any] = {
        "queue": ctx.settings.default_queue,
        "checkpoint_sha256": sink.sha256,
        "checkpoint_size": checkpoint.stat().st_size,
        "spec": stored,
        "dedupe_key": key,
        "collection": meta.collection,
        "model_name": meta.model_name or f"ckpt-{sink.sha256[:12]}",
        "hyperparameters": meta.hyperparameters,
        "test_accuracy": meta.test_accuracy,
        "train_accuracy": meta.train_accuracy,
    }
    previous = ctx.repo.find_succeeded(key)
    if previous is not None and previous.result:
        job = ctx.repo.create(
            state=SUCCEEDED,
            result=deduplicated_result(previous.result, previous.id),
            progress_stage="deduplicated",
            finished_at=utcnow(),
            **fields,
        )
        ctx.metrics.submitted.labels("deduplicated").inc()
        log.info("job %s: deduplicated from %s", job.id, previous.id)
        return job
    job = ctx.repo.create(state=QUEUED, progress_stage="queued", **fields)
    try:
        ctx.dispatcher.enqueue(job.id, job.queue)
    except Exception as exc:
        log.exception("job %s: could not publish to the broker", job.id)
        ctx.repo.fail_unpublished(job.id, f"the broker is unreachable ({type(exc).__name__})")
        raise Problem(
            503, "broker-unavailable", "Broker unavailable", "the job could not be queued; try again later"
        ) from exc
    ctx.metrics.submitted.labels("queued").inc()
    log.info("job %s: queued on %s", job.id, job.queue)
    return job
