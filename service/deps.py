"""Route dependencies as named aliases (FastAPI's ``deps`` convention): a route declares ``ctx: Context``.

``Context`` is the app's :class:`~service.context.ServiceContext` (settings, job table, storage, queue
publisher, metrics); ``IdempotencyKeyHeader`` is the optional ``Idempotency-Key`` request header (declare it as
``idempotency_key: IdempotencyKeyHeader = None``: FastAPI reads the header from the parameter name).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from service.context import ServiceContext, get_context

Context = Annotated[ServiceContext, Depends(get_context)]
IdempotencyKeyHeader = Annotated[str | None, Header(max_length=255)]  # the `Idempotency-Key` header
