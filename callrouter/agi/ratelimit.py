"""Log lines that a flood cannot multiply: a few per reason and interval, then a count.

A peer that opens connections as fast as they close would otherwise write one line per
connection (the security review counted 26,655 lines in a few seconds).  Each
``reason`` gets at most ``burst`` lines per ``interval`` seconds; the rest are counted
and said in one summary line when the interval ends::

    FastAGI: 2,345 more 'refused: not a live channel' in the last 10 s (not logged one by one)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimitedLog"]


@dataclass(slots=True)
class _Window:
    start: float
    level: int
    logged: int = 0
    suppressed: int = 0
    timer: asyncio.TimerHandle | None = None


class RateLimitedLog:
    """``logger`` with a budget: ``burst`` lines per ``reason`` per ``interval`` seconds.

    The summary of what was left out comes when the interval ends (a timer on the
    running loop), or with the next line of that reason, or at :meth:`flush`.  So each
    reason writes at most ``burst`` + 1 lines per interval, however busy it is.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        prefix: str,
        interval: float = 10.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be positive and burst at least 1")
        self.logger = logger
        self.prefix = prefix  # of the summary lines: "FastAGI"
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def log(
        self,
        reason: str,
        level: int,
        msg: str,
        *args: object,
        exc_info: bool = False,
        stacklevel: int = 1,
    ) -> bool:
        """Log ``msg % args`` unless ``reason`` has used its budget; True when logged.

        ``stacklevel`` as for :meth:`logging.Logger.log`: the record names the caller.
        """
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        window = self._windows.get(reason)
        if window is not None and now - window.start >= self.interval:
            self._summarise(reason)
            window = None
        if window is None:
            window = self._windows[reason] = _Window(start=now, level=level)
        if window.logged < self.burst:
            window.logged += 1
            self.logger.log(level, msg, *args, exc_info=exc_info, stacklevel=stacklevel + 1)
            return True
        window.suppressed += 1
        if window.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # no loop: the next line of this reason, or flush(), says it
            else:
                delay = max(0.0, window.start + self.interval - now)
                window.timer = loop.call_later(delay, self._summarise, reason)
        return False

    def warning(self, reason: str, msg: str, *args: object) -> bool:
        return self.log(reason, logging.WARNING, msg, *args, stacklevel=2)

    def info(self, reason: str, msg: str, *args: object) -> bool:
        return self.log(reason, logging.INFO, msg, *args, stacklevel=2)

    def suppressed(self, reason: str) -> int:
        """How many lines of ``reason`` were left out in its current interval."""
        window = self._windows.get(reason)
        return 0 if window is None else window.suppressed

    def flush(self) -> None:
        """Say every count not said yet, and start every reason afresh."""
        for reason in list(self._windows):
            self._summarise(reason)

    def _summarise(self, reason: str) -> None:
        window = self._windows.pop(reason, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        if window.suppressed:
            seconds = min(self.interval, self._clock() - window.start)
            self.logger.log(
                window.level,
                "%s: %s more %r in the last %.3g s (not logged one by one)",
                self.prefix,
                f"{window.suppressed:,}",
                reason,
                max(seconds, 0.001),
            )
