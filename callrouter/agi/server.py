"""A FastAGI server on asyncio streams: one task per call, every read under a time-out.

Asterisk connects for each ``AGI(agi://host:port/<script>,args...)``, sends its
environment, then waits for commands.  The server reads the environment, checks that
it names a live channel of our Asterisk (``channel_check``), picks the handler
registered for ``request.script`` and gives it an :class:`AgiSession` to send
commands with.  When the handler returns, the connection is closed and the dialplan
goes on.  Any local process can connect to the port, so nothing an unverified peer
does may hold the server's room for long, or fill its log (see :class:`AgiServer`).
(panoramisk's FastAGI server is not used: it reads without time-outs, so a stalled
peer holds a task for ever.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeAlias

from callrouter.agi.admission import Connection, Phase, SourcePool
from callrouter.agi.protocol import (
    MAX_LINE_BYTES,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiRequest,
    EnvironmentParser,
)
from callrouter.agi.ratelimit import RateLimitedLog
from callrouter.agi.session import STREAM_LIMIT, AgiSession, Handler, peer_names, shown
from callrouter.tasks import TaskSet

__all__ = ["AgiServer", "AgiSession", "ChannelCheck", "Handler"]

log = logging.getLogger(__name__)

# (agi_channel, agi_uniqueid) -> whether a channel of that name and uniqueid lives on
# our Asterisk now; raises when it cannot tell (ARI down).
ChannelCheck: TypeAlias = Callable[[str, str], Awaitable[bool]]

# The kernel's queue of connections not accepted yet: while the server does not accept
# (checks backed up), a flood waits there, in order, with the real calls among it.
LISTEN_BACKLOG: Final = 1024
# Connections accepted per turn of the event loop at most (asyncio's own server takes
# up to 100): a turn must leave time to serve the connections already in.
ACCEPT_BATCH: Final = 16
# After accept() failed for lack of file descriptors (EMFILE): wait before trying again.
ACCEPT_RETRY: Final = 0.5


class _Protocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, telling the server when a silent peer first talks."""

    def __init__(self, reader: asyncio.StreamReader, conn: Connection, server: AgiServer) -> None:
        super().__init__(reader)
        self._conn = conn
        self._agi_server = server

    def data_received(self, data: bytes) -> None:
        if self._conn.phase is Phase.PENDING:
            self._agi_server._set_phase(self._conn, Phase.TALKING)
        super().data_received(data)


class AgiServer:
    """Listens for FastAGI connections and runs one handler per call.

    ``handlers`` maps a script name (the URL path, ``agi://host/login`` -> ``login``)
    to an async function taking the :class:`AgiSession`.

    **Only real calls.**  With ``channel_check``, a session reaches its handler only
    when ``channel_check(agi_channel, agi_uniqueid)`` says that channel lives on our
    Asterisk now (then ``session.channel_verified`` is True).  A session it refuses,
    or that cannot be checked (ARI down, no answer within ``check_timeout``), goes to
    ``on_refused`` instead (by default it is hung up), for at most ``refusal_time``
    seconds.  At most ``max_checks`` checks run at once, so a flood of forged
    sessions cannot take the ARI connections that calls need.

    **Room a flood cannot take.**  A connection is *unverified* from accept until its
    check passes, *verified* after.  Verified sessions (real calls) have a cap of
    their own, ``max_sessions``; a call over it is refused.  Unverified connections
    are capped at ``max_unverified`` in all and ``max_unverified_per_source`` per peer
    address, and must send their environment within ``environment_timeout`` seconds
    (Asterisk sends it at once).  A new connection is not refused for want of an
    unverified slot: it takes the slot of an unverified connection from its own
    address when that address is at its cap, else from the address holding the most,
    in ``EVICTION_ORDER`` (refused, then silent, then talking, then waiting for a
    check).  So connections that idle, drip or stall cannot hold slots.  And the
    server accepts no more than it can check: while ``max_checks`` sessions wait for
    a check, it stops accepting, and new connections wait in the kernel's queue
    (``LISTEN_BACKLOG``), in order, a real call among them; without that, a flood of
    forged sessions is accepted faster than it can be checked, and every newcomer
    evicts one that has just sent its environment.

    The per-source cap keeps a flood from one address from taking the slots of another
    (a remote Asterisk, another host); it cannot tell apart two peers on one address
    (Asterisk and a local process on 127.0.0.1): there the eviction order, the
    accepting only as fast as checks are done and the separate verified cap do.

    Refusals, evictions and time-outs are logged through a :class:`RateLimitedLog`:
    at most ``log_burst`` lines per reason per ``log_interval`` seconds, then one
    line with the count.  ``stats`` counts what happened.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        read_timeout: float = 10.0,
        max_sessions: int = 256,
        channel_check: ChannelCheck | None = None,
        on_refused: Handler | None = None,
        max_unverified: int = 256,
        max_unverified_per_source: int = 128,
        environment_timeout: float = 2.0,
        check_timeout: float = 3.0,
        max_checks: int = 8,
        refusal_time: float = 15.0,
        log_interval: float = 10.0,
        log_burst: int = 5,
    ) -> None:
        if max_sessions < 1 or max_unverified < 1 or max_unverified_per_source < 1:
            raise ValueError("max_sessions and the unverified caps must be at least 1")
        if max_checks < 1:
            raise ValueError("max_checks must be at least 1")
        self.handlers = dict(handlers)
        self.host = host
        self.read_timeout = read_timeout
        self.max_sessions = max_sessions
        self.channel_check = channel_check
        self.on_refused = on_refused
        self.max_unverified = max_unverified
        self.max_unverified_per_source = min(max_unverified_per_source, max_unverified)
        self.environment_timeout = environment_timeout
        self.check_timeout = check_timeout
        self.max_checks = max_checks
        self.refusal_time = refusal_time
        self.stats: Counter[str] = Counter()
        self._limited = RateLimitedLog(
            log, prefix="FastAGI", interval=log_interval, burst=log_burst
        )
        self._check_slots = asyncio.Semaphore(max_checks)
        self._port = port
        self._sock: socket.socket | None = None  # the listening socket, once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False  # the listening socket is watched
        self._accept_retry: asyncio.TimerHandle | None = None
        self._tasks = TaskSet("FastAGI")  # one per connection being served
        self._pools: dict[str, SourcePool] = {}  # unverified connections, by address
        self._unverified = 0
        self._queued = 0  # connections waiting for a check slot
        self._verified: set[Connection] = set()
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``), once started."""
        if self._sock is not None:
            port: int = self._sock.getsockname()[1]
            return port
        return self._port

    @property
    def sessions(self) -> int:
        """How many connections are being served (verified or not)."""
        return len(self._tasks)

    @property
    def verified_sessions(self) -> int:
        """How many verified sessions (real calls) are running."""
        return len(self._verified)

    @property
    def unverified_sessions(self) -> int:
        """How many connections are not verified (yet)."""
        return self._unverified

    async def start(self) -> None:
        if self._sock is not None:
            raise RuntimeError("AgiServer already started")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _type, _proto, _name, address = infos[0]
        sock = socket.create_server(address, family=family, backlog=LISTEN_BACKLOG)
        sock.setblocking(False)
        self._sock, self._loop, self._closing = sock, loop, False
        self._resume_accepting()
        log.info("FastAGI server listening on %s:%s", self.host, self.port)

    async def __aenter__(self) -> AgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; let running calls finish for ``grace`` seconds; cancel the
        rest and wait for them.  Safe to call twice."""
        self._closing = True
        self._pause_accepting()
        if self._accept_retry is not None:
            self._accept_retry.cancel()
            self._accept_retry = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        # Unverified connections get no grace: nothing real waits on them.
        for pool in list(self._pools.values()):
            for conns in pool.phases.values():
                for conn in list(conns):
                    if conn.phase is not Phase.CHECKING:
                        self._drop(conn)
        pending = await self._tasks.wait(grace)
        if pending:
            log.warning("FastAGI: cancelling %d call(s) still running", len(pending))
            await self._tasks.close()
        self._limited.flush()

    # -- accepting ---------------------------------------------------------------------

    def _resume_accepting(self) -> None:
        if self._accepting or self._sock is None or self._loop is None or self._closing:
            return
        if self._queued >= self.max_checks or self._accept_retry is not None:
            return  # _set_phase, or the retry timer, resumes
        self._loop.add_reader(self._sock.fileno(), self._accept_ready)
        self._accepting = True

    def _pause_accepting(self) -> None:
        if self._accepting and self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._accepting = False

    def _accept_ready(self) -> None:
        """The listening socket has connections: accept a few (a loop turn's worth)."""
        assert self._sock is not None
        for _ in range(ACCEPT_BATCH):
            if self._queued >= self.max_checks:
                # Checks are backed up: what would come in now would only push out
                # what came in just before.  The kernel's queue holds them meanwhile.
                self._pause_accepting()
                return
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: try again soon
                self._limited.log(
                    "cannot accept",
                    logging.ERROR,
                    "FastAGI: cannot accept connections (%s); trying again in %g s",
                    exc,
                    ACCEPT_RETRY,
                )
                self._pause_accepting()
                assert self._loop is not None
                self._accept_retry = self._loop.call_later(ACCEPT_RETRY, self._retry_accept)
                return
            self._admit(sock, address)

    def _retry_accept(self) -> None:
        self._accept_retry = None
        self._resume_accepting()

    def _admit(self, sock: socket.socket, address: object) -> None:
        sock.setblocking(False)
        self.stats["connections"] += 1
        source, peer = peer_names(address)
        if not self._make_room(source):
            self.stats["no room"] += 1
            self._limited.warning(
                "refused: every unverified slot is being checked",
                "FastAGI %s: refused, all %d unverified connections are being checked",
                peer,
                self._unverified,
            )
            sock.close()
            return
        conn = Connection(sock, source, peer)
        self._set_phase(conn, Phase.PENDING)
        conn.task = self._tasks.spawn(self._serve(conn), f"agi {peer}")

    def _make_room(self, source: str) -> bool:
        """Evict unverified connections until one more from ``source`` fits; False if
        none can go (all of them are being checked)."""
        while True:
            own = self._pools.get(source)
            if own is not None and own.count >= self.max_unverified_per_source:
                victim = own.victim()
            elif self._unverified >= self.max_unverified:
                victim = None
                for pool in sorted(self._pools.values(), key=lambda p: p.count, reverse=True):
                    victim = pool.victim()
                    if victim is not None:
                        break
            else:
                return True
            if victim is None:
                return False
            self._evict(victim)

    def _evict(self, conn: Connection) -> None:
        self.stats["evicted"] += 1
        assert conn.phase is not None
        self._limited.warning(
            "dropped to make room",
            "FastAGI %s: dropped (%s) to make room for a new connection: "
            "%d unverified connections from %s, %d in all",
            conn.peer,
            conn.phase.value,
            self._pools[conn.source].count,
            conn.source,
            self._unverified,
        )
        self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        """Close ``conn`` at once and end its task."""
        self._set_phase(conn, None)
        if conn.writer is not None:
            conn.writer.transport.abort()
        elif not conn.started:
            conn.sock.close()  # the task never ran, and will not: cancelled first
        if conn.task is not None:
            conn.task.cancel()

    def _set_phase(self, conn: Connection, phase: Phase | None) -> None:
        """Move ``conn`` to ``phase`` (None: out of every count), keeping the counts."""
        old = conn.phase
        if old is phase:
            return
        if old is Phase.VERIFIED:
            self._verified.discard(conn)
        elif old is not None:
            pool = self._pools[conn.source]
            del pool.phases[old][conn]
            pool.count -= 1
            self._unverified -= 1
            if not pool.count:
                del self._pools[conn.source]
        conn.phase = phase
        if phase is Phase.VERIFIED:
            self._verified.add(conn)
        elif phase is not None:
            pool = self._pools.get(conn.source) or self._pools.setdefault(conn.source, SourcePool())
            pool.phases[phase][conn] = None
            pool.count += 1
            self._unverified += 1
        if old is Phase.QUEUED:
            self._queued -= 1
            if not self._accepting:
                self._resume_accepting()
        elif phase is Phase.QUEUED:
            self._queued += 1

    # -- one connection -------------------------------------------------------------------

    async def _open(self, conn: Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Streams over the accepted socket (what asyncio.start_server would give)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = _Protocol(reader, conn, self)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn.sock)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        conn.writer = writer
        return reader, writer

    async def _serve(self, conn: Connection) -> None:
        conn.started = True
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await self._open(conn)
            request = await self._read_request(reader, conn.peer)
            if request is None:
                return
            session = AgiSession(reader, writer, request, conn.peer, read_timeout=self.read_timeout)
            handler = self.handlers.get(request.script)
            if handler is None:
                self._set_phase(conn, Phase.REFUSED)
                self.stats["no handler"] += 1
                self._limited.warning(
                    "no handler for the script",
                    "FastAGI %s: no handler for script %r (channel %s), hanging up",
                    conn.peer,
                    shown(request.script, 40),
                    shown(request.channel),
                )
                await self._finish_refused(session, None)
                return
            if not await self._verify(conn, request):
                self._set_phase(conn, Phase.REFUSED)
                await self._finish_refused(session, self.on_refused)
                return
            if len(self._verified) >= self.max_sessions:
                self.stats["full"] += 1
                self._limited.warning(
                    "refused: max_sessions calls running",
                    "FastAGI %s: refused, %d calls already running (max_sessions)",
                    conn.peer,
                    len(self._verified),
                )
                return
            self._set_phase(conn, Phase.VERIFIED)
            self.stats["verified"] += 1
            session.channel_verified = self.channel_check is not None
            await self._run(session, handler)
        finally:
            self._set_phase(conn, None)
            if writer is None:
                conn.sock.close()
            else:
                writer.close()
                try:
                    # close() flushes first; a peer that stops reading would stall it.
                    async with asyncio.timeout(self.read_timeout):
                        await writer.wait_closed()
                except TimeoutError:
                    writer.transport.abort()
                except ConnectionError:
                    pass

    async def _read_request(self, reader: asyncio.StreamReader, peer: str) -> AgiRequest | None:
        parser = EnvironmentParser()
        limit = self.environment_timeout
        try:
            # One deadline for the whole environment: a peer dripping a line now and
            # then must not hold the task longer than one that sends nothing.
            async with asyncio.timeout(limit):
                while True:
                    try:
                        raw = await reader.readline()
                    except ValueError:  # longer than the stream limit
                        raise AgiProtocolError(
                            f"AGI environment line longer than {MAX_LINE_BYTES} bytes"
                        ) from None
                    if not raw.endswith(b"\n"):
                        self.stats["no environment"] += 1
                        self._limited.warning(
                            "closed before the end of the environment",
                            "FastAGI %s: closed before the end of the environment",
                            peer,
                        )
                        return None
                    request = parser.feed(raw)
                    if request is not None:
                        return request
        except TimeoutError:
            self.stats["no environment"] += 1
            self._limited.warning(
                "no complete environment in time",
                "FastAGI %s: no complete environment within %g s, closing",
                peer,
                limit,
            )
        except AgiProtocolError as exc:
            self.stats["garbled"] += 1
            self._limited.warning("garbled environment", "FastAGI %s: %s, closing", peer, exc)
        except ConnectionError as exc:
            self.stats["no environment"] += 1
            self._limited.warning(
                "connection lost during the environment",
                "FastAGI %s: connection lost during the environment: %s",
                peer,
                exc,
            )
        return None

    async def _verify(self, conn: Connection, request: AgiRequest) -> bool:
        """Whether ``request`` comes from a live channel (True without a check)."""
        check = self.channel_check
        if check is None:
            return True
        channel = shown(request.channel)
        if not request.uniqueid:
            self.stats["refused"] += 1
            self._limited.warning(
                "refused: no agi_uniqueid",
                "FastAGI %s: refused %s: no agi_uniqueid to check it by",
                conn.peer,
                channel,
            )
            return False
        self._set_phase(conn, Phase.QUEUED)
        try:
            # The wait for a check slot counts: checks backed up are checks not done.
            async with asyncio.timeout(self.check_timeout):
                async with self._check_slots:
                    self._set_phase(conn, Phase.CHECKING)
                    live = await check(request.channel, request.uniqueid)
        except TimeoutError:
            problem = f"no answer within {self.check_timeout:g} s"
        except Exception as exc:  # whatever the check raises: it could not tell
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if live is True:
                return True
            self.stats["refused"] += 1
            self._limited.warning(
                "refused: not a live channel",
                "FastAGI %s: refused %s (uniqueid %s): not a live channel of this Asterisk",
                conn.peer,
                channel,
                shown(request.uniqueid),
            )
            return False
        self.stats["unverifiable"] += 1
        self._limited.warning(
            "refused: the channel cannot be checked",
            "FastAGI %s: refused %s: cannot check the channel (%s); a feature code that "
            "cannot be verified changes nothing",
            conn.peer,
            channel,
            problem[:200],
        )
        return False

    async def _finish_refused(self, session: AgiSession, handler: Handler | None) -> None:
        """Let a refused session hear why (``handler``) or hang it up, in bounded time;
        it logs nothing more: the refusal was logged, rate-limited."""
        try:
            async with asyncio.timeout(self.refusal_time):
                if handler is None:
                    await session._hangup_quietly()
                else:
                    await handler(session)
        except (AgiError, ConnectionError, TimeoutError):
            pass
        except Exception:
            self._limited.log(
                "the refusal handler failed",
                logging.ERROR,
                "FastAGI %s: the refusal handler failed",
                session.peer,
                exc_info=True,
            )

    async def _run(self, session: AgiSession, handler: Handler) -> None:
        request = session.request
        log.debug("FastAGI %s: %s for %s", session.peer, request.script, request.channel)
        try:
            await handler(session)
        except AgiHangup as exc:
            # The caller hung up mid-script: normal life of a phone call.
            log.info("FastAGI %s %s: channel hung up (%s)", session.peer, request.script, exc)
        except Exception:
            log.exception(
                "FastAGI %s: handler for %r failed on %s",
                session.peer,
                request.script,
                request.channel,
            )
            await session._hangup_quietly()
