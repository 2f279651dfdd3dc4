"""The API on a real listener (ApiServer on a free loopback port): who a request is
from, and what the listener does with big, slow and idle clients.

Raw sockets where the point is what goes over the wire; the server runs in the
test's event loop, as it runs in the router's, so a request that blocks the loop
shows as a slow answer to a concurrent one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from ipaddress import ip_network

import httpx
import pytest

from callrouter.api import TokenSigner, create_api
from callrouter.api.limits import MAX_BODY_BYTES
from callrouter.api.server import ApiServer
from callrouter.api.sources import Network
from callrouter.logins.lockout import DatabaseLockout, Reservation
from callrouter.logins.service import LoginService
from tests.unit.conftest import Live
from tests.unit.test_directory_store import audit_entries

ADMIN_TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LOOPBACK: Sequence[Network] = [ip_network("127.0.0.1")]


class RecordingLockout(DatabaseLockout):
    """The lockout in the directory database, noting the source of every PIN try."""

    def __init__(self, live: Live) -> None:
        super().__init__(live.engine)
        self.tried_from: list[str] = []

    async def reserve(self, extension: str, source: str) -> Reservation:
        self.tried_from.append(source)
        return await super().reserve(extension, source)


@dataclass
class Router:
    server: ApiServer
    lockout: RecordingLockout

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def sources(self) -> list[str]:
        return self.lockout.tried_from


@contextlib.asynccontextmanager
async def running(
    live: Live,
    *,
    trusted_proxies: Sequence[Network] = (),
    head_timeout: float = 10.0,
    keep_alive: int = 5,
    max_connections: int = 1000,
) -> AsyncIterator[Router]:
    lockout = RecordingLockout(live)
    service = LoginService(
        live.engine, lambda: live.snapshot, lockout=lockout, on_change=live.refresh
    )
    api = create_api(service, TokenSigner(b"k" * 32), ADMIN_TOKEN, trusted_proxies=trusted_proxies)
    server = ApiServer(
        api,
        "127.0.0.1",
        0,
        head_timeout=head_timeout,
        keep_alive=keep_alive,
        max_connections=max_connections,
    )
    await server.start()
    try:
        yield Router(server, lockout)
    finally:
        await server.close()


async def wrong_pin(
    http: httpx.AsyncClient, extension: str, headers: dict[str, str]
) -> httpx.Response:
    return await http.post(
        "/api/v1/session", json={"extension": extension, "pin": "0000"}, headers=headers
    )


# --- who a request is from --------------------------------------------------------------


async def test_forwarding_headers_from_an_untrusted_peer_change_nothing(live: Live) -> None:
    async with running(live) as router, httpx.AsyncClient(base_url=router.url) as http:
        # A new forged address per try: still one source, locked after five.
        for i in range(5):
            forged = {"X-Forwarded-For": f"203.0.113.{i}", "Forwarded": f"for=198.51.100.{i}"}
            assert (await wrong_pin(http, f"90{i}", forged)).status_code == 401
        reply = await wrong_pin(http, "909", {"X-Forwarded-For": "203.0.113.99"})
        assert reply.status_code == 429
        assert set(router.sources()) == {"api 127.0.0.1"}

        reply = await http.post(
            "/api/v1/login",
            json={"workplace": "hotdesk-1", "extension": "202"},
            headers={**ADMIN, "X-Forwarded-For": "evil<script>"},
        )
        assert reply.status_code == 200
    assert (await audit_entries(live.engine))[-1][-1] == "api 127.0.0.1"


async def test_behind_a_trusted_proxy_the_client_it_names_counts(live: Live) -> None:
    async with (
        running(live, trusted_proxies=LOOPBACK) as router,
        httpx.AsyncClient(base_url=router.url) as http,
    ):
        await wrong_pin(http, "901", {"X-Forwarded-For": "203.0.113.9"})
        # The client's own claim comes first; the right-most untrusted address is it.
        await wrong_pin(http, "902", {"X-Forwarded-For": "10.9.9.9, 198.51.100.4, 127.0.0.1"})
        await wrong_pin(http, "903", {"Forwarded": 'for="[2001:db8::17]:4711";proto=https'})
        assert router.sources() == [
            "api 203.0.113.9",
            "api 198.51.100.4",
            "api 2001:db8::17",
        ]
        reply = await http.post(
            "/api/v1/login",
            json={"workplace": "hotdesk-1", "extension": "202"},
            headers={**ADMIN, "X-Forwarded-For": "192.0.2.33"},
        )
        assert reply.status_code == 200
    assert (await audit_entries(live.engine))[-1][-1] == "api 192.0.2.33"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "x" * 300},
        {"X-Forwarded-For": "1" * 300},
        {"X-Forwarded-For": "evil<script>"},
        {"X-Forwarded-For": "203.0.113.9, not-an-address"},
        {"X-Forwarded-For": "999.0.0.1"},
        {"X-Forwarded-For": "fe80::1%eth0"},
        {"X-Forwarded-For": ", ,"},
        {"X-Forwarded-For": ", ".join(["203.0.113.9"] + ["127.0.0.1"] * 20)},  # too many hops
        {"Forwarded": "for=unknown"},
        {"Forwarded": "proto=https"},
        {"Forwarded": f"for={'a' * 300}"},
        # Two headers naming different clients: one of them is the client's own word.
        {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=198.51.100.4"},
    ],
)
async def test_garbage_from_a_trusted_proxy_falls_back_to_the_peer(
    live: Live, headers: dict[str, str]
) -> None:
    async with (
        running(live, trusted_proxies=LOOPBACK) as router,
        httpx.AsyncClient(base_url=router.url) as http,
    ):
        assert (await wrong_pin(http, "901", headers)).status_code == 401
        assert router.sources() == ["api 127.0.0.1"]


# --- bodies -------------------------------------------------------------------------------


@dataclass
class Sent:
    seconds: float  # from the first byte sent to the answer's head received
    status: int
    body_bytes_sent: int


def send_body(port: int, size: int, *, chunked: bool = False) -> Sent:
    """POST ``size`` bytes of JSON to /api/v1/session from a thread of its own (a
    blocking socket), reading the answer as soon as it comes, even mid-body."""
    chunk = b"1," * (32 * 1024)
    head = "POST /api/v1/session HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    opening = b'{"extension": "201", "pin": "4711", "padding": ['
    reply = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        start = time.monotonic()

        def answered() -> bool:
            nonlocal reply
            sock.setblocking(False)
            try:
                while data := sock.recv(65536):
                    reply += data
            except (BlockingIOError, ConnectionResetError):
                pass
            finally:
                sock.settimeout(60)
            return b"\r\n\r\n" in reply

        try:
            sock.sendall(head.encode())
            body = opening
            while sent < size and not answered():
                piece = body[: size - sent]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
                body = chunk
            if chunked and sent >= size:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer should be there
        while b"\r\n\r\n" not in reply:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            reply += data
        seconds = time.monotonic() - start
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return Sent(seconds, status, sent)


# Health checks from a process of its own: a thread of the test's could not run while
# the server holds the GIL, and would miss the very stalls it is there to see.
HEALTH_PROBE = r"""
import json, select, socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
latencies, reply = [], b""
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0] or len(latencies) < 3:
    start = time.monotonic()
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: router\r\n\r\n")
    while b"}" not in reply:
        reply += sock.recv(65536)
    reply = reply[reply.index(b"}") + 1:]
    latencies.append(time.monotonic() - start)
    time.sleep(0.01)
print(json.dumps(latencies), flush=True)
"""


@contextlib.asynccontextmanager
async def health_checks(port: int) -> AsyncIterator[list[float]]:
    """A health check every 10 ms while the block runs; afterwards the list holds how
    long each took to answer."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HEALTH_PROBE,
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert probe.stdin is not None and probe.stdout is not None
    latencies: list[float] = []
    try:
        assert await probe.stdout.readline() == b"ready\n"
        yield latencies
    finally:
        probe.stdin.close()
        async with asyncio.timeout(30):
            latencies += json.loads(await probe.stdout.readline())
            await probe.wait()


@contextlib.asynccontextmanager
async def loop_stalls() -> AsyncIterator[list[float]]:
    """How late each of a series of 5 ms sleeps woke up while the block runs."""
    stalls: list[float] = []

    async def tick() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            stalls.append(time.monotonic() - before - 0.005)

    ticking = asyncio.create_task(tick())
    try:
        yield stalls
    finally:
        ticking.cancel()


async def test_a_50_mb_body_is_refused_at_once_and_the_loop_keeps_serving(live: Live) -> None:
    async with running(live) as router:
        port = router.server.port
        async with health_checks(port) as baseline:
            await asyncio.sleep(0.3)
        async with health_checks(port) as during, loop_stalls() as stalls:
            await asyncio.sleep(0.05)
            sent = await asyncio.to_thread(send_body, port, 50 << 20)
            await asyncio.sleep(0.2)
    print(
        f"{sent.status} after {sent.seconds * 1000:.1f} ms ({sent.body_bytes_sent} bytes sent); "
        f"health: {statistics.median(baseline) * 1000:.1f} ms median before, "
        f"{max(during) * 1000:.1f} ms at most during ({len(during)} checks); "
        f"event loop late by {max(stalls) * 1000:.1f} ms at most"
    )
    # Bounds for a shared, noisy machine: the body used to stall the loop for seconds.
    assert max(during) < 0.5
    assert max(stalls) < 0.5
    assert sent.status == 413
    assert sent.seconds < 0.5


async def test_a_chunked_body_is_refused_as_it_grows_past_the_limit(live: Live) -> None:
    async with running(live) as router:
        sent = await asyncio.to_thread(send_body, router.server.port, 10 << 20, chunked=True)
    assert sent.status == 413
    assert sent.body_bytes_sent < 10 << 20  # answered before the client was done


async def test_a_body_at_the_limit_is_read(live: Live) -> None:
    body = b'{"extension": "201", "pin": "4711"}'.ljust(MAX_BODY_BYTES)
    async with running(live) as router, httpx.AsyncClient(base_url=router.url) as http:
        reply = await http.post(
            "/api/v1/session", content=body, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 200
        reply = await http.post(
            "/api/v1/session", content=body + b" ", headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 413
        assert reply.json()["reason"] == "too_large"


# --- heads, idle and slow connections, the connection cap -----------------------------------


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (reading what it sends)."""
    start = time.monotonic()
    async with asyncio.timeout(limit):
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(65536):
                pass
    return time.monotonic() - start


async def test_an_idle_keep_alive_connection_is_closed(live: Live) -> None:
    async with running(live, keep_alive=1) as router:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: router\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" not in head.lower()  # kept alive, at first
        seconds = await closed_after(reader, 5)
        writer.close()
    assert 0.5 < seconds < 4


async def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(live: Live) -> None:
    async with running(live, head_timeout=1.0) as router:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
        start = time.monotonic()
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: router\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await asyncio.sleep(0.2)
                    writer.write(b"X")
                    await writer.drain()

        dripping = asyncio.create_task(trickle())
        try:
            await closed_after(reader, 5)
        finally:
            dripping.cancel()
            writer.close()
    assert time.monotonic() - start < 4


async def test_a_connection_that_sends_nothing_is_closed(live: Live) -> None:
    async with running(live, head_timeout=1.0) as router:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
        seconds = await closed_after(reader, 5)
        writer.close()
    assert 0.5 < seconds < 4


async def test_a_request_head_growing_past_the_limit_is_refused(live: Live) -> None:
    async with running(live) as router:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: router\r\nX-Big: " + b"a" * 10_000)
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 400 ")
        async with httpx.AsyncClient(base_url=router.url) as http:
            reply = await http.get("/api/v1/health", headers={"X-Big": "a" * 4000})
            assert reply.status_code == 200


async def test_past_the_connection_cap_requests_are_answered_503(live: Live) -> None:
    async with running(live, max_connections=4) as router:
        idle = [await asyncio.open_connection("127.0.0.1", router.server.port) for _ in range(4)]
        await asyncio.sleep(0.1)  # accepted
        async with httpx.AsyncClient(base_url=router.url) as http:
            assert (await http.get("/api/v1/health")).status_code == 503
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=router.url) as http:
            assert (await http.get("/api/v1/health")).status_code == 200


async def test_answers_on_a_kept_alive_connection_are_not_held_back(live: Live) -> None:
    # Without TCP_NODELAY an answer's body waited for the ACK of its head: 40 ms each.
    async with running(live) as router:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
        seconds = []
        for _ in range(10):
            start = time.monotonic()
            writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: router\r\n\r\n")
            await reader.readuntil(b"}")
            seconds.append(time.monotonic() - start)
        writer.close()
    assert statistics.median(seconds) < 0.02
