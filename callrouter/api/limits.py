"""A bound on request bodies, in front of the routes (pure ASGI).

The API shares the event loop that sets up calls, and parsing JSON blocks it: an
unbounded body stalls every call.  The bodies here are a few small JSON fields, so
``BodyLimit`` reads each request's body itself before the app sees any of it:

- a ``Content-Length`` over the limit is answered 413 at once, unread;
- a body that grows past the limit while arriving (chunked) is answered 413 as soon
  as it does;
- a body that has not arrived within ``BODY_TIMEOUT_SECONDS`` is answered 408.

Each of these answers closes the connection (the rest of the body is not read).
The app then gets the whole body in one message; later ``receive()`` calls (an
event stream waiting for the client to hang up) go straight to the server.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_SECONDS = 10.0


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        timeout: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await _refuse(send, 400, "Content-Length is not a number", "bad_input")
            return
        if declared > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client is gone: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await self._too_large(send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _refuse(
                send,
                408,
                f"the request body did not arrive within {self.timeout:g} s",
                "too_slow",
            )
            return
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, send: Send) -> None:
        await _refuse(
            send,
            413,
            f"request bodies are limited to {self.max_bytes} bytes",
            "too_large",
        )


def _content_length(scope: Scope) -> int | None:
    """The declared length (0 if none is declared); None if it is not a number."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() and len(text) <= 18 else None
    return 0


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(send: Send, status: int, detail: str, reason: str) -> None:
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
