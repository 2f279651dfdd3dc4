"""A thin, typed asyncio client for the Asterisk REST Interface (ARI).

:class:`AriClient` is the one object the router holds. Its REST methods come from
:class:`~callrouter.ari.rest.AriRest` and go through a small pool of keep-alive HTTP/1.1
connections of our own (:mod:`callrouter.ari.http` says why); this module adds the
connection settings, the lifecycle, the websocket and the routing of its events. REST
connections are opened ahead of need (:meth:`AriClient.start`), so the first calls do
not wait for a connect.

Events come over one websocket (``/ari/events``), read by one reader task that:

* parses every frame (:func:`~callrouter.ari.events.parse_event`);
* hands an event that concerns a *routed* id (see :meth:`AriClient.route`) to that id's
  queue, in arrival order, so each call sees its own events in order;
* awaits ``on_event`` for every other event (e.g. the ``StasisStart`` of a new incoming
  call) before it reads the next frame. A handler that calls :meth:`AriClient.route`
  therefore catches the very next event of that channel. Keep ``on_event`` quick: create
  the call's queue, route its channel, start the call's task, return;
* stops, and does not reconnect, when Asterisk gives the app to another connection
  (``ApplicationReplaced``: another router became active, ``cluster/``), and tells
  ``on_replaced``; :meth:`AriClient.stop_listening` stops it too, :meth:`start` again;
* reconnects forever (exponential back-off with jitter) until :meth:`AriClient.close`,
  and after every (re)connect sets the app's event filter (``events``: Asterisk then
  sends only the event types the router reads, which saves both sides the JSON of the
  rest, e.g. some 35 ``ChannelVarset`` per call) and awaits ``on_connected`` (resync
  from ``GET /channels`` and ``GET /bridges``, see :meth:`AriClient.resync`) before
  dispatching that connection's first event.

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
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from callrouter.ari.errors import AriClosedError, AriError, AriProtocolError
from callrouter.ari.events import AriEvent, parse_event, routing_ids
from callrouter.ari.http import HttpPool
from callrouter.ari.rest import AriRest, HangupReason
from callrouter.ari.websocket import EventSocket, WebSocketClosed, WebSocketError, connect_events
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
_REDACTED = "<redacted>"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})
_WARM_INTERVAL = 5.0  # seconds between checks of the idle REST connections


def new_id(prefix: str = "cr") -> str:
    """A short random id for a channel or bridge the router creates, e.g. ``cr-1f0c…``."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class _RedactingAdapter(logging.LoggerAdapter[logging.Logger]):
    """The websocket's logger, with credentials masked.

    The websocket logs its handshake headers at DEBUG, ``Authorization`` included.
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


class AriClient(AriRest):
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
        on_replaced: Callable[[], None] | None = None,
        events: Iterable[str] | None = None,
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
        self.on_event = on_event
        self.on_connected = on_connected
        self.on_replaced = on_replaced
        # None: every event. ApplicationReplaced always: it ends this connection's turn.
        self.events = (
            tuple(sorted({*events, "ApplicationReplaced"})) if events is not None else None
        )
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
        http = HttpPool(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            tls=parts.scheme == "https",
            host_header=parts.netloc,
            auth_header=self._auth_header,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_connections=max_connections,
        )
        super().__init__(http, rest_prefix=f"{path}/ari", app=app)  # app, _http, _closed
        self._warm_connections = min(warm_connections, max_connections)
        self._routes: dict[str, EventSink] = {}
        self._tasks = TaskSet(f"ARI {app}")  # the websocket reader, the HTTP pool's warmer
        self._connected = asyncio.Event()
        self._websocket: EventSocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._warming = False
        self._replaced = False
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
        self.warm()
        if self._reader is None:
            self._replaced = False
            self._reader = self._tasks.spawn(self._run_events(), f"ari-events-{self.app}")

    def warm(self) -> None:
        """Keep REST connections open ahead of need (idempotent); REST works without
        the websocket, e.g. on a standby router (FastAGI's channel checks)."""
        if not self._warming and self._warm_connections > 0:
            self._warming = True
            self._tasks.spawn(
                self._http.keep_warm(self._warm_connections, _WARM_INTERVAL),
                f"ari-http-{self.app}",
            )

    async def stop_listening(self) -> None:
        """Stop the websocket reader and close the websocket (REST stays); Asterisk
        then no longer counts the app as connected. :meth:`start` listens again."""
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._connected.clear()

    @property
    def replaced(self) -> bool:
        """The last connection ended with ``ApplicationReplaced``."""
        return self._replaced

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

    # ------------------------------------------------------------------ websocket

    async def _run_events(self) -> None:
        attempt = 0
        while not self._closed and not self._replaced:
            try:
                websocket = await connect_events(
                    self.events_url,
                    headers={"Authorization": self._auth_header},
                    open_timeout=self._connect_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    close_timeout=self._close_timeout,
                    max_size=16 * 2**20,
                    logger=self._ws_logger,
                )
                attempt = 0
                try:
                    await self._serve(websocket)
                finally:
                    await websocket.close()
                if self._replaced:
                    break
                if self._reconnect_requested:
                    log.info("ARI websocket %s closed to reconnect", self.events_url)
                elif not self._closed:
                    log.warning("ARI websocket %s closed by Asterisk", self.events_url)
            except WebSocketClosed as exc:
                log.warning("ARI websocket %s lost: %s", self.events_url, exc)
            except (OSError, TimeoutError, WebSocketError) as exc:
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

    async def _serve(self, websocket: EventSocket) -> None:
        self._websocket = websocket
        self.connection_count += 1
        log.info(
            "ARI websocket connected to %s (connection %d)", self.events_url, self.connection_count
        )
        if self.events is not None:
            try:
                await self.set_event_filter(self.events)
            except AriError as exc:  # every event then: more work, nothing lost
                log.warning("ARI: could not set the event filter of %r: %s", self.app, exc)
        handler = self.on_connected
        if handler is not None:
            try:
                await handler()
            except Exception:
                log.exception("ARI on_connected handler failed; events flow on regardless")
        self._connected.set()
        async for message in websocket:
            await self._dispatch(message)
            if self._replaced:
                return

    async def _dispatch(self, message: str | bytes) -> None:
        try:
            event = parse_event(message)
        except AriProtocolError as exc:
            log.warning("ARI websocket: ignored an unreadable frame: %s", exc)
            return
        if event.type == "ApplicationReplaced":
            log.warning(
                "ARI app %r: Asterisk gave it to another connection; not reconnecting", self.app
            )
            self._replaced = True
            self._connected.clear()
            if self.on_replaced is not None:
                self.on_replaced()
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
