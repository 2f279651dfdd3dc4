"""The FastAGI server's room: which connection is where, and who makes room for whom.

Every connection is in a phase; all but VERIFIED are *unverified*, and the server
caps those apart from real calls (see ``AgiServer``).
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import socket
import sys
import termios
from typing import Final


class Phase(enum.Enum):
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
EVICTION_ORDER: Final = (Phase.REFUSED, Phase.PENDING, Phase.TALKING, Phase.QUEUED)


class Connection:
    """One FastAGI connection, for the bookkeeping of the server's caps."""

    __slots__ = ("peer", "phase", "sock", "source", "started", "task", "writer")

    def __init__(self, sock: socket.socket, source: str, peer: str) -> None:
        self.sock = sock
        self.source = source  # the peer's address: what the per-source cap counts
        self.peer = peer  # address and port, for log lines
        self.phase: Phase | None = None  # None: not counted (not yet, or no more)
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


class SourcePool:
    """The unverified connections from one address, by phase, each oldest first."""

    __slots__ = ("count", "phases")

    def __init__(self) -> None:
        self.count = 0
        self.phases: dict[Phase, dict[Connection, None]] = {
            phase: {} for phase in Phase if phase is not Phase.VERIFIED
        }

    def victim(self) -> Connection | None:
        """The connection to evict, or None when all are being checked.

        The silent are asked whether bytes wait for them in the kernel (sent, not read
        yet): those are moved to TALKING, in the order found.
        """
        for phase in EVICTION_ORDER:
            conns = self.phases[phase]
            if phase is Phase.PENDING:
                silent, talking = None, []
                for conn in conns:
                    if not conn.bytes_waiting():
                        silent = conn
                        break
                    talking.append(conn)
                for conn in talking:
                    del conns[conn]
                    self.phases[Phase.TALKING][conn] = None
                    conn.phase = Phase.TALKING
                if silent is not None:
                    return silent
            elif conns:
                return next(iter(conns))
        return None
