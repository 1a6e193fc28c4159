"""``/v1/jobs``: submit, read, cancel, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from gscore.jobstore.jobs_repo import STATES, CancelConflict, InvalidCursor
from gscore.service.deps import Caller, Context, IdempotencyKeyHeader
from gscore.service.multipart import read_multipart
from gscore.service.problems import Problem, job_not_found, problem_responses
from gscore.service.schemas import JobOut, JobPage, job_out
from gscore.service.submission import INITIAL_CHECKPOINT_PART, create_job, idempotent_replay, parse_submission
from gscore.service.upload_work import run_upload_step

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_PAGE = 200

SUBMIT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "checkpoint": {
                        "type": "string",
                        "format": "binary",
                        "description": "safetensors file or torch.save zip archive (a state_dict); send "
                        "it or `model`",
                    },
                    "model": {
                        "type": "string",
                        "format": "binary",
                        "description": "an .onnx file (architecture and weights) instead of `checkpoint`; "
                        'the arch is {"family": "onnx"} (spec.arch may be left out or set only "input")',
                    },
                    "initial_checkpoint": {
                        "type": "string",
                        "format": "binary",
                        "description": "optional: the same architecture at its initialization (the same "
                        "format as `checkpoint` or `model`), for distance_to_init and layer_rotation",
                    },
                    "spec": {
                        "type": "string",
                        "description": "JSON: arch, dataset, split, measures, params, "
                        "samples_per_class, seed (at most 64 KiB, nested at most 16 deep)",
                    },
                    "collection": {
                        "type": "string",
                        "description": "read back at /v1/collections/{name}: no '/', no control "
                        "characters, no leading or trailing whitespace. Its models share one probe "
                        "(dataset, split, samples_per_class, seed): another probe is a 409",
                    },
                    "model_name": {
                        "type": "string",
                        "description": "unique in the collection: re-using it is a 409 unless replace=true",
                    },
                    "replace": {
                        "type": "boolean",
                        "description": "replace the collection's entry of this model_name (the old job "
                        "stays readable, leaves the collection, and is cancelled if still queued or running)",
                    },
                    "hyperparameters": {"type": "string", "description": "a flat JSON object"},
                    "test_accuracy": {"type": "number"},
                    "train_accuracy": {"type": "number"},
                    "notify_url": {
                        "type": "string",
                        "description": "webhook: a signed JSON event is POSTed here when the job ends "
                        "(http/https, host in GSCORE_WEBHOOK_ALLOWED_HOSTS; docs/service.md)",
                    },
                },
            }
        }
    },
}


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra={"requestBody": SUBMIT_BODY},
    responses=problem_responses(400, 409, 413, 415, 422, 503),
    summary="Submit a checkpoint (or an .onnx model) for scoring",
)
async def submit(
    request: Request,
    response: Response,
    ctx: Context,
    caller: Caller,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    form = await read_multipart(
        request,
        file_fields={"checkpoint", "model", INITIAL_CHECKPOINT_PART},
        open_sink=lambda: ctx.storage.new_sink(ctx.settings.max_upload_bytes),
    )
    try:
        earlier = None  # the upload's blocking steps run on their own threads, never the polls' (upload_work)
        if idempotency_key:
            earlier = await run_upload_step(ctx.repo.job_for_idempotency_key, idempotency_key, caller.owner)
        if earlier is not None:  # a retry: the same body answers the first job, another body is refused
            submission = await run_upload_step(parse_submission, ctx, form, caller)
            job = idempotent_replay(earlier, submission, idempotency_key or "")
        else:
            job = await run_upload_step(create_job, ctx, form, idempotency_key, caller)
    finally:
        form.discard()  # a kept checkpoint was moved away already
    return _accepted(response, job)


def _accepted(response: Response, job: object) -> JobOut:
    out = job_out(job)  # type: ignore[arg-type]
    response.headers["Location"] = f"/v1/jobs/{out.id}"
    response.headers["Retry-After"] = "1"
    return out


@router.get(
    "/{job_id}", response_model=JobOut, responses=problem_responses(404), summary="A job's state and result"
)
def get_job(job_id: str, ctx: Context, caller: Caller) -> JobOut:
    job = ctx.repo.get(job_id, caller.visible_to)  # another owner's job reads as missing
    if job is None:
        raise job_not_found(job_id)
    return job_out(job)


@router.delete(
    "/{job_id}",
    status_code=202,
    response_model=JobOut,
    responses=problem_responses(404, 409),
    summary="Cancel a queued or running job",
)
def cancel_job(job_id: str, ctx: Context, caller: Caller) -> JobOut:
    try:
        job = ctx.repo.request_cancel(job_id, caller.visible_to)
    except CancelConflict as exc:
        raise Problem(
            409,
            "job-finished",
            "Job already finished",
            f"job {job_id} is {exc.state}; only queued or running jobs can be cancelled",
        ) from None
    if job is None:
        raise job_not_found(job_id)
    return job_out(job)


@router.get("", response_model=JobPage, responses=problem_responses(422), summary="List jobs, newest first")
def list_jobs(
    ctx: Context,
    caller: Caller,
    collection: Annotated[str | None, Query(max_length=128)] = None,
    state: Annotated[str | None, Query(description=", ".join(STATES))] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    if state is not None and state not in STATES:
        raise Problem(
            422,
            "invalid-request",
            "Invalid request",
            f"state must be one of {', '.join(STATES)}",
            field="state",
        )
    try:
        jobs, next_cursor = ctx.repo.page(
            collection=collection, state=state, limit=limit, cursor=cursor, visible_to=caller.visible_to
        )
    except InvalidCursor:
        raise Problem(
            422,
            "invalid-request",
            "Invalid request",
            "cursor is not one this service handed out",
            field="cursor",
        ) from None
    return JobPage(jobs=[job_out(job) for job in jobs], next_cursor=next_cursor)
