"""An in-process fake ARI on 127.0.0.1, port 0, for unit tests of ARI users.

One listening port serves both halves, as Asterisk does:

* REST under ``/ari/...``: a tiny HTTP/1.1 server (keep-alive, Content-Length bodies)
  with basic auth. A small model of channels and bridges answers the calls the router
  makes (create, dial, ring, answer, hangup, play, bridges, variables, lists); tests override
  any answer with :meth:`FakeAri.set_response`, optionally pushing events on the
  websocket *before* the HTTP answer, as Asterisk does with ``StasisStart``.
* ``/ari/events``: the upgrade request is checked (auth, :meth:`FakeAri.refuse_websockets`)
  and then spliced byte for byte to an internal ``websockets.asyncio.server``, so the
  websocket side is a real websocket implementation. Tests push events with
  :meth:`FakeAri.send_event` and cut connections with :meth:`FakeAri.drop_websockets`.

Every request is recorded (:attr:`FakeAri.requests`) with its path below ``/ari``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve

__all__ = ["FakeAri", "RecordedRequest", "make_bridge", "make_channel", "make_event"]

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_counter = itertools.count(1)


def make_channel(
    channel_id: str,
    *,
    name: str | None = None,
    state: str = "Down",
    caller_name: str = "",
    caller_number: str = "",
    context: str = "default",
    exten: str = "s",
    priority: int = 1,
) -> dict[str, Any]:
    """An ARI ``Channel`` object as Asterisk 22 sends it."""
    return {
        "id": channel_id,
        "name": name or f"PJSIP/phone-{next(_counter):08x}",
        "state": state,
        "protocol_id": "",
        "caller": {"name": caller_name, "number": caller_number},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {
            "context": context,
            "exten": exten,
            "priority": priority,
            "app_name": "",
            "app_data": "",
        },
        "creationtime": "2025-11-28T12:00:00.000+0000",
        "language": "en",
    }


def make_bridge(
    bridge_id: str, *, bridge_type: str = "mixing", channels: Sequence[str] = ()
) -> dict[str, Any]:
    """An ARI ``Bridge`` object."""
    return {
        "id": bridge_id,
        "technology": "simple_bridge",
        "bridge_type": bridge_type,
        "bridge_class": "stasis",
        "creator": "Stasis",
        "name": "",
        "channels": list(channels),
        "creationtime": "2025-11-28T12:00:00.000+0000",
        "video_mode": "none",
    }


def make_event(event_type: str, app: str = "callrouter", **fields: Any) -> dict[str, Any]:
    """An ARI event object: ``make_event("StasisStart", channel=..., args=["201"])``."""
    return {
        "type": event_type,
        "timestamp": "2025-11-28T12:00:00.000+0000",
        **fields,
        "asterisk_id": "52:54:00:12:34:56",
        "application": app,
    }


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received; ``path`` is below ``/ari`` (``/channels/create``)."""

    method: str
    path: str
    query: Mapping[str, tuple[str, ...]]
    body: Any  # decoded JSON, or None
    headers: Mapping[str, str]  # names in lower case

    @property
    def params(self) -> dict[str, str]:
        """Query parameters, last value of each."""
        return {key: values[-1] for key, values in self.query.items()}


@dataclass
class _Override:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    events: tuple[Any, ...]
    times: int | None  # None: forever
    delay: float = 0.0  # seconds before the answer
    chunked: bool = False  # body sent with Transfer-Encoding: chunked
    close: bool = False  # "Connection: close", and the connection is closed
    hold: asyncio.Event | None = None  # no answer before the test sets it


@dataclass(eq=False)
class _Splice:
    """A websocket connection passed through to the internal websocket server."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()


@dataclass
class _Model:
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    bridges: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: dict[tuple[str, str], str] = field(default_factory=dict)
    # POST /channels/{id}/play: playback id -> its ARI Playback object.
    playbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # PUT /applications/{app}/eventFilter: the allowed event types (empty: all), applied
    # to send_event() as Asterisk applies it to what it sends the app.
    allowed_events: set[str] = field(default_factory=set)


class FakeAri:
    """A controllable fake of Asterisk's ARI. Use ``async with FakeAri() as ari:``."""

    def __init__(
        self,
        *,
        user: str = "callrouter",
        password: str = "fake-ari-secret",
        app: str = "callrouter",
    ) -> None:
        self.user = user
        self.password = password
        self.app = app
        self.requests: list[RecordedRequest] = []  # REST requests, in arrival order
        self.ws_requests: list[RecordedRequest] = []  # websocket upgrade requests
        self.model = _Model()
        self._overrides: list[_Override] = []
        self._refuse_status: int | None = None
        self._http_server: asyncio.Server | None = None
        self._ws_server: Server | None = None
        self._ws_port = 0
        self.port = 0
        self._websockets: set[ServerConnection] = set()
        self._splices: set[_Splice] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws_accepted = 0
        self.http_connections = 0  # TCP connections accepted (REST and websocket)
        self._idle_http: set[asyncio.StreamWriter] = set()  # REST connections between requests
        self._ws_changed = asyncio.Condition()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeAri:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._ws_server = await serve(
            self._ws_handler,
            "127.0.0.1",
            0,
            ping_interval=None,
            compression=None,
            logger=logging.getLogger(f"{__name__}.websocket"),  # the fake's, not the client's
        )
        self._ws_port = self._ws_server.sockets[0].getsockname()[1]
        self._http_server = await asyncio.start_server(self._handle_connection, "127.0.0.1", 0)
        self.port = self._http_server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._http_server is not None:
            self._http_server.close()
        for splice in list(self._splices):
            splice.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        if self._http_server is not None:
            await self._http_server.wait_closed()
            self._http_server = None

    # ------------------------------------------------------------------ test controls

    def set_response(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: Any = None,
        *,
        events: Iterable[Any] = (),
        times: int | None = None,
        delay: float = 0.0,
        chunked: bool = False,
        close: bool = False,
        hold: asyncio.Event | None = None,
    ) -> None:
        """Answer ``method path`` with ``status`` and ``body``.

        ``body`` is JSON-able, or ``bytes`` sent as text/plain, or None for no body.

        ``path`` is below ``/ari`` and may hold ``{placeholders}`` matching one segment:
        ``set_response("DELETE", "/channels/{id}", 404, {"message": "Channel not found"})``.
        ``events`` are sent on every websocket before the answer. The newest matching
        override wins; after ``times`` uses it is forgotten. ``delay`` holds the answer
        back that many seconds, ``hold`` until the test sets that event; ``chunked`` sends
        the body chunked; ``close`` answers with ``Connection: close`` and closes the
        connection.
        """
        regex = re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(path))
        self._overrides.insert(
            0,
            _Override(
                method.upper(),
                re.compile(f"^{regex}$"),
                status,
                body,
                tuple(events),
                times,
                delay,
                chunked,
                close,
                hold,
            ),
        )

    def clear_responses(self) -> None:
        self._overrides.clear()

    def close_idle_http(self) -> int:
        """Close every REST connection waiting for its next request, as Asterisk does
        after ``session_inactivity``; return how many."""
        idle = list(self._idle_http)
        for writer in idle:
            writer.close()
        return len(idle)

    def refuse_websockets(self, status: int | None = 503) -> None:
        """Answer websocket upgrades with ``status`` from now on (None: accept again)."""
        self._refuse_status = status

    @property
    def websocket_count(self) -> int:
        """Websockets open right now."""
        return len(self._websockets)

    @property
    def websockets_accepted(self) -> int:
        """Websocket connections accepted so far."""
        return self._ws_accepted

    async def wait_websockets(self, accepted: int, timeout: float = 5.0) -> None:
        """Wait until ``accepted`` websocket connections in all were accepted and are open."""
        async with asyncio.timeout(timeout), self._ws_changed:
            await self._ws_changed.wait_for(
                lambda: self._ws_accepted >= accepted and bool(self._websockets)
            )

    async def wait_websockets_closed(self, timeout: float = 5.0) -> None:
        """Wait until no websocket is open."""
        async with asyncio.timeout(timeout), self._ws_changed:
            await self._ws_changed.wait_for(lambda: not self._websockets)

    async def send_event(self, event: Mapping[str, Any] | str | bytes) -> int:
        """Send one frame to every open websocket; return how many got it."""
        if isinstance(event, Mapping):
            allowed = self.model.allowed_events
            if allowed and event.get("type") not in allowed:
                return 0  # filtered out, as Asterisk does
            event = json.dumps(event)
        sockets = list(self._websockets)
        for websocket in sockets:
            await websocket.send(event)
        return len(sockets)

    async def drop_websockets(self) -> None:
        """Cut every websocket without a close frame, like a crashed Asterisk."""
        for splice in list(self._splices):
            splice.abort()
        await self.wait_websockets_closed()

    async def close_websockets(self, code: int = 1001) -> None:
        """Close every websocket with a close frame, like a stopping Asterisk."""
        for websocket in list(self._websockets):
            await websocket.close(code)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    # ------------------------------------------------------------------ HTTP side

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.http_connections += 1
        try:
            while True:
                self._idle_http.add(writer)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                finally:
                    self._idle_http.discard(writer)
                method, target, headers = _parse_head(head)
                url = urlsplit(target)
                path = unquote(url.path)
                query = {
                    k: tuple(v) for k, v in parse_qs(url.query, keep_blank_values=True).items()
                }
                if headers.get("upgrade", "").lower() == "websocket":
                    self.ws_requests.append(
                        RecordedRequest(method, _below_ari(path), query, None, headers)
                    )
                    await self._upgrade(reader, writer, head, path, headers)
                    return
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                body = json.loads(raw) if raw else None
                request = RecordedRequest(method, _below_ari(path), query, body, headers)
                self.requests.append(request)
                status, payload, events, override = self._answer(request, path)
                for event in events:
                    await self.send_event(event)
                if override is not None and override.delay:
                    await asyncio.sleep(override.delay)
                if override is not None and override.hold is not None:
                    await override.hold.wait()
                close = override is not None and override.close
                chunked = override is not None and override.chunked
                writer.write(_response(status, payload, close=close, chunked=chunked))
                await writer.drain()
                if close or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return headers.get("authorization") == f"Basic {token}"

    def _answer(
        self, request: RecordedRequest, full_path: str
    ) -> tuple[int, Any, Sequence[Any], _Override | None]:
        if not full_path.startswith("/ari/"):
            return 404, {"message": "Not found"}, (), None
        if not self._authorised(request.headers):
            return 401, {"message": "Authentication required"}, (), None
        for override in self._overrides:
            if override.method == request.method and override.pattern.match(request.path):
                if override.times is not None:
                    override.times -= 1
                    if override.times <= 0:
                        self._overrides.remove(override)
                return override.status, override.body, override.events, override
        status, payload = self._model_answer(request)
        return status, payload, (), None

    def _model_answer(self, request: RecordedRequest) -> tuple[int, Any]:
        """A small model of Asterisk's answers (ids, 404s, required parameters)."""
        model = self.model
        params = request.params
        parts = request.path.strip("/").split("/")
        method = request.method
        not_found = {"message": "Resource not found"}
        if parts == ["asterisk", "info"] and method == "GET":
            return 200, {
                "build": {"os": "Linux", "kernel": "6.1.0", "machine": "x86_64"},
                "system": {"version": "22.10.1", "entity_id": "52:54:00:12:34:56"},
                "config": {"name": "fake", "default_language": "en"},
                "status": {"startup_time": "2025-11-28T12:00:00.000+0000"},
            }
        if parts[0] == "applications" and len(parts) == 3 and parts[2] == "eventFilter":
            if parts[1] != self.app:
                return 404, {"message": "Application not found"}
            if method == "PUT":
                allowed = (request.body or {}).get("allowed", [])
                model.allowed_events = {item["type"] for item in allowed}
            return 200, {"name": self.app, "events_allowed": sorted(model.allowed_events)}
        if parts[0] == "channels":
            if len(parts) == 1 and method == "GET":
                return 200, list(model.channels.values())
            if parts in (["channels"], ["channels", "create"]) and method == "POST":
                if "endpoint" not in params:
                    return 400, {"message": "Field endpoint is required"}
                if parts[-1] == "create" and "app" not in params:
                    return 400, {"message": "Field app is required"}
                chan_id = params.get("channelId") or f"{1764331200 + len(model.channels)}.1"
                if chan_id in model.channels:
                    return 409, {"message": "Channel with given unique ID already exists"}
                chan = make_channel(chan_id, name=f"{params['endpoint']}-{next(_counter):08x}")
                model.channels[chan_id] = chan
                return 200, chan
            chan_id = parts[1] if len(parts) > 1 else ""
            if chan_id not in model.channels:
                return 404, {"message": "Channel not found"}
            action = parts[2] if len(parts) > 2 else ""
            if action == "" and method == "GET":
                return 200, model.channels[chan_id]
            if action == "" and method == "DELETE":
                del model.channels[chan_id]
                return 204, None
            if action == "variable":
                if "variable" not in params:
                    return 400, {"message": "Variable name is required"}
                key = (chan_id, params["variable"])
                if method == "GET":
                    return 200, {"value": model.variables.get(key, "")}
                model.variables[key] = params.get("value", "")
                return 204, None
            if action == "play" and len(parts) == 3 and method == "POST":
                if "media" not in params:
                    return 400, {"message": "Field media is required"}
                playback_id = params.get("playbackId") or f"fake-playback-{next(_counter)}"
                media = params["media"].split(",")
                playback = {
                    "id": playback_id,
                    "media_uri": media[0],
                    "media_uris": media,
                    "target_uri": f"channel:{chan_id}",
                    "language": params.get("lang", "en"),
                    "state": "queued",
                }
                model.playbacks[playback_id] = playback
                return 201, playback
            if action in ("dial", "ring", "answer", "continue") and len(parts) == 3:
                if action == "answer":
                    model.channels[chan_id]["state"] = "Up"
                return 204, None
            return 404, not_found
        if parts[0] == "playbacks" and len(parts) == 2:
            if parts[1] not in model.playbacks:
                return 404, {"message": "Playback not found"}
            if method == "GET":
                return 200, model.playbacks[parts[1]]
            if method == "DELETE":
                del model.playbacks[parts[1]]
                return 204, None
        if parts[0] == "bridges":
            if len(parts) == 1 and method == "GET":
                return 200, list(model.bridges.values())
            if len(parts) in (1, 2) and method == "POST":
                bridge_id = parts[1] if len(parts) == 2 else params.get("bridgeId")
                bridge_id = bridge_id or f"fake-bridge-{next(_counter)}"
                bridge = make_bridge(bridge_id, bridge_type=params.get("type", "mixing"))
                model.bridges[bridge_id] = bridge
                return 200, bridge
            bridge_id = parts[1]
            if bridge_id not in model.bridges:
                return 404, {"message": "Bridge not found"}
            if len(parts) == 2 and method == "GET":
                return 200, model.bridges[bridge_id]
            if len(parts) == 2 and method == "DELETE":
                del model.bridges[bridge_id]
                return 204, None
            if len(parts) == 3 and parts[2] in ("addChannel", "removeChannel"):
                if "channel" not in params:
                    return 400, {"message": "Field channel is required"}
                ids = params["channel"].split(",")
                if any(i not in model.channels for i in ids):
                    return 400, {"message": "Channel not found"}
                members: list[str] = model.bridges[bridge_id]["channels"]
                for i in ids:
                    if parts[2] == "addChannel" and i not in members:
                        members.append(i)
                    elif parts[2] == "removeChannel" and i in members:
                        members.remove(i)
                return 204, None
        return 404, not_found

    # ------------------------------------------------------------------ websocket side

    async def _upgrade(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        path: str,
        headers: Mapping[str, str],
    ) -> None:
        if path != "/ari/events":
            writer.write(_response(404, {"message": "Not found"}, close=True))
            return
        if not self._authorised(headers):
            writer.write(_response(401, {"message": "Authentication required"}, close=True))
            return
        if self._refuse_status is not None:
            writer.write(_response(self._refuse_status, {"message": "Refused"}, close=True))
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._ws_port)
        splice = _Splice(writer, up_writer)
        self._splices.add(splice)
        pumps: list[asyncio.Task[None]] = []
        try:
            up_writer.write(head)
            pumps = [
                asyncio.ensure_future(_pump(reader, up_writer)),
                asyncio.ensure_future(_pump(up_reader, writer)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._splices.discard(splice)
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()

    async def _ws_handler(self, websocket: ServerConnection) -> None:
        async with self._ws_changed:
            self._websockets.add(websocket)
            self._ws_accepted += 1
            self._ws_changed.notify_all()
        try:
            await websocket.wait_closed()
        finally:
            async with self._ws_changed:
                self._websockets.discard(websocket)
                self._ws_changed.notify_all()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method.upper(), target, headers


def _below_ari(path: str) -> str:
    return path[len("/ari") :] if path.startswith("/ari/") else path


def _response(status: int, payload: Any, *, close: bool = False, chunked: bool = False) -> bytes:
    """``payload``: JSON-able, ``bytes`` sent as plain text, or None for no body."""
    if payload is None or status == 204:
        body, content_type = b"", ""
    elif isinstance(payload, bytes):
        body, content_type = payload, "text/plain"
    else:
        body, content_type = json.dumps(payload).encode(), "application/json"
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        "Server: Asterisk/22.10.1 (fake)",
    ]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        middle = len(body) // 2
        pieces = [body[:middle], body[middle:]] if body else []
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
    if content_type:
        head.append(f"Content-Type: {content_type}")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
