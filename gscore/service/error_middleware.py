"""The last line of defence: an exception no handler took becomes a 500 problem document that closes the
connection cleanly.

Starlette hands an unhandled exception to its ``ServerErrorMiddleware``, which sends the 500 and then
re-raises it; uvicorn, seeing an exception after the response started, drops the kept-alive connection
without ``Connection: close`` (a client that reuses it gets a reset). This middleware sits inside that one,
answers the problem document with ``Connection: close`` (the request body may not have been read to its
end, so the connection cannot be reused) and does not re-raise: uvicorn finishes the response and closes.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gscore.service")
PROBLEM_MEDIA_TYPE = "application/problem+json"


class UnhandledErrorMiddleware:
    """ASGI middleware: an exception from the app before the response started -> 500 problem document."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # nothing clean is possible: the server closes the connection
                raise
            await send_internal_error(send, scope.get("path", ""))


async def send_internal_error(send: Send, path: str) -> None:
    """Send a complete 500 ``application/problem+json`` response with ``Connection: close``."""
    body = json.dumps(
        {
            "type": "internal-error",
            "title": "Internal server error",
            "status": 500,
            "detail": "an unexpected error was logged",
            "instance": path,
        }
    ).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
