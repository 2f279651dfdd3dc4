"""Serving the API inside the router's event loop (uvicorn, without its signal handling).

The listener is hardened for a loop it shares with call set-up: a request head
still incomplete at ``MAX_HEADER_BYTES`` is refused (400, h11's limit on what it
buffers), one not complete within ``HEAD_TIMEOUT_SECONDS`` of the connection's start
or of its previous answer closes the connection, idle keep-alive connections are
closed after ``KEEP_ALIVE_SECONDS``, and past ``MAX_CONNECTIONS`` requests are
answered 503 (uvicorn counts every open connection: idle ones, event streams).
Request bodies are bounded by the app (callrouter.api.limits).  uvicorn's own
proxy-header handling is off: the client's address is the TCP peer, and forwarding
headers are read only from trusted proxies (callrouter.api.sources).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 1000  # event streams included; mind the file descriptor limit
BACKLOG = 256


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT/SIGHUP; uvicorn must not take them over.
        yield


class _HeadDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head.

    uvicorn arms its keep-alive timer only after an answer and cancels it on any byte
    that arrives, so a connection that sends nothing, or a byte now and then, would
    stay open for ever.  Here a connection that has not sent a complete request head
    within ``head_timeout`` of opening, or of its previous answer, is closed.
    """

    head_timeout = HEAD_TIMEOUT_SECONDS
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._await_head()  # before uvicorn starts a pipelined request, if any
        super().on_response_complete()

    def _await_head(self) -> None:
        self._stop_waiting()
        self._deadline = self.loop.call_later(self.head_timeout, self._overdue, self.cycle)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _overdue(self, cycle_then: object) -> None:
        self._deadline = None
        # A new request's head makes a new cycle; the same one means none came.
        if self.cycle is cycle_then and not self.transport.is_closing():
            self.transport.close()


class ApiServer:
    def __init__(
        self,
        api: FastAPI,
        host: str = "127.0.0.1",
        port: int = 8090,
        *,
        head_timeout: float = HEAD_TIMEOUT_SECONDS,
        keep_alive: int = KEEP_ALIVE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host = host
        self.requested_port = port
        protocol = type("HeadDeadline", (_HeadDeadline,), {"head_timeout": head_timeout})
        self._config = uvicorn.Config(
            api,
            http=protocol,
            ws="none",
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            # The TCP peer is the client; trusted proxies are the app's business.
            proxy_headers=False,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            timeout_keep_alive=keep_alive,
            limit_concurrency=max_connections,
            backlog=BACKLOG,
            # Event streams never end by themselves: give them a second on shutdown.
            timeout_graceful_shutdown=1,
        )
        self._server = _EmbeddedServer(self._config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None, "not started"
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind now (so a taken port fails the start, loudly), then serve in a task."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: only then does asyncio set TCP_NODELAY on accepted
        # connections (else Nagle and delayed ACKs hold each answer for ~40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno,
                f"HTTP API cannot listen on {self.host}:{self.requested_port}: {exc.strerror}",
            ) from None
        sock.listen(BACKLOG)
        sock.setblocking(False)
        self._socket = sock
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)  # uvicorn offers no readiness event
        if self._task.done():
            self._task.result()  # raise what stopped it
        log.info("HTTP API listening on http://%s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
        if self._socket is not None:
            self._socket.close()
