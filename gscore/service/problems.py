"""RFC 9457 problem documents (``application/problem+json``) and the app's exception handlers."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sqlalchemy_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from gscore.errors import GScoreError
from gscore.service.error_middleware import UnhandledErrorMiddleware

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("gscore.service")
REQUEST_PARTS = ("body", "query", "path", "header")  # dropped from a validation error's field name
# database errors that are bugs (500); every other DBAPIError (down, hung, I/O error, corrupt file) is a 503
DATABASE_BUGS = (
    sqlalchemy_exc.IntegrityError,
    sqlalchemy_exc.ProgrammingError,
    sqlalchemy_exc.DataError,
    sqlalchemy_exc.NotSupportedError,
)
DEPENDENCY_RETRY_AFTER_SECONDS = 5  # Retry-After of a 503 for a database or storage fault
# OS errors that mean "the storage directory cannot be written now" (read-only, full, no permission, I/O)
STORAGE_ERRNOS = frozenset(
    {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EXDEV}
)

_HTTP_TITLES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


PROBLEM = {
    "content": {PROBLEM_MEDIA_TYPE: {}}
}  # an OpenAPI ``responses`` entry: "answers a problem document"


def problem_responses(*statuses: int) -> dict[int | str, dict]:
    """``responses=`` for a route whose errors are problem documents, e.g. ``problem_responses(404, 409)``."""
    return {status: PROBLEM for status in statuses}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        type_: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.type, self.title, self.detail, self.extra = status, type_, title, detail, extra
        self.headers = headers

    @classmethod
    def from_engine_error(cls, error: GScoreError, status: int | None = None) -> Problem:
        """The problem of an engine error: ``status``, else the error's ``http_status`` (413 for an archive
        over a cap), else 422."""
        status = status or getattr(error, "http_status", 422)
        field = getattr(error, "field", None)  # a SpecError's, or the file part a CheckpointError names
        extra = {"field": field} if field else {}
        return cls(status, error.type, error.title, error.detail, **extra)


def job_not_found(job_id: str) -> Problem:
    """404 for a job id the table does not hold."""
    return Problem(404, "job-not-found", "Job not found", f"no job with id {job_id!r}")


def collection_not_found(name: str, near_matches: Sequence[str] = ()) -> Problem:
    """404 for a collection no job was submitted to; ``near_matches`` (the caller's collections with a
    similar name) are named in the detail and listed in the ``near_matches`` member."""
    detail = f"no job was submitted to {name!r}"
    if near_matches:
        detail += f"; did you mean {' or '.join(map(repr, near_matches))}?"
    return Problem(
        404, "collection-not-found", "Collection not found", detail, near_matches=list(near_matches)
    )


def problem_response(
    request: Request, status: int, type_: str, title: str, detail: str, **extra: Any
) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail, "instance": request.url.path}
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def _validation_detail(exc: RequestValidationError) -> tuple[str, str | None]:
    messages, first_field = [], None
    for err in exc.errors():
        location = ".".join(str(part) for part in err.get("loc", ()) if part not in REQUEST_PARTS)
        first_field = first_field or location or None
        messages.append(f"{location or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(messages) or "invalid request", first_field


def internal_error(request: Request) -> JSONResponse:
    """500 for a bug (the error itself is logged by the caller, never shown)."""
    return problem_response(
        request, 500, "internal-error", "Internal server error", "an unexpected error was logged"
    )


def dependency_unavailable(request: Request, type_: str, title: str, detail: str) -> JSONResponse:
    """503 with ``Retry-After`` for a dependency (database, storage) that failed; the request changed nothing
    a retry would duplicate (a failed transaction is rolled back, a partial upload is discarded)."""
    response = problem_response(request, 503, type_, title, f"{detail}; retry later")
    response.headers["Retry-After"] = str(DEPENDENCY_RETRY_AFTER_SECONDS)
    return response


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app answers with is a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        response = problem_response(request, exc.status, exc.type, exc.title, exc.detail, **exc.extra)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(GScoreError)
    async def _engine_error(request: Request, exc: GScoreError) -> JSONResponse:
        return await _problem(request, Problem.from_engine_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, field = _validation_detail(exc)
        extra = {"field": field} if field else {}
        return problem_response(request, 422, "invalid-request", "Invalid request", detail, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _HTTP_TITLES.get(exc.status_code, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        response = problem_response(request, exc.status_code, "about:blank", title, detail)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(sqlalchemy_exc.DBAPIError)
    @app.exception_handler(sqlalchemy_exc.TimeoutError)
    @app.exception_handler(sqlalchemy_exc.DisconnectionError)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DATABASE_BUGS):  # the query, not the database, is at fault
            log.exception("unhandled database error on %s %s", request.method, request.url.path)
            return internal_error(request)
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return dependency_unavailable(
            request, "database-unavailable", "Database unavailable", "the job database did not answer"
        )

    @app.exception_handler(OSError)
    async def _storage_unavailable(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno not in STORAGE_ERRNOS:
            log.exception("unhandled OS error on %s %s", request.method, request.url.path)
            return internal_error(request)
        log.error("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
        reason = os.strerror(exc.errno) if exc.errno else "error"
        return dependency_unavailable(
            request,
            "storage-unavailable",
            "Storage unavailable",
            f"the storage directory refused a write ({reason})",
        )

    # an exception no handler takes: a 500 problem document with `Connection: close`, not re-raised (so
    # uvicorn does not drop the kept-alive connection mid-stream); the handler below only sees exceptions
    # raised outside it (in an outer middleware)
    app.add_middleware(UnhandledErrorMiddleware)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error(request)
