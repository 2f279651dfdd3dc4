"""Several Asterisks on one directory: a router dials only the phones of its node
(and those without one); presence merges the device states of every node."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.calls.build import warn_if_unknown_node
from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.domain.presence import DeviceState
from callrouter.fallback.entries import FallbackEntry, fallback_entries
from callrouter.presence.tracker import PresenceTracker
from callrouter.routing.plan import PlanStatus
from callrouter.routing.resolver import resolve_plan
from callrouter.routing.timeline import format_plan
from callrouter.rules.model import RingRules
from tests.unit.test_resolver import USER_PHONES, WORKPLACE_PHONES, scenarios

ANNA = User("201", "Anna", phones=("PJSIP/anna-berlin", "PJSIP/anna-hamburg", "PJSIP/anna-soft"))
BORIS = User("202", "Boris", phones=("PJSIP/boris-hamburg",))
DESK = Workplace("desk-1", "Desk 1", "801", ("PJSIP/desk1-hamburg",))
SNAPSHOT = DirectorySnapshot(
    users={"201": ANNA, "202": BORIS, "205": User("205", "Emma")},
    workplaces={"desk-1": DESK},
    logins={"205": "desk-1"},
    # anna-soft has no node: it is on every node's Asterisk (e.g. a trunk or Local).
    phone_nodes={
        "PJSIP/anna-berlin": "berlin",
        "PJSIP/anna-hamburg": "hamburg",
        "PJSIP/boris-hamburg": "hamburg",
        "PJSIP/desk1-hamburg": "hamburg",
    },
)


def rules(data: dict[str, Any] | None = None) -> RingRules:
    return RingRules.model_validate({"defaults": {"timeout": 20}, **(data or {})})


def legs(plan: Any) -> list[tuple[str, float, float]]:
    return [(leg.endpoint, leg.start, leg.stop) for leg in plan.legs]


def test_a_router_rings_only_the_phones_of_its_node() -> None:
    berlin = resolve_plan(SNAPSHOT, rules(), "201", node="berlin")
    assert legs(berlin) == [("PJSIP/anna-berlin", 0, 20), ("PJSIP/anna-soft", 0, 20)]
    assert berlin.elsewhere == ("PJSIP/anna-hamburg",) and berlin.unreachable == ()
    hamburg = resolve_plan(SNAPSHOT, rules(), "201", node="hamburg")
    assert legs(hamburg) == [("PJSIP/anna-hamburg", 0, 20), ("PJSIP/anna-soft", 0, 20)]
    assert "not rung, on another node: PJSIP/anna-berlin" in format_plan(hamburg)
    assert hamburg.to_json()["elsewhere"] == ["PJSIP/anna-berlin"]


def test_without_a_node_every_phone_is_rung() -> None:
    plan = resolve_plan(SNAPSHOT, rules(), "201")
    assert [leg.endpoint for leg in plan.legs] == list(sorted(ANNA.phones))
    assert plan.elsewhere == ()


def test_a_user_whose_phones_are_all_elsewhere_has_nobody_to_reach_here() -> None:
    plan = resolve_plan(SNAPSHOT, rules(), "202", node="berlin")
    assert plan.status is PlanStatus.UNREACHABLE and plan.legs == ()
    assert plan.elsewhere == ("PJSIP/boris-hamburg",)
    # A workplace's phones belong to its node too.
    assert resolve_plan(SNAPSHOT, rules(), "205", node="berlin").elsewhere == (
        "PJSIP/desk1-hamburg",
    )
    assert legs(resolve_plan(SNAPSHOT, rules(), "205", node="hamburg")) == [
        ("PJSIP/desk1-hamburg", 0, 20)
    ]


def test_an_entry_of_another_node_leaves_no_dead_air() -> None:
    followme = {
        "users": {
            "201": {
                "followme": [
                    {"ring": ["PJSIP/anna-hamburg"], "timeout": 10},
                    {"ring": ["PJSIP/anna-berlin"], "delay": 10, "timeout": 15},
                ]
            }
        }
    }
    plan = resolve_plan(SNAPSHOT, rules(followme), "201", node="berlin")
    # The first entry rings nothing here: the second moves up by its 10 s.
    assert legs(plan) == [("PJSIP/anna-berlin", 0, 15)]


def test_elsewhere_and_unreachable_are_told_apart() -> None:
    presence = PresenceTracker(SNAPSHOT)
    presence.set_device("PJSIP/anna-soft", DeviceState.UNAVAILABLE)
    presence.set_device("PJSIP/anna-hamburg", DeviceState.UNAVAILABLE)
    plan = resolve_plan(SNAPSHOT, rules(), "201", presence=presence, node="berlin")
    assert legs(plan) == [("PJSIP/anna-berlin", 0, 20)]
    assert plan.unreachable == ("PJSIP/anna-soft",)
    assert plan.elsewhere == ("PJSIP/anna-hamburg",)


def test_presence_merges_the_phones_of_every_node() -> None:
    # A router in Berlin learns Hamburg's states from its own Asterisk (which hears
    # them from Hamburg's): the user is on a call when either phone is.
    presence = PresenceTracker(SNAPSHOT)
    for endpoint in ANNA.phones:
        presence.set_device(endpoint, DeviceState.NOT_INUSE)
    presence.set_device("PJSIP/anna-hamburg", DeviceState.INUSE)
    anna = presence.user("201")
    assert anna is not None and anna.phone.on_call
    assert anna.device_state is DeviceState.INUSE
    presence.set_device("PJSIP/anna-hamburg", DeviceState.NOT_INUSE)
    assert not presence.user("201").phone.on_call  # type: ignore[union-attr]
    # On a call in Hamburg, without call waiting: Berlin answers busy at once.
    presence.set_device("PJSIP/anna-hamburg", DeviceState.INUSE)
    no_waiting = rules({"users": {"201": {"call_waiting": False}}})
    plan = resolve_plan(SNAPSHOT, no_waiting, "201", presence=presence, node="berlin")
    assert plan.status is PlanStatus.BUSY


def test_the_fallback_of_a_node_dials_only_its_phones() -> None:
    assert fallback_entries(SNAPSHOT, rules(), node="berlin") == {
        "201": FallbackEntry("PJSIP/anna-berlin&PJSIP/anna-soft", 20)
    }
    assert fallback_entries(SNAPSHOT, rules(), node="hamburg") == {
        "201": FallbackEntry("PJSIP/anna-hamburg&PJSIP/anna-soft", 20),
        "202": FallbackEntry("PJSIP/boris-hamburg", 20),
        "205": FallbackEntry("PJSIP/desk1-hamburg", 20),
    }
    assert set(fallback_entries(SNAPSHOT, rules())) == {"201", "202", "205"}


def test_a_router_of_a_node_the_directory_does_not_know_is_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert SNAPSHOT.nodes() == {"berlin", "hamburg"}
    assert not warn_if_unknown_node(SNAPSHOT, "berlin")
    assert not warn_if_unknown_node(DirectorySnapshot(), "berlin")  # no nodes at all
    assert warn_if_unknown_node(SNAPSHOT, "berlni")
    assert "node berlni has no phone in the directory (its nodes: berlin, hamburg)" in (caplog.text)


@settings(max_examples=300, deadline=None)
@given(
    scenarios(),
    st.dictionaries(st.sampled_from(USER_PHONES + WORKPLACE_PHONES), st.sampled_from(["a", "b"])),
    st.sampled_from(["a", "b"]),
)
def test_no_leg_is_on_another_node(
    scenario: tuple[DirectorySnapshot, RingRules, str | None],
    phone_nodes: dict[str, str],
    node: str,
) -> None:
    snap, r, caller = scenario
    snap = replace(snap, phone_nodes=phone_nodes)
    everywhere = resolve_plan(snap, r, "100", caller=caller)
    here = resolve_plan(snap, r, "100", caller=caller, node=node)
    for leg in here.legs:
        assert phone_nodes.get(leg.endpoint, node) == node
    # What is left out is exactly the phones of the other node the rule would ring.
    rung = {leg.endpoint for leg in everywhere.legs}
    assert set(here.elsewhere) == {e for e in rung if phone_nodes.get(e, node) != node}
    assert {leg.endpoint for leg in here.legs} == rung - set(here.elsewhere)
    # Leaving phones out never makes a plan ring longer.
    assert here.stop <= everywhere.stop
