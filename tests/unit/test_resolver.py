"""The ring-plan resolver: each semantic rule of the issue, then invariants by hypothesis."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.routing.plan import Leg, LegSource, PlanStatus
from callrouter.routing.resolver import merge_legs, resolve_plan
from callrouter.rules.model import RingRules

ANNA = User("201", "Anna Berger", "staff", ("PJSIP/anna-soft", "PJSIP/anna-desk"))
BORIS = User("202", "Boris Chen", "staff", ("PJSIP/boris-desk",))
CLARA = User("203", "Clara Diaz", "staff", ())
OFFICE_1 = Workplace("office-1", "Office 1", "801", ("PJSIP/office1-desk", "PJSIP/office1-dect"))
OFFICE_2 = Workplace("office-2", "Office 2", "802", ("PJSIP/office2-desk",))


def snapshot(**logins: str) -> DirectorySnapshot:
    return DirectorySnapshot(
        users={u.extension: u for u in (ANNA, BORIS, CLARA)},
        workplaces={w.id: w for w in (OFFICE_1, OFFICE_2)},
        logins={ext.removeprefix("u"): wp for ext, wp in logins.items()},
    )


def rules(data: dict[str, Any] | None = None) -> RingRules:
    base: dict[str, Any] = {
        "defaults": {"timeout": 20, "external_endpoint": "PJSIP/{number}@trunk"}
    }
    base.update(data or {})
    return RingRules.model_validate(base)


def legs(plan_legs: tuple[Leg, ...]) -> list[tuple[str, float, float, str]]:
    return [(leg.endpoint, leg.start, leg.stop, leg.source.value) for leg in plan_legs]


def test_issue_example_mixed_operation() -> None:
    r = rules(
        {
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
    )
    plan = resolve_plan(snapshot(u201="office-1"), r, "201")
    assert plan.status is PlanStatus.OK
    assert (plan.user, plan.workplace) == ("Anna Berger", "office-1")
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 15, "followme"),
        ("PJSIP/anna-soft", 0, 15, "followme"),
        ("PJSIP/office1-desk", 5, 25, "workplace"),
        ("PJSIP/office1-dect", 10, 25, "workplace"),
        ("PJSIP/+4917012345678@trunk", 15, 40, "followme"),
    ]
    assert plan.to_json()["legs"][0] == {
        "endpoint": "PJSIP/anna-desk",
        "start": 0,
        "stop": 15,
        "source": "followme",
        "confirm": False,
    }


def test_entry_makes_one_leg_per_target_over_delay_to_delay_plus_timeout() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"], "delay": 3, "timeout": 7},
                        {"ring": ["PJSIP/anna-soft"], "delay": 12.5},
                    ]
                }
            }
        }
    )
    plan = resolve_plan(snapshot(), r, "201")
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 3, 10, "followme"),
        ("PJSIP/anna-soft", 12.5, 32.5, "followme"),
    ]


def test_no_followme_rings_all_direct_phones_at_once_for_default_timeout() -> None:
    plan = resolve_plan(snapshot(), rules({"defaults": {"timeout": 30}}), "201")
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 30, "followme"),
        ("PJSIP/anna-soft", 0, 30, "followme"),
    ]


def test_workplace_without_rule_rings_all_its_phones_at_once() -> None:
    plan = resolve_plan(snapshot(u202="office-1"), rules(), "202")
    assert legs(plan.legs) == [
        ("PJSIP/boris-desk", 0, 20, "followme"),
        ("PJSIP/office1-dect", 0, 20, "workplace"),
        ("PJSIP/office1-desk", 0, 20, "workplace"),
    ]
    assert plan.workplace == "office-1"


def test_workplace_phones_ring_only_while_logged_in_there() -> None:
    logged_out = resolve_plan(snapshot(), rules(), "202")
    assert [leg.endpoint for leg in logged_out.legs] == ["PJSIP/boris-desk"]
    assert logged_out.workplace is None
    elsewhere = resolve_plan(snapshot(u202="office-2"), rules(), "202")
    assert {leg.endpoint for leg in elsewhere.legs} == {"PJSIP/boris-desk", "PJSIP/office2-desk"}


def test_workplace_timeline_starts_at_delay_of_followme_workplace_entry() -> None:
    r = rules(
        {
            "users": {
                "202": {
                    "followme": [
                        {"ring": ["PJSIP/boris-desk"], "timeout": 10},
                        {"ring": ["workplace"], "delay": 8},
                    ]
                }
            },
            "workplaces": {
                "office-1": {
                    "ring": [
                        {"ring": ["PJSIP/office1-desk"], "timeout": 5},
                        {"ring": ["PJSIP/office1-dect"], "delay": 5, "timeout": 5},
                    ]
                }
            },
        }
    )
    plan = resolve_plan(snapshot(u202="office-1"), r, "202")
    assert legs(plan.legs) == [
        ("PJSIP/boris-desk", 0, 10, "followme"),
        ("PJSIP/office1-desk", 8, 13, "workplace"),
        ("PJSIP/office1-dect", 13, 18, "workplace"),
    ]


def test_explicit_timeout_on_workplace_entry_caps_the_workplace_timeline() -> None:
    r = rules(
        {
            "users": {"202": {"followme": [{"ring": ["workplace"], "delay": 2, "timeout": 6}]}},
            "workplaces": {
                "office-1": {
                    "ring": [
                        {"ring": ["PJSIP/office1-desk"], "timeout": 10},
                        {"ring": ["PJSIP/office1-dect"], "delay": 7},
                    ]
                }
            },
        }
    )
    plan = resolve_plan(snapshot(u202="office-1"), r, "202")
    assert legs(plan.legs) == [("PJSIP/office1-desk", 2, 8, "workplace")]


def test_followme_without_workplace_entry_runs_both_timelines_from_zero() -> None:
    r = rules({"users": {"202": {"followme": [{"ring": ["PJSIP/boris-desk"], "delay": 4}]}}})
    plan = resolve_plan(snapshot(u202="office-2"), r, "202")
    assert legs(plan.legs) == [
        ("PJSIP/office2-desk", 0, 20, "workplace"),
        ("PJSIP/boris-desk", 4, 24, "followme"),
    ]


def test_foreign_phones_are_skipped_with_a_warning() -> None:
    r = rules(
        {
            "users": {"201": {"followme": [{"ring": ["PJSIP/anna-desk", "PJSIP/boris-desk"]}]}},
            "workplaces": {"office-1": {"ring": [{"ring": ["PJSIP/office2-desk"]}]}},
        }
    )
    plan = resolve_plan(snapshot(u201="office-1"), r, "201")
    assert [leg.endpoint for leg in plan.legs] == ["PJSIP/anna-desk"]
    assert len(plan.warnings) == 2
    assert "PJSIP/boris-desk" in plan.warnings[0] and "user 201" in plan.warnings[0]
    assert "PJSIP/office2-desk" in plan.warnings[1] and "workplace office-1" in plan.warnings[1]


def test_callers_own_device_is_never_rung() -> None:
    plan = resolve_plan(snapshot(u201="office-1"), rules(), "201", caller="PJSIP/office1-desk")
    assert "PJSIP/office1-desk" not in {leg.endpoint for leg in plan.legs}
    assert len(plan.legs) == 3


def test_only_phone_is_the_caller_gives_no_phones() -> None:
    plan = resolve_plan(snapshot(), rules(), "202", caller="PJSIP/boris-desk")
    assert plan.status is PlanStatus.NO_PHONES
    assert plan.legs == ()


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([(0, 10), (10, 20)], [(0, 20)]),  # touching
        ([(0, 10), (5, 8)], [(0, 10)]),  # contained
        ([(5, 15), (0, 10)], [(0, 15)]),  # overlapping, out of order
        ([(0, 5), (6, 9)], [(0, 5), (6, 9)]),  # a gap stays a gap
        ([(0, 5), (6, 9), (5, 6)], [(0, 9)]),  # a bridge joins both
    ],
)
def test_legs_of_one_endpoint_that_overlap_or_touch_merge(
    parts: list[tuple[float, float]], expected: list[tuple[float, float]]
) -> None:
    merged = merge_legs(Leg("PJSIP/x", a, b, LegSource.FOLLOWME) for a, b in parts)
    assert [(leg.start, leg.stop) for leg in merged] == expected


def test_same_phone_in_two_entries_merges() -> None:
    r = rules(
        {
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"], "timeout": 10},
                        {
                            "ring": ["PJSIP/anna-desk", "PJSIP/anna-soft"],
                            "delay": 10,
                            "timeout": 10,
                        },
                    ]
                }
            }
        }
    )
    plan = resolve_plan(snapshot(), r, "201")
    assert legs(plan.legs) == [
        ("PJSIP/anna-desk", 0, 20, "followme"),
        ("PJSIP/anna-soft", 10, 20, "followme"),
    ]


def test_external_numbers_expand_through_the_template() -> None:
    r = rules(
        {
            "defaults": {"external_endpoint": "Local/{number}@outbound"},
            "users": {"203": {"followme": [{"ring": ["+4930123456"], "timeout": 9}]}},
        }
    )
    plan = resolve_plan(snapshot(), r, "203")
    assert legs(plan.legs) == [("Local/+4930123456@outbound", 0, 9, "followme")]


def test_unknown_extension() -> None:
    plan = resolve_plan(snapshot(), rules(), "999")
    assert plan.status is PlanStatus.UNKNOWN_EXTENSION
    assert plan.to_json() == {
        "extension": "999",
        "user": None,
        "workplace": None,
        "status": "unknown-extension",
        "legs": [],
        "unreachable": [],
        "skipped": [],
        "elsewhere": [],
        "warnings": [],
        "forwarded": [],
        "forward_on": {},
    }


def test_known_user_with_nothing_to_ring() -> None:
    plan = resolve_plan(snapshot(), rules(), "203")
    assert plan.status is PlanStatus.NO_PHONES
    assert plan.user == "Clara Diaz"


# --- invariants ------------------------------------------------------------------

USER_PHONES = [f"PJSIP/u{i}" for i in range(4)]
WORKPLACE_PHONES = [f"PJSIP/w{i}" for i in range(3)]
FOREIGN = ["PJSIP/someone-else"]
times = st.integers(min_value=0, max_value=40).map(float)
durations = st.integers(min_value=1, max_value=30).map(float)


def entries(targets: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    entry = st.fixed_dictionaries(
        {
            "ring": st.lists(st.sampled_from(targets), min_size=1, max_size=4, unique=True),
            "delay": times,
        },
        optional={"timeout": durations},
    )
    return st.lists(entry, max_size=5)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DirectorySnapshot, RingRules, str | None]:
    user = User(
        "100", "Hypo", None, tuple(draw(st.lists(st.sampled_from(USER_PHONES), unique=True)))
    )
    workplace = Workplace(
        "desk", "Desk", "900", tuple(draw(st.lists(st.sampled_from(WORKPLACE_PHONES), unique=True)))
    )
    logged_in = draw(st.booleans())
    followme = draw(st.none() | entries(USER_PHONES + FOREIGN + ["+491701234"]))
    if followme and draw(st.booleans()):
        followme[0]["ring"] = [*followme[0]["ring"], "workplace"]
    ring = draw(st.none() | entries(WORKPLACE_PHONES + FOREIGN))
    data: dict[str, Any] = {
        "defaults": {"timeout": draw(durations), "external_endpoint": "PJSIP/{number}@trunk"},
        "users": {"100": {"followme": followme}},
        "workplaces": {"desk": {"ring": ring}},
    }
    caller = draw(st.none() | st.sampled_from(USER_PHONES + WORKPLACE_PHONES))
    snap = DirectorySnapshot(
        users={"100": user},
        workplaces={"desk": workplace},
        logins={"100": "desk"} if logged_in else {},
    )
    return snap, RingRules.model_validate(data), caller


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_plan_invariants(scenario: tuple[DirectorySnapshot, RingRules, str | None]) -> None:
    snap, r, caller = scenario
    plan = resolve_plan(snap, r, "100", caller=caller)
    user, workplace = snap.users["100"], snap.workplaces["desk"]
    allowed_followme = set(user.phones) | {"PJSIP/+491701234@trunk"}
    allowed_workplace = set(workplace.phones) if snap.logins else set()
    for leg in plan.legs:
        # no leg outside its owner's phones
        if leg.source is LegSource.FOLLOWME:
            assert leg.endpoint in allowed_followme
        else:
            assert leg.endpoint in allowed_workplace
        assert leg.endpoint != caller  # the caller is never rung
        assert 0 <= leg.start < leg.stop
    # merged legs of one endpoint never overlap or touch
    by_endpoint: dict[str, list[Leg]] = {}
    for leg in plan.legs:
        by_endpoint.setdefault(leg.endpoint, []).append(leg)
    for endpoint_legs in by_endpoint.values():
        endpoint_legs.sort(key=lambda leg: leg.start)
        for a, b in itertools.pairwise(endpoint_legs):
            assert a.stop < b.start
    # sorted by start, then endpoint
    assert list(plan.legs) == sorted(plan.legs, key=lambda leg: (leg.start, leg.endpoint))
    assert plan.status is (PlanStatus.OK if plan.legs else PlanStatus.NO_PHONES)
