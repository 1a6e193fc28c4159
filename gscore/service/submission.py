"""Turning a validated upload into a job: dedupe against succeeded jobs, record it, publish it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gscore.errors import CheckpointError, SpecError
from gscore.inputs.checkpoints.format import checkpoint_format_problem
from gscore.inputs.checkpoints.upload_checks import check_checkpoint_upload, check_model_upload
from gscore.jobstore.collection_rules import admit
from gscore.jobstore.db import Job, utcnow
from gscore.jobstore.dedupe import dedupe_key, duplicate_result
from gscore.jobstore.jobs_repo import QUEUED, SUCCEEDED, IdempotencyKeyTaken
from gscore.jobstore.keys import KEYLESS, Principal
from gscore.jobstore.notifications import notification_fields
from gscore.jobstore.specs import JobSpec, normalized_spec, parse_flag, parse_meta, parse_spec, score_request
from gscore.jobstore.storage import UploadSink
from gscore.jobstore.webhooks import check_notify_url
from gscore.service.context import ServiceContext
from gscore.service.multipart import UploadedForm
from gscore.service.problems import Problem
from gscore.service.upload_work import run_check

log = logging.getLogger("gscore.service")
FILE_FIELDS = ("checkpoint", "model")  # a state_dict checkpoint (with an arch), or an .onnx model
INITIAL_CHECKPOINT_PART = "initial_checkpoint"  # optional: the same arch at initialization (same format)
ALLOWED_FIELDS = {
    "checkpoint",
    "model",
    "replace",
    "spec",
    "collection",
    "model_name",
    "hyperparameters",
    "test_accuracy",
    "train_accuracy",
    "notify_url",  # a webhook (gscore.jobstore.webhooks): checked against GSCORE_WEBHOOK_ALLOWED_HOSTS
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
    is_onnx: bool = False  # the upload is a `model` part (.onnx), not a `checkpoint`
    replace: bool = False  # `replace=true`: the job replaces its collection's entry of the same model name
    initial_sink: UploadSink | None = None  # the `initial_checkpoint` part, when sent

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        return submission_fingerprint(self.fields)


def submission_fingerprint(fields: dict[str, Any]) -> tuple[Any, ...]:
    """What an Idempotency-Key replay must repeat: the checkpoint + spec (dedupe key) and the model entry."""
    return tuple(fields.get(name) for name in FINGERPRINT_FIELDS)


def job_fingerprint(job: Job) -> tuple[Any, ...]:
    return tuple(getattr(job, name) for name in FINGERPRINT_FIELDS)


def parse_submission(ctx: ServiceContext, form: UploadedForm, caller: Principal = KEYLESS) -> Submission:
    """Check the form's fields and the checkpoint's format; resolve the dataset (one ``caller`` may use).
    No engine validation. The job's fields file it under ``caller.owner``."""
    unknown = sorted(set(form.fields) - ALLOWED_FIELDS)
    if unknown:
        raise SpecError(
            f"unknown form field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}",
            field=unknown[0],
        )
    sent = [name for name in FILE_FIELDS if name in form.files]
    if len(sent) != 1:
        raise SpecError(
            "send one file: 'checkpoint' (a state_dict, with spec.arch) or 'model' (an .onnx file)"
            + (", not both" if sent else ""),
            field="checkpoint",
        )
    is_onnx = sent == ["model"]
    _, sink = form.files[sent[0]]
    if sink.size == 0:
        raise CheckpointError(f"the {sent[0]} file is empty")
    refusal = None if is_onnx else checkpoint_format_problem(sink.head, sink.size)
    if refusal:
        raise CheckpointError(refusal)
    initial_sink = _initial_checkpoint_part(form, is_onnx)
    spec = parse_spec(form.fields.get("spec"), onnx_model=is_onnx)
    meta = parse_meta(form.fields)
    replace = parse_flag(form.fields.get("replace"), "replace")
    notify_url = form.fields.get("notify_url", "").strip() or None
    if notify_url is not None:
        check_notify_url(notify_url, ctx.settings)  # 422 naming the host, before anything is stored
    from gscore.inputs.datasets import BUILTIN_DATASET_NAMES

    dataset_sha, dataset_path = ctx.datasets.resolve(
        spec.dataset, BUILTIN_DATASET_NAMES, caller.visible_to, caller.owner
    )
    stored = normalized_spec(spec, dataset_sha)
    if initial_sink is not None:  # in the spec, so in the dedupe key and the idempotency fingerprint
        stored["initial_checkpoint_sha256"] = initial_sink.sha256
    fields: dict[str, Any] = {
        "queue": ctx.settings.default_queue,
        "checkpoint_sha256": sink.sha256,
        "checkpoint_size": sink.size,
        "spec": stored,
        "dedupe_key": dedupe_key(sink.sha256, stored),
        "collection": meta.collection,
        "model_name": meta.model_name or f"{'onnx' if is_onnx else 'ckpt'}-{sink.sha256[:12]}",
        "hyperparameters": meta.hyperparameters,
        "test_accuracy": meta.test_accuracy,
        "train_accuracy": meta.train_accuracy,
        "owner": caller.owner,
        **notification_fields(notify_url),
    }
    return Submission(
        sink, spec, stored, dataset_path, fields, is_onnx=is_onnx, replace=replace, initial_sink=initial_sink
    )


def _initial_checkpoint_part(form: UploadedForm, is_onnx: bool) -> UploadSink | None:
    """The ``initial_checkpoint`` part's sink after its format check (the same as the model part's)."""
    if INITIAL_CHECKPOINT_PART not in form.files:
        return None
    _, sink = form.files[INITIAL_CHECKPOINT_PART]
    if sink.size == 0:
        raise _initial_part_error(CheckpointError("the file is empty"))
    refusal = None if is_onnx else checkpoint_format_problem(sink.head, sink.size)
    if refusal:
        raise _initial_part_error(CheckpointError(refusal))
    return sink


def _initial_part_error(error: CheckpointError) -> CheckpointError:
    """``error`` about the initial checkpoint: its detail and problem document name the part."""
    named = type(error)(f"{INITIAL_CHECKPOINT_PART}: {error.detail}")
    named.field = INITIAL_CHECKPOINT_PART  # type: ignore[attr-defined]
    return named


def check_content(ctx: ServiceContext, path: Path, submission: Submission) -> None:
    """The content checks of an uploaded checkpoint (or ONNX model) at ``path``, in the upload check pool
    (``gscore.service.upload_work``: off the request threads, bounded), with the archive caps."""
    settings = ctx.settings
    if submission.is_onnx:
        run_check(
            settings, check_model_upload, path, settings.max_upload_bytes, settings.max_checkpoint_bytes
        )
    else:
        arch = submission.stored_spec["arch"]
        run_check(settings, check_checkpoint_upload, path, arch, settings.max_checkpoint_bytes)


def check_initial_checkpoint(ctx: ServiceContext, submission: Submission) -> None:
    """The content checks of the main part, on the initial checkpoint (errors name the part)."""
    if submission.initial_sink is None:
        return
    try:
        check_content(ctx, submission.initial_sink.path, submission)
    except CheckpointError as exc:
        raise _initial_part_error(exc) from None


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


def create_job(
    ctx: ServiceContext, form: UploadedForm, idempotency_key: str | None = None, caller: Principal = KEYLESS
) -> Job:
    """Validate the form, store the checkpoint, and create the job (queued, or succeeded when deduplicated).

    The job row, its Idempotency-Key and its collection admission are committed in one transaction
    (``JobsRepo.create_admitted``): a database error (503) leaves no job, and with an ``idempotency_key``
    that another request committed first, that request's job is answered (or 422 when the bodies differ).
    Blocking (database, file moves, the upload checks' process pool): call it from a worker thread.
    """
    submission = parse_submission(ctx, form, caller)
    from gscore.pipeline import validate_request

    sink = submission.sink
    validate_request(score_request(submission.stored_spec, sink.path, ctx.settings, submission.dataset_path))
    check_content(ctx, sink.path, submission)
    check_initial_checkpoint(ctx, submission)  # every check before anything is kept
    ctx.storage.keep_checkpoint(sink)
    if submission.initial_sink is not None:
        ctx.storage.keep_checkpoint(submission.initial_sink)
    fields = submission.fields
    earlier_result = duplicate_result(
        ctx.repo, fields["dedupe_key"], owner=caller.owner
    )  # never another team's
    if earlier_result is not None:
        state = {"state": SUCCEEDED, "result": earlier_result, "progress_stage": "deduplicated"}
        fields = {**fields, **state, "finished_at": utcnow()}
    else:
        fields = {**fields, "state": QUEUED, "progress_stage": "queued"}
    try:
        job = ctx.repo.create_admitted(
            fields,
            idempotency_key=idempotency_key,
            admit=lambda job, rows: _admission(job, rows, submission, idempotency_key),
        )
    except IdempotencyKeyTaken as taken:
        return _key_winner(ctx, taken.job_id, submission, idempotency_key or "")
    if earlier_result is not None:
        ctx.metrics.submitted.labels("deduplicated").inc()
        log.info("job %s: deduplicated from %s", job.id, earlier_result["meta"]["deduplicated_from"])
        return job
    # the row is committed: from here the job is guaranteed to run (the job table is the outbox; a publish
    # that fails or never happens is repeated by the reaper), so the answer is 202 even while the broker
    # is down or hung, and the request never waits on the broker
    ctx.dispatcher.publish_soon(job.id, job.queue)
    ctx.metrics.submitted.labels("queued").inc()
    log.info("job %s: queued on %s", job.id, job.queue)
    return job


def _key_winner(ctx: ServiceContext, winner_id: str, submission: Submission, key: str) -> Job:
    """The job of the request that committed Idempotency-Key ``key`` first, if this request repeats it."""
    winner = ctx.repo.get(winner_id)
    if winner is None:
        raise Problem(
            409,
            "idempotency-key-in-use",
            "Idempotency-Key in use",
            f"another request with the Idempotency-Key {key!r} is being processed; retry",
        )
    return idempotent_replay(winner, submission, key)


def _admission(job: Job, rows: list[Job], submission: Submission, key: str | None) -> list[str]:
    """The ids of the live jobs ``job`` replaces in its collection (``replace=true``), or a 409 when it cannot
    join it. Called inside the job's transaction (``JobsRepo.create_admitted``), so a 409 leaves nothing
    behind; a concurrent retry with the same Idempotency-Key and body is no conflict (the key answers it)."""
    same_request = (
        (lambda other: job_fingerprint(other) == submission.fingerprint) if key else (lambda _: False)
    )
    admission = admit(job, rows, replace=submission.replace, same_request=same_request)
    if admission.conflict is not None:
        conflict = admission.conflict
        raise Problem(409, conflict.type, conflict.title, conflict.detail, field=conflict.field)
    for old in admission.replaced:
        log.info("job %s: replaces job %s in collection %r", job.id, old.id, job.collection)
    return [old.id for old in admission.replaced]
