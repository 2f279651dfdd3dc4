"""A small asyncio AMI client: one connection, ActionID correlation, reconnects.

Why not panoramisk: its last release (2021) lacks its Python 3.10+ fixes, and its
``Action`` is a dict and a future at once.  This client keeps the wire format in
``protocol`` (pure), one TCP connection's I/O in ``connection`` (reader task, pending
actions) and its errors in ``errors``; here it stays connected and offers the actions:

* one reader task per connection: responses resolve the pending future of their
  ActionID, list events are collected for their list action, every other event
  goes to the subscribers, in order, from that task;
* ``b''`` (EOF) or a socket error ends the connection: every pending action fails
  with :class:`AmiConnectionLost`, and the client reconnects with capped
  exponential backoff and jitter until :meth:`AmiClient.close`;
* after every login, ``on_connected`` runs (the router re-pushes its AstDB
  fallback there); ``FullyBooted`` reaches the subscribers too;
* the secret never reaches a log line, an exception text or a repr.

``connect_timeout`` bounds each step of getting connected (TCP connect, banner,
Login, Filter); ``action_timeout`` bounds every other action.  Asterisk answers a
refused Login only after a one-second pause, and then hangs up: keep
``connect_timeout`` above that.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random as _random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

from callrouter.ami.connection import Connection
from callrouter.ami.errors import (
    AmiActionError,
    AmiConnectionError,
    AmiConnectionLost,
    AmiLoginError,
    AmiTimeout,
)
from callrouter.ami.protocol import AmiError, AmiMessage, Fields, FieldValue
from callrouter.backoff import backoff_delay

__all__ = [
    "AmiActionError",
    "AmiClient",
    "AmiConnectionError",
    "AmiConnectionLost",
    "AmiLoginError",
    "AmiTimeout",
    "EventCallback",
    "OnConnected",
]

log = logging.getLogger(__name__)

EventCallback = Callable[[AmiMessage], None]
OnConnected = Callable[[], Awaitable[None] | None]
Sleep = Callable[[float], Awaitable[None]]

_EVENT_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
# Events the client itself watches, whatever the caller asked for.
_INTERNAL_EVENTS: Final = frozenset({"FullyBooted", "Shutdown"})


class AmiClient:
    """An AMI client that stays connected until :meth:`close`.

    ``events``: event names to pass to the subscribers (None: all; an empty set
    logs in with ``Events: off``).  With a set and ``server_filter``, the client also
    asks Asterisk for a ``Filter`` so that fewer events cross the socket; that needs
    ``write = system`` for the AMI user and is skipped with a warning when refused.
    ``sleep`` and ``rand`` drive the reconnect backoff (inject them in tests).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        events: Iterable[str] | None = None,
        on_connected: OnConnected | None = None,
        connect_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float | None = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        server_filter: bool = True,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = _random.random,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.__secret = secret
        if events is not None:
            names = frozenset(events)
            bad = sorted(n for n in names if not _EVENT_NAME.fullmatch(n))
            if bad:
                raise ValueError(f"invalid AMI event names: {', '.join(map(repr, bad))}")
            self._events: frozenset[str] | None = frozenset(n.lower() for n in names)
            self._event_names: tuple[str, ...] = tuple(sorted(names))
        else:
            self._events = None
            self._event_names = ()
        self.on_connected = on_connected  # may be assigned after construction, like ARI's
        self._connect_timeout = connect_timeout
        self._action_timeout = action_timeout
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._server_filter = server_filter
        self._sleep = sleep
        self._rand = rand

        self._subscribers: list[EventCallback] = []
        self._ids = itertools.count(1)
        self._id_prefix = f"cr{_random.getrandbits(32):08x}"
        self._conn: Connection | None = None  # set while logged in
        self._reader_tasks: dict[Connection, asyncio.Task[None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self._close_done: asyncio.Event | None = None
        self.banner: str | None = None
        self.connection_count = 0  # logins made so far (as AriClient counts its websockets)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self._closed else "disconnected"
        return f"<AmiClient {self.username}@{self.peer} {state}>"

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Logged in right now."""
        return self._conn is not None and not self._conn.lost.is_set()

    @property
    def fully_booted(self) -> bool:
        """``FullyBooted`` was seen on the current connection (Asterisk is ready)."""
        return self._conn is not None and self._conn.fully_booted

    # -- life cycle ---------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect and log in, then stay connected (reconnecting) until :meth:`close`.

        With ``wait`` (the default) the first attempt must succeed: a refused login
        raises :class:`AmiLoginError`, a failed connection :class:`AmiConnectionError`,
        and the client is closed.  Without it, this returns at once and every attempt,
        the first included, is retried with backoff (see :meth:`wait_connected`).
        """
        if self._closed:
            raise AmiConnectionError("AMI client is closed")
        if self._supervisor is not None:
            raise RuntimeError("AmiClient.start() called twice")
        first: asyncio.Future[None] | None = None
        if wait:
            first = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._run(first), name=f"ami-{self.peer}")
        if first is None:
            return
        try:
            await asyncio.shield(first)
        except BaseException:
            await self.close()
            raise

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until logged in (raises TimeoutError after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            while not self.connected:
                if self._closed:
                    raise AmiConnectionError("AMI client is closed")
                await self._connected.wait()
                if not self.connected:
                    await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop reconnecting, fail pending actions, close the socket. Idempotent."""
        if self._close_done is not None:
            await self._close_done.wait()
            return
        self._close_done = asyncio.Event()
        self._closed = True
        try:
            supervisor, self._supervisor = self._supervisor, None
            if supervisor is not None and supervisor is not asyncio.current_task():
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await supervisor
            for conn, task in list(self._reader_tasks.items()):
                await conn.close(task)
            self._reader_tasks.clear()
            self._conn = None
            self._connected.set()  # wake wait_connected(), which then sees _closed
        finally:
            self._close_done.set()

    async def __aenter__(self) -> AmiClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- events ---------------------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event (see ``events``); returns an unsubscribe.

        Callbacks are synchronous and run in order from the reader task; an exception
        in one is logged and the others still run.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    # -- actions --------------------------------------------------------------------

    async def send_action(
        self, name: str, fields: Fields | None = None, /, **kwfields: FieldValue
    ) -> AmiMessage:
        """Send an action and return its response.

        Fields come as keywords (``Family="callrouter"``) or, for names that are no
        Python identifiers, as a mapping.  Raises :class:`AmiActionError` on
        ``Response: Error``, :class:`AmiTimeout`, :class:`AmiConnectionLost`, and
        :class:`AmiConnectionError` when not connected.
        """
        result = await self._request(self._current(), name, _merge(fields, kwfields), collect=False)
        assert isinstance(result, AmiMessage)
        return result

    async def send_list_action(
        self, name: str, fields: Fields | None = None, /, **kwfields: FieldValue
    ) -> list[AmiMessage]:
        """Send a list action and return its item events (the ``*Complete`` event left out)."""
        result = await self._request(self._current(), name, _merge(fields, kwfields), collect=True)
        assert isinstance(result, list)
        return result

    async def command(self, cli: str, *, timeout: float | None = None) -> str:
        """Run a CLI command; its output lines joined with newlines.

        A command Asterisk rejects raises :class:`AmiActionError` (its ``response``
        still holds the ``Output:`` lines).
        """
        result = await self._request(
            self._current(), "Command", {"Command": cli}, collect=False, timeout=timeout
        )
        assert isinstance(result, AmiMessage)
        return result.output

    async def db_put(self, family: str, key: str, value: str) -> None:
        await self.send_action("DBPut", Family=family, Key=key, Val=value)

    async def db_get(self, family: str, key: str) -> str | None:
        """The AstDB value, or None when there is no such entry."""
        try:
            events = await self.send_list_action("DBGet", Family=family, Key=key)
        except AmiActionError as exc:
            if _not_found(exc):
                return None
            raise
        for event in events:
            if event.event == "DBGetResponse":
                return event.get("Val", "")
        return None

    async def db_del(self, family: str, key: str) -> bool:
        """Delete an AstDB entry; False (not an error) when there was none."""
        try:
            await self.send_action("DBDel", Family=family, Key=key)
        except AmiActionError as exc:
            # Asterisk 22 answers a missing key with "Database entry could not be
            # deleted" (ast_db_del2 failed), older ones with "... not found".
            if _not_found(exc) or "could not be deleted" in (exc.message or "").lower():
                return False
            raise
        return True

    async def db_deltree(self, family: str, key: str | None = None) -> bool:
        """Delete a family (or a key tree in it); False when there was nothing."""
        fields: dict[str, str] = {"Family": family}
        if key is not None:
            fields["Key"] = key
        try:
            await self.send_action("DBDelTree", fields)
        except AmiActionError as exc:
            if _not_found(exc):
                return False
            raise
        return True

    async def setvar(self, variable: str, value: str, *, channel: str | None = None) -> None:
        """Set a global variable (or a channel's, with ``channel``)."""
        fields: dict[str, str] = {"Variable": variable, "Value": value}
        if channel is not None:
            fields["Channel"] = channel
        await self.send_action("Setvar", fields)

    async def getvar(self, variable: str, *, channel: str | None = None) -> str | None:
        """A global variable (or a channel's); None when Asterisk returns no value."""
        fields: dict[str, str] = {"Variable": variable}
        if channel is not None:
            fields["Channel"] = channel
        response = await self.send_action("Getvar", fields)
        return response.get("Value")

    # -- internals: connection ------------------------------------------------------

    def _current(self) -> Connection:
        conn = self._conn
        if conn is None or conn.lost.is_set():
            state = "closed" if self._closed else "not connected"
            raise AmiConnectionError(f"AMI {self.peer}: {state}")
        return conn

    async def _run(self, first: asyncio.Future[None] | None) -> None:
        try:
            await self._run_forever(first)
        finally:
            # Closed (or broken) before the first attempt ended: start() must not hang.
            if first is not None and not first.done():
                first.set_exception(AmiConnectionError(f"AMI {self.peer}: client closed"))
                first.exception()  # retrieved here; start() re-raises it if still waiting

    async def _run_forever(self, first: asyncio.Future[None] | None) -> None:
        failures = 0
        while True:
            try:
                conn = await self._establish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if first is not None:
                    if not first.done():
                        first.set_exception(exc)
                    return
                if isinstance(exc, AmiLoginError):
                    log.error("%s", exc)
                elif isinstance(exc, AmiError):
                    log.warning("%s", exc)
                else:  # a bug; keep the daemon connected all the same
                    log.exception("AMI %s: connection attempt failed", self.peer)
            else:
                failures = 0
                if first is not None:
                    if not first.done():
                        first.set_result(None)
                    first = None
                await self._serve(conn)
                if self._closed:
                    return
                log.warning("AMI %s: connection lost (%s)", self.peer, conn.lost_reason)
            delay = backoff_delay(
                failures, base=self._backoff_initial, cap=self._backoff_max, rand=self._rand()
            )
            failures += 1
            log.info("AMI %s: reconnecting in %.2f s", self.peer, delay)
            await self._sleep(delay)

    async def _establish(self) -> Connection:
        """Connect, read the banner, log in, set filters: a connection ready for use."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise AmiConnectionError(f"could not connect to AMI at {self.peer}: {detail}") from None
        conn = Connection(self.peer, reader, writer, self._on_event)
        self._reader_tasks[conn] = asyncio.create_task(
            conn.read_loop(), name=f"ami-reader-{self.peer}"
        )
        try:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    self.banner = await asyncio.shield(conn.banner)
            except TimeoutError:
                raise AmiConnectionError(
                    f"AMI {self.peer}: no banner within {self._connect_timeout:g} s"
                ) from None
            await self._login(conn)
            if self._events and self._server_filter:
                await self._add_server_filter(conn)
        except BaseException:
            await conn.close(self._reader_tasks.pop(conn, None))
            raise
        return conn

    async def _login(self, conn: Connection) -> None:
        fields = {
            "Username": self.username,
            "Secret": self.__secret,
            "Events": "off" if self._events == frozenset() else "on",
        }
        try:
            await self._request(conn, "Login", fields, False, timeout=self._connect_timeout)
        except AmiActionError as exc:
            raise AmiLoginError(
                f"AMI {self.peer}: login as {self.username!r} refused: "
                f"{exc.message or 'no reason given'}"
            ) from None
        except AmiConnectionLost as exc:
            raise AmiLoginError(
                f"AMI {self.peer}: connection closed during login as {self.username!r}"
            ) from exc
        log.info("AMI %s: logged in as %s (%s)", self.peer, self.username, self.banner)

    async def _add_server_filter(self, conn: Connection) -> None:
        # One include filter with an alternation; a legacy regex filter works on every
        # Asterisk version.  It may let a few more events through (``Hangup`` matches
        # ``HangupRequest``): the client filters exactly on top.
        names = sorted(set(self._event_names) | _INTERNAL_EVENTS)
        pattern = f"Event: ({'|'.join(names)})"
        try:
            fields = {"Operation": "Add", "Filter": pattern}
            await self._request(conn, "Filter", fields, False, timeout=self._connect_timeout)
        except AmiActionError as exc:
            log.warning(
                "AMI %s: server-side event filter refused (%s); filtering in the client only",
                self.peer,
                exc.message,
            )

    async def _serve(self, conn: Connection) -> None:
        """Run a logged-in connection until it ends."""
        self._conn = conn
        self.connection_count += 1
        self._connected.set()
        if self._ping_interval is not None:
            conn.spawn(self._ping_loop(conn, self._ping_interval), f"ami-ping-{self.peer}")
        if self.on_connected is not None:
            conn.spawn(self._run_on_connected(self.on_connected), f"ami-on-connected-{self.peer}")
        try:
            await conn.lost.wait()
        finally:
            self._connected.clear()
            if self._conn is conn:
                self._conn = None
            await conn.close(self._reader_tasks.pop(conn, None))

    async def _run_on_connected(self, callback: OnConnected) -> None:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except AmiConnectionError as exc:
            log.warning("AMI %s: on_connected interrupted: %s", self.peer, exc)
        except Exception:
            log.exception("AMI %s: on_connected failed", self.peer)

    async def _ping_loop(self, conn: Connection, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._request(conn, "Ping", {}, collect=False)
            except AmiTimeout:
                log.warning("AMI %s: no answer to Ping; dropping the connection", self.peer)
                conn.abort()
                return
            except AmiConnectionError:
                return
            except AmiActionError as exc:
                log.warning("AMI %s: Ping refused: %s", self.peer, exc.message)

    # -- internals: actions ---------------------------------------------------------

    async def _request(
        self,
        conn: Connection,
        name: str,
        fields: Fields,
        collect: bool,
        *,
        timeout: float | None = None,
    ) -> AmiMessage | list[AmiMessage]:
        action_id = f"{self._id_prefix}-{next(self._ids)}"
        limit = self._action_timeout if timeout is None else timeout
        return await conn.request(name, action_id, fields, collect, limit)

    def _on_event(self, event: AmiMessage) -> None:
        name = event.event or ""
        if name == "Shutdown":
            log.info("AMI %s: Asterisk is shutting down (%s)", self.peer, event.get("Shutdown"))
        if self._events is not None and name.lower() not in self._events:
            return
        for callback in list(self._subscribers):
            try:
                result: object = callback(event)
            except Exception:
                log.exception("AMI %s: event subscriber failed on %s", self.peer, name)
                continue
            if inspect.iscoroutine(result):
                result.close()
                log.error(
                    "AMI %s: event subscriber %r returned a coroutine; subscribers must be "
                    "synchronous (schedule your own task)",
                    self.peer,
                    callback,
                )


def _merge(fields: Fields | None, kwfields: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
    merged: dict[str, FieldValue] = dict(fields or {})
    for key, value in kwfields.items():
        if key in merged:
            raise ValueError(f"AMI field {key!r} given twice")
        merged[key] = value
    return merged


def _not_found(exc: AmiActionError) -> bool:
    return "not found" in (exc.message or "").lower()
