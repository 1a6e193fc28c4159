"""``/v1/collections``: the models submitted under a collection name, with their scores."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from gscore.jobstore.db import Job
from gscore.jobstore.keys import Principal
from gscore.ranking.kendall import (
    DEFAULT_LEVEL,
    DEFAULT_MIN_TRAIN_ACCURACY,
    DEFAULT_RESAMPLES,
    ModelRecord,
    default_measures,
    parse_rank_records,
    rank_collection,
    select_measures,
)
from gscore.ranking.records import MEASURE_STATUSES
from gscore.service.context import ServiceContext
from gscore.service.deps import Caller, Context
from gscore.service.problems import PROBLEM, Problem, collection_not_found
from gscore.service.schemas import (
    CollectionList,
    CollectionOut,
    CollectionSummary,
    RankingOut,
    collection_model,
)

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.get("", response_model=CollectionList, summary="All collections")
def list_collections(ctx: Context, caller: Caller) -> CollectionList:
    rows = ctx.repo.collections(caller.visible_to)
    return CollectionList(collections=[CollectionSummary(name=name, models=count) for name, count in rows])


@router.get(
    "/{name}",
    response_model=CollectionOut,
    responses={404: PROBLEM},
    summary="A collection's models (latest job per model name)",
)
def get_collection(name: str, ctx: Context, caller: Caller) -> CollectionOut:
    jobs = _collection_jobs(ctx, name, caller)
    return CollectionOut(name=name, models=[collection_model(job) for job in jobs])


Target = Literal["test_accuracy", "generalization_gap"]


def _collection_jobs(ctx: ServiceContext, name: str, caller: Principal) -> list[Job]:
    """The caller's jobs of the collection (404 when it has none: another owner's collection reads as
    missing; the 404 names the caller's collections with a similar name)."""
    jobs = ctx.repo.collection_jobs(name, caller.visible_to)
    if not jobs:
        visible = [known for known, _ in ctx.repo.collections(caller.visible_to)]
        raise collection_not_found(name, near_matches(name, visible))
    return jobs


def near_matches(name: str, known: list[str], limit: int = 3) -> list[str]:
    """The names of ``known`` closest to ``name`` (difflib's ratio >= 0.6, case ignored), best first."""
    by_folded: dict[str, list[str]] = {}
    for candidate in known:
        by_folded.setdefault(candidate.casefold(), []).append(candidate)
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=limit, cutoff=0.6)
    return [candidate for folded in close for candidate in by_folded[folded]][:limit]


def _result_status(result: dict[str, Any]) -> dict[str, Any]:
    """The result's per-measure status entries of the documented shape (others are ignored)."""
    status = result.get("status")
    if not isinstance(status, dict):
        return {}
    return {
        measure: {"status": entry["status"], "reason": entry.get("reason")}
        for measure, entry in status.items()
        if isinstance(entry, dict)
        and entry.get("status") in MEASURE_STATUSES
        and isinstance(entry.get("reason"), (str, type(None)))
    }


def _result_meta(result: dict[str, Any]) -> dict[str, Any]:
    """The result's probe split and the accuracy measured on it (a training accuracy on "train")."""
    meta = result.get("meta")
    if not isinstance(meta, dict):
        return {}
    return {"split": meta.get("split"), "probe_accuracy": meta.get("probe_accuracy")}


def _scored_records(jobs: list[Job]) -> tuple[list[ModelRecord], list[dict[str, str]]]:
    """Records of the succeeded jobs (validated like a `gscore rank-file` file), and the models left out."""
    scored = [job for job in jobs if job.state == "succeeded" and job.result]
    items = [
        {
            "name": job.model_name,
            "hyperparameters": job.hyperparameters or {},
            "scores": job.result.get("scores", {}),
            "test_accuracy": job.test_accuracy,
            "train_accuracy": job.train_accuracy,
            "status": _result_status(job.result),
            "meta": _result_meta(job.result),
        }
        for job in scored
    ]
    scored_ids = {job.id for job in scored}
    not_scored = [{"name": job.model_name, "state": job.state} for job in jobs if job.id not in scored_ids]
    return parse_rank_records(items), not_scored


def _measure_list(measures: str | None, records: list[ModelRecord], field: str) -> list[str] | None:
    """The requested measures (names, families such as ``norm``, or ``all``), each of which some scored model
    must have (else 422 naming it)."""
    requested = [m.strip() for m in (measures or "").split(",") if m.strip()]
    names, unknown = select_measures(records, requested)
    if unknown:
        present = default_measures(records)
        raise Problem(
            422,
            "unknown-measure",
            "Measure not in this collection",
            f"no scored model of this collection has {', '.join(map(repr, unknown))}; "
            f"present: {', '.join(sorted(present)) or 'none yet'}",
            field=field,
        )
    return names or None


# The ranking's protocol and interval parameters, shared by the ranking and the plot (whose titles show tau).
MinTrainAccuracy = Annotated[
    float,
    Query(
        ge=0,
        le=1,
        description="models below this training accuracy, or without one, are listed but left out "
        "of tau and psi (the paper's protocol); 0 turns it off",
    ),
]
Level = Annotated[float, Query(gt=0, lt=1, description="bootstrap interval level")]
Resamples = Annotated[int, Query(ge=0, le=10_000, description="bootstrap resamples; 0: no intervals")]
BootstrapSeed = Annotated[int, Query(ge=0, le=2**32 - 1, description="bootstrap seed")]


@router.get(
    "/{name}/ranking",
    response_model=RankingOut,
    responses={404: PROBLEM, 422: PROBLEM},
    summary="Rankings and (granulated) Kendall coefficients of a collection's scored models",
)
def get_ranking(
    name: str,
    ctx: Context,
    caller: Caller,
    target: Target = "test_accuracy",
    measures: Annotated[str | None, Query(description="comma-separated measure names")] = None,
    min_train_accuracy: MinTrainAccuracy = DEFAULT_MIN_TRAIN_ACCURACY,
    level: Level = DEFAULT_LEVEL,
    n_resamples: Resamples = DEFAULT_RESAMPLES,
    seed: BootstrapSeed = 0,
) -> RankingOut:
    """The same document as `gscore rank-file FILE --json`, plus `not_scored`: models whose job has not succeeded."""
    records, not_scored = _scored_records(_collection_jobs(ctx, name, caller))
    result = rank_collection(
        records,
        target=target,
        measures=_measure_list(measures, records, "measures"),
        min_train_accuracy=min_train_accuracy,
        level=level,
        n_resamples=n_resamples,
        seed=seed,
    )
    return RankingOut.model_validate({**result, "not_scored": not_scored})


@router.get(
    "/{name}/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: PROBLEM, 422: PROBLEM},
    summary="Each measure against test accuracy, one point per model (the paper's Figure 3)",
)
def get_plot(
    name: str,
    ctx: Context,
    caller: Caller,
    measure: Annotated[str | None, Query(description="comma-separated measures; default all")] = None,
    target: Target = "test_accuracy",
    color_by: Annotated[
        str | None, Query(max_length=128, description="a hyperparameter: one colour per value, with a legend")
    ] = None,
    min_train_accuracy: MinTrainAccuracy = DEFAULT_MIN_TRAIN_ACCURACY,
    level: Level = DEFAULT_LEVEL,
    n_resamples: Resamples = DEFAULT_RESAMPLES,
    seed: BootstrapSeed = 0,
) -> Response:
    from gscore.ranking.kendall import collection_axes
    from gscore.ranking.plots import plot_measures

    records, _ = _scored_records(_collection_jobs(ctx, name, caller))
    chosen = _measure_list(measure, records, "measure") or default_measures(records)
    if not chosen:
        raise Problem(422, "nothing-to-plot", "Nothing to plot", f"no model of {name!r} has scores yet")
    axes = collection_axes(records)
    if color_by is not None and color_by not in axes:
        raise Problem(
            422,
            "unknown-hyperparameter",
            "Hyperparameter not in this collection",
            f"no scored model of {name!r} has {color_by!r}; present: {', '.join(axes) or 'none'}",
            field="color_by",
        )
    ranking = rank_collection(
        records,
        target=target,
        measures=chosen,
        min_train_accuracy=min_train_accuracy,
        level=level,
        n_resamples=n_resamples,
        seed=seed,
    )
    png = plot_measures(records, chosen, target=target, color_by=color_by, ranking=ranking)
    return Response(png, media_type="image/png")
