"""``/v1/collections``: the models submitted under a collection name, with their scores."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from gscore.ranking import ModelRecord, default_measures, parse_rank_records, rank_collection
from service.context import ServiceContext, get_context
from service.db import Job
from service.problems import Problem
from service.routes.jobs import PROBLEM
from service.schemas import CollectionList, CollectionOut, CollectionSummary, collection_model

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.get("", response_model=CollectionList, summary="All collections")
def list_collections(ctx: Annotated[ServiceContext, Depends(get_context)]) -> CollectionList:
    return CollectionList(
        collections=[CollectionSummary(name=name, models=count) for name, count in ctx.repo.collections()]
    )


@router.get(
    "/{name}",
    response_model=CollectionOut,
    responses={404: PROBLEM},
    summary="A collection's models (latest job per model name)",
)
def get_collection(name: str, ctx: Annotated[ServiceContext, Depends(get_context)]) -> CollectionOut:
    return CollectionOut(name=name, models=[collection_model(job) for job in _collection_jobs(ctx, name)])


Target = Literal["test_accuracy", "generalization_gap"]


def _collection_jobs(ctx: ServiceContext, name: str) -> list[Job]:
    jobs = ctx.repo.collection_jobs(name)
    if not jobs:
        raise Problem(
            404, "collection-not-found", "Collection not found", f"no job was submitted to {name!r}"
        )
    return jobs


def _scored_records(jobs: list[Job]) -> tuple[list[ModelRecord], list[dict[str, str]]]:
    """Records of the succeeded jobs (validated like a `gscore rank` file), and the models left out."""
    scored = [job for job in jobs if job.state == "succeeded" and job.result]
    items = [
        {
            "name": job.model_name,
            "hyperparameters": job.hyperparameters or {},
            "scores": job.result.get("scores", {}),
            "test_accuracy": job.test_accuracy,
            "train_accuracy": job.train_accuracy,
        }
        for job in scored
    ]
    scored_ids = {job.id for job in scored}
    not_scored = [{"name": job.model_name, "state": job.state} for job in jobs if job.id not in scored_ids]
    return parse_rank_records(items), not_scored


def _measure_list(measures: str | None, records: list[ModelRecord], field: str) -> list[str] | None:
    """The requested measures, each of which some scored model must have (else 422 naming it)."""
    names = [m.strip() for m in (measures or "").split(",") if m.strip()]
    present = set(default_measures(records))
    unknown = [name for name in names if name not in present]
    if unknown:
        raise Problem(
            422,
            "unknown-measure",
            "Measure not in this collection",
            f"no scored model of this collection has {', '.join(map(repr, unknown))}; "
            f"present: {', '.join(sorted(present)) or 'none yet'}",
            field=field,
        )
    return names or None


@router.get(
    "/{name}/ranking",
    responses={404: PROBLEM, 422: PROBLEM},
    summary="Rankings and (granulated) Kendall coefficients of a collection's scored models",
)
def get_ranking(
    name: str,
    ctx: Annotated[ServiceContext, Depends(get_context)],
    target: Target = "test_accuracy",
    measures: Annotated[str | None, Query(description="comma-separated measure names")] = None,
) -> dict[str, Any]:
    """The same document as `gscore rank FILE --json`, plus `not_scored`: models whose job has not succeeded."""
    records, not_scored = _scored_records(_collection_jobs(ctx, name))
    result = rank_collection(records, target=target, measures=_measure_list(measures, records, "measures"))
    result["not_scored"] = not_scored
    return result


@router.get(
    "/{name}/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: PROBLEM, 422: PROBLEM},
    summary="Each measure against test accuracy, one point per model (the paper's Figure 3)",
)
def get_plot(
    name: str,
    ctx: Annotated[ServiceContext, Depends(get_context)],
    measure: Annotated[str | None, Query(description="comma-separated measures; default all")] = None,
    target: Target = "test_accuracy",
) -> Response:
    from gscore.plots import plot_measures

    records, _ = _scored_records(_collection_jobs(ctx, name))
    chosen = _measure_list(measure, records, "measure") or default_measures(records)
    if not chosen:
        raise Problem(422, "nothing-to-plot", "Nothing to plot", f"no model of {name!r} has scores yet")
    return Response(plot_measures(records, chosen, target=target), media_type="image/png")
