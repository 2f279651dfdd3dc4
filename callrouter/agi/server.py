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
import contextlib
import enum
import fcntl
import logging
import re
import socket
import sys
import termios
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeAlias

from callrouter.agi.protocol import (
    HANGUP_NOTIFICATION,
    MAX_LINE_BYTES,
    AgiCommandFailed,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    AgiTimeout,
    EnvironmentParser,
    format_command,
    is_usage_end,
    parse_reply,
)
from callrouter.agi.ratelimit import RateLimitedLog
from callrouter.tasks import TaskSet

__all__ = ["AgiServer", "AgiSession", "ChannelCheck", "Handler"]

log = logging.getLogger(__name__)

Handler: TypeAlias = Callable[["AgiSession"], Awaitable[None]]
# (agi_channel, agi_uniqueid) -> whether a channel of that name and uniqueid lives on
# our Asterisk now; raises when it cannot tell (ARI down).
ChannelCheck: TypeAlias = Callable[[str, str], Awaitable[bool]]

# Reply lines can be long (GET VARIABLE of a long value); the environment has its own,
# smaller limit checked line by line in EnvironmentParser.
STREAM_LIMIT: Final = 64 * 1024
# How long a GET DATA reply may take beyond its digit time-out: the prompt plays first.
PROMPT_MARGIN: Final = 30.0
# The kernel's queue of connections not accepted yet: while the server does not accept
# (checks backed up), a flood waits there, in order, with the real calls among it.
LISTEN_BACKLOG: Final = 1024
# Connections accepted per turn of the event loop at most (asyncio's own server takes
# up to 100): a turn must leave time to serve the connections already in.
ACCEPT_BATCH: Final = 16
# After accept() failed for lack of file descriptors (EMFILE): wait before trying again.
ACCEPT_RETRY: Final = 0.5
# The 520 usage text is a few lines; more is not Asterisk.
MAX_USAGE_LINES: Final = 200
# Leading upper-case words of a command are its name, logged; arguments may be PINs.
_VERB_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")


def _shown(text: str, limit: int = 80) -> str:
    """A value from the peer, cut for a log line (the parser let no control
    characters through)."""
    return text if len(text) <= limit else text[:limit] + "..."


def _peer_names(peer: object) -> tuple[str, str]:
    """The peer's address (what the per-source cap counts) and address:port (for logs)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer), str(peer)


def _verb(words: tuple[str, ...]) -> str:
    name = []
    for word in words:
        if not _VERB_RE.fullmatch(word):
            break
        name.append(word)
    return " ".join(name) or "?"


class AgiSession:
    """One FastAGI connection: the request and a way to send commands.

    Commands run one at a time (a lock), each reply read within ``read_timeout``
    seconds or the ``timeout`` given.  A reply that does not come in time leaves the
    connection out of step (a late reply would answer the next command), so every
    later command fails at once with :class:`AgiTimeout`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: AgiRequest,
        peer: str,
        *,
        read_timeout: float,
    ) -> None:
        self.request = request
        self.peer = peer
        self.hung_up = False  # set when Asterisk says the channel hung up
        # True once the server's channel check found the channel live on our Asterisk.
        self.channel_verified = False
        self.read_timeout = read_timeout
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._out_of_step = False
        self._closed = False  # end of stream seen
        self._hangup_sent = False

    def __repr__(self) -> str:
        return f"AgiSession({self.peer}, script={self.request.script!r}, {self.request.channel})"

    @property
    def _tag(self) -> str:
        return f"{self.peer} {self.request.uniqueid or self.request.channel}"

    # -- raw commands -------------------------------------------------------------

    async def command(self, *words: str, timeout: float | None = None) -> AgiReply:
        """Send one command and return its reply, whatever its code.

        Raises :class:`AgiHangup` on a ``511`` reply or end of stream,
        :class:`AgiTimeout` when no reply comes within ``timeout`` (default
        ``read_timeout``), :class:`AgiProtocolError` on a garbled reply, ValueError
        for CR/LF/NUL in a word.
        """
        data = format_command(*words)
        verb = _verb(words)
        async with self._lock:
            if self._closed:
                raise AgiHangup(f"{verb}: the AGI connection is closed")
            if self._out_of_step:
                raise AgiTimeout(f"{verb}: an earlier command got no clean reply; session unusable")
            if words[0].upper() == "HANGUP":
                self._hangup_sent = True
            log.debug("%s -> %s", self._tag, verb)
            wait = self.read_timeout if timeout is None else timeout
            try:
                # The drain is under the deadline too: a peer that stops reading
                # must not hold the call.
                async with asyncio.timeout(wait):
                    self._writer.write(data)
                    await self._writer.drain()
                    reply = await self._read_reply(verb)
            except ConnectionError as exc:
                self._closed = True
                raise AgiHangup(f"{verb}: connection lost ({exc})") from exc
            except TimeoutError:
                self._out_of_step = True
                raise AgiTimeout(f"{verb}: no reply within {wait:g} s") from None
            except (AgiProtocolError, asyncio.CancelledError):
                # The reply, or the rest of it, may still come and answer the next one.
                self._out_of_step = True
                raise
        log.debug("%s <- %s %s", self._tag, reply.code, verb)
        if reply.code == 511:
            self.hung_up = True
            raise AgiHangup(f"{verb}: {reply.code} {reply.text}")
        return reply

    async def _readline(self, verb: str) -> str:
        try:
            raw = await self._reader.readline()
        except ValueError:  # the line exceeded the stream limit
            raise AgiProtocolError(f"{verb}: reply line longer than {STREAM_LIMIT} bytes") from None
        except ConnectionError as exc:
            raw = b""
            log.debug("%s read failed: %s", self._tag, exc)
        if not raw.endswith(b"\n"):
            # b'' or a partial line: end of stream either way.
            self._closed = True
            self.hung_up = True
            raise AgiHangup(f"{verb}: connection closed by Asterisk")
        return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")

    async def _read_reply(self, verb: str) -> AgiReply:
        while True:
            line = await self._readline(verb)
            if line == HANGUP_NOTIFICATION:
                # The channel hung up; the reply to our command still follows.
                log.debug("%s <- HANGUP notification", self._tag)
                self.hung_up = True
                continue
            reply = parse_reply(line)
            if not reply.multiline:
                return reply
            usage: list[str] = []
            for _ in range(MAX_USAGE_LINES):
                line = await self._readline(verb)
                if is_usage_end(line, reply.code):
                    return AgiReply(code=reply.code, data="\n".join(usage), text=reply.text)
                usage.append(line)
            raise AgiProtocolError(
                f"{verb}: {reply.code} usage longer than {MAX_USAGE_LINES} lines"
            )

    async def _checked(self, *words: str, timeout: float | None = None) -> AgiReply:
        """``command``, raising :class:`AgiCommandFailed` unless the code is 200."""
        reply = await self.command(*words, timeout=timeout)
        if reply.code != 200:
            verb = _verb(words)
            raise AgiCommandFailed(
                f"{verb} refused: {reply.code} {reply.text}", command=verb, reply=reply
            )
        return reply

    def _failed(self, verb: str, reply: AgiReply) -> AgiError:
        if self.hung_up:
            return AgiHangup(f"{verb}: result={reply.result} after the channel hung up")
        return AgiCommandFailed(f"{verb} failed: result={reply.result}", command=verb, reply=reply)

    # -- convenience ----------------------------------------------------------------

    async def answer(self) -> None:
        reply = await self._checked("ANSWER")
        if reply.result == "-1":
            raise self._failed("ANSWER", reply)

    async def stream_file(
        self, name: str, escape_digits: str = "", *, timeout: float | None = None
    ) -> str | None:
        """Play ``name``; the escape digit pressed, or None when it played to the end.

        Raises :class:`AgiCommandFailed` on ``result=-1`` (file missing, or playback
        failed), :class:`AgiHangup` if the channel hung up meanwhile.  The reply
        comes when playback ends: pass ``timeout`` for files longer than
        ``read_timeout`` + 30 s.
        """
        if timeout is None:
            timeout = self.read_timeout + PROMPT_MARGIN
        reply = await self._checked("STREAM", "FILE", name, escape_digits, timeout=timeout)
        code = _int_result("STREAM FILE", reply)
        if code < 0:
            raise self._failed("STREAM FILE", reply)
        return chr(code) if code > 0 else None

    async def get_data(
        self, prompt: str, timeout_ms: int, max_digits: int, *, timeout: float | None = None
    ) -> tuple[str, bool]:
        """Play ``prompt`` and collect up to ``max_digits`` digits.

        Returns the digits and whether Asterisk stopped waiting because of the time-out.
        Raises :class:`AgiHangup` on ``result=-1``.  The reply is awaited for
        ``timeout`` seconds, by default the digit time-out + ``read_timeout`` + 30 s
        for the prompt; pass more for prompts longer than that.
        """
        if timeout is None:
            # The reply comes after the prompt and the digit time-out: wait for both.
            timeout = timeout_ms / 1000 + self.read_timeout + PROMPT_MARGIN
        reply = await self._checked(
            "GET", "DATA", prompt, str(timeout_ms), str(max_digits), timeout=timeout
        )
        digits = reply.result or ""
        if digits == "-1":
            self.hung_up = True
            raise AgiHangup("GET DATA: result=-1 (channel hung up)")
        return digits, reply.data == "timeout"

    async def get_variable(self, name: str) -> str | None:
        """The channel variable's value, or None when it is not set."""
        reply = await self._checked("GET", "VARIABLE", name)
        if reply.result == "1":
            return reply.data if reply.data is not None else ""
        return None

    async def set_variable(self, name: str, value: str) -> None:
        await self._checked("SET", "VARIABLE", name, value)

    async def verbose(self, message: str, level: int = 1) -> None:
        await self._checked("VERBOSE", message, str(level))

    async def hangup(self) -> None:
        """Hang the channel up; Asterisk ends the AGI with the next command."""
        await self._checked("HANGUP")
        self.hung_up = True

    async def _hangup_quietly(self) -> None:
        """HANGUP at the end of a failed session, unless pointless; never raises."""
        if self.hung_up or self._hangup_sent or self._closed:
            return
        if self._out_of_step or self._lock.locked():
            # Replies no longer match commands: send it and don't wait for an answer.
            self._hangup_sent = True
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(format_command("HANGUP"))
                await self._writer.drain()
            return
        try:
            await self.command("HANGUP")
        except (AgiError, ConnectionError) as exc:
            log.debug("%s HANGUP after failure not answered: %s", self._tag, exc)


def _int_result(verb: str, reply: AgiReply) -> int:
    try:
        return int(reply.result or "")
    except ValueError:
        raise AgiProtocolError(f"{verb}: result {reply.result!r} is not a number") from None


class _Phase(enum.Enum):
    """Where a connection is; all but VERIFIED are *unverified* (see AgiServer)."""

    PENDING = "silent so far"
    TALKING = "sending its environment"
    QUEUED = "waiting for its channel check"
    CHECKING = "its channel being checked"
    REFUSED = "refused, hearing why"
    VERIFIED = "verified"


# Which unverified connection makes room for a new one, first to last: a refused one
# (it is not a real call, or cannot be told from one), then one that has sent nothing
# (Asterisk sends its environment as soon as it is connected), then one still sending
# it, then one waiting for its check.  One being checked is left alone: its ARI
# request runs anyway, and cancelling it would cost ARI a connection.  Within a phase
# the oldest goes first.  "Sent nothing" is judged by the bytes themselves, not by
# age: a real call is read a few loop turns after it is accepted, and under a flood
# every turn accepts new connections, so a real call may be "old" before it is read.
_EVICTION_ORDER: Final = (_Phase.REFUSED, _Phase.PENDING, _Phase.TALKING, _Phase.QUEUED)


class _Conn:
    """One FastAGI connection, for the bookkeeping of the server's caps."""

    __slots__ = ("peer", "phase", "sock", "source", "started", "task", "writer")

    def __init__(self, sock: socket.socket, source: str, peer: str) -> None:
        self.sock = sock
        self.source = source  # the peer's address: what the per-source cap counts
        self.peer = peer  # address and port, for log lines
        self.phase: _Phase | None = None  # None: not counted (not yet, or no more)
        self.task: asyncio.Task[None] | None = None
        self.started = False  # the task has begun (it closes the socket from then on)
        self.writer: asyncio.StreamWriter | None = None  # once the transport exists

    def bytes_waiting(self) -> bool:
        """Whether the peer has sent bytes that are not read yet (FIONREAD)."""
        if self.sock.fileno() < 0:
            return False
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        return int.from_bytes(raw, sys.byteorder) > 0


class _SourcePool:
    """The unverified connections from one address, by phase, each oldest first."""

    __slots__ = ("count", "phases")

    def __init__(self) -> None:
        self.count = 0
        self.phases: dict[_Phase, dict[_Conn, None]] = {
            phase: {} for phase in _Phase if phase is not _Phase.VERIFIED
        }

    def victim(self) -> _Conn | None:
        """The connection to evict, or None when all are being checked.

        The silent are asked whether bytes wait for them in the kernel (sent, not read
        yet): those are moved to TALKING, in the order found.
        """
        for phase in _EVICTION_ORDER:
            conns = self.phases[phase]
            if phase is _Phase.PENDING:
                silent, talking = None, []
                for conn in conns:
                    if not conn.bytes_waiting():
                        silent = conn
                        break
                    talking.append(conn)
                for conn in talking:
                    del conns[conn]
                    self.phases[_Phase.TALKING][conn] = None
                    conn.phase = _Phase.TALKING
                if silent is not None:
                    return silent
            elif conns:
                return next(iter(conns))
        return None


class _Protocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, telling the server when a silent peer first talks."""

    def __init__(self, reader: asyncio.StreamReader, conn: _Conn, server: AgiServer) -> None:
        super().__init__(reader)
        self._conn = conn
        self._agi_server = server

    def data_received(self, data: bytes) -> None:
        if self._conn.phase is _Phase.PENDING:
            self._agi_server._set_phase(self._conn, _Phase.TALKING)
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
    in ``_EVICTION_ORDER`` (refused, then silent, then talking, then waiting for a
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
        self._pools: dict[str, _SourcePool] = {}  # unverified connections, by address
        self._unverified = 0
        self._queued = 0  # connections waiting for a check slot
        self._verified: set[_Conn] = set()
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
                    if conn.phase is not _Phase.CHECKING:
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
        source, peer = _peer_names(address)
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
        conn = _Conn(sock, source, peer)
        self._set_phase(conn, _Phase.PENDING)
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

    def _evict(self, conn: _Conn) -> None:
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

    def _drop(self, conn: _Conn) -> None:
        """Close ``conn`` at once and end its task."""
        self._set_phase(conn, None)
        if conn.writer is not None:
            conn.writer.transport.abort()
        elif not conn.started:
            conn.sock.close()  # the task never ran, and will not: cancelled first
        if conn.task is not None:
            conn.task.cancel()

    def _set_phase(self, conn: _Conn, phase: _Phase | None) -> None:
        """Move ``conn`` to ``phase`` (None: out of every count), keeping the counts."""
        old = conn.phase
        if old is phase:
            return
        if old is _Phase.VERIFIED:
            self._verified.discard(conn)
        elif old is not None:
            pool = self._pools[conn.source]
            del pool.phases[old][conn]
            pool.count -= 1
            self._unverified -= 1
            if not pool.count:
                del self._pools[conn.source]
        conn.phase = phase
        if phase is _Phase.VERIFIED:
            self._verified.add(conn)
        elif phase is not None:
            pool = self._pools.get(conn.source) or self._pools.setdefault(
                conn.source, _SourcePool()
            )
            pool.phases[phase][conn] = None
            pool.count += 1
            self._unverified += 1
        if old is _Phase.QUEUED:
            self._queued -= 1
            if not self._accepting:
                self._resume_accepting()
        elif phase is _Phase.QUEUED:
            self._queued += 1

    # -- one connection -------------------------------------------------------------------

    async def _open(self, conn: _Conn) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Streams over the accepted socket (what asyncio.start_server would give)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = _Protocol(reader, conn, self)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn.sock)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        conn.writer = writer
        return reader, writer

    async def _serve(self, conn: _Conn) -> None:
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
                self._set_phase(conn, _Phase.REFUSED)
                self.stats["no handler"] += 1
                self._limited.warning(
                    "no handler for the script",
                    "FastAGI %s: no handler for script %r (channel %s), hanging up",
                    conn.peer,
                    _shown(request.script, 40),
                    _shown(request.channel),
                )
                await self._finish_refused(session, None)
                return
            if not await self._verify(conn, request):
                self._set_phase(conn, _Phase.REFUSED)
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
            self._set_phase(conn, _Phase.VERIFIED)
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

    async def _verify(self, conn: _Conn, request: AgiRequest) -> bool:
        """Whether ``request`` comes from a live channel (True without a check)."""
        check = self.channel_check
        if check is None:
            return True
        channel = _shown(request.channel)
        if not request.uniqueid:
            self.stats["refused"] += 1
            self._limited.warning(
                "refused: no agi_uniqueid",
                "FastAGI %s: refused %s: no agi_uniqueid to check it by",
                conn.peer,
                channel,
            )
            return False
        self._set_phase(conn, _Phase.QUEUED)
        try:
            # The wait for a check slot counts: checks backed up are checks not done.
            async with asyncio.timeout(self.check_timeout):
                async with self._check_slots:
                    self._set_phase(conn, _Phase.CHECKING)
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
                _shown(request.uniqueid),
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
