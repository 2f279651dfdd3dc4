"""One TCP connection to AMI and what belongs to it: parser, pending actions, tasks.

:class:`~callrouter.ami.client.AmiClient` opens a new :class:`Connection` for every
(re)connect, logs in over it and runs :meth:`Connection.read_loop` as its reader task.
That task feeds the bytes to the connection's own :class:`AmiParser`, gives each
response (and each event of a list action) to the pending action of its ActionID, and
hands every other event to the client's callback, in order.
:meth:`Connection.request` writes one action and waits for its answer. The connection
ends at ``b''`` (EOF), a socket error or :meth:`Connection.close`; then every action
still waiting on it fails with :class:`AmiConnectionLost`: nothing waits on a
connection that is gone. What outlives a connection (reconnecting, the login, the
subscribers) is the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from callrouter.ami.errors import AmiActionError, AmiConnectionLost, AmiTimeout
from callrouter.ami.protocol import (
    AmiError,
    AmiMessage,
    AmiParser,
    EventListCollector,
    Fields,
    MessageKind,
    encode_action,
    mask_secrets,
)
from callrouter.tasks import TaskSet

__all__ = ["Connection"]

log = logging.getLogger(__name__)

_READ_SIZE: Final = 65536


class _Pending:
    """An action sent on a connection, waiting for its answer."""

    __slots__ = ("collector", "future", "name")

    def __init__(
        self,
        name: str,
        future: asyncio.Future[AmiMessage | list[AmiMessage]],
        collector: EventListCollector | None,
    ) -> None:
        self.name = name
        self.future = future
        self.collector = collector

    def resolve(self, message: AmiMessage) -> bool:
        """Give ``message`` to this action; False when it is not its business."""
        future = self.future
        collector = self.collector
        if collector is None:
            if message.kind is not MessageKind.RESPONSE:
                return False
            if not future.done():
                if message.is_error:
                    future.set_exception(AmiActionError(self.name, message))
                else:
                    future.set_result(message)
            return True
        if not collector.feed(message):
            return False
        if collector.done and not future.done():
            if collector.response is not None and collector.response.is_error:
                future.set_exception(AmiActionError(self.name, collector.response))
            else:
                future.set_result(list(collector.events))
        return True


class Connection:
    """One TCP connection to AMI and what belongs to it.

    ``on_event`` gets every event that is not part of a pending list action, from the
    reader task (:meth:`read_loop`), in order.
    """

    def __init__(
        self,
        peer: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[AmiMessage], None],
    ) -> None:
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser()
        self.pending: dict[str, _Pending] = {}
        loop = asyncio.get_running_loop()
        self.banner: asyncio.Future[str] = loop.create_future()
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.tasks = TaskSet(f"AMI {peer}")  # ping loop, on_connected handler
        self.fully_booted = False  # FullyBooted seen: Asterisk is ready
        self._on_event = on_event

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.spawn(coro, name)

    def mark_lost(self, reason: str) -> None:
        """Fail everything that waits on this connection; called once, from the reader."""
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        if not self.banner.done():
            self.banner.set_exception(
                AmiConnectionLost(f"AMI {self.peer}: connection ended before the banner ({reason})")
            )
            self.banner.exception()  # retrieved: whoever waits re-raises it, nobody must
        pending, self.pending = self.pending, {}
        for action_id, item in pending.items():
            if not item.future.done():
                item.future.set_exception(
                    AmiConnectionLost(
                        f"AMI {self.peer}: connection lost ({reason}) while waiting for "
                        f"{item.name} (ActionID {action_id})"
                    )
                )

    def abort(self) -> None:
        if not self.writer.transport.is_closing():
            self.writer.transport.abort()

    async def close(self, reader_task: asyncio.Task[None] | None) -> None:
        """Cancel this connection's tasks and close its socket; safe to call twice."""
        current = asyncio.current_task()
        tasks = [t for t in (*self.tasks, reader_task) if t is not None and t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # propagates a cancellation of the caller
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved; the tasks log their own failures
        self.mark_lost("closed by the client")
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self.writer.wait_closed()

    async def read_loop(self) -> None:
        """The reader task: parse and dispatch until EOF, an error or cancellation."""
        reason = "closed by Asterisk"
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:  # EOF: the connection is over, whatever the state
                    break
                messages = self.parser.feed(data)
                if self.parser.banner is not None and not self.banner.done():
                    self.banner.set_result(self.parser.banner)
                for message in messages:
                    self._dispatch(message)
        except asyncio.CancelledError:
            reason = "closed by the client"
            raise
        except (OSError, AmiError) as exc:
            reason = str(exc) or type(exc).__name__
        finally:
            self.mark_lost(reason)
            self.abort()

    async def request(
        self, name: str, action_id: str, fields: Fields, collect: bool, timeout: float
    ) -> AmiMessage | list[AmiMessage]:
        """Send action ``name`` and wait at most ``timeout`` seconds for its answer.

        The answer is the response or, with ``collect``, the events of the list (the
        ``*Complete`` event left out). Raises :class:`AmiActionError` on ``Response:
        Error``, :class:`AmiTimeout`, :class:`AmiConnectionLost`.
        """
        data = encode_action(name, action_id, fields)  # refuses injection before anything
        if self.lost.is_set():
            raise AmiConnectionLost(f"AMI {self.peer}: connection lost ({self.lost_reason})")
        future: asyncio.Future[AmiMessage | list[AmiMessage]]
        future = asyncio.get_running_loop().create_future()
        collector = EventListCollector(action_id) if collect else None
        self.pending[action_id] = _Pending(name, future, collector)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "AMI %s -> %s %s %s", self.peer, name, action_id, mask_secrets(fields, action=name)
            )
        try:
            async with asyncio.timeout(timeout):
                try:
                    self.writer.write(data)
                    await self.writer.drain()
                except OSError as exc:
                    self.abort()
                    raise AmiConnectionLost(f"AMI {self.peer}: write failed: {exc}") from None
                return await future
        except TimeoutError as exc:
            if isinstance(exc, AmiError):
                raise
            raise AmiTimeout(name, action_id, timeout) from None
        finally:
            self.pending.pop(action_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved even when the waiter went away

    def _dispatch(self, message: AmiMessage) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("AMI %s <- %r", self.peer, message)
        action_id = message.action_id
        pending = self.pending.get(action_id) if action_id is not None else None
        if pending is not None and pending.resolve(message):
            return
        if message.kind is MessageKind.EVENT:
            if message.event == "FullyBooted":
                self.fully_booted = True
            self._on_event(message)
        elif message.kind is MessageKind.RESPONSE:
            log.debug("AMI %s: answer to no pending action (ActionID %s)", self.peer, action_id)
        else:
            log.debug("AMI %s: ignoring a message that is neither response nor event", self.peer)
