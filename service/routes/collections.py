"""``/v1/collections``: the models submitted under a collection name, with their scores."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.context import ServiceContext, get_context
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
    jobs = ctx.repo.collection_jobs(name)
    if not jobs:
        raise Problem(
            404, "collection-not-found", "Collection not found", f"no job was submitted to {name!r}"
        )
    return CollectionOut(name=name, models=[collection_model(job) for job in jobs])
