"""A keep-alive HTTP/1.1 connection pool to one server: just what ARI's REST needs.

:class:`~callrouter.ari.client.AriClient` sends its REST requests through this pool of
connections of our own (HTTP basic auth, ``TCP_NODELAY``): a request is one ``write``
of bytes built from the method, path and query, and each connection is an
``asyncio.Protocol`` that reads the answer as it arrives (``Content-Length``, chunked,
or to the end of the connection) and resolves one future per request. General HTTP
clients (httpx) cost about a millisecond of CPU per request on the machine this runs on
(1.2 ms measured), which was most of the router's added call set-up time; asyncio's
streams cost a second wake-up per answer (README's design section has the figures).
The pool can open connections ahead of need (:meth:`HttpPool.warm`,
:meth:`HttpPool.keep_warm`), so the first calls do not wait for a connect.

The ``Authorization`` header is built once by the caller and only ever written to the
socket: it never appears in a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import cast

__all__ = ["BadResponse", "HttpPool", "Response"]

log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024  # an answer's head (status line and headers)
_MAX_CHUNK_LINE = 1024


class BadResponse(Exception):
    """Asterisk's HTTP answer could not be read (no status line, bad framing)."""


Response = tuple[int, str, bytes]  # status, reason phrase, body


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one server, just what ARI's REST needs.

    One request at a time per connection (no pipelining); at most ``max_connections``
    open. Every request carries the ``Authorization`` header; bodies are JSON. A request
    that finds its reused connection closed by the server (Asterisk drops idle ones
    after ``session_inactivity``) before any byte of an answer is sent again once on a
    new connection: the server did not see it. A request that is cancelled or times
    out closes its connection, so a late answer can never be read as another's.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: bool,
        host_header: str,
        auth_header: str,
        connect_timeout: float,
        request_timeout: float,
        max_connections: int,
    ) -> None:
        self._host = host
        self._port = port
        self._ssl = ssl.create_default_context() if tls else None
        self._head_tail = (
            f" HTTP/1.1\r\nHost: {host_header}\r\nAuthorization: {auth_header}\r\n"
            "Accept: application/json\r\n"
        ).encode("latin-1")
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open = 0
        self._closed = False

    async def keep_warm(self, count: int, interval: float) -> None:
        """Keep ``count`` idle connections open, checking every ``interval`` seconds.

        Asterisk closes a connection that is idle for ``session_inactivity`` (http.conf,
        30 s by default); a new one costs the next request about 1.5 ms more.
        """
        while not self._closed:
            for conn in list(self._idle):
                if conn.closed:
                    self._idle.remove(conn)
                    self._drop(conn)
            await self.warm(count)
            await asyncio.sleep(interval)

    async def warm(self, count: int) -> None:
        """Open connections up to ``count`` idle ones, ahead of the first requests."""
        while len(self._idle) < count and self._open < count and not self._closed:
            try:
                conn = await self._connect()
            except (OSError, TimeoutError) as exc:
                log.debug("ARI HTTP: could not open a connection ahead of need: %s", exc)
                return
            if self._closed:
                conn.close()
                return
            self._idle.append(conn)

    async def aclose(self) -> None:
        """Close the idle connections; busy ones close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await conn.wait_closed()

    async def request(self, method: str, target: str, body: bytes | None) -> Response:
        """Send one request (``target``: path and query; ``body``: JSON or None).

        Raises :class:`TimeoutError` after ``request_timeout``, :class:`BadResponse`,
        :class:`OSError` or :class:`asyncio.IncompleteReadError` (the connection failed),
        :class:`asyncio.LimitOverrunError` (a line too long).
        """
        head = method.encode("ascii") + b" " + target.encode("ascii") + self._head_tail
        if body is None:
            data = head + b"Content-Length: 0\r\n\r\n"
        else:
            data = (
                head
                + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode("ascii")
                + b"\r\n\r\n"
                + body
            )
        async with self._slots, asyncio.timeout(self._request_timeout):
            conn = self._take()
            if conn is not None:
                try:
                    return await self._exchange(conn, data)
                except _Stale:
                    pass  # closed while idle: the server never saw the request
            return await self._exchange(await self._connect(), data, fresh=True)

    def _take(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                self._drop(conn)
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            transport, conn = await loop.create_connection(
                _Connection,
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        self._open += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio sets it already; be explicit, it matters here
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _drop(self, conn: _Connection) -> None:
        self._open -= 1
        conn.close()

    async def _exchange(self, conn: _Connection, data: bytes, *, fresh: bool = False) -> Response:
        try:
            status, reason, content, close = await conn.send(data)
        except BaseException as exc:
            self._drop(conn)  # cancelled or timed out too: a late answer is never read
            if (
                not fresh
                and not conn.got_bytes
                and isinstance(exc, ConnectionError | asyncio.IncompleteReadError)
            ):
                raise _Stale from exc
            raise
        if close or self._closed:
            self._drop(conn)
        else:
            self._idle.append(conn)
        return status, reason, content


class _Stale(Exception):
    """A reused connection turned out closed before the request was answered."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: :meth:`send` writes a request and returns the future
    of its answer, ``(status, reason, body, close?)``, which :meth:`data_received`
    resolves as soon as the answer is complete. One request at a time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, str, bytes, bool]] | None = None
        self._buf = bytearray()
        self._head: tuple[int, str, int | None, bool, bool] | None = None
        self._chunks: list[bytes] = []
        self._to_eof = False  # the body runs to the end of the connection
        self.got_bytes = False  # of the current request's answer
        self.closed = False  # the server closed it, or we did
        self._lost = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes) -> asyncio.Future[tuple[int, str, bytes, bool]]:
        answer = self._loop.create_future()
        if self.closed or self._transport is None:
            answer.set_exception(ConnectionResetError("connection closed"))
            return answer
        self._answer = answer
        self._buf.clear()
        self._head = None
        self._chunks = []
        self._to_eof = False
        self.got_bytes = False
        self._transport.write(data)
        return answer

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.done():
            # Bytes nobody asked for (no pipelining here): this connection's framing
            # can no longer be trusted.
            self.close()
            return
        self.got_bytes = True
        self._buf += data
        try:
            self._parse(answer)
        except BadResponse as exc:
            answer.set_exception(exc)
            self.close()

    def eof_received(self) -> bool:
        self.closed = True
        answer = self._answer
        if answer is not None and not answer.done():
            if self._to_eof:
                answer.set_result((*self._status(), bytes(self._buf), True))
            else:
                answer.set_exception(self._cut_short())
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is not None and not answer.done():
            if self._to_eof and exc is None:
                answer.set_result((*self._status(), bytes(self._buf), True))
            else:
                answer.set_exception(self._cut_short(exc))
        if not self._lost.done():
            self._lost.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)

    def _status(self) -> tuple[int, str]:
        assert self._head is not None
        return self._head[0], self._head[1]

    def _cut_short(self, exc: Exception | None = None) -> Exception:
        if not self.got_bytes:
            return ConnectionResetError(str(exc) if exc else "connection closed before an answer")
        return asyncio.IncompleteReadError(bytes(self._buf), None)

    def _parse(self, answer: asyncio.Future[tuple[int, str, bytes, bool]]) -> None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise BadResponse(f"answer head over {_MAX_HEAD} bytes")
                return
            self._head = _parse_head(bytes(buf[: end + 4]))
            del buf[: end + 4]
        status, reason, length, chunked, close = self._head
        if chunked:
            content = self._parse_chunks()
            if content is None:
                return
        elif length is not None:
            if len(buf) < length:
                return
            content = bytes(buf[:length])
            if len(buf) > length:  # more than was asked for: do not reuse
                close = True
        elif status in (204, 304) or 100 <= status < 200:
            content = b""
        else:
            self._to_eof = True
            return
        answer.set_result((status, reason, content, close))

    def _parse_chunks(self) -> bytes | None:
        """The body once its last chunk and trailers are in, None until then."""
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                if len(buf) > _MAX_CHUNK_LINE:
                    raise BadResponse("chunk size line too long")
                return None
            try:
                size = int(bytes(buf[:line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadResponse("bad chunk size") from None
            if size == 0:
                if buf.find(b"\r\n\r\n", line_end) >= 0:  # the end of the trailers
                    return b"".join(self._chunks)
                if len(buf) > _MAX_HEAD:
                    raise BadResponse(f"chunk trailers over {_MAX_HEAD} bytes")
                return None
            start = line_end + 2
            if len(buf) < start + size + 2:
                return None
            if buf[start + size : start + size + 2] != b"\r\n":
                raise BadResponse("chunk not followed by CRLF")
            self._chunks.append(bytes(buf[start : start + size]))
            del buf[: start + size + 2]


def _parse_head(head: bytes) -> tuple[int, str, int | None, bool, bool]:
    """Status, reason, Content-Length, chunked?, Connection: close? of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise BadResponse(f"not an HTTP status line: {lines[0][:80]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    length: int | None = None
    chunked = False
    close = parts[0] == "HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise BadResponse(f"bad Content-Length {value.strip()[:20]!r}") from None
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            token = value.strip().lower()
            close = token == "close" or (close and token != "keep-alive")
    return status, reason, length, chunked, close
