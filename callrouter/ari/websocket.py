"""A lean websocket client for ARI's event stream: RFC 6455, just what ``/ari/events`` needs.

ARI's event stream is one way: Asterisk sends one text frame per event, the client
sends only control frames (pings, pongs, close). :func:`connect_events` opens the
connection (HTTP/1.1 upgrade, ``Sec-WebSocket-Accept`` checked) and returns an
:class:`EventSocket`, an ``asyncio.Protocol`` that parses frames as bytes arrive
(:class:`FrameReader`, pure) and hands out whole messages with ``async for``: a message
already received is returned without a trip through the event loop. Keep-alive pings
run on loop timers, not a task. No extensions are negotiated (Asterisk offers none).

Why not the ``websockets`` library: on the router's call path its layers (a reader
task, a frame-parser generator, an assembler with its own queue and futures) cost about
18 % of the router's CPU per call under load, measured with py-spy; README's design
section has the figures of this module against it.

The handshake is logged at DEBUG as ``> Name: value`` lines, through the logger the
caller passes (the ARI client's redacts ``Authorization``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

__all__ = [
    "EventSocket",
    "FrameReader",
    "WebSocketClosed",
    "WebSocketError",
    "connect_events",
    "encode_client_frame",
]

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3
_MAX_HEAD = 16 * 1024  # the server's handshake answer
# Reading pauses while this many messages wait to be taken, and resumes at a quarter.
_HIGH_WATER = 64
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL_ERROR = 1000, 1001, 1002
CLOSE_NO_STATUS, CLOSE_ABNORMAL, CLOSE_TOO_BIG, CLOSE_INTERNAL = 1005, 1006, 1009, 1011
_CLEAN = (CLOSE_NORMAL, CLOSE_GOING_AWAY)


class WebSocketError(Exception):
    """The connection could not be opened, or the server broke the protocol."""


class WebSocketClosed(Exception):
    """The connection ended other than by a normal close (1000, 1001)."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"websocket closed: {code} {reason}".rstrip())


class FrameProtocolError(WebSocketError):
    """The server sent a frame RFC 6455 does not allow; ``code`` is the close code."""

    def __init__(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        self.code = code
        super().__init__(reason)


class FrameReader:
    """Server-to-client frames in, whole messages out: ``(opcode, payload)``.

    Pure, no I/O: :meth:`feed` takes bytes as they arrive, in pieces of any size, and
    returns the messages they complete, in order: text and binary messages with their
    fragments joined (opcode ``OP_TEXT``/``OP_BINARY``), control frames as they come
    (they may arrive between fragments). Raises :class:`FrameProtocolError` on a masked
    frame, reserved bits, an unknown opcode, a fragmented or oversized control frame, a
    continuation out of place, or a message over ``max_size`` (checked from the header,
    before its payload is buffered).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._opcode = 0  # of the message being assembled from fragments, 0: none
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data  # the usual case: parse the segment as it came, no copy
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            self._check(b0, b1, length)
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._take(b0 & 0x0F, bool(b0 & 0x80), payload, out)
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < end:
            self._buf += buf[pos:]
        return out

    def _check(self, b0: int, b1: int, length: int) -> None:
        if b1 & 0x80:
            raise FrameProtocolError("masked frame from the server")
        if b0 & 0x70:
            raise FrameProtocolError("reserved bits set (no extension was negotiated)")
        opcode = b0 & 0x0F
        if opcode in _CONTROL_OPCODES:
            if not b0 & 0x80:
                raise FrameProtocolError("fragmented control frame")
            if length > 125:
                raise FrameProtocolError("control frame over 125 bytes")
        elif opcode not in (OP_CONTINUATION, *_DATA_OPCODES):
            raise FrameProtocolError(f"unknown opcode {opcode:#x}")
        elif self._size + length > self.max_size:
            raise FrameProtocolError(f"message over {self.max_size} bytes", code=CLOSE_TOO_BIG)

    def _take(self, opcode: int, fin: bool, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        if opcode in _CONTROL_OPCODES:
            out.append((opcode, payload))
            return
        if opcode == OP_CONTINUATION:
            if not self._opcode:
                raise FrameProtocolError("continuation frame without a message")
        elif self._opcode:
            raise FrameProtocolError("new message before the last one's final fragment")
        elif fin:  # the usual case: one frame, one message
            out.append((opcode, payload))
            return
        else:
            self._opcode = opcode
        self._parts.append(payload)
        self._size += len(payload)
        if fin:
            out.append((self._opcode, b"".join(self._parts)))
            self._parts = []
            self._opcode = 0
            self._size = 0


def encode_client_frame(opcode: int, payload: bytes = b"", mask: bytes | None = None) -> bytes:
    """One final client-to-server frame, masked as RFC 6455 requires (control frames:
    at most 125 bytes of payload)."""
    key = os.urandom(4) if mask is None else mask
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    if not size:
        return head + key
    stream = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")
    return head + key + masked


def _close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode("utf-8")[:123]


def _parse_close(payload: bytes) -> tuple[int, str]:
    if len(payload) < 2:
        return CLOSE_NO_STATUS, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", errors="replace")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


class EventSocket(asyncio.Protocol):
    """One client websocket connection: iterate it for messages (``bytes``, the
    payload of text and binary frames alike; the UTF-8 of a text message is checked by
    the JSON decoder that reads it, :func:`~callrouter.ari.events.parse_event`).

    Iteration ends after a normal close (1000, 1001) and raises
    :class:`WebSocketClosed` after any other end (1006: the connection dropped without
    a close frame; 1011: no pong within ``ping_timeout``).
    """

    def __init__(
        self,
        request: bytes,
        key: str,
        *,
        max_size: int,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._request = request
        self._key = key
        self._reader = FrameReader(max_size)
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._log = logger
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._messages: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._closing = False  # a close frame was sent
        self.close_code: int | None = None  # set once the connection is over
        self.close_reason = ""
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_deadline: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self._handshake(data)
            return
        try:
            messages = self._reader.feed(data)
        except FrameProtocolError as exc:
            self._log.warning("websocket: %s; closing", exc)
            self._fail(exc.code, str(exc))
            return
        for opcode, payload in messages:
            if opcode in _DATA_OPCODES:
                self._messages.append(payload)
            elif opcode == OP_PING:
                self._send(OP_PONG, payload)  # with the ping's payload
            elif opcode == OP_PONG:
                self._got_pong()
            else:
                self._got_close(payload)
        if self._messages:
            self._wake()
            if len(self._messages) >= _HIGH_WATER and not self._paused and self._transport:
                self._paused = True
                self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_pings()
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
            self.close_reason = str(exc) if exc else "connection closed without a close frame"
        if not self.opened.done():
            self.opened.set_exception(
                WebSocketError(f"connection closed during the handshake ({self.close_reason})")
            )
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake()

    # --- messages ------------------------------------------------------------------

    def __aiter__(self) -> EventSocket:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._messages:
                message = self._messages.popleft()
                if self._paused and len(self._messages) <= _HIGH_WATER // 4 and self._transport:
                    self._paused = False
                    self._transport.resume_reading()
                return message
            if self._lost.done():
                if self.close_code in _CLEAN:
                    raise StopAsyncIteration
                raise WebSocketClosed(self.close_code or CLOSE_ABNORMAL, self.close_reason)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        """Send a close frame and wait (``close_timeout``) for the server to end the
        connection; then end it ourselves. Idempotent."""
        if self._transport is None:
            return
        if not self._closing and not self._lost.done():
            self._closing = True
            self._send(OP_CLOSE, _close_payload(code))
        try:
            async with asyncio.timeout(self._close_timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
            self._transport.abort()
            await self._lost

    # --- internals -----------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD:
                self._refuse(WebSocketError("handshake answer too long"))
            return
        head = bytes(self._head[:end]).decode("latin-1")
        rest = bytes(self._head[end + 4 :])
        self._head = bytearray()
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
            self._log.debug("< %s: %s", name.strip(), value.strip())
        self._log.debug("< %s", lines[0])
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self._refuse(WebSocketError(f"not an HTTP status line: {lines[0][:80]!r}"))
        elif parts[1] != "101":
            self._refuse(WebSocketError(f"server rejected WebSocket connection: HTTP {parts[1]}"))
        elif "websocket" not in headers.get("upgrade", "").lower():
            self._refuse(WebSocketError("no Upgrade: websocket in the answer"))
        elif "upgrade" not in headers.get("connection", "").lower():
            self._refuse(WebSocketError("no Connection: upgrade in the answer"))
        elif headers.get("sec-websocket-accept") != accept_key(self._key):
            self._refuse(WebSocketError("wrong Sec-WebSocket-Accept in the answer"))
        elif headers.get("sec-websocket-extensions"):
            self._refuse(WebSocketError("the server chose an extension that was not offered"))
        else:
            self.opened.set_result(None)
            self._schedule_ping()
            if rest:
                self.data_received(rest)

    def _refuse(self, exc: WebSocketError) -> None:
        self.opened.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_client_frame(opcode, payload))

    def _got_close(self, payload: bytes) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = _parse_close(payload)
        if not self._closing:  # the server's close: echo it, then the server ends TCP
            self._closing = True
            code = self.close_code if self.close_code != CLOSE_NO_STATUS else CLOSE_NORMAL
            self._send(OP_CLOSE, _close_payload(code))
        if self._transport is not None:
            # The server should end TCP first; ending it too costs nothing and leaves
            # no half-closed connection behind if it does not.
            self._transport.close()

    def _fail(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        if not self._closing:
            self._closing = True
            self._send(OP_CLOSE, _close_payload(code, reason))
        if self._transport is not None:
            self._transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _schedule_ping(self) -> None:
        if self._ping_interval is not None and not self._lost.done():
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        self._send(OP_PING, os.urandom(4))
        if self._ping_timeout is not None and self._pong_deadline is None:
            self._pong_deadline = self._loop.call_later(self._ping_timeout, self._no_pong)
        self._schedule_ping()

    def _got_pong(self) -> None:
        if self._pong_deadline is not None:
            self._pong_deadline.cancel()
            self._pong_deadline = None

    def _no_pong(self) -> None:
        self._pong_deadline = None
        self._log.warning("websocket: no pong within %.1f s; closing", self._ping_timeout or 0)
        self._fail(CLOSE_INTERNAL, "keepalive ping timeout")
        if self._transport is not None:
            self._transport.abort()  # the peer is gone: no closing handshake to wait for

    def _stop_pings(self) -> None:
        for timer in (self._ping_timer, self._pong_deadline):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_deadline = None


async def connect_events(
    url: str,
    *,
    headers: Mapping[str, str],
    open_timeout: float,
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float,
    max_size: int,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> EventSocket:
    """Open ``url`` (``ws://`` or ``wss://``); :class:`WebSocketError`, :class:`OSError`
    or :class:`TimeoutError` (``open_timeout``, connect and handshake) if it fails."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise WebSocketError(f"not a ws:// or wss:// URL: {parts.scheme!r}")
    tls = parts.scheme == "wss"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    fields: dict[str, str] = {
        "Host": parts.netloc,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    logger.debug("> GET %s HTTP/1.1", target)
    for name, value in fields.items():
        logger.debug("> %s: %s", name, value)
    request = (
        f"GET {target} HTTP/1.1\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        + "\r\n"
    ).encode("latin-1")
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {}
    if tls:
        options = {"ssl": ssl.create_default_context(), "server_hostname": parts.hostname}

    def protocol() -> EventSocket:
        return EventSocket(
            request,
            key,
            max_size=max_size,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            logger=logger,
        )

    async with asyncio.timeout(open_timeout):
        transport, socket = await loop.create_connection(
            protocol, parts.hostname, parts.port or (443 if tls else 80), **options
        )
        try:
            await socket.opened
        except BaseException:
            transport.abort()
            raise
    return socket
