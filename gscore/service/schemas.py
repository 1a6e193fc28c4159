"""Pydantic response models (they define the OpenAPI schema) and the job -> JSON presenter."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from gscore.jobstore.db import Job

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Progress(BaseModel):
    stage: str | None = Field(None, description="load, extract, measures, <sharpness measure>, ...")
    done: int = 0
    total: int = 0


class JobError(BaseModel):
    type: str
    title: str
    detail: str


class JobResult(BaseModel):
    scores: dict[str, float | None]
    status: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per measure: {status: ok | undefined | failed, reason, warnings}; a null score says why",
    )
    meta: dict[str, Any]


class Notification(BaseModel):
    url: str
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending until the final state's event is delivered (a 2xx answer); failed: given up"
    )
    attempts: int
    last_status_code: int | None = Field(description="the receiver's answer to the last attempt")
    last_error: str | None = Field(description="why the last attempt failed; null once delivered")
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class JobOut(BaseModel):
    id: str
    state: JobState
    queue: str
    progress: Progress
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    checkpoint_sha256: str
    spec: dict[str, Any]
    collection: str | None
    model_name: str
    hyperparameters: dict[str, Any]
    test_accuracy: float | None
    train_accuracy: float | None
    result: JobResult | None
    error: JobError | None
    notification: Notification | None = Field(None, description="the webhook (notify_url), if one was asked")


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end")


class CollectionSummary(BaseModel):
    name: str
    models: int


class CollectionList(BaseModel):
    collections: list[CollectionSummary]


class CollectionModel(BaseModel):
    job_id: str
    model_name: str
    hyperparameters: dict[str, Any]
    test_accuracy: float | None
    train_accuracy: float | None
    state: JobState
    scores: dict[str, float | None] | None


class CollectionOut(BaseModel):
    name: str
    models: list[CollectionModel]


class RankedModel(BaseModel):
    rank: int | None = Field(description="1 = best predicted; equal scores share a rank; null: not ranked")
    name: str
    score: float | None = Field(description="the raw measure value (not oriented)")
    test_accuracy: float | None
    train_accuracy: float | None = Field(description="given by the client, else measured on the train split")
    in_coefficients: bool
    reason: str | None = Field(description="why the model is not ranked or not counted in the coefficients")


class MeasureRanking(BaseModel):
    orientation: int = Field(description="+1: higher predicts better generalization; -1: lower")
    tau: float | None
    n_models: int = Field(description="models counted in this measure's coefficients")
    n_skipped: int = Field(description="models without a usable score (status not ok, missing, non-finite)")
    psi: dict[str, float | None] = Field(description="granulated Kendall per axis, and 'total'")
    groups: dict[str, int] = Field(description="groups per axis")
    ci_low: dict[str, float | None] = Field(description="bootstrap interval low end per 'tau', axis, 'total'")
    ci_high: dict[str, float | None]
    why: dict[str, str] = Field(description="the reason for each null coefficient")
    ranking: list[RankedModel]


class LeftOutModel(BaseModel):
    name: str
    train_accuracy: float | None
    reason: str


class BootstrapSettings(BaseModel):
    level: float
    n_resamples: int
    seed: int


class NotScoredModel(BaseModel):
    name: str
    state: JobState


class RankingOut(BaseModel):
    target: Literal["test_accuracy", "generalization_gap"]
    n_models: int
    n_models_with_target: int
    min_train_accuracy: float = Field(description="the protocol's threshold; 0: off")
    n_left_out: int = Field(description="models the protocol left out of every coefficient")
    left_out: list[LeftOutModel]
    bootstrap: BootstrapSettings
    axes: list[str]
    measures: dict[str, MeasureRanking]
    not_scored: list[NotScoredModel] = Field(description="models whose job has not succeeded")


class DatasetOut(BaseModel):
    name: str
    source: Literal["builtin", "uploaded"]
    installed: bool
    description: str | None = None
    classes: int | None = None
    subclasses: int | None = None
    hierarchy: bool | None = None
    samples: dict[str, int] | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    created_at: datetime | None = None
    where: dict[str, Any] | None = Field(None, description="For built-ins: where the files go")


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


class MeasureOut(BaseModel):
    name: str
    title: str
    orientation: int = Field(description="+1: higher predicts better generalization; -1: worse")
    needs_hierarchy: bool
    kind: str
    family: str = Field(
        description="clustering, sharpness, intrinsic_dimension, tangent, norm, representation "
        "or spectral: a name that selects all of its measures"
    )
    parameters: dict[str, Any]
    description: str
    default: bool = Field(description="computed when a job names no measures")


class MeasureList(BaseModel):
    measures: list[MeasureOut]


class ArchitectureList(BaseModel):
    architectures: list[dict[str, Any]]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        state=job.state,  # type: ignore[arg-type]
        queue=job.queue,
        progress=Progress(stage=job.progress_stage, done=job.progress_done, total=job.progress_total),
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        checkpoint_sha256=job.checkpoint_sha256,
        spec=job.spec,
        collection=job.collection,
        model_name=job.model_name,
        hyperparameters=job.hyperparameters or {},
        test_accuracy=job.test_accuracy,
        train_accuracy=job.train_accuracy,
        result=JobResult(**job.result) if job.result else None,
        error=JobError(**job.error) if job.error else None,
        notification=notification_out(job),
    )


def notification_out(job: Job) -> Notification | None:
    if not job.notify_url:
        return None
    return Notification(
        url=job.notify_url,
        state=job.notify_state,  # type: ignore[arg-type]
        attempts=job.notify_attempts or 0,
        last_status_code=job.notify_last_status,
        last_error=job.notify_last_error,
        next_attempt_at=job.notify_next_at if job.notify_state == "pending" else None,
        delivered_at=job.notify_delivered_at,
    )


def collection_model(job: Job) -> CollectionModel:
    return CollectionModel(
        job_id=job.id,
        model_name=job.model_name,
        hyperparameters=job.hyperparameters or {},
        test_accuracy=job.test_accuracy,
        train_accuracy=job.train_accuracy,
        state=job.state,  # type: ignore[arg-type]
        scores=(job.result or {}).get("scores"),
    )
