"""systemd's notify protocol (sd_notify), spoken by the daemon itself: no dependency.

A datagram of ``KEY=value`` lines to the socket in ``$NOTIFY_SOCKET`` (a path, or
``@name`` for Linux's abstract namespace).  Without ``$NOTIFY_SOCKET`` (not started by
systemd, or not ``Type=notify``) every call does nothing.  A failed send is logged
once and never raised: the router must not stop because its supervisor went away.

``callrouter serve`` sends ``READY=1`` when it can take calls, ``STATUS=…`` as things
change, ``RELOADING=1`` … ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` when the
graceful shutdown starts, and ``WATCHDOG=1`` from the event loop itself
(:func:`keep_alive`), so a blocked loop stops sending it and systemd restarts us.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failed = False
        self.ready_sent = False

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; True if it went out."""
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        elif not target.startswith("/"):
            self._fail(f"unsupported NOTIFY_SOCKET {self.address!r}")
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            self._fail(f"cannot notify systemd at {self.address}: {exc}")
            return False
        return True

    def ready(self, status: str) -> bool:
        self.ready_sent = True
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def reloaded(self, status: str) -> bool:
        """The reload is over: READY=1 again, if the router was ready before it."""
        if not self.ready_sent:
            return self.status(status)
        return self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _fail(self, message: str) -> None:
        if not self._failed:  # once: a missing supervisor is no reason to fill the log
            log.warning("%s", message)
            self._failed = True


def watchdog_interval() -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``$WATCHDOG_USEC`` (None: no watchdog,
    or it is meant for another process, ``$WATCHDOG_PID``)."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def keep_alive(notifier: Notifier, interval: float) -> None:
    """``WATCHDOG=1`` every ``interval`` seconds, sent from the event loop: when the
    loop is blocked, nothing is sent, and systemd's watchdog fires."""
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval)
