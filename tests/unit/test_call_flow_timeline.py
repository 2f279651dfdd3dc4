"""Whole calls through CallFlow on a fake time: no event loop, no clock.

``Line`` carries out the flow's commands as the driver does (new legs first, then
their outcomes, then the rest; a hang-up only when ``leg_hangup_sent`` allows it)
and records what a driver would have sent Asterisk, with the time it did.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from callrouter.calls.flow import (
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
from callrouter.routing.plan import Leg, LegSource, PlanStatus, RingPlan

Step = tuple[float, str, str]  # (time, what, endpoint or "")


class Line:
    def __init__(self, *legs: tuple[str, float, float], bridge_fails: bool = False) -> None:
        plan = RingPlan(
            "201",
            "Anna",
            None,
            PlanStatus.OK,
            tuple(Leg(e, a, b, LegSource.FOLLOWME) for e, a, b in legs),
        )
        counter = itertools.count(1)
        self.flow = CallFlow("call-1", plan, lambda: f"leg-{next(counter)}")
        self.now = 0.0
        self.sent: list[Step] = []
        self.outcomes: dict[str, StartOutcome] = {}  # endpoint -> answer to its request
        self.bridge_fails = bridge_fails

    def leg(self, endpoint: str) -> str:
        return next(i for i, r in self.flow.legs.items() if r.leg.endpoint == endpoint)

    def start(self) -> None:
        self.carry_out(self.flow.start(self.now))

    def wait_until(self, until: float) -> None:
        """Let time pass: the flow's deadlines on the way are its timer inputs."""
        while (deadline := self.flow.next_deadline()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            self.carry_out(self.flow.tick(self.now))
        self.now = until

    def carry_out(self, commands: Iterable[Command]) -> None:
        commands = list(commands)
        starts = [c for c in commands if isinstance(c, StartLeg)]
        for start in starts:
            self.sent.append((self.now, "originate", start.endpoint))
        for start in starts:
            outcome = self.outcomes.get(start.endpoint, StartOutcome.CREATED)
            self.carry_out(self.flow.leg_created(start.leg_id, outcome, self.now))
        for command in commands:
            if isinstance(command, IndicateRinging):
                self.sent.append((self.now, "ring", ""))
            elif isinstance(command, StopLeg):
                if self.flow.leg_hangup_sent(command.leg_id):
                    endpoint = self.flow.legs[command.leg_id].leg.endpoint
                    self.sent.append((self.now, "hang up", endpoint))
            elif isinstance(command, Connect):
                self.sent.append((self.now, "bridge", command.endpoint))
                if self.bridge_fails:
                    self.carry_out(self.flow.connect_failed())
                else:
                    self.carry_out(self.flow.connected())
            elif isinstance(command, ContinueInDialplan):
                self.sent.append((self.now, "continue", command.result.value))
            elif isinstance(command, ContinueInFallback):
                self.sent.append((self.now, "fallback", ""))
            elif isinstance(command, HangupCaller):
                self.sent.append((self.now, "hang up caller", ""))

    def clean_up(self) -> list[str]:
        """What the driver's clean-up would still hang up."""
        return [i for i in self.flow.legs_to_clean_up() if self.flow.leg_hangup_sent(i)]


def test_a_whole_call_rings_in_steps_skips_dead_air_and_is_answered() -> None:
    line = Line(("PJSIP/a", 0, 15), ("PJSIP/b", 0, 15), ("PJSIP/c", 15, 40), ("PJSIP/d", 40, 60))
    line.start()
    a, b, c = line.leg("PJSIP/a"), line.leg("PJSIP/b"), line.leg("PJSIP/c")
    line.wait_until(0.4)
    line.carry_out(line.flow.leg_ringing(a) + line.flow.leg_ringing(b))
    line.wait_until(2)
    line.carry_out(line.flow.leg_gone(b, line.now, 17))  # busy, a rings on
    line.wait_until(20)  # a's time is up at 15, c starts as planned
    line.carry_out(line.flow.leg_gone(c, line.now, 34))  # c unreachable at 20
    d = line.leg("PJSIP/d")  # nothing rings: d moves from 40 to 20
    assert (line.flow.legs[d].start_at, line.flow.legs[d].stop_at) == (20, 40)
    line.wait_until(25)
    line.carry_out(line.flow.leg_answered(d))
    line.wait_until(600)  # no deadline while connected
    assert line.flow.phase is CallPhase.CONNECTED
    line.carry_out(line.flow.leg_gone(d, line.now, 16))
    assert line.sent == [
        (0, "originate", "PJSIP/a"),
        (0, "originate", "PJSIP/b"),
        (0, "ring", ""),
        (15, "originate", "PJSIP/c"),
        (15, "hang up", "PJSIP/a"),
        (20, "originate", "PJSIP/d"),
        (25, "bridge", "PJSIP/d"),
        (600, "hang up caller", ""),
    ]
    assert line.flow.result is CallResult.ANSWERED
    assert line.flow.legs[b].end is LegEnd.BUSY and line.flow.legs[a].end is LegEnd.TIMEOUT
    assert line.clean_up() == []


def test_a_whole_call_nobody_answers_and_the_unanswered_request_is_hung_up() -> None:
    line = Line(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10), ("PJSIP/c", 5, 12))
    line.outcomes = {"PJSIP/b": StartOutcome.UNANSWERED, "PJSIP/c": StartOutcome.REFUSED}
    line.start()
    line.wait_until(30)
    assert line.sent == [
        (0, "originate", "PJSIP/a"),
        (0, "originate", "PJSIP/b"),
        (0, "hang up", "PJSIP/b"),  # it may exist: by its id
        (0, "ring", ""),
        (5, "originate", "PJSIP/c"),  # refused: nothing to hang up
        (10, "hang up", "PJSIP/a"),
        (10, "continue", "NOANSWER"),
    ]
    assert line.flow.result is CallResult.NOANSWER and line.clean_up() == []


def test_a_whole_call_handed_back_while_it_rings() -> None:
    line = Line(("PJSIP/a", 0, 20), ("PJSIP/b", 10, 30), ("PJSIP/c", 25, 40))
    line.start()
    line.wait_until(12)
    line.carry_out(line.flow.hand_back())
    a, b = line.leg("PJSIP/a"), line.leg("PJSIP/b")
    line.carry_out(line.flow.leg_answered(a))  # too late: ignored
    line.carry_out(line.flow.leg_gone(b, line.now, 16))
    line.wait_until(60)
    assert line.sent == [
        (0, "originate", "PJSIP/a"),
        (0, "ring", ""),
        (10, "originate", "PJSIP/b"),
        (12, "hang up", "PJSIP/a"),
        (12, "hang up", "PJSIP/b"),
        (12, "fallback", ""),
    ]
    assert line.flow.result is CallResult.HANDED_BACK
    assert line.flow.leg_channel_ids() == [a]  # hung up, not yet seen gone
    assert line.clean_up() == []


def test_a_whole_call_whose_bridge_fails_is_failed_not_answered() -> None:
    line = Line(("PJSIP/a", 0, 20), ("PJSIP/b", 0, 20), bridge_fails=True)
    line.start()
    line.wait_until(3)
    line.carry_out(line.flow.leg_answered(line.leg("PJSIP/b")))
    line.wait_until(60)
    assert line.sent == [
        (0, "originate", "PJSIP/a"),
        (0, "originate", "PJSIP/b"),
        (0, "ring", ""),
        (3, "hang up", "PJSIP/a"),
        (3, "bridge", "PJSIP/b"),
        (3, "hang up", "PJSIP/b"),
        (3, "hang up caller", ""),
    ]
    assert line.flow.result is CallResult.FAILED
    assert line.flow.hand_back() == [] and line.clean_up() == []


def test_the_same_plan_gives_the_same_timeline_however_time_is_sampled() -> None:
    def timeline(step: float) -> list[Step]:
        line = Line(("PJSIP/a", 0, 7.5), ("PJSIP/b", 5, 12), ("PJSIP/c", 12, 18))
        line.start()
        t = 0.0
        while not line.flow.finished:
            t += step
            line.wait_until(t)
        return line.sent

    assert (
        timeline(0.25)
        == timeline(100)
        == [
            (0, "originate", "PJSIP/a"),
            (0, "ring", ""),
            (5, "originate", "PJSIP/b"),
            (7.5, "hang up", "PJSIP/a"),
            (12, "originate", "PJSIP/c"),
            (12, "hang up", "PJSIP/b"),
            (18, "hang up", "PJSIP/c"),
            (18, "continue", "NOANSWER"),
        ]
    )
