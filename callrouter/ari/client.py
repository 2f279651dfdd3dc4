"""A thin, typed asyncio client for the Asterisk REST Interface (ARI).

REST goes through a small pool of keep-alive HTTP/1.1 connections of our own (asyncio
streams, HTTP basic auth, ``TCP_NODELAY``): a request is one ``write`` of bytes built
from the method, path and query, and the answer is read by ``Content-Length``. General
HTTP clients (httpx) cost about a millisecond of CPU per request on the machine this
runs on, which was most of the router's added call set-up time. Connections are opened
ahead of need (:meth:`AriClient.start`), so the first calls do not wait for a connect.
Events come over one websocket (``/ari/events``), read by one reader task that:

* parses every frame (:func:`~callrouter.ari.events.parse_event`);
* hands an event that concerns a *routed* id (see :meth:`AriClient.route`) to that id's
  queue, in arrival order, so each call sees its own events in order;
* awaits ``on_event`` for every other event (e.g. the ``StasisStart`` of a new incoming
  call) before it reads the next frame. A handler that calls :meth:`AriClient.route`
  therefore catches the very next event of that channel. Keep ``on_event`` quick: create
  the call's queue, route its channel, start the call's task, return;
* reconnects forever (exponential back-off with jitter) until :meth:`AriClient.close`,
  and after every (re)connect awaits ``on_connected`` (resync from ``GET /channels`` and
  ``GET /bridges``, see :meth:`AriClient.resync`) before dispatching that connection's
  first event.

Channel and bridge ids are chosen by the caller (:func:`new_id`) so that a call can route
an id *before* the request that creates it: events Asterisk sends before its REST reply
(``StasisStart`` of a created channel) are not lost.

Credentials travel only in the ``Authorization`` header and never appear in URLs, logs or
exception messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json as jsonlib
import logging
import random
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from callrouter.ari.errors import (
    AriClosedError,
    AriConnectionError,
    AriHttpError,
    AriProtocolError,
)
from callrouter.ari.events import AriEvent, Bridge, Channel, parse_event, routing_ids
from callrouter.backoff import backoff_delay
from callrouter.tasks import TaskSet

__all__ = [
    "AriClient",
    "ConnectedHandler",
    "EventHandler",
    "EventSink",
    "HangupReason",
    "backoff_delay",
    "new_id",
]

log = logging.getLogger(__name__)

EventHandler = Callable[[AriEvent], Awaitable[None]]


class EventSink(Protocol):
    """Where routed events go: an ``asyncio.Queue`` that accepts :class:`AriEvent`
    (``Queue[AriEvent]``, or a call's ``Queue[AriEvent | Timer | ...]``)."""

    def put_nowait(self, item: AriEvent, /) -> None: ...


ConnectedHandler = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
ParamValue = str | int | float | bool | Iterable[str] | None
# The values DELETE /channels/{id} accepts for ``reason`` (channels.json, Asterisk 22).
HangupReason = Literal[
    "normal",
    "busy",
    "congestion",
    "no_answer",
    "timeout",
    "rejected",
    "unallocated",
    "normal_unspecified",
    "number_incomplete",
    "codec_mismatch",
    "interworking",
    "failure",
    "answered_elsewhere",
]

_REDACTED = "<redacted>"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})
_WARM_INTERVAL = 5.0  # seconds between checks of the idle REST connections


def new_id(prefix: str = "cr") -> str:
    """A short random id for a channel or bridge the router creates, e.g. ``cr-1f0c…``."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class _RedactingAdapter(logging.LoggerAdapter[logging.Logger]):
    """The websocket library's logger, with credentials masked.

    ``websockets`` logs handshake headers at DEBUG, ``Authorization`` included.
    """

    def __init__(self, logger: logging.Logger, secrets: Iterable[str]) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(s for s in secrets if s)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        if len(args) == 2 and isinstance(args[0], str) and args[0].lower() in _SECRET_HEADERS:
            args = (args[0], _REDACTED)
        clean = tuple(self._redact(arg) for arg in args)
        self.logger.log(level, self._redact(msg), *clean, **kwargs)

    def _redact(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, _REDACTED)
        return value


class AriClient:
    """ARI over one keep-alive HTTP client and one auto-reconnecting websocket.

    ``base_url`` is Asterisk's HTTP server, e.g. ``http://127.0.0.1:8088`` (a trailing
    ``/ari`` is accepted). ``on_event`` and ``on_connected`` may also be assigned after
    construction, before :meth:`start`.

    Use as ``async with AriClient(...) as ari:`` or call :meth:`start` and :meth:`close`.
    REST methods work without :meth:`start`; events need it.
    """

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        app: str,
        *,
        on_event: EventHandler | None = None,
        on_connected: ConnectedHandler | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        backoff_base: float = 0.2,
        backoff_cap: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 2.0,
        max_connections: int = 64,
        warm_connections: int = 4,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ARI base URL must be http(s)://host[:port], got {parts.scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("ARI base URL must not carry credentials; pass user and password")
        path = parts.path.rstrip("/")
        if path.endswith("/ari"):
            path = path[: -len("/ari")]
        self.app = app
        self.on_event = on_event
        self.on_connected = on_connected
        self.rest_url = urlunsplit((parts.scheme, parts.netloc, f"{path}/ari", "", ""))
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        query = urlencode({"app": app, "subscribeAll": "false"})
        # Credentials go in the Authorization header, never in this URL (no api_key).
        self.events_url = urlunsplit((ws_scheme, parts.netloc, f"{path}/ari/events", query, ""))

        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._auth_header = f"Basic {token}"
        secrets = (password, token)
        self._ws_logger = _RedactingAdapter(logging.getLogger(f"{__name__}.websocket"), secrets)

        self._connect_timeout = connect_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rand = rand
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout

        # No proxy, ever: ARI is a loopback/LAN service.
        self._http = _HttpPool(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            tls=parts.scheme == "https",
            host_header=parts.netloc,
            auth_header=self._auth_header,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_connections=max_connections,
        )
        self._rest_prefix = f"{path}/ari"
        self._warm_connections = min(warm_connections, max_connections)
        self._routes: dict[str, EventSink] = {}
        self._tasks = TaskSet(f"ARI {app}")  # the websocket reader, the HTTP pool's warmer
        self._connected = asyncio.Event()
        self._websocket: ClientConnection | None = None
        self._started = False
        self._closed = False
        self._reconnect_requested = False
        self.connection_count = 0  # websocket connections made so far

    new_id = staticmethod(new_id)  # ``ari.new_id("cr-b")``, same as the module function

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AriClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the websocket reader (it connects, and reconnects, in the background)."""
        if self._closed:
            raise AriClosedError("the ARI client is closed")
        if self._started:
            return
        self._started = True
        self._tasks.spawn(self._run_events(), f"ari-events-{self.app}")
        if self._warm_connections > 0:
            self._tasks.spawn(
                self._http.keep_warm(self._warm_connections, _WARM_INTERVAL),
                f"ari-http-{self.app}",
            )

    async def close(self) -> None:
        """Stop the reader, close the websocket and the HTTP client. Idempotent."""
        self._closed = True
        await self._tasks.close()  # all but the current task
        if asyncio.current_task() in self._tasks:
            # Called from on_event/on_connected, i.e. by the reader itself: close the
            # websocket; the reader ends once the handler returns.
            websocket = self._websocket
            if websocket is not None:
                await websocket.close()
        await self._http.aclose()
        self._connected.clear()

    @property
    def is_connected(self) -> bool:
        """True while the websocket is up and ``on_connected`` has run for it."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the websocket is up and resynced; :class:`TimeoutError` otherwise."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def reconnect(self) -> None:
        """Close the current websocket; the reader reconnects (and resyncs) at once."""
        websocket = self._websocket
        if websocket is not None:
            self._reconnect_requested = True
            await websocket.close()

    # ------------------------------------------------------------------ routing

    def route(self, ident: str, queue: EventSink) -> None:
        """Deliver every event concerning channel or bridge ``ident`` to ``queue``.

        Call it before the request that creates the channel or bridge. An event that
        concerns several routed ids (a ``Dial`` names the caller and the peer) is put
        once into each distinct queue.
        """
        current = self._routes.get(ident)
        if current is not None and current is not queue:
            raise ValueError(f"ARI id {ident!r} is already routed to another queue")
        self._routes[ident] = queue

    def unroute(self, ident: str) -> None:
        """Stop routing ``ident`` (no error if it was not routed)."""
        self._routes.pop(ident, None)

    def is_routed(self, ident: str) -> bool:
        return ident in self._routes

    # ------------------------------------------------------------------ REST

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one REST request (``path`` below ``/ari``); return the decoded JSON body.

        Returns ``None`` for an empty body (204). Raises :class:`AriHttpError` for an
        error status, :class:`AriConnectionError` when there is no answer.
        """
        if self._closed:
            raise AriClosedError("the ARI client is closed")
        target = self._rest_prefix + path
        if params:
            query = _query(params)
            if query:
                target += "?" + urlencode(query, quote_via=quote, safe="/,:@")
        body = None if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        started = time.perf_counter()
        try:
            response = await self._http.request(method, target, body)
        except TimeoutError:
            raise AriConnectionError(method, path, "timed out") from None
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            _BadResponse,
        ) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise AriConnectionError(method, path, reason) from exc
        status, reason_phrase, content = response
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %s -> %d in %.1f ms",
                method,
                path,
                _query(params),
                status,
                (time.perf_counter() - started) * 1000,
            )
        if status >= 300:
            raise AriHttpError(status, method, path, _error_message(reason_phrase, content))
        if status == 204 or not content:
            return None
        try:
            return jsonlib.loads(content)
        except ValueError:
            raise AriProtocolError(f"{method} {path}: response body is not JSON", content) from None

    async def create_channel(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app_args: str | None = None,
        originator: str | None = None,
        variables: Mapping[str, str] | None = None,
        formats: str | None = None,
    ) -> Channel:
        """``POST /channels/create``: a channel in this app, not dialled yet (see :meth:`dial`)."""
        body = {"variables": dict(variables)} if variables else None
        data = await self.request(
            "POST",
            "/channels/create",
            params={
                "endpoint": endpoint,
                "app": self.app,
                "appArgs": app_args,
                "channelId": channel_id,
                "originator": originator,
                "formats": formats,
            },
            json=body,
        )
        return Channel.from_json(data)

    async def dial(
        self, channel_id: str, *, caller: str | None = None, timeout: int | None = None
    ) -> None:
        """``POST /channels/{id}/dial``: send the INVITE of a created channel."""
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/dial",
            params={"caller": caller, "timeout": timeout},
        )

    async def ring(self, channel_id: str) -> None:
        """``POST /channels/{id}/ring``: indicate ringing to the channel (the caller)."""
        await self.request("POST", f"/channels/{_seg(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        """``DELETE /channels/{id}/ring``."""
        await self.request("DELETE", f"/channels/{_seg(channel_id)}/ring")

    async def answer(self, channel_id: str) -> None:
        """``POST /channels/{id}/answer``."""
        await self.request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: HangupReason | None = None) -> bool:
        """``DELETE /channels/{id}``; False if the channel was already gone (404)."""
        try:
            await self.request("DELETE", f"/channels/{_seg(channel_id)}", params={"reason": reason})
        except AriHttpError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get_channel(self, channel_id: str) -> Channel | None:
        """``GET /channels/{id}``; None if there is no such channel."""
        try:
            data = await self.request("GET", f"/channels/{_seg(channel_id)}")
        except AriHttpError as exc:
            if exc.status == 404:
                return None
            raise
        return Channel.from_json(data)

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        """``POST /channels/{id}/variable``."""
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/variable",
            params={"variable": name, "value": value},
        )

    async def channel_var(self, channel_id: str, name: str) -> str:
        """``GET /channels/{id}/variable``: the variable's (or function's) value."""
        data = await self.request(
            "GET", f"/channels/{_seg(channel_id)}/variable", params={"variable": name}
        )
        if not isinstance(data, dict) or not isinstance(data.get("value", ""), str):
            raise AriProtocolError("variable response has no 'value' string", str(data))
        value: str = data.get("value", "")
        return value

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str,
        extension: str,
        priority: int = 1,
        *,
        label: str | None = None,
    ) -> None:
        """``POST /channels/{id}/continue``: leave the app, back to the dialplan.

        With ``label`` the channel continues at that priority label (``priority`` is
        then not sent: Asterisk would let the label win anyway).
        """
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/continue",
            params={
                "context": context,
                "extension": extension,
                "priority": priority if label is None else None,
                "label": label,
            },
        )

    async def originate(
        self,
        endpoint: str,
        *,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        app: str | None = None,
        app_args: str | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,
        variables: Mapping[str, str] | None = None,
        originator: str | None = None,
        formats: str | None = None,
    ) -> Channel:
        """``POST /channels``: originate a call (tests, benchmarks, the demo)."""
        body = {"variables": dict(variables)} if variables else None
        data = await self.request(
            "POST",
            "/channels",
            params={
                "endpoint": endpoint,
                "extension": extension,
                "context": context,
                "priority": priority,
                "label": label,
                "app": app,
                "appArgs": app_args,
                "callerId": caller_id,
                "timeout": timeout,
                "channelId": channel_id,
                "otherChannelId": other_channel_id,
                "originator": originator,
                "formats": formats,
            },
            json=body,
        )
        return Channel.from_json(data)

    async def create_bridge(
        self, bridge_id: str, type: str = "mixing", *, name: str | None = None
    ) -> Bridge:
        """``POST /bridges``: a bridge with the caller-chosen id."""
        data = await self.request(
            "POST", "/bridges", params={"type": type, "bridgeId": bridge_id, "name": name}
        )
        return Bridge.from_json(data)

    async def add_channel(self, bridge_id: str, channel_ids: str | Iterable[str]) -> None:
        """``POST /bridges/{id}/addChannel``."""
        await self.request(
            "POST",
            f"/bridges/{_seg(bridge_id)}/addChannel",
            params={"channel": _id_list(channel_ids)},
        )

    async def remove_channel(self, bridge_id: str, channel_ids: str | Iterable[str]) -> None:
        """``POST /bridges/{id}/removeChannel``."""
        await self.request(
            "POST",
            f"/bridges/{_seg(bridge_id)}/removeChannel",
            params={"channel": _id_list(channel_ids)},
        )

    async def destroy_bridge(self, bridge_id: str) -> bool:
        """``DELETE /bridges/{id}``; False if the bridge was already gone (404)."""
        try:
            await self.request("DELETE", f"/bridges/{_seg(bridge_id)}")
        except AriHttpError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list_channels(self) -> list[Channel]:
        """``GET /channels``: every channel Asterisk has (not only this app's)."""
        data = await self.request("GET", "/channels")
        return [Channel.from_json(item) for item in _list(data, "GET /channels")]

    async def list_bridges(self) -> list[Bridge]:
        """``GET /bridges``."""
        data = await self.request("GET", "/bridges")
        return [Bridge.from_json(item) for item in _list(data, "GET /bridges")]

    async def asterisk_info(self) -> dict[str, Any]:
        """``GET /asterisk/info``: build, system, config and status."""
        data = await self.request("GET", "/asterisk/info")
        if not isinstance(data, dict):
            raise AriProtocolError("GET /asterisk/info did not return an object", str(data))
        return data

    async def resync(self) -> tuple[list[Channel], list[Bridge]]:
        """Asterisk's current channels and bridges, fetched concurrently."""
        channels, bridges = await asyncio.gather(self.list_channels(), self.list_bridges())
        return channels, bridges

    # ------------------------------------------------------------------ websocket

    async def _run_events(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with connect(
                    self.events_url,
                    additional_headers={"Authorization": self._auth_header},
                    open_timeout=self._connect_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    close_timeout=self._close_timeout,
                    compression=None,  # Asterisk does not negotiate it; save the CPU
                    proxy=None,
                    max_size=16 * 2**20,
                    logger=self._ws_logger,
                ) as websocket:
                    attempt = 0
                    await self._serve(websocket)
                if self._reconnect_requested:
                    log.info("ARI websocket %s closed to reconnect", self.events_url)
                elif not self._closed:
                    log.warning("ARI websocket %s closed by Asterisk", self.events_url)
            except ConnectionClosed as exc:
                log.warning("ARI websocket %s lost: %s", self.events_url, exc)
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning(
                    "ARI websocket %s: cannot connect: %s",
                    self.events_url,
                    exc or type(exc).__name__,
                )
            except Exception:
                log.exception("ARI websocket %s: reader failed", self.events_url)
            finally:
                self._websocket = None
                self._connected.clear()
            if self._closed:
                break
            if self._reconnect_requested:  # asked for by reconnect(): no back-off
                self._reconnect_requested = False
                continue
            delay = backoff_delay(
                attempt, base=self._backoff_base, cap=self._backoff_cap, rand=self._rand()
            )
            attempt += 1
            log.info("ARI websocket: reconnecting in %.2f s (attempt %d)", delay, attempt)
            await self._sleep(delay)

    async def _serve(self, websocket: ClientConnection) -> None:
        self._websocket = websocket
        self.connection_count += 1
        log.info(
            "ARI websocket connected to %s (connection %d)", self.events_url, self.connection_count
        )
        handler = self.on_connected
        if handler is not None:
            try:
                await handler()
            except Exception:
                log.exception("ARI on_connected handler failed; events flow on regardless")
        self._connected.set()
        async for message in websocket:
            await self._dispatch(message)

    async def _dispatch(self, message: str | bytes) -> None:
        try:
            event = parse_event(message)
        except AriProtocolError as exc:
            log.warning("ARI websocket: ignored an unreadable frame: %s", exc)
            return
        ids = routing_ids(event)
        delivered: list[EventSink] = []
        for ident in ids:
            queue = self._routes.get(ident)
            if queue is not None and all(queue is not seen for seen in delivered):
                queue.put_nowait(event)
                delivered.append(queue)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "ARI event %s ids=%s -> %s",
                event.type,
                ",".join(ids) or "-",
                f"{len(delivered)} queue(s)" if delivered else "on_event",
            )
        if delivered:
            return
        handler = self.on_event
        if handler is None:
            return
        try:
            await handler(event)
        except Exception:
            log.exception("ARI on_event handler failed for %s %s", event.type, ids)


def _seg(ident: str) -> str:
    """One path segment: ids chosen by Asterisk or the router never need it, but be safe."""
    return quote(ident, safe="")


def _id_list(ids: str | Iterable[str]) -> str:
    return ids if isinstance(ids, str) else ",".join(ids)


def _query(params: Mapping[str, ParamValue] | None) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            query[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            query[key] = str(value)
        else:
            query[key] = ",".join(value)
    return query


def _error_message(reason_phrase: str, content: bytes) -> str:
    try:
        data = jsonlib.loads(content) if content else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        # Most ARI errors say {"message": ...}; some (e.g. a failed /channels/create)
        # say {"error": "Allocation failed"}.
        for key in ("message", "error"):
            if isinstance(data.get(key), str):
                message: str = data[key]
                return message
    text = content.decode("utf-8", errors="replace").strip()
    return text[:200] if text else reason_phrase


def _list(data: object, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise AriProtocolError(f"{what} did not return a list", str(data))
    return data


# ---------------------------------------------------------------------- HTTP/1.1 pool


class _BadResponse(Exception):
    """Asterisk's HTTP answer could not be read (no status line, bad framing)."""


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_Response = tuple[int, str, bytes]  # status, reason phrase, body


class _HttpPool:
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
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)
        for _, writer in idle:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def request(self, method: str, target: str, body: bytes | None) -> _Response:
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

    async def _exchange(self, conn: _Conn, data: bytes, *, fresh: bool = False) -> _Response:
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
        raise _BadResponse(f"not an HTTP status line: {lines[0][:80]!r}")
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
                raise _BadResponse(f"bad Content-Length {value.strip()[:20]!r}") from None
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
            raise _BadResponse("bad chunk size") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
