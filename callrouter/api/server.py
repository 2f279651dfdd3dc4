"""Serving the API inside the router's event loop (uvicorn, without its signal handling)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT/SIGHUP; uvicorn must not take them over.
        yield


class ApiServer:
    def __init__(self, api: FastAPI, host: str = "127.0.0.1", port: int = 8090) -> None:
        self.host = host
        self.requested_port = port
        # Event streams never end by themselves: give them a second on shutdown.
        self._config = uvicorn.Config(
            api,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
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
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno,
                f"HTTP API cannot listen on {self.host}:{self.requested_port}: {exc.strerror}",
            ) from None
        sock.listen(128)
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
