"""Turning a validated upload into a job: dedupe against succeeded jobs, record it, publish it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gscore.errors import CheckpointError, SpecError
from jobstore.checkpoint_format import checkpoint_format_problem
from jobstore.db import Job, utcnow
from jobstore.dedupe import dedupe_key, duplicate_result
from jobstore.jobs_repo import QUEUED, SUCCEEDED
from jobstore.specs import JobSpec, normalized_spec, parse_meta, parse_spec, score_request
from jobstore.storage import UploadSink
from service.context import ServiceContext
from service.multipart import UploadedForm
from service.problems import Problem

log = logging.getLogger("gscore.service")
BROKER_RETRY_AFTER_SECONDS = 5  # a 503 for an unreachable broker says when to retry
ALLOWED_FIELDS = {
    "checkpoint",
    "spec",
    "collection",
    "model_name",
    "hyperparameters",
    "test_accuracy",
    "train_accuracy",
}
FINGERPRINT_FIELDS = (
    "dedupe_key",
    "collection",
    "model_name",
    "hyperparameters",
    "test_accuracy",
    "train_accuracy",
)


@dataclass
class Submission:
    """A parsed (not yet engine-validated) submission: its stored spec, job fields and fingerprint."""

    sink: UploadSink
    spec: JobSpec
    stored_spec: dict[str, Any]
    dataset_path: Path | None
    fields: dict[str, Any]

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        return submission_fingerprint(self.fields)


def submission_fingerprint(fields: dict[str, Any]) -> tuple[Any, ...]:
    """What an Idempotency-Key replay must repeat: the checkpoint + spec (dedupe key) and the model entry."""
    return tuple(fields.get(name) for name in FINGERPRINT_FIELDS)


def job_fingerprint(job: Job) -> tuple[Any, ...]:
    return tuple(getattr(job, name) for name in FINGERPRINT_FIELDS)


def parse_submission(ctx: ServiceContext, form: UploadedForm) -> Submission:
    """Check the form's fields and the checkpoint's format; resolve the dataset. No engine validation."""
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

    dataset_sha, dataset_path = ctx.datasets.resolve(spec.dataset, BUILTIN_DATASET_NAMES)
    stored = normalized_spec(spec, dataset_sha)
    fields: dict[str, Any] = {
        "queue": ctx.settings.default_queue,
        "checkpoint_sha256": sink.sha256,
        "checkpoint_size": sink.size,
        "spec": stored,
        "dedupe_key": dedupe_key(sink.sha256, stored),
        "collection": meta.collection,
        "model_name": meta.model_name or f"ckpt-{sink.sha256[:12]}",
        "hyperparameters": meta.hyperparameters,
        "test_accuracy": meta.test_accuracy,
        "train_accuracy": meta.train_accuracy,
    }
    return Submission(sink, spec, stored, dataset_path, fields)


def idempotent_replay(earlier: Job, submission: Submission, key: str) -> Job:
    """The job an Idempotency-Key answered first, if this request repeats it; else 422."""
    if job_fingerprint(earlier) != submission.fingerprint:
        raise Problem(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            f"the Idempotency-Key {key!r} was used for job {earlier.id} with another checkpoint, spec "
            "or model entry; use a new key for a new submission",
            field="Idempotency-Key",
        )
    return earlier


def create_job(ctx: ServiceContext, form: UploadedForm, idempotency_key: str | None = None) -> Job:
    """Validate the form, store the checkpoint, and create the job (queued, or succeeded when deduplicated).

    With an ``idempotency_key`` that another request claimed first, this request's job is discarded and
    the first job is answered (or 422 when the bodies differ). Blocking (database, file moves, broker):
    call it from a worker thread.
    """
    submission = parse_submission(ctx, form)
    from gscore.pipeline import validate_request

    sink = submission.sink
    validate_request(score_request(submission.stored_spec, sink.path, ctx.settings, submission.dataset_path))
    ctx.storage.keep_checkpoint(sink)
    fields = submission.fields
    earlier_result = duplicate_result(ctx.repo, fields["dedupe_key"])
    if earlier_result is not None:
        job = ctx.repo.create(
            state=SUCCEEDED,
            result=earlier_result,
            progress_stage="deduplicated",
            finished_at=utcnow(),
            **fields,
        )
        winner = _claim_key(ctx, idempotency_key, job, submission)
        if winner is not job:
            return winner
        ctx.metrics.submitted.labels("deduplicated").inc()
        log.info("job %s: deduplicated from %s", job.id, earlier_result["meta"]["deduplicated_from"])
        return job
    job = ctx.repo.create(state=QUEUED, progress_stage="queued", **fields)
    winner = _claim_key(ctx, idempotency_key, job, submission)
    if winner is not job:
        return winner
    try:
        ctx.dispatcher.enqueue(job.id, job.queue)
    except Exception as exc:
        log.exception("job %s: could not publish to the broker", job.id)
        ctx.repo.fail_unpublished(job.id, f"the broker is unreachable ({type(exc).__name__})")
        if idempotency_key:  # a retry with the same key must be able to queue the job again
            ctx.repo.forget_idempotency_key(idempotency_key, job.id)
        raise Problem(
            503,
            "broker-unavailable",
            "Broker unavailable",
            "the job could not be queued; try again later",
            headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)},
        ) from exc
    ctx.metrics.submitted.labels("queued").inc()
    log.info("job %s: queued on %s", job.id, job.queue)
    return job


def _claim_key(ctx: ServiceContext, key: str | None, job: Job, submission: Submission) -> Job:
    """Record ``key -> job`` before the job is published; a concurrent request with the key may win."""
    if not key:
        return job
    winner_id = ctx.repo.remember_idempotency_key(key, job.id)
    if winner_id == job.id:
        return job
    ctx.repo.delete_unpublished(job.id)  # never published: no worker knows it
    winner = ctx.repo.get(winner_id)
    if winner is None:
        raise Problem(
            409,
            "idempotency-key-in-use",
            "Idempotency-Key in use",
            f"another request with the Idempotency-Key {key!r} is being processed; retry",
        )
    return idempotent_replay(winner, submission, key)
