"""The REST connection pool against a hand-written server that sends exactly the bytes
each test needs: answers split anywhere, chunked and Content-Length bodies, connection
reuse, connections the server closed, and answers that break the framing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from callrouter.ari.http import BadResponse, HttpPool

WAIT = 5.0
AUTH = "Basic eDp5"

# One connection's script: it reads requests and writes whatever the test needs.
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request


def pool(port: int, **options: float) -> HttpPool:
    settings = {"connect_timeout": WAIT, "request_timeout": WAIT, "max_connections": 4}
    settings.update(options)
    return HttpPool(
        host="127.0.0.1",
        port=port,
        tls=False,
        host_header=f"127.0.0.1:{port}",
        auth_header=AUTH,
        connect_timeout=settings["connect_timeout"],
        request_timeout=settings["request_timeout"],
        max_connections=int(settings["max_connections"]),
    )


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        if server.server is not None:
            server.server.close()


async def serve(servers: list[Server], script: Script) -> tuple[Server, HttpPool]:
    server = Server(script)
    servers.append(server)
    return server, pool(await server.start())


def answer(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def test_one_write_per_request_and_answers_split_anywhere_on_one_connection(
    servers: list[Server],
) -> None:
    body = b'{"id":"cr-leg-1","name":"PJSIP/a-00000001"}'
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n[1,2,\r\n3;ext=1\r\n3,4\r\n1\r\n]\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for data in (answer("200 OK", body), chunked, answer("204 No Content")):
            await server.read_request(reader)
            for i in range(len(data)):  # one byte per segment
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    server, http = await serve(servers, script)
    try:
        assert await http.request("POST", "/ari/channels?endpoint=PJSIP%2Fa", None) == (
            200,
            "OK",
            body,
        )
        assert await http.request("GET", "/ari/channels", None) == (200, "OK", b"[1,2,3,4]")
        assert await http.request("DELETE", "/ari/channels/x", b'{"a":1}') == (
            204,
            "No Content",
            b"",
        )
    finally:
        await http.aclose()
    assert server.connections == 1  # kept alive across the three
    first, _, third = server.requests
    assert first.startswith(b"POST /ari/channels?endpoint=PJSIP%2Fa HTTP/1.1\r\n")
    assert f"Authorization: {AUTH}\r\n".encode() in first
    assert b"Content-Length: 0\r\n" in first
    assert third.endswith(b'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}')


async def test_connection_close_and_a_body_to_the_end_of_the_connection(
    servers: list[Server],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(answer("200 OK", b"[]", "Connection: close\r\n"))
        else:
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 100_000)  # no framing at all
        await writer.drain()

    server, http = await serve(servers, script)
    try:
        assert await http.request("GET", "/ari/channels", None) == (200, "OK", b"[]")
        assert await http.request("GET", "/ari/bridges", None) == (200, "OK", b"x" * 100_000)
    finally:
        await http.aclose()
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_resending(
    servers: list[Server],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer("200 OK", b"[]"))
        await writer.drain()
        # ... then the server closes it, as Asterisk does after session_inactivity

    server, http = await serve(servers, script)
    try:
        for _ in range(3):
            assert await http.request("GET", "/ari/channels", None) == (200, "OK", b"[]")
    finally:
        await http.aclose()
    assert len(server.requests) == 3  # none was sent twice
    assert server.connections == 3


async def test_a_connection_closed_mid_answer_is_an_error_not_a_retry(
    servers: list[Server],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    server, http = await serve(servers, script)
    try:
        with pytest.raises(asyncio.IncompleteReadError):
            await http.request("POST", "/ari/channels", None)
    finally:
        await http.aclose()
    assert len(server.requests) == 1  # the server saw it: not sent again


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"SIP/2.0 200 OK\r\n\r\n", "not an HTTP status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd", "not followed"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, "head over"),
    ],
)
async def test_an_answer_that_breaks_the_framing_is_a_bad_response(
    servers: list[Server], data: bytes, error: str
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(data)
        await writer.drain()
        await reader.read()  # until the client gives up on the connection

    server, http = await serve(servers, script)
    try:
        with pytest.raises(BadResponse, match=error):
            await http.request("GET", "/ari/channels", None)
    finally:
        await http.aclose()


async def test_bytes_nobody_asked_for_retire_the_connection(servers: list[Server]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer("200 OK", b"1") + b"HTTP/1.1 200 OK\r\n")  # one too many
        await writer.drain()
        await server.read_request(reader)  # never comes: the connection is retired
        writer.write(answer("200 OK", b"2"))

    server, http = await serve(servers, script)
    try:
        assert await http.request("GET", "/a", None) == (200, "OK", b"1")
        assert await http.request("GET", "/b", None) == (200, "OK", b"1")  # a new connection
    finally:
        await http.aclose()
    assert server.connections == 2


async def test_a_request_that_times_out_never_leaves_its_answer_for_the_next(
    servers: list[Server],
) -> None:
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await server.read_request(reader)
        if b"/slow" in request:
            await release.wait()
            writer.write(answer("200 OK", b"late"))
        else:
            writer.write(answer("200 OK", b"mine"))
        await writer.drain()

    server = Server(script)
    servers.append(server)
    http = pool(await server.start(), request_timeout=0.1)
    try:
        with pytest.raises(TimeoutError):
            await http.request("GET", "/slow", None)
        release.set()
        assert await http.request("GET", "/fast", None) == (200, "OK", b"mine")
    finally:
        await http.aclose()
    assert server.connections == 2


def test_under_uvloop_as_callrouter_serve_runs_it() -> None:
    async def scenario() -> tuple[int, str, bytes]:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(answer("200 OK", b"{}"))
            await writer.drain()

        server = Server(script)
        http = pool(await server.start())
        try:
            return await http.request("GET", "/ari/asterisk/info", None)
        finally:
            await http.aclose()
            assert server.server is not None
            server.server.close()

    assert uvloop.run(scenario()) == (200, "OK", b"{}")
