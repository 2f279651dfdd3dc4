"""Routing with presence: dnd, busy, unreachable phones and the dead air they leave."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.calls.flow import CallFlow, CallResult, ContinueInDialplan, IndicateRinging
from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.domain.presence import ClientStatus, DeviceState, UserPresence
from callrouter.presence.tracker import PresenceTracker
from callrouter.routing.plan import Leg, LegSource, PlanStatus, RingPlan
from callrouter.routing.resolver import cut_dead_air, resolve_plan
from callrouter.rules.model import RingRules

D = DeviceState

ANNA = User("201", "Anna Berger", "staff", ("PJSIP/anna-soft", "PJSIP/anna-desk"))
BORIS = User("202", "Boris Chen", "staff", ("PJSIP/boris-desk",))
OFFICE_1 = Workplace("office-1", "Office 1", "801", ("PJSIP/office1-desk", "PJSIP/office1-dect"))
EXTERNAL = "PJSIP/+4917012345678@trunk"


def snapshot(**logins: str) -> DirectorySnapshot:
    return DirectorySnapshot(
        users={u.extension: u for u in (ANNA, BORIS)},
        workplaces={OFFICE_1.id: OFFICE_1},
        logins={ext.removeprefix("u"): wp for ext, wp in logins.items()},
    )


def rules(data: dict[str, Any] | None = None) -> RingRules:
    base: dict[str, Any] = {
        "defaults": {"timeout": 20, "external_endpoint": "PJSIP/{number}@trunk"}
    }
    for key, value in (data or {}).items():
        base[key] = base.get(key, {}) | value if key == "defaults" else value
    return RingRules.model_validate(base)


def tracker(snap: DirectorySnapshot, **states: DeviceState) -> PresenceTracker:
    """A tracker that knows ``states``, e.g. ``anna_desk=D.UNAVAILABLE`` for PJSIP/anna-desk."""
    presence = PresenceTracker(snap)
    for name, state in states.items():
        presence.set_device("PJSIP/" + name.replace("_", "-"), state)
    return presence


def legs(plan_legs: Iterable[Leg]) -> list[tuple[str, float, float, str]]:
    return [(leg.endpoint, leg.start, leg.stop, leg.source.value) for leg in plan_legs]


# The issue's example: Anna's phones, then her mobile, and her workplace from 5 s on.
ISSUE_RULES = {
    "users": {
        "201": {
            "followme": [
                {"ring": ["PJSIP/anna-desk", "PJSIP/anna-soft"], "timeout": 15},
                {"ring": ["+4917012345678"], "delay": 15, "timeout": 25},
                {"ring": ["workplace"], "delay": 5},
            ]
        }
    },
    "workplaces": {
        "office-1": {
            "ring": [
                {"ring": ["PJSIP/office1-desk"], "timeout": 20},
                {"ring": ["PJSIP/office1-dect"], "delay": 5, "timeout": 15},
            ]
        }
    },
}


# --- dnd and busy ----------------------------------------------------------------------


def test_dnd_ends_the_plan_before_any_phone_rings() -> None:
    snap = snapshot(u201="office-1")
    presence = tracker(snap)
    presence.set_client("201", "laptop", ClientStatus.ONLINE)
    presence.set_client("201", "mobile", ClientStatus.DND)
    plan = resolve_plan(snap, rules(ISSUE_RULES), "201", presence=presence)
    assert plan == RingPlan("201", "Anna Berger", "office-1", PlanStatus.DND)
    assert plan.legs == () and plan.unreachable == ()


@pytest.mark.parametrize("client", [ClientStatus.ONLINE, ClientStatus.AWAY, ClientStatus.OFFLINE])
def test_other_client_statuses_ring_as_usual(client: ClientStatus) -> None:
    snap = snapshot()
    presence = tracker(snap)
    presence.set_client("201", "laptop", client)
    plan = resolve_plan(snap, rules(), "201", presence=presence)
    assert plan.status is PlanStatus.OK
    assert plan == resolve_plan(snap, rules(), "201")


def test_dnd_of_one_user_does_not_touch_another() -> None:
    snap = snapshot()
    presence = tracker(snap)
    presence.set_client("201", "laptop", ClientStatus.DND)
    assert resolve_plan(snap, rules(), "202", presence=presence).status is PlanStatus.OK


@pytest.mark.parametrize(
    ("data", "busy"),
    [
        ({"defaults": {"call_waiting": False}}, True),
        ({"users": {"201": {"call_waiting": False}}}, True),
        ({"defaults": {"call_waiting": False}, "users": {"201": {"call_waiting": True}}}, False),
        ({"defaults": {"call_waiting": True}}, False),
        ({}, False),  # call waiting is on by default
        ({"defaults": {"call_waiting": False}, "users": {"201": {}}}, True),  # None: the default
    ],
)
def test_on_a_call_without_call_waiting_is_busy(data: dict[str, Any], busy: bool) -> None:
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.INUSE)
    plan = resolve_plan(snap, rules(data), "201", presence=presence)
    if busy:
        assert plan == RingPlan("201", "Anna Berger", None, PlanStatus.BUSY)
    else:  # rings normally, the phone in use too (call waiting)
        assert plan.status is PlanStatus.OK
        assert plan == resolve_plan(snap, rules(data), "201")
        assert "PJSIP/anna-desk" in {leg.endpoint for leg in plan.legs}


@pytest.mark.parametrize("state", [D.INUSE, D.BUSY, D.ONHOLD, D.RINGINUSE])
def test_every_in_use_state_counts_as_on_a_call(state: DeviceState) -> None:
    snap = snapshot()
    presence = tracker(snap, anna_soft=state)
    plan = resolve_plan(
        snap, rules({"defaults": {"call_waiting": False}}), "201", presence=presence
    )
    assert plan.status is PlanStatus.BUSY


def test_a_call_on_the_workplace_phone_makes_the_logged_in_user_busy() -> None:
    snap = snapshot(u202="office-1")
    presence = tracker(snap, office1_dect=D.INUSE)
    r = rules({"users": {"202": {"call_waiting": False}}})
    assert resolve_plan(snap, r, "202", presence=presence).status is PlanStatus.BUSY
    assert (
        resolve_plan(
            snapshot(), r, "202", presence=tracker(snapshot(), office1_dect=D.INUSE)
        ).status
        is PlanStatus.OK
    )  # not logged in there: not Boris's call


def test_ringing_only_is_not_busy() -> None:
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.RINGING)
    plan = resolve_plan(
        snap, rules({"defaults": {"call_waiting": False}}), "201", presence=presence
    )
    assert plan.status is PlanStatus.OK


def test_dnd_wins_over_busy() -> None:
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.INUSE)
    presence.set_client("201", "laptop", ClientStatus.DND)
    plan = resolve_plan(
        snap, rules({"defaults": {"call_waiting": False}}), "201", presence=presence
    )
    assert plan.status is PlanStatus.DND


# --- unreachable phones ---------------------------------------------------------------


@pytest.mark.parametrize("state", [D.UNAVAILABLE, D.INVALID])
def test_unreachable_phones_are_left_out_and_listed(state: DeviceState) -> None:
    snap = snapshot()
    plan = resolve_plan(snap, rules(), "201", presence=tracker(snap, anna_desk=state))
    assert plan.status is PlanStatus.OK
    assert legs(plan.legs) == [("PJSIP/anna-soft", 0, 20, "followme")]
    assert plan.unreachable == ("PJSIP/anna-desk",)
    assert plan.to_json()["unreachable"] == ["PJSIP/anna-desk"]


def test_phones_in_any_other_state_are_rung() -> None:
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.RINGING, anna_soft=D.UNKNOWN)
    plan = resolve_plan(snap, rules(), "201", presence=presence)
    assert plan == resolve_plan(snap, rules(), "201")
    assert plan.unreachable == ()


def test_an_unreachable_followme_entry_is_skipped_and_later_entries_move_earlier() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk", "PJSIP/anna-soft"], "timeout": 15},
                        {"ring": ["+4917012345678"], "delay": 15, "timeout": 20},
                    ]
                }
            }
        }
    )
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.UNAVAILABLE, anna_soft=D.UNAVAILABLE)
    plan = resolve_plan(snap, r, "201", presence=presence)
    assert plan.status is PlanStatus.OK
    assert legs(plan.legs) == [(EXTERNAL, 0, 20, "followme")]
    assert plan.unreachable == ("PJSIP/anna-desk", "PJSIP/anna-soft")


def test_several_skipped_entries_add_up() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"], "timeout": 10},
                        {"ring": ["PJSIP/anna-soft"], "delay": 10, "timeout": 5},
                        {"ring": ["+4917012345678"], "delay": 15, "timeout": 20},
                        {
                            "ring": ["PJSIP/anna-desk"],
                            "delay": 35,
                            "timeout": 10,
                        },  # unreachable at the end
                    ]
                }
            }
        }
    )
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.UNAVAILABLE, anna_soft=D.UNAVAILABLE)
    plan = resolve_plan(snap, r, "201", presence=presence)
    assert legs(plan.legs) == [(EXTERNAL, 0, 20, "followme")]


def test_nothing_moves_when_another_phone_rings_during_the_skipped_entry() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"], "timeout": 15},
                        {"ring": ["PJSIP/anna-soft"], "timeout": 25},
                        {"ring": ["+4917012345678"], "delay": 15, "timeout": 20},
                    ]
                }
            }
        }
    )
    snap = snapshot()
    plan = resolve_plan(snap, r, "201", presence=tracker(snap, anna_desk=D.UNAVAILABLE))
    assert legs(plan.legs) == [
        ("PJSIP/anna-soft", 0, 25, "followme"),
        (EXTERNAL, 15, 35, "followme"),
    ]
    assert plan.unreachable == ("PJSIP/anna-desk",)


def test_a_partly_unreachable_entry_keeps_its_time() -> None:
    r = rules(ISSUE_RULES)
    snap = snapshot()
    plan = resolve_plan(snap, r, "201", presence=tracker(snap, anna_soft=D.UNAVAILABLE))
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 15, "followme"),
        (EXTERNAL, 15, 40, "followme"),
    ]


def test_mixed_operation_workplace_rings_during_the_skipped_followme_entry() -> None:
    # Anna's own phones are off; her workplace rings from 5 s on.  Only [0, 5) is dead
    # air: everything moves 5 s earlier, and the workplace timeline keeps its shape.
    snap = snapshot(u201="office-1")
    presence = tracker(snap, anna_desk=D.UNAVAILABLE, anna_soft=D.UNAVAILABLE)
    plan = resolve_plan(snap, rules(ISSUE_RULES), "201", presence=presence)
    assert plan.status is PlanStatus.OK
    assert legs(plan.legs) == [
        ("PJSIP/office1-desk", 0, 20, "workplace"),
        ("PJSIP/office1-dect", 5, 20, "workplace"),
        (EXTERNAL, 10, 35, "followme"),
    ]
    assert plan.unreachable == ("PJSIP/anna-desk", "PJSIP/anna-soft")


def test_mixed_operation_unreachable_workplace_phones_move_nothing() -> None:
    snap = snapshot(u201="office-1")
    presence = tracker(snap, office1_desk=D.UNAVAILABLE, office1_dect=D.INVALID)
    plan = resolve_plan(snap, rules(ISSUE_RULES), "201", presence=presence)
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 15, "followme"),
        ("PJSIP/anna-soft", 0, 15, "followme"),
        (EXTERNAL, 15, 40, "followme"),
    ]
    assert plan.unreachable == ("PJSIP/office1-dect", "PJSIP/office1-desk")


def test_mixed_operation_a_skipped_workplace_step_moves_the_later_one() -> None:
    # Nothing of Anna's rings in [5, 10) but the workplace desk phone, which is off.
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"], "timeout": 5},
                        {"ring": ["workplace"], "delay": 5},
                    ]
                }
            },
            "workplaces": {
                "office-1": {
                    "ring": [
                        {"ring": ["PJSIP/office1-desk"], "timeout": 5},
                        {"ring": ["PJSIP/office1-dect"], "delay": 5, "timeout": 10},
                    ]
                }
            },
        }
    )
    snap = snapshot(u201="office-1")
    plan = resolve_plan(snap, r, "201", presence=tracker(snap, office1_desk=D.UNAVAILABLE))
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 5, "followme"),
        ("PJSIP/office1-dect", 5, 15, "workplace"),
    ]


def test_legs_of_one_phone_that_the_cut_joins_merge_with_decimal_seconds() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"], "timeout": 5.3},
                        {"ring": ["PJSIP/anna-soft"], "delay": 5.3, "timeout": 8},  # unreachable
                        {
                            "ring": ["PJSIP/anna-desk", "+4917012345678"],
                            "delay": 13.3,
                            "timeout": 20,
                        },
                    ]
                }
            }
        }
    )
    snap = snapshot()
    plan = resolve_plan(snap, r, "201", presence=tracker(snap, anna_soft=D.UNAVAILABLE))
    desk = [leg for leg in plan.legs if leg.endpoint == "PJSIP/anna-desk"]
    assert len(desk) == 1
    assert desk[0].start == 0 and desk[0].stop == pytest.approx(25.3)


def test_legs_of_one_phone_that_the_cut_joins_merge() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"], "timeout": 5.5},
                        {"ring": ["PJSIP/anna-soft"], "delay": 5.5, "timeout": 8},  # unreachable
                        {
                            "ring": ["PJSIP/anna-desk", "+4917012345678"],
                            "delay": 13.5,
                            "timeout": 20,
                        },
                    ]
                }
            }
        }
    )
    snap = snapshot()
    plan = resolve_plan(snap, r, "201", presence=tracker(snap, anna_soft=D.UNAVAILABLE))
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 25.5, "followme"),
        (EXTERNAL, 5.5, 25.5, "followme"),
    ]


def test_all_phones_unreachable_is_unreachable() -> None:
    snap = snapshot(u202="office-1")
    presence = tracker(
        snap, boris_desk=D.UNAVAILABLE, office1_desk=D.UNAVAILABLE, office1_dect=D.INVALID
    )
    plan = resolve_plan(snap, rules(), "202", presence=presence)
    assert plan == RingPlan(
        "202",
        "Boris Chen",
        "office-1",
        PlanStatus.UNREACHABLE,
        (),
        (),
        ("PJSIP/boris-desk", "PJSIP/office1-dect", "PJSIP/office1-desk"),
    )


def test_no_phones_stays_no_phones_with_presence() -> None:
    clara = User("203", "Clara Diaz")
    snap = DirectorySnapshot(users={"203": clara})
    plan = resolve_plan(snap, rules(), "203", presence=tracker(snap))
    assert plan.status is PlanStatus.NO_PHONES and plan.unreachable == ()


def test_the_callers_own_phone_is_not_listed_as_unreachable() -> None:
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.UNAVAILABLE)
    plan = resolve_plan(snap, rules(), "201", caller="PJSIP/anna-soft", presence=presence)
    assert plan.status is PlanStatus.UNREACHABLE
    assert plan.unreachable == ("PJSIP/anna-desk",)


# --- external numbers -------------------------------------------------------------------


def test_external_numbers_are_rung_when_every_phone_is_unreachable() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {
                            "ring": ["PJSIP/anna-desk", "PJSIP/anna-soft", "+4917012345678"],
                            "timeout": 15,
                        },
                    ]
                }
            }
        }
    )
    snap = snapshot()
    presence = tracker(snap, anna_desk=D.UNAVAILABLE, anna_soft=D.UNAVAILABLE)
    plan = resolve_plan(snap, r, "201", presence=presence)
    assert plan.status is PlanStatus.OK
    assert legs(plan.legs) == [(EXTERNAL, 0, 15, "followme")]
    assert EXTERNAL not in plan.unreachable


def test_external_numbers_are_never_considered_unreachable() -> None:
    template = "Local/{number}@outbound"
    endpoint = template.replace("{number}", "+4917012345678")
    r = rules(
        {
            "defaults": {"external_endpoint": template},
            "users": {"201": {"followme": [{"ring": ["+4917012345678"], "timeout": 15}]}},
        }
    )
    snap = snapshot()
    presence = tracker(snap)
    presence.replace_devices({endpoint: D.INVALID, "PJSIP/anna-desk": D.NOT_INUSE})
    plan = resolve_plan(snap, r, "201", presence=presence)
    assert plan.status is PlanStatus.OK
    assert legs(plan.legs) == [(endpoint, 0, 15, "followme")]
    assert plan.unreachable == ()


# --- without presence: the rule alone ------------------------------------------------------


def test_without_presence_the_plan_is_the_rule_alone() -> None:
    snap = snapshot(u201="office-1")
    r = rules(ISSUE_RULES | {"defaults": {"call_waiting": False}})
    plan = resolve_plan(snap, r, "201", presence=None)
    assert plan == resolve_plan(snap, r, "201")
    assert plan.status is PlanStatus.OK and plan.unreachable == ()
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 15, "followme"),
        ("PJSIP/anna-soft", 0, 15, "followme"),
        ("PJSIP/office1-desk", 5, 25, "workplace"),
        ("PJSIP/office1-dect", 10, 25, "workplace"),
        (EXTERNAL, 15, 40, "followme"),
    ]


class EveryoneIdle:
    """A presence view in which nobody is on dnd or a call and every phone answers."""

    def user(self, extension: str) -> UserPresence | None:
        return UserPresence(extension)

    def reachable(self, endpoint: str) -> bool:
        return True


USER_PHONES = list(ANNA.phones)
WORKPLACE_PHONES = list(OFFICE_1.phones)
entry = st.fixed_dictionaries(
    {
        "ring": st.lists(
            st.sampled_from([*USER_PHONES, "+4917012345678"]), min_size=1, max_size=3, unique=True
        ),
        "delay": st.integers(0, 30),
    },
    optional={"timeout": st.integers(1, 30)},
)
workplace_entry = st.fixed_dictionaries(
    {
        "ring": st.lists(st.sampled_from(WORKPLACE_PHONES), min_size=1, unique=True),
        "delay": st.integers(0, 30),
    },
    optional={"timeout": st.integers(1, 30)},
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DirectorySnapshot, RingRules]:
    followme: list[dict[str, Any]] | None = draw(st.none() | st.lists(entry, max_size=4))
    if followme and draw(st.booleans()):
        followme[0]["ring"] = [*followme[0]["ring"], "workplace"]
    data = {
        "defaults": {"call_waiting": draw(st.booleans())},
        "users": {"201": {"followme": followme}},
        "workplaces": {
            "office-1": {"ring": draw(st.none() | st.lists(workplace_entry, max_size=3))}
        },
    }
    snap = snapshot(u201="office-1") if draw(st.booleans()) else snapshot()
    return snap, rules(data)


@settings(max_examples=200, deadline=None)
@given(
    scenarios(),
    st.dictionaries(
        st.sampled_from(USER_PHONES + WORKPLACE_PHONES),
        st.sampled_from([D.NOT_INUSE, D.UNKNOWN, D.RINGING]),
    ),
)
def test_presence_with_nothing_to_say_changes_no_plan(
    scenario: tuple[DirectorySnapshot, RingRules], states: dict[str, DeviceState]
) -> None:
    snap, r = scenario
    alone = resolve_plan(snap, r, "201")
    assert resolve_plan(snap, r, "201", presence=EveryoneIdle()) == alone
    presence = PresenceTracker(snap)
    presence.replace_devices(states)
    assert resolve_plan(snap, r, "201", presence=presence) == alone


@settings(max_examples=200, deadline=None)
@given(
    scenarios(),
    st.dictionaries(
        st.sampled_from(USER_PHONES + WORKPLACE_PHONES), st.sampled_from(list(DeviceState))
    ),
)
def test_presence_only_ever_removes_and_moves_legs_earlier(
    scenario: tuple[DirectorySnapshot, RingRules], states: dict[str, DeviceState]
) -> None:
    snap, r = scenario
    presence = PresenceTracker(snap)
    presence.replace_devices(states)
    r = r.model_copy(update={"defaults": r.defaults.model_copy(update={"call_waiting": True})})
    alone = resolve_plan(snap, r, "201")
    plan = resolve_plan(snap, r, "201", presence=presence)
    assert set(plan.unreachable) == {
        leg.endpoint for leg in alone.legs if not presence.reachable(leg.endpoint)
    }
    assert {leg.endpoint for leg in plan.legs} == {leg.endpoint for leg in alone.legs} - set(
        plan.unreachable
    )
    for endpoint in {leg.endpoint for leg in plan.legs}:  # nothing rings later than before
        before = [leg for leg in alone.legs if leg.endpoint == endpoint]
        after = [leg for leg in plan.legs if leg.endpoint == endpoint]
        assert min(x.start for x in after) <= min(x.start for x in before)
        assert max(x.stop for x in after) <= max(x.stop for x in before)
        assert all(0 <= x.start < x.stop for x in after)
    if alone.legs and not plan.legs:
        assert plan.status is PlanStatus.UNREACHABLE
    else:
        assert plan.status is alone.status


# --- cut_dead_air ---------------------------------------------------------------------------


def leg(endpoint: str, start: float, stop: float) -> Leg:
    return Leg(endpoint, start, stop, LegSource.FOLLOWME)


@pytest.mark.parametrize(
    ("kept", "removed", "expected"),
    [
        # the issue's case: entry 1 [0, 15) unreachable, entry 2 at 15 for 20 s
        ([(15, 35)], [(0, 15)], [(0, 20)]),
        # another phone rings over the removed one: nothing moves
        ([(0, 25), (15, 35)], [(0, 15)], [(0, 25), (15, 35)]),
        # partly covered: only the uncovered part is cut
        ([(5, 25), (15, 40)], [(0, 15)], [(0, 20), (10, 35)]),
        # a gap the rule itself leaves (no removed leg there) stays
        ([(0, 5), (20, 30)], [], [(0, 5), (20, 30)]),
        ([(0, 5), (20, 30)], [(10, 15)], [(0, 5), (15, 25)]),
        # a removed leg after everything else moves nothing
        ([(0, 10)], [(10, 30)], [(0, 10)]),
        # two removed stretches, overlapping removed legs count once
        ([(10, 15), (30, 40)], [(0, 10), (5, 10), (15, 30)], [(0, 5), (5, 15)]),
    ],
)
def test_cut_dead_air_table(
    kept: list[tuple[float, float]],
    removed: list[tuple[float, float]],
    expected: list[tuple[float, float]],
) -> None:
    result = cut_dead_air(
        [leg(f"PJSIP/k{i}", a, b) for i, (a, b) in enumerate(kept)],
        [leg(f"PJSIP/r{i}", a, b) for i, (a, b) in enumerate(removed)],
    )
    assert [(x.start, x.stop) for x in result] == expected
    assert [x.endpoint for x in result] == [f"PJSIP/k{i}" for i in range(len(kept))]


def test_cut_dead_air_keeps_endpoint_and_source() -> None:
    kept = [Leg("PJSIP/w", 10, 20, LegSource.WORKPLACE)]
    assert cut_dead_air(kept, [leg("PJSIP/r", 0, 10)]) == [
        Leg("PJSIP/w", 0, 10, LegSource.WORKPLACE)
    ]


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _silence(intervals: Iterable[tuple[float, float]], end: float) -> list[tuple[float, float]]:
    """The stretches of [0, end) that no interval covers."""
    gaps, cursor = [], 0.0
    for a, b in _union(intervals):
        if a > cursor:
            gaps.append((cursor, min(a, end)))
        cursor = max(cursor, b)
    if cursor < end:
        gaps.append((cursor, end))
    return [(a, b) for a, b in gaps if b > a]


def _length(intervals: Iterable[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


spans = st.tuples(st.integers(0, 60), st.integers(1, 30)).map(
    lambda t: (float(t[0]), float(t[0] + t[1]))
)


@st.composite
def kept_and_removed(draw: st.DrawFn) -> tuple[list[Leg], list[Leg]]:
    kept = [leg(f"PJSIP/k{i}", a, b) for i, (a, b) in enumerate(draw(st.lists(spans, max_size=6)))]
    removed = [
        leg(f"PJSIP/r{i}", a, b) for i, (a, b) in enumerate(draw(st.lists(spans, max_size=6)))
    ]
    return kept, removed


@settings(max_examples=500)
@given(kept_and_removed())
def test_cut_dead_air_properties(case: tuple[list[Leg], list[Leg]]) -> None:
    kept, removed = case
    result = cut_dead_air(kept, removed)
    assert len(result) == len(kept)
    for before, after in zip(kept, result, strict=True):
        assert (after.endpoint, after.source) == (before.endpoint, before.source)
        assert after.stop - after.start == before.stop - before.start  # lengths kept
        assert 0 <= after.start <= before.start  # never later, never before 0
    for (a, x), (b, y) in itertools.product(zip(kept, result, strict=True), repeat=2):
        if a.start <= b.start:
            assert x.start <= y.start  # the order of starts is kept
    if not kept:
        return
    # Dead air is gone: every silence left is silence the rule itself had, where no
    # leg at all (kept or removed) would have rung.  In length: up to the last kept
    # leg's end, the new timeline is silent exactly as long as the old one with
    # every leg ringing.
    old_end = max(x.stop for x in kept)
    new_end = max(x.stop for x in result)
    everything = [(x.start, x.stop) for x in kept + removed]
    assert _length(_silence(((x.start, x.stop) for x in result), new_end)) == _length(
        _silence(everything, old_end)
    )
    # and the timeline got shorter by the dead air that was cut
    dead = _length(_silence(((x.start, x.stop) for x in kept), old_end)) - _length(
        _silence(everything, old_end)
    )
    assert new_end == old_end - dead


@given(st.lists(spans, max_size=8))
def test_cut_dead_air_without_removed_legs_changes_nothing(
    spans_: list[tuple[float, float]],
) -> None:
    kept = [leg(f"PJSIP/k{i}", a, b) for i, (a, b) in enumerate(spans_)]
    assert cut_dead_air(kept, []) == kept


@given(kept_and_removed())
def test_removed_legs_inside_kept_time_change_nothing(case: tuple[list[Leg], list[Leg]]) -> None:
    kept, _ = case
    inside = [leg(f"PJSIP/r{i}", x.start, x.stop) for i, x in enumerate(kept)]
    assert cut_dead_air(kept, inside) == kept


# --- the call flow turns these plans into results at once ------------------------------------


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (PlanStatus.DND, CallResult.DND),
        (PlanStatus.BUSY, CallResult.BUSY),
        (PlanStatus.UNREACHABLE, CallResult.NOPHONES),
    ],
)
def test_call_flow_continues_in_the_dialplan_at_once(
    status: PlanStatus, result: CallResult
) -> None:
    plan = RingPlan("201", "Anna Berger", None, status, unreachable=("PJSIP/anna-desk",))
    counter = itertools.count(1)
    flow = CallFlow("call-1", plan, lambda: f"leg-{next(counter)}")
    assert flow.start(0) == [ContinueInDialplan(result)]
    assert flow.finished and flow.result is result
    assert flow.next_deadline() is None
    assert flow.tick(30) == []


def test_call_flow_from_resolved_plans() -> None:
    snap = snapshot()
    r = rules({"defaults": {"call_waiting": False}})

    def first_commands(presence: PresenceTracker) -> list[object]:
        flow = CallFlow("call-1", resolve_plan(snap, r, "201", presence=presence), str)
        return list(flow.start(0))

    dnd = tracker(snap)
    dnd.set_client("201", "laptop", ClientStatus.DND)
    assert first_commands(dnd) == [ContinueInDialplan(CallResult.DND)]
    assert first_commands(tracker(snap, anna_desk=D.INUSE)) == [ContinueInDialplan(CallResult.BUSY)]
    assert first_commands(tracker(snap, anna_desk=D.UNAVAILABLE, anna_soft=D.UNAVAILABLE)) == [
        ContinueInDialplan(CallResult.NOPHONES)
    ]
    assert first_commands(tracker(snap))[0] == IndicateRinging()
