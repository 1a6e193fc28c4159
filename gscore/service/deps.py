"""Route dependencies as named aliases (FastAPI's ``deps`` convention): a route declares ``ctx: Context``.

``Context`` is the app's :class:`~service.context.ServiceContext` (settings, job table, storage, queue
publisher, metrics); ``IdempotencyKeyHeader`` is the optional ``Idempotency-Key`` request header (declare it as
``idempotency_key: IdempotencyKeyHeader = None``: FastAPI reads the header from the parameter name).

``Caller`` is the :class:`~jobstore.keys.Principal` of the request's ``Authorization: Bearer`` API key (a route
filters what it reads by ``caller.visible_to`` and files what it makes under ``caller.owner``); ``AdminCaller``
also requires an admin key. While no API key exists, every request is the keyless caller (sees everything: the
service then runs on loopback only); once one exists, a request without a valid, unrevoked key answers 401.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from gscore.jobstore.keys import KEYLESS, ApiKeys, Principal
from gscore.service.context import ServiceContext, get_context
from gscore.service.problems import Problem

Context = Annotated[ServiceContext, Depends(get_context)]
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="gsk_<id>_<secret>",
    description="An API key made with `gscore keys create --name NAME`; required once any key exists.",
)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def _principal(ctx: ServiceContext, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    keys = ApiKeys(ctx.sessions)
    if credentials is None:
        if not keys.any_exist():
            return KEYLESS
        raise _unauthorized("this service needs an API key: send `Authorization: Bearer <key>`")
    record = keys.lookup(credentials.credentials)
    if record is None:
        raise _unauthorized("the API key is not one this service issued")
    if record.revoked_at is not None:
        raise _unauthorized(f"the API key {record.id} was revoked")
    return Principal(owner=record.name, admin=record.admin, key_id=record.id)


async def authenticate(
    ctx: Context, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    """The caller of this request (401 problem document for a missing, unknown or revoked key)."""
    return await run_in_threadpool(_principal, ctx, credentials)


async def require_admin(caller: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """The caller, who must hold an admin key (or be keyless: no key exists); else 403."""
    if not caller.admin:
        raise Problem(
            403, "forbidden", "Forbidden", "this needs an admin API key (gscore keys create --admin)"
        )
    return caller


Caller = Annotated[Principal, Depends(authenticate)]
AdminCaller = Annotated[Principal, Depends(require_admin)]
IdempotencyKeyHeader = Annotated[str | None, Header(max_length=255)]  # the `Idempotency-Key` header
