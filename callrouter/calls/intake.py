"""Call intake: every caller that enters the Stasis app becomes one CallDriver task.

``CallIntake`` owns the registry of running calls (by the caller's channel id),
resolves each new call's plan from the live directory at the moment it arrives,
reconciles with Asterisk's own lists after every ARI (re)connect, and at shutdown
lets ringing calls finish within a grace period before handing the rest back to
the dialplan.  It counts each call as it ends (metrics: result, hand-back, how its
legs ended); the driver counts what happens while it runs (legs asked for, set-up and
answer times).

Overload (``calls/overload.py``): the intake keeps the signals (calls waiting for their
first leg, the event loop's latest lag, the ARI round trip) and, while the router is
overloaded, sends a new caller straight to the dialplan's AstDB fallback with one
request instead of routing it.

Pickup (``calls/pickup.py``): a channel that enters the app with ``pickup`` as its
second argument is no call but a phone picking one up; the intake checks who may,
then asks the calls ringing for that extension, oldest first, to be picked up by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from callrouter.ari.client import AriClient
from callrouter.ari.errors import AriError
from callrouter.ari.events import AriEvent, Channel
from callrouter.calls.driver import (
    BRIDGE_PREFIX,
    FALLBACK_CONTEXT,
    FALLBACK_LABEL,
    GONE_EVENTS,
    LEG_PREFIX,
    CallDriver,
)
from callrouter.calls.flow import CallFlow, CallResult, LegChannel
from callrouter.calls.overload import (
    LatencyAverage,
    LoadSignals,
    OverloadLimits,
    OverloadReason,
    OverloadState,
)
from callrouter.calls.pickup import (
    PICKUP_ARG,
    PICKUP_RESULT_CONTEXT,
    PickupResult,
    picker_at,
    pickup_refusal,
)
from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.endpoint import caller_endpoint
from callrouter.domain.identifiers import is_extension
from callrouter.metrics import Metrics
from callrouter.routing.plan import CallContext, ForwardHop, LegSource, RingPlan
from callrouter.routing.resolver import PresenceView, resolve_forward, resolve_plan
from callrouter.rules.model import RingRules
from callrouter.tasks import TaskSet

log = logging.getLogger(__name__)

_HAND_BACK_TIME = 2.0  # seconds for the calls to stop ringing and leave the app
# A safety net: a call's task answers a pickup within one of its own steps.
_PICKUP_WAIT = 10.0


class CallIntake:
    def __init__(
        self,
        ari: AriClient,
        routing_state: Callable[[], tuple[DirectorySnapshot, RingRules]],
        presence: PresenceView | None = None,
        *,
        metrics: Metrics | None = None,
        overload: OverloadLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        local_time: Callable[[], datetime] | None = None,
        node: str | None = None,
    ) -> None:
        self.ari = ari
        self.node = node  # phones of other nodes are not dialled from here
        self.routing_state = routing_state  # the snapshot and rules in force now
        self.presence = presence
        self.metrics = metrics if metrics is not None else Metrics()
        self.calls: dict[str, CallDriver] = {}  # by caller channel id
        self.metrics.track_calls(lambda: len(self.calls))
        self.tasks = TaskSet("calls")
        self.accepting = True
        # The overload signals, each O(1) to read: calls not set up yet (by caller
        # channel id), the event loop's latest lag, the smoothed ARI round trip.
        self.clock = clock
        # The wall-clock time that schedules (when:/unless:) are read in.
        self.local_time = local_time or (lambda: datetime.now().astimezone())
        self.overload = OverloadState(overload or OverloadLimits(), clock)
        self._waiting: set[str] = set()
        self._adopted: set[str] = set()  # bridges of conversations another router connected
        self._picking: set[str] = set()  # pickers' channels being decided (not yet a call's)
        self.loop_lag = 0.0
        self._ari_latency = LatencyAverage()
        self.metrics.track_overload(
            lambda: self.overload.overloaded,
            lambda: len(self._waiting),
            lambda: self._ari_latency.value,
        )

    # --- from ARI -----------------------------------------------------------------

    async def on_event(self, event: AriEvent) -> None:
        """An event no running call owns: a new caller's ``StasisStart`` starts a call."""
        if event.type != "StasisStart" or event.channel is None:
            return
        channel = event.channel
        if channel.id.startswith(LEG_PREFIX) or channel.id in self.calls:
            return
        extension = event.args[0] if event.args else (channel.exten or "")
        kind = event.args[1] if len(event.args) > 1 else None
        if kind == PICKUP_ARG:
            self.pick_up(channel, extension)
        else:
            self.take_call(channel, extension, kind)

    def call_context(
        self, snapshot: DirectorySnapshot, channel: Channel, kind: str | None
    ) -> CallContext:
        """Internal when the dialplan says so (``Stasis(callrouter,EXTEN,internal)``),
        else when the caller's endpoint is a phone of the directory; and the local time."""
        if kind in ("internal", "external"):
            internal = kind == "internal"
        else:
            if kind is not None:
                log.warning(
                    "call %s: Stasis argument %r is neither internal nor external",
                    channel.id,
                    kind[:40],
                )
            endpoint = caller_endpoint(channel.name)
            internal = endpoint is not None and snapshot.is_phone(endpoint)
        return CallContext(internal=internal, at=self.local_time())

    def take_call(self, channel: Channel, extension: str, kind: str | None = None) -> None:
        if not self.accepting:
            # Shutting down: a caller arriving now goes to the fallback at once, rather
            # than waiting in the app for a router that is leaving.
            self.metrics.call_finished(CallResult.HANDED_BACK.value.lower())
            self.metrics.call_handed_back("shutdown")
            log.info(
                "call %s: %s handed back to the dialplan fallback (shutting down)",
                channel.id,
                extension,
                extra={"call_id": channel.id},
            )
            self.tasks.spawn(self._send_hand_back(channel.id, extension), f"hand-back {channel.id}")
            return
        reason = self._overloaded()
        if reason is not None:
            self._hand_back(channel.id, extension, reason)
            return
        snapshot, rules = self.routing_state()
        caller = caller_endpoint(channel.name)
        context = self.call_context(snapshot, channel, kind)
        plan = resolve_plan(
            snapshot, rules, extension, caller, presence=self.presence, call=context, node=self.node
        )

        def next_plan(hop: ForwardHop, previous: RingPlan) -> RingPlan:
            # The directory, rules and presence of the moment the call is forwarded.
            snapshot, rules = self.routing_state()
            return resolve_forward(
                snapshot, rules, hop, previous.forwarded, caller, self.presence, context, self.node
            )

        call_id = channel.id
        driver = CallDriver(
            self.ari,
            channel,
            plan,
            metrics=self.metrics,
            on_set_up=lambda: self._waiting.discard(call_id),
            on_round_trip=self._round_trip,
            next_plan=next_plan,
            confirm_prompt=rules.defaults.confirm_prompt,
            confirm_timeout=rules.defaults.confirm_timeout,
        )
        self.calls[call_id] = driver
        self._waiting.add(call_id)
        task = self.tasks.spawn(driver.run(), f"call {call_id}")
        task.add_done_callback(lambda t: self._ended(call_id, driver, t))

    def _ended(self, channel_id: str, driver: CallDriver, task: asyncio.Task[None]) -> None:
        self.calls.pop(channel_id, None)
        self._waiting.discard(channel_id)  # ended before its first leg's request
        if not task.cancelled() and task.exception() is not None:
            self.metrics.call_error()
        # None: the task was cancelled first (a connected call left up at shutdown).
        result = driver.flow.result
        if result is not None:
            self.metrics.call_finished(result.value.lower())
            if result is CallResult.HANDED_BACK:
                self.metrics.call_handed_back("shutdown")  # an overloaded one never has a driver
        for flow in driver.flows:
            self.metrics.legs_ended(leg_outcomes(flow))

    # --- pickup ---------------------------------------------------------------------

    def pick_up(self, channel: Channel, extension: str) -> None:
        """A phone dialled the pickup code for ``extension`` (its channel waits in the
        app): pick up a call ringing for it now, or send the picker to the dialplan."""
        self._picking.add(channel.id)
        task = self.tasks.spawn(self._pick_up(channel, extension), f"pickup {channel.id}")
        task.add_done_callback(lambda _: self._picking.discard(channel.id))

    async def _pick_up(self, channel: Channel, extension: str) -> None:
        result = await self._try_pick_up(channel, extension)
        self.metrics.pickup(result.value.lower())
        if result is PickupResult.PICKED_UP:
            return
        try:  # never leave the picker in the app
            await self.ari.set_variable(channel.id, "CALLROUTER_RESULT", result.value)
            await self.ari.continue_in_dialplan(channel.id, PICKUP_RESULT_CONTEXT, "s", 1)
        except AriError as exc:  # it hung up (404), or Asterisk is gone
            log.info(
                "pickup %s: could not continue in the dialplan: %s",
                channel.id,
                exc,
                extra={"call_id": channel.id},
            )

    async def _try_pick_up(self, channel: Channel, extension: str) -> PickupResult:
        snapshot, rules = self.routing_state()
        endpoint = caller_endpoint(channel.name)
        shown = extension if is_extension(extension) else repr(extension[:40])
        picker = picker_at(snapshot, endpoint)
        refusal = pickup_refusal(snapshot, rules, extension, picker)
        if refusal is not None or picker is None:
            log.info(
                "pickup %s: %s may not pick up %s: %s",
                channel.id,
                endpoint or channel.name[:80],
                shown,
                refusal,
                extra={"call_id": channel.id},
            )
            return PickupResult.REFUSED
        ringing = sorted(
            (
                d
                for d in self.calls.values()
                if d.ringing_for(extension) and caller_endpoint(d.caller.name) != endpoint
            ),
            key=lambda d: d.arrived,
        )
        for driver in ringing:
            try:
                async with asyncio.timeout(_PICKUP_WAIT):
                    won = await driver.pick_up(channel.id, picker.endpoint, picker.user)
            except TimeoutError:
                won = False
            if won:
                return PickupResult.PICKED_UP
        log.info(
            "pickup %s: nothing rings for %s (%s asked)",
            channel.id,
            shown,
            picker.endpoint,
            extra={"call_id": channel.id},
        )
        return PickupResult.NOCALL

    # --- overload -------------------------------------------------------------------

    def signals(self) -> LoadSignals:
        return LoadSignals(len(self._waiting), self.loop_lag, self._ari_latency.value)

    def loop_lag_measured(self, seconds: float) -> None:
        """From the event-loop lag probe (``metrics.watch_loop_lag``), every 0.25 s: the
        state follows the load between calls too (an overload ends on time)."""
        self.loop_lag = seconds
        self._overloaded()

    def _round_trip(self, seconds: float) -> None:
        self._ari_latency.add(seconds, self.clock())

    def _overloaded(self) -> OverloadReason | None:
        was = self.overload.reason
        reason = self.overload.update(self.signals())
        if reason is not None and was is None:
            self.metrics.overload_entered(reason)
        return reason

    def _hand_back(self, channel_id: str, extension: str, reason: OverloadReason) -> None:
        """Overloaded: the caller goes to the dialplan's AstDB fallback at once (the
        target of the shutdown hand-back), in one request; no plan, no driver."""
        self.overload.count_hand_back()
        self.metrics.call_finished(CallResult.HANDED_BACK.value.lower())
        self.metrics.call_handed_back("overload")
        log.info(
            "call %s: %s handed back to the dialplan fallback (overload: %s)",
            channel_id,
            extension,
            reason,
            extra={"call_id": channel_id},
        )
        self.tasks.spawn(self._send_hand_back(channel_id, extension), f"hand-back {channel_id}")

    async def _send_hand_back(self, channel_id: str, extension: str) -> None:
        sent = self.clock()
        try:
            await self.ari.continue_in_dialplan(
                channel_id, FALLBACK_CONTEXT, extension, label=FALLBACK_LABEL
            )
        except AriError as exc:
            log.warning(
                "call %s: hand-back failed: %s", channel_id, exc, extra={"call_id": channel_id}
            )
        finally:
            # Round trips go on while every new call is handed back: the latency
            # signal follows ARI down again.
            self._round_trip(self.clock() - sent)

    async def on_connected(self) -> None:
        """After every (re)connect: Asterisk's lists are the truth, not our memory."""
        try:
            channels, bridges = await self.ari.resync()
        except AriError as exc:
            log.warning("resync after ARI connect failed: %s", exc)
            return
        alive = {c.id for c in channels}
        # A conversation left connected by an earlier router (at its shutdown, or when
        # it died) goes on in its bridge; this router ends it when one side hangs up.
        owned_bridges = {d.bridge_id for d in self.calls.values() if d.bridge_id}
        talking: set[str] = set()
        for bridge in bridges:
            if bridge.id.startswith(BRIDGE_PREFIX) and len(bridge.channels) >= 2:
                talking |= set(bridge.channels)
                if bridge.id not in owned_bridges and bridge.id not in self._adopted:
                    self._adopt(bridge.id, frozenset(bridge.channels))
        owned: set[str] = set(talking)
        for driver in list(self.calls.values()):
            driver.resync(alive)
            owned |= driver.channel_ids()
        for channel in channels:
            if channel.id in owned or channel.id in self._picking:
                continue
            if channel.id.startswith(LEG_PREFIX):
                log.info("resync: hanging up orphaned leg %s", channel.id)
                await self.ari.hangup(channel.id)
                continue
            app, _, args = (channel.app_data or "").partition(",")
            if channel.app_name == "Stasis" and app == self.ari.app:
                # A caller waiting in our app that no task owns (the router restarted).
                parts = args.split(",") if args else []
                extension = parts[0] if parts else channel.exten or ""
                kind = parts[1] if len(parts) > 1 else None
                if kind == PICKUP_ARG:  # a phone picking up, not a call: try again
                    log.info("resync: pickup %s waiting, trying it again", channel.id)
                    self.pick_up(channel, extension)
                    continue
                log.info("resync: taking over waiting call %s", channel.id)
                self.take_call(channel, extension, kind)
        for bridge in bridges:
            if (
                bridge.id.startswith(BRIDGE_PREFIX)
                and bridge.id not in owned_bridges
                and len(bridge.channels) < 2
            ):
                log.info("resync: destroying orphaned bridge %s", bridge.id)
                await self.ari.destroy_bridge(bridge.id)

    def _adopt(self, bridge_id: str, channel_ids: frozenset[str]) -> None:
        """Watch a conversation another router connected: when one side leaves, hang
        up the other and destroy the bridge (as the call's own driver would have)."""
        queue: asyncio.Queue[AriEvent] = asyncio.Queue()
        for channel_id in channel_ids:
            if not self.ari.is_routed(channel_id):
                self.ari.route(channel_id, queue)
        self._adopted.add(bridge_id)
        log.info("resync: watching conversation %s (%s)", bridge_id, ", ".join(sorted(channel_ids)))
        self.tasks.spawn(self._watch(bridge_id, channel_ids, queue), f"conversation {bridge_id}")

    async def _watch(
        self, bridge_id: str, channel_ids: frozenset[str], queue: asyncio.Queue[AriEvent]
    ) -> None:
        try:
            while True:
                event = await queue.get()
                if event.type in GONE_EVENTS and event.channel is not None:
                    break
            log.info("conversation %s: %s left; ending it", bridge_id, event.channel.id)
            for other in channel_ids - {event.channel.id}:
                await self.ari.hangup(other)
            await self.ari.destroy_bridge(bridge_id)
        except AriError as exc:
            log.warning("conversation %s: could not end it: %s", bridge_id, exc)
        finally:
            self._adopted.discard(bridge_id)
            for channel_id in channel_ids:
                self.ari.unroute(channel_id)

    # --- standby ------------------------------------------------------------------

    async def abandon(self) -> None:
        """This router became standby: stop every call's task at once and leave its
        channels as they are; the active router's resync takes them over (a waiting
        caller is routed again, our legs are hung up, a connected call stays)."""
        drivers = list(self.calls.values())
        for driver in drivers:
            driver.abandon()
        if drivers:
            log.warning("standby: %d call(s) left to the active router", len(drivers))
        await self.tasks.close()

    # --- shutdown -----------------------------------------------------------------

    async def stop(self, grace: float, *, force: asyncio.Event | None = None) -> None:
        """Stop taking calls, let ringing calls finish within ``grace`` seconds (less
        once ``force`` is set: a second SIGTERM), then hand the rest back to the
        dialplan's fallback; connected calls go on in Asterisk without us."""
        self.accepting = False
        if not len(self.tasks):
            return
        log.info("shutting down: waiting up to %.0f s for %d call(s)", grace, len(self.tasks))
        await self.tasks.wait(grace, until=force)
        for driver in list(self.calls.values()):
            driver.detach()  # connected calls stay up in Asterisk
            await driver.hand_back()  # ringing ones go to the fallback
        # Each call's own task sends its hand-back: a moment for that, then cancel.
        await self.tasks.close(grace=_HAND_BACK_TIME)


def leg_outcomes(flow: CallFlow) -> list[str]:
    """How each leg that was asked for ended, as metrics name it: the winner
    "answered" (whatever ended it later), the rest by their end; a leg still ringing
    when its call's task was cancelled counts as "cancelled"."""
    outcomes = []
    for run in flow.legs.values():
        if run.channel is LegChannel.NONE or run.leg.source is LegSource.PICKUP:
            continue  # never asked for (a picker's channel was the phone's own call)
        if run is flow.winner:
            outcomes.append("answered")
        else:
            outcomes.append("cancelled" if run.end is None else run.end.value)
    return outcomes
