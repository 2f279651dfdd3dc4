"""The lean websocket of ARI's event stream: the pure frame reader as tables, the
connection against a hand-written server that sends exactly the bytes each test needs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from callrouter.ari.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    EventSocket,
    FrameProtocolError,
    FrameReader,
    WebSocketClosed,
    WebSocketError,
    accept_key,
    connect_events,
    encode_client_frame,
)

WAIT = 5.0
log = logging.getLogger("tests.websocket")


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes = b""
) -> bytes:
    """A frame as a server (or, with ``mask``, a client) would send it."""
    size = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    flag = 0x80 if mask else 0
    if size < 126:
        head = bytes((first, flag | size))
    elif size < 1 << 16:
        head = bytes((first, flag | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, flag | 127)) + size.to_bytes(8, "big")
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + payload


def unmask_client_frame(data: bytes) -> tuple[int, bytes, int]:
    """(opcode, payload, bytes used) of one client frame; asserts it is masked."""
    assert data[1] & 0x80, "a client frame must be masked"
    size = data[1] & 0x7F
    pos = 2
    if size == 126:
        size, pos = int.from_bytes(data[2:4], "big"), 4
    key = data[pos : pos + 4]
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[pos + 4 : pos + 4 + size]))
    return data[0] & 0x0F, payload, pos + 4 + size


# --- the frame reader ----------------------------------------------------------------


def test_rfc_6455_accept_key_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_a_text_frame_of_any_length_split_at_every_boundary(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = frame(OP_TEXT, payload)
    assert FrameReader(1 << 20).feed(data) == [(OP_TEXT, payload)]
    for cut in sorted({1, 2, 3, 4, 9, 10, 11, len(data) // 2, len(data) - 1}):
        if 0 < cut < len(data):
            reader = FrameReader(1 << 20)
            assert reader.feed(data[:cut]) == []
            assert reader.feed(data[cut:]) == [(OP_TEXT, payload)]


def test_bytes_one_at_a_time_and_many_frames_in_one_segment() -> None:
    data = frame(OP_TEXT, b'{"type":"A"}') + frame(OP_BINARY, b"\x00\x01") + frame(OP_TEXT, b"")
    expected = [(OP_TEXT, b'{"type":"A"}'), (OP_BINARY, b"\x00\x01"), (OP_TEXT, b"")]
    assert FrameReader(100).feed(data) == expected
    reader = FrameReader(100)
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert out == expected


def test_fragments_are_joined_and_control_frames_may_come_between_them() -> None:
    data = (
        frame(OP_TEXT, b"one ", fin=False)
        + frame(OP_CONTINUATION, b"two ", fin=False)
        + frame(OP_PING, b"p")
        + frame(OP_CONTINUATION, b"three")
        + frame(OP_TEXT, b"next")
    )
    assert FrameReader(100).feed(data) == [
        (OP_PING, b"p"),
        (OP_TEXT, b"one two three"),
        (OP_TEXT, b"next"),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(OP_TEXT, b"x", mask=b"abcd"), "masked frame"),
        (frame(OP_TEXT, b"x", rsv=0x40), "reserved bits"),
        (frame(0x3, b"x"), "unknown opcode"),
        (frame(OP_PING, b"x", fin=False), "fragmented control frame"),
        (frame(OP_PING, b"x" * 126), "control frame over 125 bytes"),
        (frame(OP_CONTINUATION, b"x"), "continuation frame without a message"),
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), "new message before"),
        (frame(OP_TEXT, b"x" * 101), "message over 100 bytes"),
        (frame(OP_TEXT, b"x" * 60, fin=False) + frame(OP_CONTINUATION, b"x" * 41), "over 100"),
    ],
)
def test_what_rfc_6455_forbids_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(FrameProtocolError, match=reason):
        FrameReader(100).feed(data)


def test_an_oversized_message_is_refused_from_its_header_before_its_payload() -> None:
    head = frame(OP_TEXT, b"x" * 70000)[:10]
    with pytest.raises(FrameProtocolError, match="over 1000 bytes") as info:
        FrameReader(1000).feed(head)
    assert info.value.code == 1009


@pytest.mark.parametrize("size", [0, 4, 125, 126, 300])
def test_client_frames_are_masked_and_decode_back(size: int) -> None:
    payload = (bytes(range(256)) * 2)[:size]
    data = encode_client_frame(OP_PING, payload)
    opcode, decoded, used = unmask_client_frame(data)
    assert (opcode, decoded, used) == (OP_PING, payload, len(data))
    assert data[0] == 0x80 | OP_PING  # final frame


# --- the connection, against a server that writes exactly what each test says ---------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _answer_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: str, accept: str | None
) -> dict[str, str]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if accept is None:
        accept = accept_key(headers["sec-websocket-key"])
    writer.write(
        f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
    return headers


class Server:
    def __init__(self, script: Script, status: str = "101 Switching Protocols") -> None:
        self.script = script
        self.status = status
        self.accept: str | None = None
        self.headers: dict[str, str] = {}
        self.done = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.headers = await _answer_handshake(reader, writer, self.status, self.accept)
            await self.script(reader, writer)
        finally:
            self.done.set()
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ari/events?app=x"


async def open_socket(server: Server, **options: float | None) -> EventSocket:
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    settings: dict[str, float | None] = {
        "ping_interval": None,
        "ping_timeout": None,
        "close_timeout": 2.0,
    }
    settings.update(options)
    return await connect_events(
        server.url,
        headers={"Authorization": "Basic eDp5"},
        open_timeout=WAIT,
        max_size=1 << 20,
        logger=log,
        **settings,  # type: ignore[arg-type]
    )


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    extra = 2 if size == 126 else 0
    rest = await reader.readexactly(extra + 4 + (size if size < 126 else 0))
    if extra:
        size = int.from_bytes(rest[:2], "big")
        rest += await reader.readexactly(size)
    opcode, payload, _ = unmask_client_frame(head + rest)
    return opcode, payload


async def messages(socket: EventSocket) -> list[bytes]:
    out = []
    async with asyncio.timeout(WAIT):
        async for message in socket:
            out.append(message)
    return out


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        if server.server is not None:
            server.server.close()


async def test_split_frames_a_ping_and_the_server_s_close(servers: list[Server]) -> None:
    replies: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = frame(OP_TEXT, b'{"type":"StasisStart"}') + frame(OP_TEXT, b"x" * 300)
        for i in range(0, len(data), 7):  # in pieces, each its own segment
            writer.write(data[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(frame(OP_PING, b"are you there"))
        replies.append(await read_client_frame(reader))
        writer.write(frame(OP_CLOSE, (1001).to_bytes(2, "big") + b"going away"))
        replies.append(await read_client_frame(reader))

    server = Server(script)
    servers.append(server)
    socket = await open_socket(server)
    assert await messages(socket) == [b'{"type":"StasisStart"}', b"x" * 300]  # ends: clean
    assert socket.close_code == 1001 and socket.close_reason == "going away"
    await asyncio.wait_for(server.done.wait(), WAIT)
    assert replies == [(OP_PONG, b"are you there"), (OP_CLOSE, (1001).to_bytes(2, "big"))]
    assert server.headers["authorization"] == "Basic eDp5"
    assert server.headers["sec-websocket-version"] == "13"


async def test_a_dropped_connection_and_an_error_close_raise(servers: list[Server]) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_TEXT, b"a"))
        await writer.drain()

    async def error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_CLOSE, (1011).to_bytes(2, "big") + b"oops"))
        await read_client_frame(reader)

    for script, code in ((drop, 1006), (error, 1011)):
        server = Server(script)
        servers.append(server)
        socket = await open_socket(server)
        received = []
        with pytest.raises(WebSocketClosed) as info:
            async with asyncio.timeout(WAIT):
                async for message in socket:
                    received.append(message)
        assert info.value.code == code
        assert received == ([b"a"] if script is drop else [])


async def test_a_protocol_violation_closes_with_1002(servers: list[Server]) -> None:
    sent: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_TEXT, b"ok") + frame(OP_TEXT, b"masked", mask=b"abcd"))
        sent.append(await read_client_frame(reader))

    server = Server(script)
    servers.append(server)
    socket = await open_socket(server)
    with pytest.raises(WebSocketClosed) as info:
        await messages(socket)
    assert info.value.code == 1002
    await asyncio.wait_for(server.done.wait(), WAIT)
    assert sent == [(OP_CLOSE, (1002).to_bytes(2, "big") + b"masked frame from the server")]


async def test_no_pong_closes_the_connection_with_1011(servers: list[Server]) -> None:
    pings: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pings.append((await read_client_frame(reader))[0])  # and never answered
        await reader.read()  # until the client gives up

    server = Server(script)
    servers.append(server)
    socket = await open_socket(server, ping_interval=0.02, ping_timeout=0.05)
    with pytest.raises(WebSocketClosed) as info:
        await messages(socket)
    assert info.value.code == 1011 and "keepalive" in info.value.reason
    assert pings == [OP_PING]


async def test_pongs_keep_the_connection_and_close_sends_1000(servers: list[Server]) -> None:
    seen: list[int] = []
    stop = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            opcode, payload = await read_client_frame(reader)
            seen.append(opcode)
            if opcode == OP_PING:
                writer.write(frame(OP_PONG, payload))
                if seen.count(OP_PING) == 3:
                    stop.set()
            elif opcode == OP_CLOSE:
                assert payload == (1000).to_bytes(2, "big")
                writer.write(frame(OP_CLOSE, payload))
                return

    server = Server(script)
    servers.append(server)
    # A ping timeout far shorter than three intervals: only the pongs keep it open.
    socket = await open_socket(server, ping_interval=0.02, ping_timeout=0.03)
    async with asyncio.timeout(WAIT):
        await stop.wait()
        await socket.close()
    assert socket.close_code == 1000
    assert seen == [OP_PING, OP_PING, OP_PING, OP_CLOSE]
    assert await messages(socket) == []


async def test_a_burst_larger_than_the_queue_arrives_whole_and_in_order(
    servers: list[Server],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(frame(OP_TEXT, str(i).encode()) for i in range(500)))
        writer.write(frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        await read_client_frame(reader)

    server = Server(script)
    servers.append(server)
    socket = await open_socket(server)
    await server.done.wait()  # everything is in the client's buffers before it reads
    assert await messages(socket) == [str(i).encode() for i in range(500)]


@pytest.mark.parametrize(
    ("status", "accept", "error"),
    [
        ("503 Service Unavailable", None, "HTTP 503"),
        ("101 Switching Protocols", "d3Jvbmc=", "wrong Sec-WebSocket-Accept"),
    ],
)
async def test_a_refused_or_wrong_handshake_is_an_error(
    servers: list[Server], status: str, accept: str | None, error: str
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = Server(script, status)
    server.accept = accept
    servers.append(server)
    with pytest.raises(WebSocketError, match=error):
        await open_socket(server)


def test_under_uvloop_as_callrouter_serve_runs_it() -> None:
    """uvloop's transports are not asyncio.Transport subclasses (a check once broke this)."""

    async def scenario() -> list[bytes]:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(frame(OP_TEXT, b"one") + frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            await read_client_frame(reader)

        server = Server(script)
        try:
            return await messages(await open_socket(server))
        finally:
            assert server.server is not None
            server.server.close()

    assert uvloop.run(scenario()) == [b"one"]


def test_the_handshake_key_is_random_and_its_accept_is_sha1_of_key_and_guid() -> None:
    key = base64.b64encode(b"0123456789abcdef").decode()
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    assert accept_key(key) == base64.b64encode(digest).decode()
