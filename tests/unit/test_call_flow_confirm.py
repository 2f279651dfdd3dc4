"""Confirm legs in CallFlow: an answer is not a win until its party presses 1."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.calls.flow import (
    AskToConfirm,
    CallFlow,
    CallPhase,
    CallResult,
    Command,
    Connect,
    ContinueInDialplan,
    ContinueInFallback,
    IndicateRinging,
    LegEnd,
    LegPhase,
    StartLeg,
    StopLeg,
)
from callrouter.routing.plan import Leg, LegSource, PlanStatus, RingPlan

CONFIRM_TIMEOUT = 10.0


def flow_for(*legs: tuple[str, float, float, bool]) -> CallFlow:
    """Legs as (endpoint, start, stop, confirm); their ids are leg-1, leg-2, ..."""
    plan = RingPlan(
        "201",
        "Anna",
        None,
        PlanStatus.OK,
        tuple(Leg(e, a, b, LegSource.FOLLOWME, confirm) for e, a, b, confirm in legs),
    )
    counter = itertools.count(1)
    return CallFlow("call-1", plan, lambda: f"leg-{next(counter)}", confirm_timeout=CONFIRM_TIMEOUT)


DESK = ("PJSIP/desk", 0.0, 30.0, False)
MOBILE = ("PJSIP/+491701@trunk", 0.0, 30.0, True)


def test_a_confirm_leg_that_answers_is_asked_to_confirm_and_the_rest_ring_on() -> None:
    flow = flow_for(DESK, MOBILE)
    assert flow.start(0) == [
        IndicateRinging(),
        StartLeg("leg-1", "PJSIP/desk"),
        StartLeg("leg-2", "PJSIP/+491701@trunk"),
    ]
    assert flow.leg_answered("leg-2", 4) == [AskToConfirm("leg-2")]
    assert flow.phase is CallPhase.RINGING and flow.winner is None
    assert flow.legs["leg-2"].phase is LegPhase.CONFIRMING
    assert flow.legs["leg-1"].phase is LegPhase.DIALLING  # the desk phone rings on
    assert flow.next_deadline() == 4 + CONFIRM_TIMEOUT
    assert flow.leg_answered("leg-2", 5) == []  # a second StasisStart changes nothing
    # 1 from the mobile: it wins, as an answering leg does.
    assert flow.leg_digit("leg-2", "1", 7) == [
        StopLeg("leg-1"),
        Connect("leg-2", "PJSIP/+491701@trunk"),
    ]
    assert flow.phase is CallPhase.CONNECTING and flow.winner is flow.legs["leg-2"]
    assert flow.legs["leg-1"].end is LegEnd.CANCELLED


# How a confirming leg can end without taking the call: each drops it (hung up by us
# unless it hung up itself), and the desk phone rings on.
DROPS = [
    ("the deadline passes", lambda f: f.tick(4 + CONFIRM_TIMEOUT), [StopLeg("leg-2")]),
    ("2 rejects it", lambda f: f.leg_digit("leg-2", "2", 6), [StopLeg("leg-2")]),
    ("its party hangs up", lambda f: f.leg_gone("leg-2", 6, 16), []),
    ("1 after the deadline", lambda f: f.leg_digit("leg-2", "1", 14.5), [StopLeg("leg-2")]),
]


@pytest.mark.parametrize(("case", "drop", "commands"), DROPS, ids=[d[0] for d in DROPS])
def test_a_confirming_leg_that_does_not_press_1_is_dropped_and_the_rest_ring_on(
    case: str, drop, commands: list[Command]
) -> None:
    flow = flow_for(DESK, MOBILE)
    flow.start(0)
    flow.leg_answered("leg-2", 4)
    assert drop(flow) == commands
    mobile = flow.legs["leg-2"]
    assert mobile.phase is LegPhase.ENDED and mobile.end is LegEnd.UNCONFIRMED
    assert flow.phase is CallPhase.RINGING and flow.next_deadline() == 30
    assert flow.leg_digit("leg-2", "1", 15) == []  # gone: its digits count no more
    assert flow.leg_answered("leg-1") == [Connect("leg-1", "PJSIP/desk")]  # still can


@pytest.mark.parametrize("digit", ["0", "3", "9", "*", "#", "A", ""])
def test_other_digits_change_nothing(digit: str) -> None:
    flow = flow_for(MOBILE)
    flow.start(0)
    flow.leg_answered("leg-1", 1)
    assert flow.leg_digit("leg-1", digit, 2) == []
    assert flow.legs["leg-1"].phase is LegPhase.CONFIRMING


def test_digits_of_legs_that_do_not_confirm_change_nothing() -> None:
    flow = flow_for(DESK, MOBILE)
    flow.start(0)
    assert flow.leg_digit("leg-2", "1", 1) == []  # still ringing: no answer yet
    flow.leg_answered("leg-1")
    assert flow.leg_digit("leg-1", "1", 2) == []  # the winner (no confirm) pressing 1
    assert flow.leg_digit("caller", "1", 2) == []  # not a leg (the caller's digits)


def test_another_leg_answering_meanwhile_wins_and_the_confirming_leg_is_hung_up() -> None:
    flow = flow_for(DESK, MOBILE)
    flow.start(0)
    flow.leg_answered("leg-2", 4)
    assert flow.leg_answered("leg-1", 6) == [StopLeg("leg-2"), Connect("leg-1", "PJSIP/desk")]
    assert flow.legs["leg-2"].end is LegEnd.CANCELLED
    assert flow.leg_digit("leg-2", "1", 7) == []  # too late: the desk phone has it


def test_of_two_confirming_legs_the_first_to_press_1_wins() -> None:
    other = ("PJSIP/+491702@trunk", 0.0, 30.0, True)
    flow = flow_for(MOBILE, other)
    flow.start(0)
    assert flow.leg_answered("leg-1", 1) == [AskToConfirm("leg-1")]
    assert flow.leg_answered("leg-2", 2) == [AskToConfirm("leg-2")]
    assert flow.next_deadline() == 1 + CONFIRM_TIMEOUT
    assert flow.leg_digit("leg-2", "1", 3) == [
        StopLeg("leg-1"),
        Connect("leg-2", "PJSIP/+491702@trunk"),
    ]


def test_a_confirming_leg_keeps_the_call_going_past_its_ringing_time() -> None:
    # The mobile answers at 4 of its 5 s: it has its full confirm time, and the call
    # does not end at 5 although nothing else rings.
    flow = flow_for(("PJSIP/+491701@trunk", 0.0, 5.0, True))
    flow.start(0)
    flow.leg_answered("leg-1", 4)
    assert flow.tick(5) == []
    assert not flow.finished and flow.next_deadline() == 14
    assert flow.leg_digit("leg-1", "1", 13) == [Connect("leg-1", "PJSIP/+491701@trunk")]


def test_the_last_leg_dropped_ends_the_call_with_noanswer() -> None:
    flow = flow_for(("PJSIP/+491701@trunk", 0.0, 5.0, True))
    flow.start(0)
    flow.leg_answered("leg-1", 4)
    assert flow.tick(14) == [StopLeg("leg-1"), ContinueInDialplan(CallResult.NOANSWER)]
    assert flow.finished and flow.result is CallResult.NOANSWER


def test_a_busy_phone_beside_an_unconfirmed_one_is_noanswer_not_busy() -> None:
    flow = flow_for(DESK, MOBILE)
    flow.start(0)
    flow.leg_ended("leg-1", LegEnd.BUSY, 1)
    flow.leg_answered("leg-2", 2)
    assert flow.leg_digit("leg-2", "2", 3) == [
        StopLeg("leg-2"),
        ContinueInDialplan(CallResult.NOANSWER),
    ]


def test_a_dropped_leg_with_nothing_else_ringing_moves_the_next_entry_forward() -> None:
    flow = flow_for(("PJSIP/+491701@trunk", 0.0, 15.0, True), ("PJSIP/dect", 15.0, 40.0, False))
    flow.start(0)
    flow.leg_answered("leg-1", 2)
    assert flow.leg_digit("leg-1", "2", 3) == [StopLeg("leg-1"), StartLeg("leg-2", "PJSIP/dect")]
    dect = flow.legs["leg-2"]
    assert (dect.start_at, dect.stop_at) == (3, 28)  # no dead air, its full 25 s


def test_later_entries_start_while_a_leg_confirms() -> None:
    flow = flow_for(MOBILE, ("PJSIP/dect", 5.0, 20.0, False))
    flow.start(0)
    flow.leg_answered("leg-1", 2)
    assert flow.next_deadline() == 5
    assert flow.tick(5) == [StartLeg("leg-2", "PJSIP/dect")]


def test_the_caller_hanging_up_or_a_hand_back_stops_a_confirming_leg() -> None:
    flow = flow_for(DESK, MOBILE)
    flow.start(0)
    flow.leg_answered("leg-2", 1)
    assert flow.caller_gone() == [StopLeg("leg-1"), StopLeg("leg-2")]
    assert flow.result is CallResult.HANGUP
    flow = flow_for(DESK, MOBILE)
    flow.start(0)
    flow.leg_answered("leg-2", 1)
    assert flow.hand_back() == [StopLeg("leg-1"), StopLeg("leg-2"), ContinueInFallback()]
    assert flow.live_legs() == []


def test_a_confirm_leg_answer_needs_the_time() -> None:
    flow = flow_for(MOBILE)
    flow.start(0)
    with pytest.raises(ValueError, match="needs the time"):
        flow.leg_answered("leg-1")


# --- invariants, for any order of inputs ---------------------------------------------

_LEG_IDS = ("leg-1", "leg-2", "leg-3")
_inputs = st.lists(
    st.tuples(
        # Repeated names are more likely: the inputs that reach confirming states.
        st.sampled_from(["answer"] * 3 + ["digit"] * 3 + ["gone", "busy", "tick", "caller_gone"]),
        st.sampled_from(_LEG_IDS),
        st.sampled_from(["1", "1", "2", "5"]),
        st.floats(min_value=0, max_value=8),  # time that passes before the input
    ),
    max_size=25,
)


@settings(max_examples=1000, deadline=None)
@given(
    confirms=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    timeline=st.sampled_from([(0.0, 3.0, 12.0), (0.0, 0.0, 0.0)]),  # in steps, or at once
    inputs=_inputs,
)
def test_only_a_1_in_time_connects_a_confirm_leg_and_no_call_ends_while_one_confirms(
    confirms: tuple[bool, bool, bool],
    timeline: tuple[float, float, float],
    inputs: list[tuple[str, str, str, float]],
) -> None:
    flow = flow_for(
        *(
            (endpoint, start, start + 12, confirm)
            for endpoint, start, confirm in zip(
                ("PJSIP/a", "PJSIP/b", "PJSIP/c"), timeline, confirms, strict=True
            )
        )
    )
    now = 0.0
    commands = flow.start(now)
    asked: set[str] = set()
    for kind, leg_id, digit, wait in inputs:
        now += wait
        run = flow.legs[leg_id]
        before = (run.phase, run.confirm_by)
        if kind == "answer":
            out = flow.leg_answered(leg_id, now)
        elif kind == "digit":
            out = flow.leg_digit(leg_id, digit, now)
        elif kind == "gone":
            out = flow.leg_gone(leg_id, now, 16)
        elif kind == "busy":
            out = flow.leg_gone(leg_id, now, 17)
        elif kind == "caller_gone":
            out = flow.caller_gone()
        else:
            out = flow.tick(now)
        asked |= {c.leg_id for c in out if isinstance(c, AskToConfirm)}
        for connect in (c for c in out if isinstance(c, Connect)):
            confirm = flow.legs[connect.leg_id].leg.confirm
            if confirm:  # only its own 1, while it confirmed, before its deadline
                phase, confirm_by = before
                assert kind == "digit" and digit == "1" and connect.leg_id == leg_id
                assert phase is LegPhase.CONFIRMING and confirm_by is not None
                assert now < confirm_by
            else:
                assert kind == "answer" and connect.leg_id == leg_id
        commands += out
        # A leg that confirms keeps the call ringing; an ended call leaves none behind.
        confirming = [r for r in flow.legs.values() if r.phase is LegPhase.CONFIRMING]
        if confirming:
            assert flow.phase is CallPhase.RINGING
        if kind == "tick":  # none outlives its deadline
            assert all(r.confirm_by is not None and r.confirm_by > now for r in confirming)
        if flow.finished:
            assert not flow.live_legs() or flow.winner is not None
    assert len([c for c in commands if isinstance(c, Connect)]) <= 1
    assert all(flow.legs[i].leg.confirm for i in asked)
    # Every leg asked to confirm that did not win was hung up, or hung up itself.
    for leg_id in asked:
        run = flow.legs[leg_id]
        if run is not flow.winner and run.phase is LegPhase.ENDED:
            assert StopLeg(leg_id) in commands or run.end in (LegEnd.UNCONFIRMED, LegEnd.BUSY)
