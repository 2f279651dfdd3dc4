"""Graceful overload: when the router cannot start calls' legs in time, a new call goes
back to the dialplan at once, to the AstDB fallback, instead of waiting for the router.

Pure: no I/O, no asyncio, the clock injected.  ``CallIntake`` gathers the signals (each
O(1) to read) and asks ``OverloadState.update`` at every new call and at every sample
of the event-loop lag probe:

* ``pending``: calls taken whose first leg's request Asterisk has not answered yet (a
  call whose first step asks for no leg, because a rule delays its first entry or there
  is nothing to ring, stops waiting once that step is done);
* ``loop_lag``: how late the event loop last woke the lag probe (``metrics.watch_loop_lag``);
* ``ari_latency``: the ARI round trip of the call path (each leg's ``POST /channels``, each
  overload hand-back), smoothed over time by ``LatencyAverage``.

A signal that reaches its limit puts the router into overload at once.  It leaves only
after every signal stayed below half its limit for ``recover`` seconds (hysteresis: no
flapping around a limit), by itself, as the load drops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

OverloadReason = Literal["pending", "loop_lag", "ari_latency"]
OVERLOAD_REASONS: tuple[OverloadReason, ...] = ("pending", "loop_lag", "ari_latency")

# How fast the ARI latency forgets: the past's weight halves every this many seconds.
ARI_LATENCY_HALF_LIFE = 1.0


@dataclass(frozen=True, slots=True)
class LoadSignals:
    pending: int  # calls waiting for their first leg's request to be answered
    loop_lag: float  # seconds, the latest lag of the event loop
    ari_latency: float  # seconds, the smoothed ARI round trip


@dataclass(frozen=True, slots=True)
class OverloadLimits:
    """Where overload starts (the settings ``overload_*``; README says why these)."""

    max_pending: int = 128  # a new call that finds this many waiting goes back
    max_loop_lag: float = 0.25
    max_ari_latency: float = 0.5
    recover: float = 1.0  # seconds every signal must stay below half its limit

    def __post_init__(self) -> None:
        for name in ("max_pending", "max_loop_lag", "max_ari_latency", "recover"):
            if not getattr(self, name) > 0:
                raise ValueError(f"overload {name} must be > 0, got {getattr(self, name)!r}")


def overload_reason(signals: LoadSignals, limits: OverloadLimits) -> OverloadReason | None:
    """The signal that reached its limit, the one furthest past it if several did (the
    first of ``OVERLOAD_REASONS`` on a tie); None while every signal is below its limit."""
    pending = signals.pending / limits.max_pending
    loop_lag = signals.loop_lag / limits.max_loop_lag
    ari_latency = signals.ari_latency / limits.max_ari_latency
    if pending < 1 and loop_lag < 1 and ari_latency < 1:
        return None
    if pending >= loop_lag and pending >= ari_latency:
        return "pending"
    return "loop_lag" if loop_lag >= ari_latency else "ari_latency"


def calm(signals: LoadSignals, limits: OverloadLimits) -> bool:
    """Every signal below half its limit: what leaving overload asks for."""
    return (
        signals.pending < limits.max_pending / 2
        and signals.loop_lag < limits.max_loop_lag / 2
        and signals.ari_latency < limits.max_ari_latency / 2
    )


class LatencyAverage:
    """An exponentially weighted average of round trips, weighted by time, not by count:
    a round trip's weight grows with the time since the one before (the past's weight
    halves every ``half_life`` seconds).  So a burst of answers counts for the time it
    took, not for how many there were, and after a quiet spell (no calls, or every call
    handed back) the next round trip is the estimate: the average never stays stuck at
    a spike with nothing to correct it."""

    def __init__(self, half_life: float = ARI_LATENCY_HALF_LIFE) -> None:
        self.half_life = half_life
        self.value = 0.0
        self._last: float | None = None

    def add(self, seconds: float, now: float) -> None:
        if self._last is None:
            self.value = seconds
        else:
            past = 0.5 ** (max(0.0, now - self._last) / self.half_life)
            self.value = seconds + (self.value - seconds) * past
        self._last = now


class OverloadState:
    """Whether the router is overloaded now, with hysteresis; logs the entry (WARNING)
    and the exit (INFO) with the signals and how long it lasted."""

    def __init__(self, limits: OverloadLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.reason: OverloadReason | None = None  # the signal past its limit last; None: not
        self.since: float | None = None  # when this overload began
        self.handed_back = 0  # calls handed back in this overload
        self._calm_since: float | None = None

    @property
    def overloaded(self) -> bool:
        return self.reason is not None

    def update(self, signals: LoadSignals) -> OverloadReason | None:
        """The signals now: the reason while overloaded, else None."""
        now = self.clock()
        reason = overload_reason(signals, self.limits)
        if reason is not None:
            self._calm_since = None
            if self.reason is None:
                self.since, self.handed_back = now, 0
                log.warning(
                    "overload (%s): new calls go straight to the dialplan fallback; %s",
                    reason,
                    self._describe(signals),
                )
            self.reason = reason
            return reason
        if self.reason is None:
            return None
        if not calm(signals, self.limits):
            self._calm_since = None  # between half and the limit: still overloaded
            return self.reason
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since < self.limits.recover:
            return self.reason
        assert self.since is not None
        log.info(
            "overload over after %.1f s, %d call(s) handed back; routing again; %s",
            now - self.since,
            self.handed_back,
            self._describe(signals),
        )
        self.reason = self.since = self._calm_since = None
        return None

    def count_hand_back(self) -> None:
        self.handed_back += 1

    def _describe(self, signals: LoadSignals) -> str:
        limits = self.limits
        return (
            f"pending {signals.pending} (limit {limits.max_pending}), "
            f"loop lag {signals.loop_lag:.3f} s (limit {limits.max_loop_lag:g}), "
            f"ARI latency {signals.ari_latency:.3f} s (limit {limits.max_ari_latency:g})"
        )
