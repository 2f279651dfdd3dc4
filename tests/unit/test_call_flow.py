"""CallFlow, the pure state machine of one routed call: inputs in, commands out."""

from __future__ import annotations

import itertools

from callrouter.calls.flow import (
    CallFlow,
    CallPhase,
    CallResult,
    Connect,
    ContinueInDialplan,
    HangupCaller,
    IndicateRinging,
    LegEnd,
    StartLeg,
    StopLeg,
)
from callrouter.routing.plan import Leg, LegSource, PlanStatus, RingPlan


def flow_for(*legs: tuple[str, float, float]) -> CallFlow:
    plan = RingPlan(
        "201",
        "Anna",
        None,
        PlanStatus.OK if legs else PlanStatus.NO_PHONES,
        tuple(Leg(e, a, b, LegSource.FOLLOWME) for e, a, b in legs),
    )
    counter = itertools.count(1)
    return CallFlow("call-1", plan, lambda: f"leg-{next(counter)}")


def test_unknown_extension_continues_with_unknown() -> None:
    flow = CallFlow("c", RingPlan("999", None, None, PlanStatus.UNKNOWN_EXTENSION), str)
    assert flow.start(0) == [ContinueInDialplan(CallResult.UNKNOWN)]
    assert flow.finished and flow.result is CallResult.UNKNOWN


def test_no_phones_continues_with_nophones() -> None:
    flow = flow_for()
    assert flow.start(0) == [ContinueInDialplan(CallResult.NOPHONES)]


def test_legs_start_at_their_time_and_stop_at_theirs() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 5, 20))
    assert flow.start(0) == [IndicateRinging(), StartLeg("leg-1", "PJSIP/a")]
    assert flow.next_deadline() == 5
    assert flow.tick(5) == [StartLeg("leg-2", "PJSIP/b")]
    assert flow.next_deadline() == 10
    assert flow.tick(10) == [StopLeg("leg-1")]
    assert flow.tick(20) == [StopLeg("leg-2"), ContinueInDialplan(CallResult.NOANSWER)]
    assert flow.finished and flow.next_deadline() is None


def test_first_answer_wins_and_everything_else_is_cancelled() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10), ("PJSIP/c", 8, 20))
    flow.start(0)
    flow.leg_ringing("leg-1")
    assert flow.leg_answered("leg-2") == [
        StopLeg("leg-1"),
        Connect("leg-2", "PJSIP/b"),
    ]
    assert flow.phase is CallPhase.CONNECTING
    assert flow.tick(9) == []  # the pending leg never starts
    assert flow.leg_answered("leg-1") == []  # already cancelled
    flow.connected()
    assert flow.phase is CallPhase.CONNECTED
    assert flow.leg_ended("leg-2", LegEnd.FAILED, 30) == [HangupCaller()]
    assert flow.result is CallResult.ANSWERED


def test_caller_hangs_up_while_ringing_cancels_every_leg() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10), ("PJSIP/c", 5, 10))
    flow.start(0)
    assert flow.caller_gone() == [StopLeg("leg-1"), StopLeg("leg-2")]
    assert flow.result is CallResult.HANGUP
    assert flow.tick(6) == []


def test_caller_hangs_up_after_answer_hangs_up_the_winner() -> None:
    flow = flow_for(("PJSIP/a", 0, 10))
    flow.start(0)
    flow.leg_answered("leg-1")
    flow.connected()
    assert flow.caller_gone() == [StopLeg("leg-1")]
    assert flow.result is CallResult.ANSWERED


def test_all_busy_is_busy() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10))
    flow.start(0)
    assert flow.leg_ended("leg-1", LegEnd.BUSY, 0.1) == []
    assert flow.leg_ended("leg-2", LegEnd.BUSY, 0.2) == [ContinueInDialplan(CallResult.BUSY)]


def test_busy_and_unanswered_is_noanswer() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10))
    flow.start(0)
    flow.leg_ended("leg-1", LegEnd.BUSY, 0.1)
    assert flow.tick(10) == [StopLeg("leg-2"), ContinueInDialplan(CallResult.NOANSWER)]


def test_when_every_ringing_phone_gives_up_early_the_next_entry_moves_forward() -> None:
    flow = flow_for(("PJSIP/a", 0, 15), ("PJSIP/b", 15, 40))
    flow.start(0)
    assert flow.leg_ended("leg-1", LegEnd.BUSY, 2) == [StartLeg("leg-2", "PJSIP/b")]
    run = flow.legs["leg-2"]
    assert (run.start_at, run.stop_at) == (2, 27)  # keeps its full 25 s


def test_a_planned_gap_after_a_timeout_is_kept() -> None:
    flow = flow_for(("PJSIP/a", 0, 5), ("PJSIP/b", 8, 10))
    flow.start(0)
    assert flow.tick(5) == [StopLeg("leg-1")]
    assert flow.next_deadline() == 8


def test_events_for_unknown_or_ended_legs_are_ignored() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10))
    flow.start(0)
    flow.leg_ended("leg-1", LegEnd.FAILED, 1)
    assert flow.leg_ended("leg-1", LegEnd.BUSY, 1) == []
    assert flow.leg_answered("leg-1") == []
    assert flow.leg_answered("nope") == []
    assert flow.phase is CallPhase.RINGING
