"""Carries out one call's CallFlow over ARI: commands become requests, events inputs.

One asyncio task per call.  The task owns an ordered queue that the ARI reader
fills with the events of the call's channels; the leg channel ids are chosen here
and routed *before* the channels are created, so no early event is lost.

The flow keeps all the state of the call and its legs' channels (created, hung up by
us, gone, the last hang-up cause); the driver keeps only transport: the task of each
leg's originate request and the bridge id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from callrouter.ari.client import AriClient
from callrouter.ari.errors import AriError, AriHttpError
from callrouter.ari.events import AriEvent
from callrouter.calls.flow import (
    AskToConfirm,
    CallFlow,
    CallPhase,
    CallResult,
    Command,
    Connect,
    ContinueInDialplan,
    ContinueInFallback,
    HangupCaller,
    IndicateRinging,
    LegEnd,
    StartLeg,
    StartOutcome,
    StopLeg,
)
from callrouter.metrics import Metrics
from callrouter.routing.plan import ForwardHop, RingPlan

log = logging.getLogger(__name__)

RESULT_CONTEXT = "callrouter-result"
# Where the shipped dialplan dials the AstDB fallback (dialplan/callrouter.conf).
FALLBACK_CONTEXT = "callrouter"
FALLBACK_LABEL = "fallback"
LEG_PREFIX = "cr-leg"
BRIDGE_PREFIX = "cr-br"

# Dial event statuses (app_dial's DIALSTATUS vocabulary) and what they mean for a leg.
# ANSWER is not here: an originated leg can be bridged only after its StasisStart.
_DIAL_ENDS = {
    "BUSY": LegEnd.BUSY,
    "CONGESTION": LegEnd.UNREACHABLE,
    "CHANUNAVAIL": LegEnd.UNREACHABLE,
    "NOANSWER": LegEnd.FAILED,
    "CANCEL": LegEnd.FAILED,
    "INVALIDARGS": LegEnd.FAILED,
}
# appArgs of an originated leg (its StasisStart, on answer, carries it).
LEG_APP_ARG = "leg"
# The ringing indication waits for the first leg's request to be answered (its INVITE
# is out by then), at most this long: both at once compete for Asterisk's CPU.
_RING_WAIT = 0.05
GONE_EVENTS = frozenset({"StasisEnd", "ChannelDestroyed"})
# A plan that ends so goes on by the first forwarding of these kinds it has.
_FORWARD_KINDS: dict[tuple[CallResult, bool], tuple[str, ...]] = {
    (CallResult.BUSY, False): ("busy",),
    (CallResult.NOANSWER, False): ("no_answer",),
    # No phone could be reached: nobody answered either.
    (CallResult.NOANSWER, True): ("unreachable", "no_answer"),
}
# A forwarded call's next phones are rung once the phones before have gone, at most
# this long after: Asterisk hangs a channel up after its DELETE returns, in that
# channel's own thread, so the next plan's INVITE could beat the last one's CANCEL.
# Bounded, so that an event lost while deaf cannot hold the call.
_HANDOVER_WAIT = 0.5
# The only event types the call path needs; the app's event filter asks Asterisk for
# these alone. A leg's end comes as ChannelDestroyed with its cause (17: busy), which
# says what its Dial status (BUSY, CANCEL, ...) or ChannelHangupRequest would say too;
# its answer as its StasisStart. Dial events are not asked for: they were half of a
# two-phone call's events (two as each leg starts, two RINGING, one ANSWER, one
# CANCEL), each costing both sides CPU, and told the flow only that a leg rang. The
# driver still reads a Dial when one comes (an Asterisk that refused the filter).
# ChannelDtmfReceived: the 1 (or 2) of a confirm leg's party; Asterisk sends it only
# for channels in the app (answered legs, the caller), so ringing calls cost nothing.
ARI_EVENTS = frozenset({"StasisStart", "ChannelDtmfReceived", *GONE_EVENTS})
PLAYBACK_PREFIX = "cr-pb"
# What a confirm leg's party hears: the prompt, a pause, the prompt again; then
# silence until 1 or its deadline.
_CONFIRM_PAUSE = "silence/2"


@dataclass(frozen=True, slots=True)
class _HandBack:
    """Router shutting down: stop ringing, give the caller to the dialplan fallback."""


@dataclass(frozen=True, slots=True)
class _PickUp:
    """A phone picks the call up (*8 + extension): ``reply`` says whether it won."""

    picker_id: str  # its channel, in the app, not answered yet
    endpoint: str
    user: str | None  # the user at that phone (for the log)
    reply: asyncio.Future[bool]


@dataclass(frozen=True, slots=True)
class _Vanished:
    """After a reconnect, these channels were no longer in Asterisk's list."""

    channel_ids: frozenset[str]


_Input = AriEvent | _HandBack | _Vanished | _PickUp


def _about_legs(event: AriEvent, flow: CallFlow) -> bool:
    """Whether ``event`` is about one of ``flow``'s legs (its channel, or a Dial's peer)."""
    channel = event.peer if event.type == "Dial" else event.channel
    return channel is not None and channel.id in flow.legs


class Caller(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def caller_name(self) -> str | None: ...
    @property
    def caller_number(self) -> str | None: ...


class CallDriver:
    def __init__(
        self,
        ari: AriClient,
        caller: Caller,
        plan: RingPlan,
        *,
        ring_timeout_cap: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        on_set_up: Callable[[], None] | None = None,
        on_round_trip: Callable[[float], None] | None = None,
        next_plan: Callable[[ForwardHop, RingPlan], RingPlan] | None = None,
        confirm_prompt: str = "followme/options",
        confirm_timeout: float = 10.0,
    ) -> None:
        self.ari = ari
        self.caller = caller
        self.plan = plan
        self.clock = clock
        self.arrived = clock()  # the caller's StasisStart reached the router
        self.metrics = metrics if metrics is not None else Metrics()
        self.call_id = caller.id
        # Every line about this call carries its id as a field too (JSON logs).
        self.log = logging.LoggerAdapter(log, {"call_id": caller.id})
        self.flow = CallFlow(
            caller.id, plan, lambda: ari.new_id(LEG_PREFIX), confirm_timeout=confirm_timeout
        )
        self.confirm_prompt = confirm_prompt  # a sound name, checked by the rules model
        # Forwarding at run time (busy, no answer): the plan a hop leads to, resolved
        # when it is taken; the flows of the plans before, for clean-up and metrics.
        self._next_plan = next_plan
        self.earlier_flows: list[CallFlow] = []
        self._routes: list[str] = []  # channel ids routed to this call's queue
        self.queue: asyncio.Queue[_Input] = asyncio.Queue()
        self._held: deque[_Input] = deque()  # taken off the queue during a handover
        self.bridge_id: str | None = None
        # Transport only: leg id -> its originate request (the flow hears the outcome).
        self._originates: dict[str, asyncio.Task[StartOutcome]] = {}
        self._prompts: dict[str, str] = {}  # leg id -> its confirm prompt's playback id
        self._ring_timeout_cap = ring_timeout_cap
        self._first_leg_asked = False
        self._t0 = 0.0
        self._picker: _PickUp | None = None  # the pickup that won the call
        self._detached = False  # see detach()
        self._abandoned = False  # see abandon()
        # For the overload signals (calls/overload.py): once, when the call stops
        # waiting for the router; and each leg request's round trip, in seconds.
        self._on_set_up = on_set_up
        self._on_round_trip = on_round_trip

    def now(self) -> float:
        return self.clock() - self._t0

    async def run(self) -> None:
        self._route([self.caller.id, *self.flow.legs])
        self._t0 = self.clock()
        try:
            await self._execute(self.flow.start(0.0))
            self._log_start()  # after the first legs' requests: log lines cost CPU
            self._set_up()  # a first step without legs (a rule's delay, nothing to ring)
            while not self.flow.finished:
                try:
                    event = await self._next_input()
                except TimeoutError:
                    await self._execute(self.flow.tick(self.now()))
                else:
                    if isinstance(event, _HandBack):
                        await self._execute(self._on_hand_back())
                    elif isinstance(event, _Vanished):
                        await self._execute(self._on_vanished(event.channel_ids))
                    elif isinstance(event, _PickUp):
                        await self._on_pick_up(event)
                    else:
                        await self._execute(self._on_event(event))
            self._log_finished()
        finally:
            await self._clean_up()
            for channel_id in self._routes:
                self.ari.unroute(channel_id)
            if self.bridge_id is not None:
                self.ari.unroute(self.bridge_id)
            self._end_pickups()

    def _route(self, channel_ids: list[str]) -> None:
        for channel_id in channel_ids:
            self.ari.route(channel_id, self.queue)
        self._routes += channel_ids

    @property
    def flows(self) -> list[CallFlow]:
        """Every flow of this call: one per plan, the plans forwarding led to last."""
        return [*self.earlier_flows, self.flow]

    async def _next_input(self) -> _Input:
        """The next queued input, or TimeoutError once the flow's next deadline is due
        (a due deadline first). An input already queued is taken without a timer;
        ``asyncio.timeout`` rather than ``wait_for``, which costs a task per input on
        Python 3.11."""
        deadline = self.flow.next_deadline()
        left = None if deadline is None else deadline - self.now()
        if left is not None and left <= 0:
            raise TimeoutError
        if self._held:
            return self._held.popleft()
        if not self.queue.empty():
            return self.queue.get_nowait()
        if left is None:
            return await self.queue.get()
        async with asyncio.timeout(left):
            return await self.queue.get()

    # --- from the router ----------------------------------------------------------

    def _log_finished(self) -> None:
        """The one INFO line of a call (each line costs CPU on the call path): how it
        ended, for whom, how many legs, who answered, how long the router had it."""
        forwarded = self.plan.forwarded
        self.log.info(
            "call %s: finished, %s: %s (%s)%s, %d leg(s)%s, status %s, %.2f s",
            self.call_id,
            self.flow.result,
            self.plan.extension,
            self.plan.user or "?",
            f", forwarded from {forwarded[0].extension} ({len(forwarded)} hop(s))"
            if forwarded
            else "",
            len(self.plan.legs),
            self._answered_by(),
            self.plan.status.value,
            self.clock() - self.arrived,
        )

    def _answered_by(self) -> str:
        winner, picker = self.flow.winner, self._picker
        if winner is None:
            return ""
        if picker is not None and winner.leg_id == picker.picker_id:
            return f", picked up by {picker.endpoint} ({picker.user or 'no user'})"
        return f", answered by {winner.leg.endpoint}"

    def _log_start(self) -> None:
        """The call's plan (DEBUG) and its warnings."""
        self.log.debug(
            "call %s: %s (%s) -> %d leg(s), status %s",
            self.call_id,
            self.plan.extension,
            self.plan.user or "?",
            len(self.plan.legs),
            self.plan.status.value,
        )
        for warning in self.plan.warnings:
            self.log.warning("call %s: %s", self.call_id, warning)

    def _set_up(self) -> None:
        """The call no longer waits for the router (``on_set_up``, once)."""
        if self._on_set_up is not None:
            on_set_up, self._on_set_up = self._on_set_up, None
            on_set_up()

    def channel_ids(self) -> set[str]:
        """The channels this call owns in Asterisk."""
        return {self.caller.id, *(c for flow in self.flows for c in flow.leg_channel_ids())}

    def resync(self, alive: set[str]) -> None:
        """After an ARI reconnect: channels that went away while we were deaf."""
        gone = frozenset(cid for cid in self.channel_ids() if cid not in alive)
        if gone:
            self.queue.put_nowait(_Vanished(gone))

    def ringing_for(self, extension: str) -> bool:
        """Whether this call rings a phone for ``extension`` now: its current flow's
        plan is that extension's (a pickup of it may take the call)."""
        return self.flow.plan.extension == extension and self.flow.ringing()

    async def pick_up(self, picker_id: str, endpoint: str, user: str | None) -> bool:
        """A phone picks the call up: queued behind the call's own events, so the
        answering legs, other pickers and the caller's hang-up are taken in the order
        they came. True once it won (answered, the other legs cancelled, the bridge
        under way); False when nothing rang any more or the picker was gone."""
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_PickUp(picker_id, endpoint, user, reply))
        return await reply

    async def hand_back(self) -> None:
        """Ask the call to hand its caller back to the dialplan (shutdown)."""
        self.queue.put_nowait(_HandBack())

    def detach(self) -> None:
        """Shutdown: a connected call stays up in Asterisk (its bridge and both
        channels are left as they are) when this task is cancelled."""
        self._detached = True

    def abandon(self) -> None:
        """Another router took the call over (this one became standby): when this task
        is cancelled, every channel and the bridge are left as they are, for the new
        active router's resync to take over or clear."""
        self._abandoned = True

    def _on_vanished(self, gone: frozenset[str]) -> list[Command]:
        # The caller first: vanished legs then end as part of its hang-up, not as a
        # last leg ending (which would send the caller to the dialplan).
        commands = self.flow.caller_gone() if self.caller.id in gone else []
        now = self.now()
        for channel_id in gone:
            commands += self.flow.leg_gone(channel_id, now)
        return commands

    async def _on_pick_up(self, pickup: _PickUp) -> None:
        if pickup.reply.done():
            return  # the intake gave up waiting
        if not self.flow.ringing():
            pickup.reply.set_result(False)
            return
        # Its events come here from now on (a hang-up while it is bridged ends the call).
        self.ari.route(pickup.picker_id, self.queue)
        try:
            # First: a picker that hung up meanwhile must not cancel the ringing.
            await self.ari.answer(pickup.picker_id)
        except AriError as exc:
            self.log.info("call %s: pickup by %s failed: %s", self.call_id, pickup.endpoint, exc)
            won = False
        except asyncio.CancelledError:  # the call's task ends meanwhile (shutdown)
            self.ari.unroute(pickup.picker_id)
            if not pickup.reply.done():
                pickup.reply.set_result(False)
            raise
        else:
            won = not pickup.reply.done()  # done: the intake gave up, it ends the picker
        if not won:
            self.ari.unroute(pickup.picker_id)
            if not pickup.reply.done():
                pickup.reply.set_result(False)
            return
        # Nothing else ran since the check above: this call's inputs wait in the queue.
        self._picker = pickup
        pickup.reply.set_result(True)
        await self._execute(self.flow.picked_up(pickup.picker_id, pickup.endpoint))

    def _end_pickups(self) -> None:
        """The call is over: pickups still queued get False (nothing to pick up)."""
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, _PickUp) and not item.reply.done():
                item.reply.set_result(False)
        if self._picker is not None:
            self.ari.unroute(self._picker.picker_id)

    def _on_hand_back(self) -> list[Command]:
        commands = self.flow.hand_back()
        if not commands and not self.flow.finished:
            self.log.info(
                "call %s: shutting down, %s call left to finish", self.call_id, self.flow.phase
            )
        return commands

    # --- events -------------------------------------------------------------------

    def _on_event(self, event: AriEvent) -> list[Command]:
        channel = event.channel
        if log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "call %s: event %s channel=%s peer=%s dialstatus=%s cause=%s",
                self.call_id,
                event.type,
                channel.id if channel else None,
                event.peer.id if event.peer else None,
                event.dialstatus,
                event.cause,
            )
        if event.type == "Dial" and event.peer is not None and event.peer.id in self.flow.legs:
            return self._on_dial_status(event.peer.id, event.dialstatus or "")
        if channel is None:
            return []
        if self._caller_gone(event):
            self.log.debug("call %s: caller hung up (%s)", self.call_id, event.type)
            return self.flow.caller_gone()
        if channel.id == self.caller.id:
            return []
        if channel.id not in self.flow.legs:
            return []
        leg_id = channel.id
        if event.type == "StasisStart":
            # An originated leg enters the app when its phone answers (ChannelStateChange
            # to Up comes just before, but bridging it then would fail with 422).
            return self.flow.leg_answered(leg_id, self.now())
        if event.type in GONE_EVENTS:
            return self.flow.leg_gone(leg_id, self.now(), event.cause)
        if event.type == "ChannelDtmfReceived":
            return self.flow.leg_digit(leg_id, event.digit or "", self.now())
        return []

    def _on_dial_status(self, leg_id: str, status: str) -> list[Command]:
        if status in ("RINGING", "PROGRESS"):
            return self.flow.leg_ringing(leg_id)
        end = _DIAL_ENDS.get(status)
        if end is not None:
            return self.flow.leg_ended(leg_id, end, self.now())
        return []

    # --- commands -----------------------------------------------------------------

    async def _execute(self, commands: Iterable[Command]) -> None:
        commands = list(commands)
        # New legs go out first, each in its own task: the time to the first INVITE is
        # what callers hear. The ringing indication to the caller follows as soon as the
        # first of them is answered (about a millisecond later).
        legs: list[tuple[str, asyncio.Task[StartOutcome]]] = []
        for command in commands:
            if isinstance(command, StartLeg):
                task = asyncio.ensure_future(self._originate(command))
                self._originates[command.leg_id] = task
                legs.append((command.leg_id, task))
        ring = any(isinstance(c, IndicateRinging) for c in commands)
        if legs and ring:
            await asyncio.wait(
                [task for _, task in legs], timeout=_RING_WAIT, return_when=asyncio.FIRST_COMPLETED
            )
        if ring:
            await self._quietly(self.ari.ring(self.caller.id))
        for leg_id, task in legs:
            follow = self.flow.leg_created(leg_id, await task, self.now())
            if follow:
                await self._execute(follow)
        for command in commands:
            if isinstance(command, StopLeg):
                await self._stop_leg(command.leg_id)
            elif isinstance(command, AskToConfirm):
                await self._ask_to_confirm(command.leg_id)
            elif isinstance(command, Connect):
                await self._connect(command)
            elif isinstance(command, ContinueInDialplan):
                await self._continue(command)
            elif isinstance(command, ContinueInFallback):
                await self._continue_in_fallback()
            elif isinstance(command, HangupCaller):
                await self._quietly(self.ari.hangup(self.caller.id))

    async def _originate(self, command: StartLeg) -> StartOutcome:
        """One request per leg: ``POST /channels`` with ``app`` dials at once.

        Asterisk sends the INVITE before it answers the request. Until the phone answers
        the leg is not in the app, but the app already gets its events (``Dial``,
        ``ChannelStateChange``, ``ChannelDestroyed``); its
        ``StasisStart`` means it answered (and it can only be bridged from then on).
        """
        run = self.flow.legs[command.leg_id]
        # Our own timer stops the leg; the originate timeout is only a safety net.
        timeout = max(1, round(min(run.stop_at - self.now(), self._ring_timeout_cap)) + 1)
        # The call's set-up time ends with its first leg's request.
        sent = self.clock()
        asked = None if self._first_leg_asked else sent
        self._first_leg_asked = True
        try:
            # With the caller as ``originator`` the leg takes over its caller id as it
            # is (and its linkedid and formats). Neither ``callerId`` (Asterisk parses
            # it and shrinks numbers like 030-1234) nor CALLERID() variables (ignored by
            # an originate, seen on Asterisk 22) are needed.
            await self.ari.originate(
                command.endpoint,
                channel_id=command.leg_id,
                app=self.ari.app,
                app_args=LEG_APP_ARG,
                timeout=timeout,
                originator=self.caller.id,
            )
        except AriError as exc:
            # An HTTP error is a refusal: there is no such channel. No answer at all:
            # Asterisk may have dialled all the same, so the flow has it hung up by
            # its id (404 if it never existed) and no phone is left ringing.
            self.log.warning(
                "call %s: leg %s to %s failed: %s",
                self.call_id,
                command.leg_id,
                command.endpoint,
                exc,
            )
            if isinstance(exc, AriHttpError):
                return StartOutcome.REFUSED
            return StartOutcome.UNANSWERED
        finally:
            # Counted once the request is out: nothing runs before it but the clock.
            self.metrics.leg_started()
            if self._on_round_trip is not None:
                self._on_round_trip(self.clock() - sent)
            if asked is not None:
                self.metrics.call_setup(asked - self.arrived)
                self._set_up()
        self.log.debug(
            "call %s: ringing %s (leg %s, t=%.3f)",
            self.call_id,
            command.endpoint,
            command.leg_id,
            self.now(),
        )
        return StartOutcome.CREATED

    async def _stop_leg(self, leg_id: str) -> None:
        task = self._originates.get(leg_id)
        if task is not None and not task.done():
            await asyncio.wait([task])  # never hang up before the originate went out
        if not self.flow.leg_hangup_sent(leg_id):
            return  # gone already, refused, or hung up before
        self.log.debug("call %s: stopping leg %s", self.call_id, leg_id)
        await self._quietly(self.ari.hangup(leg_id))

    async def _ask_to_confirm(self, leg_id: str) -> None:
        """Play the prompt to a confirm leg's party; the flow keeps its deadline. A
        prompt that cannot be played is logged: 1 still takes the call."""
        playback_id = self.ari.new_id(PLAYBACK_PREFIX)
        self._prompts[leg_id] = playback_id
        prompt = f"sound:{self.confirm_prompt}"
        self.log.debug("call %s: leg %s must press 1 (%s)", self.call_id, leg_id, prompt)
        try:
            await self.ari.play(
                leg_id, [prompt, f"sound:{_CONFIRM_PAUSE}", prompt], playback_id=playback_id
            )
        except AriError as exc:
            self.log.warning("call %s: confirm prompt for leg %s: %s", self.call_id, leg_id, exc)

    async def _connect(self, command: Connect) -> None:
        answered = self.clock() - self.arrived
        self.bridge_id = self.ari.new_id(BRIDGE_PREFIX)
        self.ari.route(self.bridge_id, self.queue)
        # A confirmed leg's prompt stops first: Asterisk runs a channel's requests in
        # turn, so its addChannel would wait for the playback to end.
        prompt = self._prompts.pop(command.leg_id, None)
        stop_prompt = [self._quietly(self.ari.stop_playback(prompt))] if prompt else []
        try:
            await asyncio.gather(
                self.ari.answer(self.caller.id),
                self.ari.create_bridge(self.bridge_id, type="mixing"),
                *stop_prompt,
            )
            await self.ari.add_channel(self.bridge_id, [self.caller.id, command.leg_id])
        except AriError as exc:
            self.metrics.call_answered(answered)
            self.log.warning(
                "call %s: could not connect %s: %s", self.call_id, command.endpoint, exc
            )
            await self._execute(self.flow.connect_failed())
            return
        self.metrics.call_answered(answered)
        self.log.debug("call %s: connected with %s", self.call_id, command.endpoint)
        await self._execute(self.flow.connected())

    async def _continue(self, command: ContinueInDialplan) -> None:
        kinds = _FORWARD_KINDS.get((command.result, command.unreachable), ())
        hop = next((h for k in kinds if (h := self.plan.forward_for(k)) is not None), None)
        if hop is not None and self._next_plan is not None:
            await self._forward(hop, self._next_plan(hop, self.plan))
            return
        result = command.result.value
        self.log.debug("call %s: no connection, %s -> %s", self.call_id, result, RESULT_CONTEXT)
        try:
            await self.ari.set_variable(self.caller.id, "CALLROUTER_RESULT", result)
            await self.ari.continue_in_dialplan(
                self.caller.id, RESULT_CONTEXT, self.plan.extension, 1
            )
        except AriError as exc:
            self.log.warning("call %s: could not continue in the dialplan: %s", self.call_id, exc)

    async def _forward(self, hop: ForwardHop, plan: RingPlan) -> None:
        """The plan ended busy or unanswered and forwards: the call goes on with the
        plan ``hop`` leads to, as a new flow (the caller hears ringing throughout)."""
        if not await self._until_stopped(self.flow):
            self.log.debug("call %s: caller gone before %s", self.call_id, hop)
            return
        self.log.debug("call %s: %s", self.call_id, hop)
        self.metrics.call_forwarded(hop.kind)
        self.earlier_flows.append(self.flow)
        self.plan = plan
        self.flow = CallFlow(
            self.call_id,
            plan,
            lambda: self.ari.new_id(LEG_PREFIX),
            confirm_timeout=self.flow.confirm_timeout,
        )
        self._route(list(self.flow.legs))
        self._t0 = self.clock()  # the new plan's times count from now
        for warning in plan.warnings:
            self.log.warning("call %s: %s", self.call_id, warning)
        await self._execute(c for c in self.flow.start(0.0) if not isinstance(c, IndicateRinging))

    async def _until_stopped(self, flow: CallFlow) -> bool:
        """Wait until the legs ``flow`` hung up are gone in Asterisk (at most
        ``_HANDOVER_WAIT``). Events of its legs are taken here; any other input is
        held for the next flow and ends the wait. False: the caller is gone."""
        waiting = set(flow.legs_hung_up())
        try:
            async with asyncio.timeout(_HANDOVER_WAIT):
                while waiting:
                    item = await self.queue.get()
                    if not isinstance(item, AriEvent) or not _about_legs(item, flow):
                        self._held.append(item)
                        return not self._caller_gone(item)
                    if item.type in GONE_EVENTS and item.channel is not None:
                        waiting.discard(item.channel.id)
                        flow.leg_gone(item.channel.id, self.now(), item.cause)
        except TimeoutError:
            self.log.debug("call %s: legs %s not gone in time", self.call_id, sorted(waiting))
        return True

    def _caller_gone(self, item: _Input) -> bool:
        return (
            isinstance(item, AriEvent)
            and item.type in GONE_EVENTS
            and item.channel is not None
            and item.channel.id == self.caller.id
        )

    async def _continue_in_fallback(self) -> None:
        self.log.info("call %s: handed back to the dialplan fallback", self.call_id)
        try:
            await self.ari.continue_in_dialplan(
                self.caller.id, FALLBACK_CONTEXT, self.plan.extension, label=FALLBACK_LABEL
            )
        except AriError as exc:
            self.log.warning("call %s: hand-back failed: %s", self.call_id, exc)

    async def _clean_up(self) -> None:
        """Leave nothing behind: every leg hung up, the bridge destroyed."""
        if self._abandoned:
            self.log.info("call %s: left to the router that took over", self.call_id)
            return
        if self._detached and self.flow.phase is CallPhase.CONNECTED:
            self.log.info(
                "call %s: left connected in Asterisk (bridge %s)", self.call_id, self.bridge_id
            )
            return
        pending = [task for task in self._originates.values() if not task.done()]
        if pending:  # never hang up before the originate went out
            await asyncio.wait(pending)
        # A leg still "requested" here lost its outcome to a cancelled call task: it
        # is hung up by its id too (404 if it was refused).
        for flow in self.flows:
            for leg_id in flow.legs_to_clean_up():
                if flow.leg_hangup_sent(leg_id):
                    await self._quietly(self.ari.hangup(leg_id))
        if self.bridge_id is not None:
            await self._quietly(self.ari.destroy_bridge(self.bridge_id))

    async def _quietly(self, request: Awaitable[object]) -> None:
        try:
            await request
        except AriError as exc:
            self.log.debug("call %s: %s", self.call_id, exc)
