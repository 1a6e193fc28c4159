"""``/v1/datasets``: built-in datasets installed here, and uploaded .npz probe sets."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from fastapi import APIRouter, Request, Response

from gscore.errors import DatasetError
from gscore.inputs.checkpoints.upload_checks import npz_dataset_summary
from gscore.jobstore.datasets_repo import DatasetNameTaken
from gscore.jobstore.db import UploadedDataset
from gscore.jobstore.keys import Principal
from gscore.jobstore.specs import check_dataset_name
from gscore.service.context import ServiceContext
from gscore.service.deps import Caller, Context
from gscore.service.multipart import UploadedForm, read_multipart
from gscore.service.problems import Problem, problem_responses
from gscore.service.schemas import DatasetList, DatasetOut
from gscore.service.upload_work import run_check, run_upload_step

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": ".npz with x, y (and sub, x_test, y_test, sub_test)",
                    },
                    "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
                },
            }
        }
    },
}


def _uploaded_out(record: UploadedDataset) -> DatasetOut:
    summary = record.summary or {}
    return DatasetOut(
        name=record.name,
        source="uploaded",
        installed=True,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        created_at=record.created_at,
        classes=summary.get("classes"),
        subclasses=summary.get("subclasses"),
        hierarchy=summary.get("hierarchy"),
        samples=summary.get("samples"),
    )


def _default_name(filename: str | None) -> str:
    stem = PurePosixPath((filename or "").replace("\\", "/")).stem.lower()
    return re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:64] or "dataset"


def _store_dataset(
    ctx: ServiceContext, form: UploadedForm, caller: Principal
) -> tuple[UploadedDataset, bool]:
    from gscore.inputs.datasets import BUILTIN_DATASET_NAMES

    if "file" not in form.files:
        raise DatasetError("the file field 'file' (an .npz probe set) is required")
    filename, sink = form.files["file"]
    name = form.fields.get("name", "").strip() or _default_name(filename)
    check_dataset_name(name)
    if name in BUILTIN_DATASET_NAMES:
        raise DatasetError(f"{name!r} is the name of a built-in dataset; choose another name")
    sink.close()
    summary = run_check(ctx.settings, npz_dataset_summary, sink.path, name, ctx.settings.max_dataset_bytes)
    path = ctx.storage.keep_dataset(sink)
    try:
        return ctx.datasets.add(name, sink.sha256, path.stat().st_size, summary, owner=caller.owner)
    except DatasetNameTaken:
        raise Problem(
            409,
            "dataset-name-taken",
            "Dataset name taken",
            f"you have an uploaded dataset named {name!r} with other content; choose another name",
        ) from None


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses=problem_responses(400, 409, 413, 415, 422),
    summary="Upload an .npz probe set",
)
async def upload_dataset(request: Request, response: Response, ctx: Context, caller: Caller) -> DatasetOut:
    form = await read_multipart(
        request, file_fields={"file"}, open_sink=lambda: ctx.storage.new_sink(ctx.settings.max_upload_bytes)
    )
    try:
        record, created = await run_upload_step(_store_dataset, ctx, form, caller)
    finally:
        form.discard()
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/datasets/{record.name}"
    return _uploaded_out(record)


@router.get("", response_model=DatasetList, summary="Built-in (with install status) and uploaded datasets")
def list_datasets(ctx: Context, caller: Caller) -> DatasetList:
    from gscore.inputs.datasets import builtin_datasets

    builtins = [
        DatasetOut(
            name=d["name"],
            source="builtin",
            installed=d["installed"],
            description=d["description"],
            classes=d["classes"],
            subclasses=d["subclasses"],
            hierarchy=d["hierarchy"],
            samples=d["samples"],
            where=d["where"],
        )
        for d in builtin_datasets(ctx.settings.resolved_datasets_dir)
    ]
    uploaded = ctx.datasets.all(caller.visible_to)  # another owner's uploads are not listed
    return DatasetList(datasets=builtins + [_uploaded_out(record) for record in uploaded])
