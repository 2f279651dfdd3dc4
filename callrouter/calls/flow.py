"""The life of one routed call as a pure state machine (no I/O, no clock).

``CallFlow`` takes a RingPlan and is fed what happens — leg events from Asterisk, the
answers to the driver's requests, the router's own shutdown, and the passing of time
as seconds since the call reached the router — and answers each input with the
commands to carry out.  ``callrouter.calls.driver`` turns those commands into ARI
requests and ARI events back into inputs; this module decides, and it alone keeps the
state of the call and of each leg's channel.

Phases:   RINGING ──leg answers──▶ CONNECTING ──bridged──▶ CONNECTED ──hang-up──▶ FINISHED
             │                         └──── bridge failed (FAILED) ─────────────▶ FINISHED
             └──── caller hangs up / every leg ended / hand-back ────────────────▶ FINISHED
A pickup (*8 + extension, ``picked_up``) is a phone answering from outside the plan: it
wins from RINGING like an answering leg.

A confirm leg (``Leg.confirm``, rules ``confirm: true``) that answers does not win at
once: it is CONFIRMING (the call still RINGING, the caller still hears ringing, the
other legs ring on) and its party hears the prompt (``AskToConfirm``). Digit 1 within
``confirm_timeout`` seconds of its answer makes it the winner, as if it had answered
then; 2, its hang-up or the deadline drops it (``LegEnd.UNCONFIRMED``) and the
timeline goes on without it. Another leg that answers meanwhile wins, and the
confirming one is hung up.

Results (``CallResult``): the dialplan sees NOANSWER, BUSY, UNKNOWN, NOPHONES, DND (in
[callrouter-result]) in CALLROUTER_RESULT; an ANSWERED call is set nothing (Asterisk's
BRIDGEPEER names the channel that answered).  Three results are the router's own
record only (logs, ``flow.result``), never set on the channel: HANGUP (the caller hung up first),
HANDED_BACK (the router shut down while the call was ringing and gave the caller to
the dialplan's fallback, which rings the phones itself) and FAILED (a phone answered
but the caller could not be bridged with it: both were hung up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from callrouter.routing.plan import Leg, LegSource, PlanStatus, RingPlan

log = logging.getLogger(__name__)

CAUSE_USER_BUSY = 17  # Q.850 hang-up cause of a busy phone (AST_CAUSE_USER_BUSY)
# Q.850 causes that say the phone could not be reached at all (not that it rang or
# was declined): unallocated number, no route, subscriber absent (an unregistered
# PJSIP contact), destination out of order, no circuit, network out of order,
# temporary failure, congestion.
CAUSES_UNREACHABLE = frozenset({1, 2, 3, 20, 27, 34, 38, 41, 42})
# What a confirm leg's party presses to take the call, or to reject it (app_followme's).
CONFIRM_DIGIT = "1"
REJECT_DIGIT = "2"


class CallPhase(StrEnum):
    RINGING = "ringing"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FINISHED = "finished"


class LegPhase(StrEnum):
    PENDING = "pending"  # not started yet
    DIALLING = "dialling"  # channel asked for, INVITE on its way
    RINGING = "ringing"  # the phone signalled ringing
    CONFIRMING = "confirming"  # answered, but its party must press 1 first
    ANSWERED = "answered"  # the winner
    ENDED = "ended"


class LegEnd(StrEnum):
    TIMEOUT = "timeout"  # rang until its stop time
    BUSY = "busy"
    UNREACHABLE = "unreachable"  # refused by Asterisk, or a cause of CAUSES_UNREACHABLE
    FAILED = "failed"  # rejected, another cause, no answer to the request, no bridge
    CANCELLED = "cancelled"  # another leg won, the caller hung up, or a hand-back
    UNCONFIRMED = "unconfirmed"  # a confirm leg answered but did not press 1 in time


class LegChannel(StrEnum):
    """A leg's channel in Asterisk, as far as the router knows."""

    NONE = "none"  # never asked for
    REQUESTED = "requested"  # asked for, Asterisk's answer to that not in yet
    CREATED = "created"
    UNCERTAIN = "uncertain"  # the request went unanswered: it may exist all the same
    HUNG_UP = "hung-up"  # we sent its hang-up
    GONE = "gone"  # destroyed, or refused: nothing left in Asterisk


# Ends that leave a gap the timeline closes (the phone gave up before its time).
_ENDED_EARLY = frozenset({LegEnd.BUSY, LegEnd.UNREACHABLE, LegEnd.FAILED, LegEnd.UNCONFIRMED})
# A leg's channel that may be in Asterisk and that we have not hung up.
_MAY_EXIST = frozenset({LegChannel.REQUESTED, LegChannel.CREATED, LegChannel.UNCERTAIN})


class StartOutcome(StrEnum):
    """Asterisk's answer to the request that creates a leg's channel."""

    CREATED = "created"
    REFUSED = "refused"  # an error answer: there is no such channel
    UNANSWERED = "unanswered"  # no answer: Asterisk may have dialled all the same


class CallResult(StrEnum):
    """How the call ended (the module docstring says which ones the dialplan sees)."""

    ANSWERED = "ANSWERED"
    NOANSWER = "NOANSWER"
    BUSY = "BUSY"
    UNKNOWN = "UNKNOWN"
    NOPHONES = "NOPHONES"
    DND = "DND"  # the user set do-not-disturb
    HANGUP = "HANGUP"  # the caller hung up first (nobody continues in the dialplan)
    HANDED_BACK = "HANDED_BACK"  # shutdown: the dialplan's fallback rings instead
    FAILED = "FAILED"  # answered, but the bridge could not be made: both hung up


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
    """Hang up the leg's channel, unless ``leg_hangup_sent`` says there is none."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class AskToConfirm:
    """Play the confirm prompt to a confirm leg that answered; its party must press 1."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class Connect:
    """Answer the caller and bridge it with the winning leg."""

    leg_id: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class ContinueInDialplan:
    """Nobody answered: hand the caller to ``callrouter-result`` with this result.

    ``unreachable``: no phone of the plan could be reached (every leg ended
    UNREACHABLE), so the call forwards *when unreachable* before *when nobody answers*.
    """

    result: CallResult
    unreachable: bool = False


@dataclass(frozen=True, slots=True)
class ContinueInFallback:
    """Hand-back: the caller continues at the dialplan's fallback, which rings itself."""


@dataclass(frozen=True, slots=True)
class HangupCaller:
    pass


Command = (
    IndicateRinging
    | StartLeg
    | StopLeg
    | AskToConfirm
    | Connect
    | ContinueInDialplan
    | ContinueInFallback
    | HangupCaller
)


@dataclass(slots=True)
class LegRun:
    leg: Leg
    leg_id: str
    start_at: float  # may move earlier than leg.start (no dead air after early ends)
    stop_at: float
    phase: LegPhase = LegPhase.PENDING
    end: LegEnd | None = None
    channel: LegChannel = LegChannel.NONE
    confirm_by: float | None = None  # CONFIRMING: dropped unless 1 comes before this

    @property
    def active(self) -> bool:
        return self.phase in (LegPhase.DIALLING, LegPhase.RINGING)

    @property
    def live(self) -> bool:
        """Ringing, or answered and confirming: the call waits for it."""
        return self.active or self.phase is LegPhase.CONFIRMING


class CallFlow:
    def __init__(
        self,
        call_id: str,
        plan: RingPlan,
        new_leg_id: Callable[[], str],
        *,
        confirm_timeout: float = 10.0,  # rules: defaults.confirm_timeout
    ) -> None:
        self.call_id = call_id
        self.plan = plan
        self.confirm_timeout = confirm_timeout
        self.phase = CallPhase.RINGING
        self.result: CallResult | None = None
        self.winner: LegRun | None = None
        self.legs: dict[str, LegRun] = {}
        for leg in plan.legs:
            leg_id = new_leg_id()
            self.legs[leg_id] = LegRun(leg, leg_id, leg.start, leg.stop)

    # --- inputs: the call -----------------------------------------------------------

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
        commands += self._drop_unconfirmed(now)
        for run in self.legs.values():
            if run.phase is LegPhase.PENDING and run.start_at <= now:
                if run.stop_at <= now:  # its whole window has passed
                    self._end_leg(run, LegEnd.TIMEOUT, stop=False)
                    continue
                self._leg_to(run, LegPhase.DIALLING, "due")
                self._channel_to(run, LegChannel.REQUESTED, "start")
                commands.append(StartLeg(run.leg_id, run.leg.endpoint))
        return commands + self._settle(now)

    def connected(self) -> list[Command]:
        """The driver bridged the caller with the winner."""
        if self.phase is CallPhase.CONNECTING:
            self._to(CallPhase.CONNECTED, "bridged")
        return []

    def connect_failed(self) -> list[Command]:
        """The driver could not bridge the caller with the winner: hang both up."""
        if self.phase is not CallPhase.CONNECTING:
            return []
        commands = self._stop_every_leg(LegEnd.FAILED)
        commands.append(HangupCaller())
        return self._finish(CallResult.FAILED, commands)

    def caller_gone(self) -> list[Command]:
        """The caller hung up (or its channel left the app)."""
        if self.phase is CallPhase.FINISHED:
            return []
        commands = self._stop_every_leg(LegEnd.CANCELLED)
        result = CallResult.ANSWERED if self.winner is not None else CallResult.HANGUP
        return self._finish(result, commands)

    def hand_back(self) -> list[Command]:
        """The router shuts down: a ringing call goes to the dialplan's fallback.

        A call that is being connected or is connected is left to finish.
        """
        if self.phase is not CallPhase.RINGING:
            return []
        commands = self._stop_every_leg(LegEnd.CANCELLED)
        commands.append(ContinueInFallback())
        return self._finish(CallResult.HANDED_BACK, commands)

    # --- inputs: a leg --------------------------------------------------------------

    def leg_created(self, leg_id: str, outcome: StartOutcome, now: float) -> list[Command]:
        """Asterisk answered the request for a leg's channel (or did not)."""
        run = self.legs.get(leg_id)
        if run is None or run.channel is not LegChannel.REQUESTED:
            return []  # its events came first (gone), or we hung it up already
        if outcome is StartOutcome.CREATED:
            self._channel_to(run, LegChannel.CREATED, "created")
            return []
        refused = outcome is StartOutcome.REFUSED
        channel = LegChannel.GONE if refused else LegChannel.UNCERTAIN
        self._channel_to(run, channel, outcome.value)
        ends_here = run.live
        if ends_here:
            self._end_leg(run, LegEnd.UNREACHABLE if refused else LegEnd.FAILED, stop=False)
        commands: list[Command] = []
        if not refused:
            commands.append(StopLeg(leg_id))  # by its id: no phone may be left ringing
        if ends_here:
            commands += self._settle(now)
        return commands

    def leg_ringing(self, leg_id: str) -> list[Command]:
        run = self.legs.get(leg_id)
        if run is not None and run.phase is LegPhase.DIALLING:
            self._leg_to(run, LegPhase.RINGING, "ringing")
        return []

    def picked_up(self, picker_id: str, endpoint: str) -> list[Command]:
        """A phone picked the call up (*8 + extension): its channel ``picker_id``, which
        the driver answered already, wins like an answering leg (every other leg is
        cancelled, the caller is bridged with it). Nothing unless a phone rings now:
        the driver refuses the pickup then."""
        if not self.ringing() or picker_id in self.legs:
            return []
        leg = Leg(endpoint, 0.0, 0.0, LegSource.PICKUP)
        run = LegRun(leg, picker_id, 0.0, 0.0, LegPhase.RINGING, channel=LegChannel.CREATED)
        self.legs[picker_id] = run
        return self.leg_answered(picker_id)

    def leg_answered(self, leg_id: str, now: float | None = None) -> list[Command]:
        """A leg's phone answered (its StasisStart). ``now`` is needed for a confirm
        leg, whose party then has ``confirm_timeout`` seconds to press 1."""
        run = self.legs.get(leg_id)
        if run is None or not run.active:
            return []
        if self.phase is not CallPhase.RINGING:
            # Lost the race against the winner: hang it up.
            return self._end_leg(run, LegEnd.CANCELLED, stop=True)
        if run.leg.confirm:
            return self._ask_to_confirm(run, now)
        return self._win(run, "answered")

    def _win(self, run: LegRun, why: str) -> list[Command]:
        self._leg_to(run, LegPhase.ANSWERED, why)
        self.winner = run
        self._to(CallPhase.CONNECTING, f"{run.leg.endpoint} answered")
        commands: list[Command] = []
        for other in self.legs.values():
            if other.live:
                commands += self._end_leg(other, LegEnd.CANCELLED, stop=True)
            elif other.phase is LegPhase.PENDING:
                self._end_leg(other, LegEnd.CANCELLED, stop=False)
        commands.append(Connect(run.leg_id, run.leg.endpoint))
        return commands

    def leg_gone(self, leg_id: str, now: float, cause: int | None = None) -> list[Command]:
        """A leg's channel was destroyed (``cause``: Asterisk's hang-up cause) or left
        the app (no cause: it had answered), or vanished while we were deaf."""
        run = self.legs.get(leg_id)
        if run is None or run.channel in (LegChannel.NONE, LegChannel.GONE):
            return []
        self._channel_to(run, LegChannel.GONE, "gone")
        if cause == CAUSE_USER_BUSY:
            end = LegEnd.BUSY
        elif cause in CAUSES_UNREACHABLE:
            end = LegEnd.UNREACHABLE
        else:
            end = LegEnd.FAILED
        return self.leg_ended(leg_id, end, now)

    def leg_ended(self, leg_id: str, end: LegEnd, now: float) -> list[Command]:
        """A leg ended (busy, failed, hung up) without us stopping it."""
        run = self.legs.get(leg_id)
        if run is None or run.phase in (LegPhase.ENDED, LegPhase.PENDING):
            return []
        if run is self.winner:
            self._leg_to(run, LegPhase.ENDED, "hung up")
            if self.phase in (CallPhase.CONNECTING, CallPhase.CONNECTED):
                return self._finish(CallResult.ANSWERED, [HangupCaller()])
            return []
        if run.phase is LegPhase.CONFIRMING:
            end = LegEnd.UNCONFIRMED  # its party hung up instead of pressing 1
        commands = self._end_leg(run, end, stop=False)
        if self.phase is CallPhase.RINGING:
            commands += self._settle(now)
        return commands

    def leg_digit(self, leg_id: str, digit: str, now: float) -> list[Command]:
        """A DTMF digit from a leg. Only a confirming leg's count: 1 takes the call
        (it wins as if it answered now), 2 rejects it (as in app_followme)."""
        run = self.legs.get(leg_id)
        if run is None or run.phase is not LegPhase.CONFIRMING:
            return []
        if run.confirm_by is not None and now >= run.confirm_by:
            return self.tick(now)  # too late: the deadline drops it
        if digit == CONFIRM_DIGIT:
            return self._win(run, "confirmed")
        if digit == REJECT_DIGIT:
            return self._end_leg(run, LegEnd.UNCONFIRMED, stop=True) + self._settle(now)
        return []

    def leg_hangup_sent(self, leg_id: str) -> bool:
        """The driver hangs up a leg's channel now. False, and nothing to send, when
        there is none to hang up: never asked for, gone, or hung up already."""
        run = self.legs.get(leg_id)
        if run is None or run.channel not in _MAY_EXIST:
            return False
        self._channel_to(run, LegChannel.HUNG_UP, "hang-up sent")
        return True

    # --- what the driver asks -----------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called, in seconds since the call started."""
        if self.phase is not CallPhase.RINGING:
            return None
        times = [r.start_at for r in self.legs.values() if r.phase is LegPhase.PENDING]
        times += [r.stop_at for r in self.legs.values() if r.active]
        times += [r.confirm_by for r in self.legs.values() if r.confirm_by is not None and r.live]
        return min(times, default=None)

    def ringing(self) -> bool:
        """Whether the call rings at least one phone now (a pickup may take it)."""
        return self.phase is CallPhase.RINGING and any(r.active for r in self.legs.values())

    @property
    def finished(self) -> bool:
        return self.phase is CallPhase.FINISHED

    def live_legs(self) -> list[LegRun]:
        return [r for r in self.legs.values() if r.live or r.phase is LegPhase.ANSWERED]

    def leg_channel_ids(self) -> list[str]:
        """Leg channels that are or may be in Asterisk (hung up ones until they go)."""
        gone = (LegChannel.NONE, LegChannel.GONE)
        return [r.leg_id for r in self.legs.values() if r.channel not in gone]

    def legs_hung_up(self) -> list[str]:
        """Leg channels we hung up that Asterisk has not reported gone yet."""
        return [r.leg_id for r in self.legs.values() if r.channel is LegChannel.HUNG_UP]

    def legs_to_clean_up(self) -> list[str]:
        """Leg channels that may be in Asterisk and were never hung up by us."""
        return [r.leg_id for r in self.legs.values() if r.channel in _MAY_EXIST]

    # --- internals ----------------------------------------------------------------

    def _ask_to_confirm(self, run: LegRun, now: float | None) -> list[Command]:
        if now is None:
            raise ValueError(f"leg {run.leg_id} must confirm: its answer needs the time")
        self._leg_to(run, LegPhase.CONFIRMING, "answered, must press 1")
        run.confirm_by = now + self.confirm_timeout
        return [AskToConfirm(run.leg_id)]

    def _drop_unconfirmed(self, now: float) -> list[Command]:
        """Confirm legs whose party did not press 1 in time are hung up."""
        commands: list[Command] = []
        for run in self.legs.values():
            if (
                run.phase is LegPhase.CONFIRMING
                and run.confirm_by is not None
                and run.confirm_by <= now
            ):
                commands += self._end_leg(run, LegEnd.UNCONFIRMED, stop=True)
        return commands

    def _settle(self, now: float) -> list[Command]:
        """After legs ended: skip dead air, or finish when nothing is left to ring."""
        if self.phase is not CallPhase.RINGING or any(r.live for r in self.legs.values()):
            return []
        pending = [r for r in self.legs.values() if r.phase is LegPhase.PENDING]
        if not pending:
            ends = {r.end for r in self.legs.values()}
            # A phone that rang out, or answered without pressing 1, was not busy.
            answering = {LegEnd.TIMEOUT, LegEnd.UNCONFIRMED}
            result = (
                CallResult.BUSY
                if LegEnd.BUSY in ends and not ends & answering
                else CallResult.NOANSWER
            )
            unreachable = ends == {LegEnd.UNREACHABLE}
            return self._finish(result, [ContinueInDialplan(result, unreachable)])
        ended_early = any(
            r.phase is LegPhase.ENDED and r.end in _ENDED_EARLY for r in self.legs.values()
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

    def _stop_every_leg(self, end: LegEnd) -> list[Command]:
        """End every leg that is not over yet; hang up those that ring or answered."""
        commands: list[Command] = []
        for run in self.legs.values():
            if run.live or run.phase is LegPhase.ANSWERED:
                commands += self._end_leg(run, end, stop=True)
            elif run.phase is LegPhase.PENDING:
                self._end_leg(run, LegEnd.CANCELLED, stop=False)
        return commands

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

    def _channel_to(self, run: LegRun, channel: LegChannel, why: str) -> None:
        log.debug(
            "call %s leg %s channel: %s -> %s (%s)",
            self.call_id,
            run.leg_id,
            run.channel,
            channel,
            why,
        )
        run.channel = channel
