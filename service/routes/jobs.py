"""``/v1/jobs``: submit, read, cancel, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from jobstore.jobs_repo import STATES, CancelConflict, InvalidCursor
from service.deps import Context, IdempotencyKeyHeader
from service.multipart import read_multipart
from service.problems import Problem, job_not_found, problem_responses
from service.schemas import JobOut, JobPage, job_out
from service.submission import create_job, idempotent_replay, parse_submission

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_PAGE = 200

SUBMIT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["checkpoint", "spec"],
                "properties": {
                    "checkpoint": {
                        "type": "string",
                        "format": "binary",
                        "description": "safetensors file or torch.save zip archive",
                    },
                    "spec": {
                        "type": "string",
                        "description": "JSON: arch, dataset, split, measures, params, "
                        "samples_per_class, seed",
                    },
                    "collection": {"type": "string"},
                    "model_name": {"type": "string"},
                    "hyperparameters": {"type": "string", "description": "a flat JSON object"},
                    "test_accuracy": {"type": "number"},
                    "train_accuracy": {"type": "number"},
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
    responses=problem_responses(400, 413, 415, 422, 503),
    summary="Submit a checkpoint for scoring",
)
async def submit(
    request: Request,
    response: Response,
    ctx: Context,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    form = await read_multipart(
        request,
        file_fields={"checkpoint"},
        open_sink=lambda: ctx.storage.new_sink(ctx.settings.max_upload_bytes),
    )
    try:
        earlier = None
        if idempotency_key:
            earlier = await run_in_threadpool(ctx.repo.job_for_idempotency_key, idempotency_key)
        if earlier is not None:  # a retry: the same body answers the first job, another body is refused
            submission = await run_in_threadpool(parse_submission, ctx, form)
            job = idempotent_replay(earlier, submission, idempotency_key or "")
        else:
            job = await run_in_threadpool(create_job, ctx, form, idempotency_key)
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
def get_job(job_id: str, ctx: Context) -> JobOut:
    job = ctx.repo.get(job_id)
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
def cancel_job(job_id: str, ctx: Context) -> JobOut:
    try:
        job = ctx.repo.request_cancel(job_id)
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
        jobs, next_cursor = ctx.repo.page(collection=collection, state=state, limit=limit, cursor=cursor)
    except InvalidCursor:
        raise Problem(
            422,
            "invalid-request",
            "Invalid request",
            "cursor is not one this service handed out",
            field="cursor",
        ) from None
    return JobPage(jobs=[job_out(job) for job in jobs], next_cursor=next_cursor)
