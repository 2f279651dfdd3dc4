"""systemd's side of the notify protocol: a datagram socket that records, in a thread of
its own, every message and when it arrived (so a blocked event loop cannot delay the
record of it)."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Notification:
    at: float  # time.monotonic() when it arrived
    fields: dict[str, str]


class NotifySocket:
    """``NotifySocket(path)`` binds a file socket; ``NotifySocket()`` an abstract one.
    ``address`` is what ``$NOTIFY_SOCKET`` must hold."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"callrouter-test-{os.getpid()}-{id(self):x}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.1)
        self.received: list[Notification] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.received.append(Notification(at, fields))

    def with_field(self, key: str, value: str | None = None) -> list[Notification]:
        with self._lock:
            return [
                n
                for n in self.received
                if key in n.fields and (value is None or n.fields[key] == value)
            ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
