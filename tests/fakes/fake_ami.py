"""An in-process fake AMI on 127.0.0.1, port 0, for unit tests of AMI users.

It speaks the framing of Asterisk 22's manager: the banner, ``Login`` checked
against one user (a refused login is answered ``Authentication failed`` and the
connection closed, as Asterisk does), ``Events: on/off``, a ``Filter`` that keeps
only events matching its regex, and a small model of what the router uses:
``Ping``, ``Command`` (``Output:`` lines), ``DBPut``/``DBGet``/``DBDel``/
``DBDelTree``/``DBGetTree`` on :attr:`FakeAmi.db` (with Asterisk's messages and
event lists), ``Setvar``/``Getvar`` on :attr:`FakeAmi.globals`, ``Logoff``.

Tests program any action with :meth:`FakeAmi.set_handler` (sync handlers answer in
order; async ones run as their own task, so they can hold an answer back), push
events with :meth:`FakeAmi.push_event`, cut connections with :meth:`FakeAmi.drop`,
refuse the next connections with :meth:`FakeAmi.reject_next`, and read every
action received in :attr:`FakeAmi.received` (or wait for one with
:meth:`FakeAmi.wait_for_action`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from callrouter.ami.protocol import AmiMessage, AmiParser, encode_message

__all__ = ["FakeAmi", "Frame", "event", "event_list", "response"]

Frame: TypeAlias = Sequence[tuple[str, str]]
Reply: TypeAlias = Sequence[Frame]
Handler: TypeAlias = Callable[[AmiMessage], Reply | Awaitable[Reply]]

DEFAULT_BANNER = "Asterisk Call Manager/11.0.0"
WAIT_LIMIT = 5.0  # seconds a wait_for_* helper waits before failing the test


def response(
    action: AmiMessage, status: str = "Success", message: str | None = None, **fields: str
) -> Frame:
    """A response to ``action`` as Asterisk writes it: Response, ActionID, Message, ..."""
    items = [("Response", status)]
    if action.action_id is not None:
        items.append(("ActionID", action.action_id))
    if message is not None:
        items.append(("Message", message))
    items.extend(fields.items())
    return items


def event(name: str, action: AmiMessage | None = None, /, **fields: str) -> Frame:
    """An event; with ``action``, one that carries the action's ActionID."""
    items = [("Event", name)]
    if action is not None and action.action_id is not None:
        items.append(("ActionID", action.action_id))
    items.extend(fields.items())
    return items


def event_list(
    action: AmiMessage,
    item_event: str,
    items: Sequence[Mapping[str, str]],
    complete_event: str,
    message: str = "Result will follow",
) -> list[Frame]:
    """The answer to a list action: ``EventList: start``, the items, ``*Complete``."""
    frames: list[Frame] = [response(action, "Success", EventList="start", Message=message)]
    frames.extend(event(item_event, action, **dict(item)) for item in items)
    done = event(complete_event, action, EventList="Complete", ListItems=str(len(items)))
    frames.append(done)
    return frames


@dataclass(eq=False)
class _Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    authenticated: bool = False
    events_on: bool = True
    filters: list[re.Pattern[str]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def send(self, frames: Reply) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(b"".join(encode_message(frame) for frame in frames))

    def wants(self, frame: Frame) -> bool:
        if not (self.authenticated and self.events_on):
            return False
        if not self.filters:
            return True
        text = "".join(f"{k}: {v}\r\n" for k, v in frame)
        return any(f.search(text) for f in self.filters)


class FakeAmi:
    def __init__(
        self,
        *,
        username: str = "callrouter",
        secret: str = "fake-secret",
        banner: str | None = DEFAULT_BANNER,
        allow_filter: bool = True,
    ) -> None:
        self.username = username
        self.secret = secret
        self.banner = banner  # None: send no banner (a port that is not AMI)
        self.allow_filter = allow_filter  # False: Filter answers "Permission denied"
        self.host = "127.0.0.1"
        self.port = 0
        self.received: list[AmiMessage] = []  # every action, in order, from every session
        self.logins = 0  # successful logins
        self.connections = 0  # accepted TCP connections
        self.db: dict[tuple[str, str], str] = {}
        self.globals: dict[str, str] = {}
        self.commands: dict[str, list[str]] = {"core show uptime": ["System uptime: 1 minute"]}
        self._handlers: dict[str, Handler] = {}
        self._reject = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeAmi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- programming it -----------------------------------------------------------

    def set_handler(self, action: str, handler: Handler) -> None:
        """Answer ``action`` with ``handler(action_message)`` -> frames to send."""
        self._handlers[action.lower()] = handler

    def ignore(self, action: str) -> None:
        """Never answer ``action`` (for time-out tests)."""
        self.set_handler(action, lambda _: [])

    def reject_next(self, count: int) -> None:
        """Accept the next ``count`` connections and close them at once, no banner."""
        self._reject = count

    async def push_event(self, name: str, /, **fields: str) -> int:
        """Send an event to every logged-in session that wants it; how many got it."""
        frame = event(name, **fields)
        sent = 0
        for session in list(self._sessions):
            if session.wants(frame):
                session.send([frame])
                sent += 1
        for session in list(self._sessions):
            with contextlib.suppress(OSError):
                await session.writer.drain()
        return sent

    async def drop(self) -> None:
        """Close every client connection (as an Asterisk restart does)."""
        sessions = list(self._sessions)
        for session in sessions:
            session.writer.close()
        for session in sessions:
            with contextlib.suppress(OSError):
                await session.writer.wait_closed()

    # -- waiting ------------------------------------------------------------------

    def actions(self, name: str) -> list[AmiMessage]:
        return [m for m in self.received if (m.action or "").lower() == name.lower()]

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT_LIMIT):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"fake AMI: timed out waiting for {what}") from None

    async def wait_for_action(self, name: str, count: int = 1) -> AmiMessage:
        """The ``count``-th ``name`` action received, once it was."""
        await self.wait_for(lambda: len(self.actions(name)) >= count, f"{count} x {name}")
        return self.actions(name)[count - 1]

    async def wait_for_logins(self, count: int) -> None:
        await self.wait_for(lambda: self.logins >= count, f"{count} login(s)")

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def _notify(self) -> None:
        self._changed.set()

    # -- serving ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.connections += 1
        session = _Session(reader, writer)
        try:
            if self._reject > 0:
                self._reject -= 1
                return
            self._sessions.add(session)
            self._notify()
            if self.banner is not None:
                writer.write(f"{self.banner}\r\n".encode())
            parser = AmiParser(expect_banner=False)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for message in parser.feed(data):
                    if not await self._on_action(session, message):
                        return
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._sessions.discard(session)
            for t in list(session.tasks):
                t.cancel()
            await asyncio.gather(*session.tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
            self._notify()

    async def _on_action(self, session: _Session, action: AmiMessage) -> bool:
        """Answer one action; False when the session must end."""
        self.received.append(action)
        self._notify()
        name = (action.action or "").lower()
        if name == "login":
            return self._login(session, action)
        if not session.authenticated:
            session.send([response(action, "Error", "Authentication Required")])
            return True
        if name == "filter" and name not in self._handlers:
            session.send(self._filter(session, action))
            return True
        handler = self._handlers.get(name) or self._builtin(name)
        if handler is None:
            message = (
                f"Invalid/unknown command: {action.action}. "
                "Use Action: ListCommands to show available commands."
            )
            session.send([response(action, "Error", message)])
            return True
        result = handler(action)
        if inspect.isawaitable(result):
            session.tasks.add(asyncio.create_task(self._answer_later(session, result)))
            return True
        session.send(result)
        if name == "logoff":
            await session.writer.drain()
            return False
        return True

    async def _answer_later(self, session: _Session, pending: Awaitable[Reply]) -> None:
        session.send(await pending)

    def _login(self, session: _Session, action: AmiMessage) -> bool:
        if action.get("Username") != self.username or action.get("Secret") != self.secret:
            session.send([response(action, "Error", "Authentication failed")])
            return False
        session.authenticated = True
        session.events_on = (action.get("Events") or "on").lower() != "off"
        self.logins += 1
        self._notify()
        session.send([response(action, "Success", "Authentication accepted")])
        if session.events_on:
            session.send([event("FullyBooted", Status="Fully Booted", Uptime="60")])
        return True

    def _builtin(self, name: str) -> Callable[[AmiMessage], Reply] | None:
        builtins: dict[str, Callable[[AmiMessage], Reply]] = {
            "ping": lambda a: [response(a, "Success", Ping="Pong", Timestamp="1700000000.000")],
            "logoff": lambda a: [response(a, "Goodbye", "Thanks for all the fish.")],
            "events": lambda a: [response(a, "Success", Events="On")],
            "command": self._command,
            "dbput": self._dbput,
            "dbget": self._dbget,
            "dbdel": self._dbdel,
            "dbdeltree": self._dbdeltree,
            "dbgettree": self._dbgettree,
            "setvar": self._setvar,
            "getvar": self._getvar,
        }
        return builtins.get(name)

    # Filter needs the session, so it is handled here rather than in _builtin.
    def _filter(self, session: _Session, action: AmiMessage) -> Reply:
        if not self.allow_filter:
            return [response(action, "Error", "Permission denied")]
        pattern = action.get("Filter") or ""
        try:
            session.filters.append(re.compile(pattern))
        except re.error:
            return [response(action, "Error", "Filter did not compile.")]
        return [response(action, "Success", "Success")]

    def _command(self, action: AmiMessage) -> Reply:
        cli = (action.get("Command") or "").strip()
        lines = self.commands.get(cli)
        if lines is None:
            no_such = f"No such command '{cli}' (type 'core show help {cli}' for other commands)"
            reply = response(action, "Error", "Command output follows", Output=no_such)
            return [reply]
        items = list(response(action, "Success", "Command output follows"))
        items.extend(("Output", line) for line in lines)
        return [items]

    def _dbput(self, action: AmiMessage) -> Reply:
        family, key = action.get("Family") or "", action.get("Key") or ""
        if not family:
            return [response(action, "Error", "No family specified.")]
        if not key:
            return [response(action, "Error", "No key specified.")]
        self.db[(family, key)] = action.get("Val") or ""
        return [response(action, "Success", "Updated database successfully")]

    def _dbget(self, action: AmiMessage) -> Reply:
        family, key = action.get("Family") or "", action.get("Key") or ""
        if (family, key) not in self.db:
            return [response(action, "Error", "Database entry not found")]
        item = {"Family": family, "Key": key, "Val": self.db[(family, key)]}
        return event_list(action, "DBGetResponse", [item], "DBGetComplete")

    def _dbdel(self, action: AmiMessage) -> Reply:
        family, key = action.get("Family") or "", action.get("Key") or ""
        if self.db.pop((family, key), None) is None:  # Asterisk 22's words
            return [response(action, "Error", "Database entry could not be deleted")]
        return [response(action, "Success", "Key deleted successfully")]

    def _dbdeltree(self, action: AmiMessage) -> Reply:
        family, key = action.get("Family") or "", action.get("Key")
        doomed = [
            k
            for k in self.db
            if k[0] == family and (key is None or k[1] == key or k[1].startswith(f"{key}/"))
        ]
        if not doomed:
            return [response(action, "Error", "Database entry not found")]
        for k in doomed:
            del self.db[k]
        return [response(action, "Success", "Key tree deleted successfully")]

    def _dbgettree(self, action: AmiMessage) -> Reply:
        family = action.get("Family") or ""
        items = [
            {"Key": f"/{f}/{k}", "Val": v} for (f, k), v in sorted(self.db.items()) if f == family
        ]
        if not items:
            return [response(action, "Error", "Database entry not found")]
        return event_list(action, "DBGetTreeResponse", items, "DBGetTreeComplete")

    def _setvar(self, action: AmiMessage) -> Reply:
        self.globals[action.get("Variable") or ""] = action.get("Value") or ""
        return [response(action, "Success", "Variable Set")]

    def _getvar(self, action: AmiMessage) -> Reply:
        name = action.get("Variable") or ""
        return [response(action, "Success", Variable=name, Value=self.globals.get(name, ""))]
