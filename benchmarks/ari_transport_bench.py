"""Benchmark: the router's CPU per ARI event and per REST request, transport layer alone.

    .venv/bin/python -m benchmarks.ari_transport_bench [--events N] [--requests N] [--runs R]

The end-to-end figure (``sipp_load``: router CPU per call) moves with everything else on
a shared machine; this one isolates the two I/O layers of the call path. A server in a
subprocess (so that its CPU is not counted) sends ARI events over a websocket, one
every 0.4 ms (each arrives in its own TCP segment, as on a real call), and answers
REST requests with a channel's JSON. The client runs under uvloop, as ``callrouter
serve`` does, and counts its own process CPU (``time.process_time``):

* events: what the router read them with before, the ``websockets`` library's client
  and the standard library's ``json``, against what it reads them with now,
  :mod:`callrouter.ari.websocket` and :func:`~callrouter.ari.events.parse_event`
  (orjson); both build the same :class:`~callrouter.ari.events.AriEvent`;
* requests: :class:`~callrouter.ari.http.HttpPool`, one request at a time.

Prints µs of CPU per event and per request, per run; exit status 0 (it is a report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from callrouter.ari.events import _event, parse_event
from callrouter.ari.http import HttpPool
from callrouter.ari.websocket import connect_events

EVENT = json.dumps(
    {
        "type": "Dial",
        "timestamp": "2026-12-02T01:00:00.000+0000",
        "dialstatus": "RINGING",
        "forward": "",
        "dialstring": "bench-answer",
        "caller": {
            "id": "callrouter-sandbox-1764639300.12",
            "name": "PJSIP/bench-caller-0000000c",
            "state": "Ring",
            "protocol_id": "1-1@127.0.0.1",
            "caller": {"name": "", "number": "bench-caller"},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": "callrouter",
                "exten": "5000",
                "priority": 1,
                "app_name": "Stasis",
                "app_data": "callrouter,5000",
            },
            "creationtime": "2026-12-02T01:00:00.000+0000",
            "language": "en",
            "tenantid": "",
        },
        "peer": {
            "id": "cr-leg-0123456789abcdef",
            "name": "PJSIP/bench-answer-0000000d",
            "state": "Ringing",
            "protocol_id": "",
            "caller": {"name": "", "number": "bench-caller"},
            "connected": {"name": "", "number": "bench-caller"},
            "accountcode": "",
            "dialplan": {
                "context": "default",
                "exten": "s",
                "priority": 1,
                "app_name": "AppDial2",
                "app_data": "(Outgoing Line)",
            },
            "creationtime": "2026-12-02T01:00:00.000+0000",
            "language": "en",
        },
        "asterisk_id": "52:54:00:12:34:56",
        "application": "callrouter",
    }
)
EVENT_GAP = 0.0004  # seconds between two events from the server
BODY = json.dumps({"id": "cr-leg-0123456789abcdef", "name": "PJSIP/bench-answer-0000000d"})


# --- the server (a subprocess) ---------------------------------------------------------


async def _serve(events: int) -> None:
    async def stream(websocket: ServerConnection) -> None:
        for _ in range(events):
            await websocket.send(EVENT)
            await asyncio.sleep(EVENT_GAP)
        await websocket.close()

    async def rest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = BODY.encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        answer = head.encode() + b"\r\n\r\n" + body
        while True:
            try:
                request = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = 0
            for line in request.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(answer)

    async with serve(stream, "127.0.0.1", 0, compression=None) as ws_server:
        http_server = await asyncio.start_server(rest, "127.0.0.1", 0)
        ws_port = ws_server.sockets[0].getsockname()[1]
        http_port = http_server.sockets[0].getsockname()[1]
        print(f"{ws_port} {http_port}", flush=True)
        await asyncio.Event().wait()


# --- the client (this process) --------------------------------------------------------


async def _library_events(url: str) -> int:
    count = 0
    async with connect(url, compression=None, max_size=16 * 2**20, proxy=None) as websocket:
        async for message in websocket:
            _event(json.loads(message))
            count += 1
    return count


async def _lean_events(url: str) -> int:
    count = 0
    websocket = await connect_events(
        url,
        headers={},
        open_timeout=5,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
        max_size=16 * 2**20,
        logger=logging.getLogger("bench"),
    )
    async for message in websocket:
        parse_event(message)
        count += 1
    await websocket.close()
    return count


async def _requests(port: int, count: int) -> int:
    pool = HttpPool(
        host="127.0.0.1",
        port=port,
        tls=False,
        host_header=f"127.0.0.1:{port}",
        auth_header="Basic eDp5",
        connect_timeout=5,
        request_timeout=5,
        max_connections=4,
    )
    for index in range(count):
        if index % 3:
            await pool.request("DELETE", f"/ari/channels/cr-leg-{index:016x}", None)
        else:
            await pool.request("POST", "/ari/channels?endpoint=PJSIP%2Fx&app=callrouter", None)
    await pool.aclose()
    return count


async def _cpu_per_item(run: Callable[[], Awaitable[int]]) -> float:
    start = time.process_time()
    count = await run()
    return (time.process_time() - start) / count


async def _client(ws_port: int, http_port: int, events: int, requests: int, runs: int) -> None:
    url = f"ws://127.0.0.1:{ws_port}/ari/events"
    library: list[float] = []
    lean: list[float] = []
    rest: list[float] = []
    await _requests(http_port, 50)  # warm-up: imports, first connection
    for _ in range(runs):
        library.append(await _cpu_per_item(lambda: _library_events(url)))
        lean.append(await _cpu_per_item(lambda: _lean_events(url)))
        rest.append(await _cpu_per_item(lambda: _requests(http_port, requests)))
    print(f"{events} events and {requests} REST requests per run, {runs} runs, uvloop")
    print(f"event, websockets library + json: {_range(library)} µs CPU")
    print(f"event, callrouter.ari.websocket + orjson: {_range(lean)} µs CPU")
    print(f"REST request, HttpPool: {_range(rest)} µs CPU")


def _range(values: list[float]) -> str:
    return "-".join(f"{v * 1e6:.0f}" for v in (min(values), max(values)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.events))
        return 0
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ari_transport_bench", "--serve", "--events",
         str(args.events)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        ws_port, http_port = (int(p) for p in server.stdout.readline().split())
        uvloop.run(_client(ws_port, http_port, args.events, args.requests, args.runs))
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
