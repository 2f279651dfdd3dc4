"""The user's own switches in the resolver: a switched-off entry never rings, and the
plan says why it is left out."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.domain.directory import DirectorySnapshot, User
from callrouter.routing.resolver import resolve_plan
from callrouter.rules.model import RingRules, user_switches

PHONES = ("PJSIP/anna-desk", "PJSIP/anna-soft", "PJSIP/anna-dect")
ANNA = User("201", "Anna", "staff", PHONES)
MOBILE = "+4917012345678"
SWITCHES = ("mobile", "soft", "dect")


def rules(followme: list[dict[str, Any]]) -> RingRules:
    return RingRules.model_validate(
        {
            "defaults": {"external_endpoint": "PJSIP/{number}@trunk"},
            "users": {"201": {"followme": followme}},
        }
    )


def test_a_switched_off_entry_is_left_out_with_its_silence_and_the_reason() -> None:
    r = rules(
        [
            {"ring": ["PJSIP/anna-desk"], "timeout": 10, "switch": "desk"},
            {"ring": [MOBILE], "delay": 10, "switch": "mobile"},
        ]
    )
    assert user_switches(r, "201") == ("desk", "mobile")
    on = resolve_plan(DirectorySnapshot(users={"201": ANNA}), r, "201")
    assert [leg.endpoint for leg in on.legs] == ["PJSIP/anna-desk", f"PJSIP/{MOBILE}@trunk"]
    snap = DirectorySnapshot(users={"201": ANNA}, switched_off={"201": frozenset({"desk"})})
    off = resolve_plan(snap, r, "201")
    assert [(leg.endpoint, leg.start) for leg in off.legs] == [(f"PJSIP/{MOBILE}@trunk", 0)]
    assert off.skipped == ("user 201 followme[0]: switched off by the user (desk)",)


entries = st.lists(
    st.fixed_dictionaries(
        {
            "ring": st.lists(
                st.sampled_from([*PHONES, MOBILE]), min_size=1, max_size=2, unique=True
            ),
            "delay": st.integers(0, 20),
        },
        optional={"switch": st.sampled_from(SWITCHES)},
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(followme=entries, off=st.frozensets(st.sampled_from(SWITCHES)))
def test_a_switched_off_entry_never_rings(
    followme: list[dict[str, Any]], off: frozenset[str]
) -> None:
    r = rules(followme)
    snap = DirectorySnapshot(users={"201": ANNA}, switched_off={"201": off})
    plan = resolve_plan(snap, r, "201")
    rung = {leg.endpoint for leg in plan.legs}
    still_on = {
        target if target != MOBILE else f"PJSIP/{MOBILE}@trunk"
        for entry in followme
        if entry.get("switch") not in off
        for target in entry["ring"]
    }
    assert rung <= still_on  # nothing rings that only switched-off entries name
    assert rung == still_on  # and everything the others name rings
