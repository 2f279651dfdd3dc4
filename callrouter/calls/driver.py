"""Carries out one call's CallFlow over ARI: commands become requests, events inputs.

One asyncio task per call.  The task owns an ordered queue that the ARI reader
fills with the events of the call's channels; the leg channel ids are chosen here
and routed *before* the channels are created, so no early event is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from callrouter.ari.client import AriClient
from callrouter.ari.errors import AriError, AriHttpError
from callrouter.ari.events import AriEvent
from callrouter.calls.flow import (
    CallFlow,
    Command,
    Connect,
    ContinueInDialplan,
    HangupCaller,
    IndicateRinging,
    LegEnd,
    StartLeg,
    StopLeg,
)
from callrouter.routing.plan import RingPlan

log = logging.getLogger(__name__)

RESULT_CONTEXT = "callrouter-result"
# Where the shipped dialplan dials the AstDB fallback (dialplan/callrouter.conf).
FALLBACK_CONTEXT = "callrouter"
FALLBACK_LABEL = "fallback"
LEG_PREFIX = "cr-leg"
BRIDGE_PREFIX = "cr-br"

# Dial event statuses (app_dial's DIALSTATUS vocabulary) and what they mean for a leg.
_DIAL_ENDS = {
    "BUSY": LegEnd.BUSY,
    "CONGESTION": LegEnd.FAILED,
    "CHANUNAVAIL": LegEnd.FAILED,
    "NOANSWER": LegEnd.FAILED,
    "CANCEL": LegEnd.FAILED,
    "INVALIDARGS": LegEnd.FAILED,
}
_CAUSE_BUSY = 17  # AST_CAUSE_USER_BUSY
_DIAL_ATTEMPTS = 20
_CALLER_GONE = frozenset({"StasisEnd", "ChannelDestroyed", "ChannelHangupRequest"})
_LEG_GONE = frozenset({"StasisEnd", "ChannelDestroyed"})


@dataclass(frozen=True, slots=True)
class _HandBack:
    """Router shutting down: stop ringing, give the caller to the dialplan fallback."""


@dataclass(frozen=True, slots=True)
class _Vanished:
    """After a reconnect, these channels were no longer in Asterisk's list."""

    channel_ids: frozenset[str]


class Caller(Protocol):
    @property
    def id(self) -> str: ...
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
    ) -> None:
        self.ari = ari
        self.caller = caller
        self.plan = plan
        self.clock = clock
        self.call_id = caller.id
        self.flow = CallFlow(caller.id, plan, lambda: ari.new_id(LEG_PREFIX))
        self.queue: asyncio.Queue[AriEvent | _HandBack | _Vanished] = asyncio.Queue()
        self.bridge_id: str | None = None
        self._created: dict[str, asyncio.Task[bool]] = {}  # leg id -> create+dial
        self._gone: set[str] = set()  # leg channels known to be destroyed
        self._hung_up: set[str] = set()  # leg channels we sent a hang-up
        self._causes: dict[str, int] = {}  # leg id -> hang-up cause seen
        self._ring_timeout_cap = ring_timeout_cap
        self._t0 = 0.0

    def now(self) -> float:
        return self.clock() - self._t0

    async def run(self) -> None:
        ids = [self.caller.id, *self.flow.legs]
        for channel_id in ids:
            self.ari.route(channel_id, self.queue)
        self._t0 = self.clock()
        log.info("call %s: %s (%s) -> %d leg(s), status %s", self.call_id,
                 self.plan.extension, self.plan.user or "?", len(self.plan.legs),
                 self.plan.status.value)
        for warning in self.plan.warnings:
            log.warning("call %s: %s", self.call_id, warning)
        try:
            await self._execute(self.flow.start(0.0))
            while not self.flow.finished:
                deadline = self.flow.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - self.now())
                try:
                    event = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    await self._execute(self.flow.tick(self.now()))
                else:
                    if isinstance(event, _HandBack):
                        await self._hand_back_now()
                    elif isinstance(event, _Vanished):
                        await self._execute(self._on_vanished(event.channel_ids))
                    else:
                        await self._execute(self._on_event(event))
            log.info("call %s: finished, %s", self.call_id, self.flow.result)
        finally:
            await self._clean_up()
            for channel_id in ids:
                self.ari.unroute(channel_id)
            if self.bridge_id is not None:
                self.ari.unroute(self.bridge_id)

    # --- from the router ----------------------------------------------------------

    def channel_ids(self) -> set[str]:
        """The channels this call owns in Asterisk."""
        return {self.caller.id, *self._created}

    def resync(self, alive: set[str]) -> None:
        """After an ARI reconnect: channels that went away while we were deaf."""
        gone = frozenset(cid for cid in self.channel_ids() if cid not in alive)
        if gone:
            self.queue.put_nowait(_Vanished(gone))

    async def hand_back(self) -> None:
        """Ask the call to hand its caller back to the dialplan (shutdown)."""
        self.queue.put_nowait(_HandBack())

    def _on_vanished(self, gone: frozenset[str]) -> list[Command]:
        self._gone |= gone - {self.caller.id}
        if self.caller.id in gone:
            return self.flow.caller_gone()
        commands: list[Command] = []
        for leg_id in gone:
            commands += self.flow.leg_ended(leg_id, LegEnd.FAILED, self.now())
        return commands

    async def _hand_back_now(self) -> None:
        if self.flow.winner is not None:
            return  # connected calls are left to finish
        stops = [c for c in self.flow.caller_gone() if isinstance(c, StopLeg)]
        await self._execute(stops)
        log.info("call %s: handed back to the dialplan fallback", self.call_id)
        try:
            await self.ari.continue_in_dialplan(
                self.caller.id, FALLBACK_CONTEXT, self.plan.extension, label=FALLBACK_LABEL
            )
        except AriError as exc:
            log.warning("call %s: hand-back failed: %s", self.call_id, exc)

    # --- events -------------------------------------------------------------------

    def _on_event(self, event: AriEvent) -> list[Command]:
        channel = event.channel
        log.debug("call %s: event %s channel=%s peer=%s dialstatus=%s cause=%s", self.call_id,
                  event.type, channel.id if channel else None,
                  event.peer.id if event.peer else None, event.dialstatus, event.cause)
        if event.type == "Dial" and event.peer is not None and event.peer.id in self.flow.legs:
            return self._on_dial_status(event.peer.id, event.dialstatus or "")
        if channel is None:
            return []
        if channel.id == self.caller.id:
            if event.type in _CALLER_GONE:
                log.info("call %s: caller hung up (%s)", self.call_id, event.type)
                return self.flow.caller_gone()
            return []
        if channel.id not in self.flow.legs:
            return []
        leg_id = channel.id
        if event.type == "ChannelStateChange":
            if channel.state == "Ringing":
                return self.flow.leg_ringing(leg_id)
            if channel.state == "Up":
                return self.flow.leg_answered(leg_id)
        elif event.type == "ChannelHangupRequest":
            # StasisEnd, which follows, carries no cause: remember it from here.
            if event.cause is not None:
                self._causes[leg_id] = event.cause
        elif event.type in _LEG_GONE:
            self._gone.add(leg_id)
            cause = event.cause if event.cause is not None else self._causes.get(leg_id)
            end = LegEnd.BUSY if cause == _CAUSE_BUSY else LegEnd.FAILED
            return self.flow.leg_ended(leg_id, end, self.now())
        return []

    def _on_dial_status(self, leg_id: str, status: str) -> list[Command]:
        if status == "ANSWER":
            return self.flow.leg_answered(leg_id)
        if status in ("RINGING", "PROGRESS"):
            return self.flow.leg_ringing(leg_id)
        end = _DIAL_ENDS.get(status)
        if end is not None:
            return self.flow.leg_ended(leg_id, end, self.now())
        return []

    # --- commands -----------------------------------------------------------------

    async def _execute(self, commands: Iterable[Command]) -> None:
        commands = list(commands)
        # Ringing indication and new legs go out together: they do not depend on each
        # other, and the time to the first INVITE is what callers hear.
        first = [c for c in commands if isinstance(c, IndicateRinging | StartLeg)]
        if first:
            await asyncio.gather(*(self._start(c) for c in first))
        for command in commands:
            if isinstance(command, StopLeg):
                await self._stop_leg(command.leg_id)
            elif isinstance(command, Connect):
                await self._connect(command)
            elif isinstance(command, ContinueInDialplan):
                await self._continue(command)
            elif isinstance(command, HangupCaller):
                await self._quietly(self.ari.hangup(self.caller.id))

    async def _start(self, command: IndicateRinging | StartLeg) -> None:
        if isinstance(command, IndicateRinging):
            await self._quietly(self.ari.ring(self.caller.id))
            return
        task = asyncio.ensure_future(self._create_and_dial(command))
        self._created[command.leg_id] = task
        if not await task:
            await self._execute(self.flow.leg_ended(command.leg_id, LegEnd.FAILED, self.now()))

    async def _create_and_dial(self, command: StartLeg) -> bool:
        run = self.flow.legs[command.leg_id]
        timeout = max(1, round(min(run.stop_at - self.now(), self._ring_timeout_cap)) + 1)
        variables: dict[str, str] = {}
        if self.caller.caller_number:
            variables["CALLERID(num)"] = self.caller.caller_number
        if self.caller.caller_name:
            variables["CALLERID(name)"] = self.caller.caller_name
        try:
            await self.ari.create_channel(
                command.endpoint,
                channel_id=command.leg_id,
                originator=self.caller.id,
                variables=variables or None,
            )
        except AriError as exc:
            log.warning("call %s: leg %s to %s failed: %s", self.call_id, command.leg_id,
                        command.endpoint, exc)
            self._gone.add(command.leg_id)
            return False
        try:
            # Our own timer stops the leg; the dial timeout is only a safety net.
            for attempt in range(_DIAL_ATTEMPTS):
                try:
                    await self.ari.dial(command.leg_id, caller=self.caller.id, timeout=timeout)
                    break
                except AriError as exc:
                    # The new channel enters Stasis asynchronously; under load the dial
                    # request can overtake it (409 "Channel not in Stasis application").
                    if exc_status(exc) != 409 or attempt == _DIAL_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.005 * (attempt + 1))
        except AriError as exc:
            log.warning("call %s: dialling leg %s to %s failed: %s", self.call_id,
                        command.leg_id, command.endpoint, exc)
            self._hung_up.add(command.leg_id)
            await self._quietly(self.ari.hangup(command.leg_id))
            return False
        log.info("call %s: ringing %s (leg %s, t=%.3f)", self.call_id, command.endpoint,
                 command.leg_id, self.now())
        return True

    async def _stop_leg(self, leg_id: str) -> None:
        task = self._created.get(leg_id)
        if task is not None and not task.done():
            await asyncio.wait([task])  # never hang up before the create went out
        if leg_id in self._gone or leg_id in self._hung_up:
            return
        log.info("call %s: stopping leg %s", self.call_id, leg_id)
        self._hung_up.add(leg_id)
        await self._quietly(self.ari.hangup(leg_id))

    async def _connect(self, command: Connect) -> None:
        self.bridge_id = self.ari.new_id(BRIDGE_PREFIX)
        self.ari.route(self.bridge_id, self.queue)
        try:
            await asyncio.gather(
                self.ari.answer(self.caller.id),
                self.ari.create_bridge(self.bridge_id, type="mixing"),
            )
            await self.ari.add_channel(self.bridge_id, [self.caller.id, command.leg_id])
            await asyncio.gather(
                self.ari.set_variable(self.caller.id, "CALLROUTER_RESULT", "ANSWERED"),
                self.ari.set_variable(self.caller.id, "CALLROUTER_ANSWERED_BY", command.endpoint),
            )
        except AriError as exc:
            log.warning("call %s: could not connect %s: %s", self.call_id, command.endpoint, exc)
            await self._execute(self.flow.caller_gone())
            await self._quietly(self.ari.hangup(self.caller.id))
            return
        log.info("call %s: connected with %s", self.call_id, command.endpoint)
        await self._execute(self.flow.connected())

    async def _continue(self, command: ContinueInDialplan) -> None:
        result = command.result.value
        log.info("call %s: no connection, %s -> %s", self.call_id, result, RESULT_CONTEXT)
        try:
            await self.ari.set_variable(self.caller.id, "CALLROUTER_RESULT", result)
            await self.ari.continue_in_dialplan(
                self.caller.id, RESULT_CONTEXT, self.plan.extension, 1
            )
        except AriError as exc:
            log.warning("call %s: could not continue in the dialplan: %s", self.call_id, exc)

    async def _clean_up(self) -> None:
        """Leave nothing behind: every leg hung up, the bridge destroyed."""
        for task in self._created.values():
            if not task.done():
                await asyncio.wait([task])
        leftover = [
            leg_id for leg_id, task in self._created.items()
            if leg_id not in self._gone and leg_id not in self._hung_up
            and not task.cancelled() and task.exception() is None and task.result()
        ]
        for leg_id in leftover:
            await self._quietly(self.ari.hangup(leg_id))
        if self.bridge_id is not None:
            await self._quietly(self.ari.destroy_bridge(self.bridge_id))

    async def _quietly(self, request: Awaitable[object]) -> None:
        try:
            await request
        except AriError as exc:
            log.debug("call %s: %s", self.call_id, exc)


def exc_status(exc: AriError) -> int | None:
    return exc.status if isinstance(exc, AriHttpError) else None
