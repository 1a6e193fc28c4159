"""``/v1/architectures`` and ``/v1/measures``: what this server can score."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gscore.measures.table import DEFAULT_MEASURES, MEASURES
from gscore.service.schemas import ArchitectureList, MeasureList, MeasureOut

router = APIRouter(prefix="/v1", tags=["catalog"])


def _architectures() -> list[dict[str, Any]]:
    from gscore import models

    for name in ("architectures", "list_architectures", "architecture_catalog"):
        source = getattr(models, name, None)
        if callable(source):
            return list(source())
    for name in ("ARCHITECTURES", "FAMILIES"):
        source = getattr(models, name, None)
        if isinstance(source, dict):
            return [
                {"family": family, **(info if isinstance(info, dict) else {})}
                for family, info in source.items()
            ]
        if source is not None:
            return [{"family": family} for family in source]
    return []


@router.get("/architectures", response_model=ArchitectureList, summary="Architecture families and their spec")
def list_architectures() -> ArchitectureList:
    return ArchitectureList(architectures=_architectures())


@router.get("/measures", response_model=MeasureList, summary="Measures, orientation, parameters")
def list_measures() -> MeasureList:
    return MeasureList(
        measures=[
            MeasureOut(
                name=m.name,
                title=m.title,
                orientation=m.orientation,
                needs_hierarchy=m.needs_hierarchy,
                kind=m.kind,
                family=m.family,
                parameters=dict(m.parameters),
                description=m.description,
                default=m.name in DEFAULT_MEASURES,
            )
            for m in MEASURES.values()
        ]
    )
