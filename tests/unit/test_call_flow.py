"""CallFlow, the pure state machine of one routed call: inputs in, commands out."""

from __future__ import annotations

import itertools

import pytest

from callrouter.calls.flow import (
    CallFlow,
    CallPhase,
    CallResult,
    Connect,
    ContinueInDialplan,
    ContinueInFallback,
    HangupCaller,
    IndicateRinging,
    LegChannel,
    LegEnd,
    StartLeg,
    StartOutcome,
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


# --- hand-back and a failed connect: inputs with their own results -------------------


def test_hand_back_stops_the_ringing_legs_and_continues_at_the_fallback() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10), ("PJSIP/c", 5, 10))
    flow.start(0)
    assert flow.hand_back() == [StopLeg("leg-1"), StopLeg("leg-2"), ContinueInFallback()]
    assert flow.finished and flow.result is CallResult.HANDED_BACK
    assert flow.legs["leg-3"].end is LegEnd.CANCELLED  # the pending leg never starts
    assert flow.tick(6) == [] and flow.next_deadline() is None
    assert flow.caller_gone() == []  # the caller leaving the app later changes nothing
    assert flow.result is CallResult.HANDED_BACK


def test_hand_back_leaves_a_connecting_or_connected_call_to_finish() -> None:
    flow = flow_for(("PJSIP/a", 0, 10))
    flow.start(0)
    flow.leg_answered("leg-1")
    assert flow.hand_back() == []
    flow.connected()
    assert flow.hand_back() == []
    assert flow.phase is CallPhase.CONNECTED and flow.result is None


def test_a_failed_connect_hangs_up_the_winner_and_the_caller_and_is_failed() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10))
    flow.start(0)
    flow.leg_answered("leg-2")
    assert flow.connect_failed() == [StopLeg("leg-2"), HangupCaller()]
    assert flow.finished and flow.result is CallResult.FAILED
    assert flow.legs["leg-2"].end is LegEnd.FAILED
    assert flow.connected() == [] and flow.phase is CallPhase.FINISHED
    assert flow.leg_ended("leg-2", LegEnd.FAILED, 3) == []  # no second hang-up of the caller


def test_connect_failed_outside_connecting_changes_nothing() -> None:
    flow = flow_for(("PJSIP/a", 0, 10))
    flow.start(0)
    assert flow.connect_failed() == []
    assert flow.phase is CallPhase.RINGING


# --- leg channels: the flow alone knows what Asterisk has -------------------------------


def test_a_refused_leg_ends_at_once_and_is_not_hung_up() -> None:
    flow = flow_for(("PJSIP/a", 0, 10))
    flow.start(0)
    assert flow.legs["leg-1"].channel is LegChannel.REQUESTED
    # Refused by Asterisk: no phone was reached (the call may forward on unreachable).
    assert flow.leg_created("leg-1", StartOutcome.REFUSED, 0.1) == [
        ContinueInDialplan(CallResult.NOANSWER, unreachable=True)
    ]
    assert flow.legs["leg-1"].end is LegEnd.UNREACHABLE
    assert flow.legs["leg-1"].channel is LegChannel.GONE
    assert flow.legs_to_clean_up() == [] and flow.leg_channel_ids() == []
    assert not flow.leg_hangup_sent("leg-1")


@pytest.mark.parametrize(
    ("causes", "unreachable"),
    [
        ((20, 27), True),  # subscriber absent, out of order: no phone was reached
        ((20, 19), False),  # one of them rang out
        ((20, 21), False),  # one declined the call: a person, not a dead line
        ((34, 17), None),  # one was busy: the call ends busy
    ],
)
def test_a_plan_is_unreachable_only_when_no_phone_of_it_could_be_reached(
    causes: tuple[int, int], unreachable: bool | None
) -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10))
    flow.start(0)
    flow.leg_created("leg-1", StartOutcome.CREATED, 0.1)
    flow.leg_created("leg-2", StartOutcome.CREATED, 0.1)
    assert flow.leg_gone("leg-1", 0.5, causes[0]) == []
    ended = flow.leg_gone("leg-2", 0.6, causes[1])
    if unreachable is None:
        assert ended == [ContinueInDialplan(CallResult.BUSY)]
    else:
        assert ended == [ContinueInDialplan(CallResult.NOANSWER, unreachable)]
    assert flow.legs["leg-1"].end is LegEnd.UNREACHABLE


def test_an_unanswered_request_is_hung_up_by_its_id() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10))
    flow.start(0)
    flow.leg_created("leg-2", StartOutcome.CREATED, 0.1)
    assert flow.leg_created("leg-1", StartOutcome.UNANSWERED, 0.2) == [StopLeg("leg-1")]
    assert flow.legs["leg-1"].end is LegEnd.FAILED
    assert flow.legs_to_clean_up() == ["leg-1", "leg-2"]  # leg-1 may exist
    assert flow.leg_hangup_sent("leg-1")
    assert flow.legs_to_clean_up() == ["leg-2"]


def test_a_channel_is_hung_up_once_and_never_after_it_is_gone() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10), ("PJSIP/c", 5, 10))
    flow.start(0)
    flow.leg_created("leg-1", StartOutcome.CREATED, 0.1)
    flow.leg_created("leg-2", StartOutcome.CREATED, 0.1)
    assert not flow.leg_hangup_sent("leg-3")  # never asked for
    assert flow.leg_hangup_sent("leg-1")
    assert not flow.leg_hangup_sent("leg-1")
    flow.leg_gone("leg-2", 1)
    assert not flow.leg_hangup_sent("leg-2")
    assert flow.leg_channel_ids() == ["leg-1"]  # hung up, but not gone yet
    assert flow.legs_to_clean_up() == []


def test_events_before_the_answer_to_the_request_win() -> None:
    flow = flow_for(("PJSIP/a", 0, 10), ("PJSIP/b", 0, 10))
    flow.start(0)
    flow.leg_gone("leg-1", 0.1, 17)
    assert flow.leg_created("leg-1", StartOutcome.CREATED, 0.2) == []
    assert flow.legs["leg-1"].channel is LegChannel.GONE
    assert flow.legs["leg-1"].end is LegEnd.BUSY
