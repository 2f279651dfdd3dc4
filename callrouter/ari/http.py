"""A keep-alive HTTP/1.1 connection pool to one server: just what ARI's REST needs.

:class:`~callrouter.ari.client.AriClient` sends its REST requests through this pool of
connections of our own (asyncio streams, HTTP basic auth, ``TCP_NODELAY``): a request
is one ``write`` of bytes built from the method, path and query, and the answer is read
by ``Content-Length`` (or chunked). General HTTP clients (httpx) cost about a
millisecond of CPU per request on the machine this runs on (1.2 ms measured), which was
most of the router's added call set-up time. The pool can open connections ahead of
need (:meth:`HttpPool.warm`, :meth:`HttpPool.keep_warm`), so the first calls do not
wait for a connect.

The ``Authorization`` header is built once by the caller and only ever written to the
socket: it never appears in a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

__all__ = ["BadResponse", "HttpPool", "Response"]

log = logging.getLogger(__name__)


class BadResponse(Exception):
    """Asterisk's HTTP answer could not be read (no status line, bad framing)."""


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
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
        self._idle: list[_Conn] = []
        self._open = 0
        self._closed = False

    async def keep_warm(self, count: int, interval: float) -> None:
        """Keep ``count`` idle connections open, checking every ``interval`` seconds.

        Asterisk closes a connection that is idle for ``session_inactivity`` (http.conf,
        30 s by default); a new one costs the next request about 1.5 ms more.
        """
        while not self._closed:
            for conn in list(self._idle):
                if conn[0].at_eof() or conn[1].is_closing():
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
                _close(conn)
                return
            self._idle.append(conn)

    async def aclose(self) -> None:
        """Close the idle connections; busy ones close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)
        for _, writer in idle:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

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

    def _take(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn[0].at_eof() or conn[1].is_closing():
                self._drop(conn)
                continue
            return conn
        return None

    async def _connect(self) -> _Conn:
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        self._open += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:  # asyncio sets it already; be explicit, it matters here
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    def _drop(self, conn: _Conn) -> None:
        self._open -= 1
        _close(conn)

    async def _exchange(self, conn: _Conn, data: bytes, *, fresh: bool = False) -> Response:
        reader, writer = conn
        got_bytes = False
        try:
            writer.write(data)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                got_bytes = bool(exc.partial)
                raise
            got_bytes = True
            status, reason, length, chunked, close = _parse_head(head)
            if chunked:
                content = await _read_chunked(reader)
            elif length is not None:
                content = await reader.readexactly(length) if length else b""
            elif status in (204, 304) or 100 <= status < 200:
                content = b""
            else:  # no framing: the body runs to the end of the connection
                content = await reader.read()
                close = True
        except BaseException as exc:
            self._drop(conn)
            if (
                not fresh
                and not got_bytes
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


def _close(conn: _Conn) -> None:
    transport = conn[1].transport
    if not transport.is_closing():
        transport.close()


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


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadResponse("bad chunk size") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
