"""The life of one routed call as a pure state machine (no I/O, no clock).

``CallFlow`` takes a RingPlan and is fed what happens — leg events from Asterisk and
the passing of time, as seconds since the call reached the router — and answers
each input with the commands to carry out.  ``callrouter.calls.driver`` turns those
commands into ARI requests and ARI events back into inputs; this module decides.

Phases:   RINGING ──leg answers──▶ CONNECTING ──bridged──▶ CONNECTED ──hang-up──▶ FINISHED
             └──── caller hangs up / every leg ended ─────────────────────────▶ FINISHED
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from callrouter.routing.plan import Leg, PlanStatus, RingPlan

log = logging.getLogger(__name__)


class CallPhase(StrEnum):
    RINGING = "ringing"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FINISHED = "finished"


class LegPhase(StrEnum):
    PENDING = "pending"  # not started yet
    DIALLING = "dialling"  # channel created, INVITE on its way
    RINGING = "ringing"  # the phone signalled ringing
    ANSWERED = "answered"  # the winner
    ENDED = "ended"


class LegEnd(StrEnum):
    TIMEOUT = "timeout"  # rang until its stop time
    BUSY = "busy"
    FAILED = "failed"  # unreachable, rejected, congestion, a REST error
    CANCELLED = "cancelled"  # another leg won, or the caller hung up


class CallResult(StrEnum):
    """What the dialplan sees in CALLROUTER_RESULT."""

    ANSWERED = "ANSWERED"
    NOANSWER = "NOANSWER"
    BUSY = "BUSY"
    UNKNOWN = "UNKNOWN"
    NOPHONES = "NOPHONES"
    DND = "DND"  # the user set do-not-disturb
    HANGUP = "HANGUP"  # the caller hung up first (nobody continues in the dialplan)


# Plans that end before any phone rings, and what the dialplan is told.
_RESULT_WITHOUT_RINGING = {
    PlanStatus.UNKNOWN_EXTENSION: CallResult.UNKNOWN,
    PlanStatus.NO_PHONES: CallResult.NOPHONES,
    PlanStatus.UNREACHABLE: CallResult.NOPHONES,  # like no phones: nobody to reach
    PlanStatus.DND: CallResult.DND,
    PlanStatus.BUSY: CallResult.BUSY,
}


# --- commands (what the driver must do) --------------------------------------------


@dataclass(frozen=True, slots=True)
class IndicateRinging:
    pass


@dataclass(frozen=True, slots=True)
class StartLeg:
    leg_id: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class StopLeg:
    leg_id: str


@dataclass(frozen=True, slots=True)
class Connect:
    """Answer the caller and bridge it with the winning leg."""

    leg_id: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class ContinueInDialplan:
    """Nobody answered: hand the caller to ``callrouter-result`` with this result."""

    result: CallResult


@dataclass(frozen=True, slots=True)
class HangupCaller:
    pass


Command = IndicateRinging | StartLeg | StopLeg | Connect | ContinueInDialplan | HangupCaller


@dataclass(slots=True)
class LegRun:
    leg: Leg
    leg_id: str
    start_at: float  # may move earlier than leg.start (no dead air after early ends)
    stop_at: float
    phase: LegPhase = LegPhase.PENDING
    end: LegEnd | None = None

    @property
    def active(self) -> bool:
        return self.phase in (LegPhase.DIALLING, LegPhase.RINGING)


class CallFlow:
    def __init__(self, call_id: str, plan: RingPlan, new_leg_id: Callable[[], str]) -> None:
        self.call_id = call_id
        self.plan = plan
        self.phase = CallPhase.RINGING
        self.result: CallResult | None = None
        self.winner: LegRun | None = None
        self.legs: dict[str, LegRun] = {}
        for leg in plan.legs:
            leg_id = new_leg_id()
            self.legs[leg_id] = LegRun(leg, leg_id, leg.start, leg.stop)

    # --- inputs -------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """The call reached the router."""
        at_once = _RESULT_WITHOUT_RINGING.get(self.plan.status)
        if at_once is not None:  # nothing to ring: straight back to the dialplan
            return self._finish(at_once, [ContinueInDialplan(at_once)])
        commands: list[Command] = [IndicateRinging()]
        commands += self.tick(now)
        return commands

    def tick(self, now: float) -> list[Command]:
        """Time has passed: start the legs that are due, stop those whose time is up."""
        if self.phase is not CallPhase.RINGING:
            return []
        commands: list[Command] = []
        for run in self.legs.values():
            if run.active and run.stop_at <= now:
                commands += self._end_leg(run, LegEnd.TIMEOUT, stop=True)
        for run in self.legs.values():
            if run.phase is LegPhase.PENDING and run.start_at <= now:
                if run.stop_at <= now:  # its whole window has passed
                    run.phase, run.end = LegPhase.ENDED, LegEnd.TIMEOUT
                    continue
                self._leg_to(run, LegPhase.DIALLING, "due")
                commands.append(StartLeg(run.leg_id, run.leg.endpoint))
        return commands + self._settle(now)

    def leg_ringing(self, leg_id: str) -> list[Command]:
        run = self.legs.get(leg_id)
        if run is not None and run.phase is LegPhase.DIALLING:
            self._leg_to(run, LegPhase.RINGING, "ringing")
        return []

    def leg_answered(self, leg_id: str) -> list[Command]:
        run = self.legs.get(leg_id)
        if run is None or not run.active:
            return []
        if self.phase is not CallPhase.RINGING:
            # Lost the race against the winner: hang it up.
            return self._end_leg(run, LegEnd.CANCELLED, stop=True)
        self._leg_to(run, LegPhase.ANSWERED, "answered")
        self.winner = run
        self._to(CallPhase.CONNECTING, f"{run.leg.endpoint} answered")
        commands: list[Command] = []
        for other in self.legs.values():
            if other.active:
                commands += self._end_leg(other, LegEnd.CANCELLED, stop=True)
            elif other.phase is LegPhase.PENDING:
                other.phase, other.end = LegPhase.ENDED, LegEnd.CANCELLED
        commands.append(Connect(run.leg_id, run.leg.endpoint))
        return commands

    def connected(self) -> list[Command]:
        """The driver bridged the caller with the winner."""
        if self.phase is CallPhase.CONNECTING:
            self._to(CallPhase.CONNECTED, "bridged")
        return []

    def leg_ended(self, leg_id: str, end: LegEnd, now: float) -> list[Command]:
        """A leg's channel went away (busy, failed, hung up) without us stopping it."""
        run = self.legs.get(leg_id)
        if run is None or run.phase in (LegPhase.ENDED, LegPhase.PENDING):
            return []
        if run is self.winner:
            run.phase, run.end = LegPhase.ENDED, None
            if self.phase in (CallPhase.CONNECTING, CallPhase.CONNECTED):
                return self._finish(CallResult.ANSWERED, [HangupCaller()])
            return []
        commands = self._end_leg(run, end, stop=False)
        if self.phase is CallPhase.RINGING:
            commands += self._settle(now)
        return commands

    def caller_gone(self) -> list[Command]:
        """The caller hung up (or its channel left the app)."""
        if self.phase is CallPhase.FINISHED:
            return []
        commands: list[Command] = []
        for run in self.legs.values():
            if run.active or run.phase is LegPhase.ANSWERED:
                commands += self._end_leg(run, LegEnd.CANCELLED, stop=True)
            elif run.phase is LegPhase.PENDING:
                run.phase, run.end = LegPhase.ENDED, LegEnd.CANCELLED
        result = CallResult.ANSWERED if self.winner is not None else CallResult.HANGUP
        return self._finish(result, commands)

    # --- what the driver asks -----------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called, in seconds since the call started."""
        if self.phase is not CallPhase.RINGING:
            return None
        times = [r.start_at for r in self.legs.values() if r.phase is LegPhase.PENDING]
        times += [r.stop_at for r in self.legs.values() if r.active]
        return min(times, default=None)

    @property
    def finished(self) -> bool:
        return self.phase is CallPhase.FINISHED

    def live_legs(self) -> list[LegRun]:
        return [r for r in self.legs.values() if r.active or r.phase is LegPhase.ANSWERED]

    # --- internals ----------------------------------------------------------------

    def _settle(self, now: float) -> list[Command]:
        """After legs ended: skip dead air, or finish when nothing is left to ring."""
        if self.phase is not CallPhase.RINGING or any(r.active for r in self.legs.values()):
            return []
        pending = [r for r in self.legs.values() if r.phase is LegPhase.PENDING]
        if not pending:
            ends = {r.end for r in self.legs.values()}
            result = (
                CallResult.BUSY
                if LegEnd.BUSY in ends and LegEnd.TIMEOUT not in ends
                else CallResult.NOANSWER
            )
            return self._finish(result, [ContinueInDialplan(result)])
        ended_early = any(
            r.phase is LegPhase.ENDED and r.end in (LegEnd.BUSY, LegEnd.FAILED)
            for r in self.legs.values()
        )
        next_start = min(r.start_at for r in pending)
        if ended_early and next_start > now:
            # Every phone that was ringing gave up early (busy, unreachable): move the
            # rest of the timeline forward instead of leaving the caller in silence.
            shift = next_start - now
            log.info(
                "call %s: nothing ringing, next entry moves %.1f s earlier", self.call_id, shift
            )
            for run in pending:
                run.start_at -= shift
                run.stop_at -= shift
            return self.tick(now)
        return []

    def _end_leg(self, run: LegRun, end: LegEnd, *, stop: bool) -> list[Command]:
        self._leg_to(run, LegPhase.ENDED, end.value)
        run.end = end
        return [StopLeg(run.leg_id)] if stop else []

    def _finish(self, result: CallResult, commands: list[Command]) -> list[Command]:
        self.result = result
        self._to(CallPhase.FINISHED, result.value)
        return commands

    def _to(self, phase: CallPhase, why: str) -> None:
        log.debug("call %s: %s -> %s (%s)", self.call_id, self.phase, phase, why)
        self.phase = phase

    def _leg_to(self, run: LegRun, phase: LegPhase, why: str) -> None:
        log.debug(
            "call %s leg %s %s: %s -> %s (%s)",
            self.call_id,
            run.leg_id,
            run.leg.endpoint,
            run.phase,
            phase,
            why,
        )
        run.phase = phase
