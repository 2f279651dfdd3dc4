"""Entries for internal or external calls only, and office hours (schedules): the
rules' new fields, their errors, and what the resolver makes of them."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.routing.plan import CallContext, LegSource
from callrouter.routing.resolver import resolve_plan
from callrouter.rules.loader import load_rules
from callrouter.rules.model import RingRules, Schedule
from tests.unit.test_rules_loader import rules_errors

SNAPSHOT = DirectorySnapshot(
    users={"201": User("201", "Anna", phones=("PJSIP/desk", "PJSIP/soft"))},
    workplaces={"hot-1": Workplace("hot-1", "Hot desk", "801", phones=("PJSIP/hot",))},
    logins={"201": "hot-1"},
)
WEDNESDAY_10 = datetime(2026, 12, 2, 10, 0)
WEDNESDAY_19 = datetime(2026, 12, 2, 19, 0)
CHRISTMAS_10 = datetime(2026, 12, 24, 10, 0)
SATURDAY_10 = datetime(2026, 12, 5, 10, 0)

RULES = RingRules.model_validate(
    {
        "schedules": {
            "office-hours": {
                "days": ["mon-fri"],
                "hours": ["08:00-12:00", "13:00-17:30"],
                "days_off": ["2026-12-24"],
            }
        },
        "users": {
            "201": {
                "followme": [
                    {"ring": ["PJSIP/desk"], "timeout": 10, "when": "office-hours"},
                    {"ring": ["PJSIP/soft"], "delay": 10, "calls": "internal"},
                    {"ring": ["workplace"], "delay": 20, "unless": "office-hours"},
                ]
            }
        },
    }
)


@pytest.mark.parametrize(
    ("at", "holds"),
    [
        (WEDNESDAY_10, True),
        (datetime(2026, 12, 2, 8, 0), True),  # the first minute
        (datetime(2026, 12, 2, 12, 0), False),  # [start, stop): the lunch break
        (datetime(2026, 12, 2, 17, 29), True),
        (datetime(2026, 12, 2, 17, 30), False),
        (WEDNESDAY_19, False),
        (SATURDAY_10, False),
        (CHRISTMAS_10, False),  # a Thursday, but a day off
    ],
)
def test_a_schedule_holds_on_its_days_and_hours_except_its_days_off(
    at: datetime, holds: bool
) -> None:
    assert RULES.schedules["office-hours"].holds(at) is holds


def test_days_take_ranges_and_lists_and_a_schedule_may_run_to_midnight() -> None:
    schedule = Schedule.model_validate({"days": ["sat", "mon-wed"], "hours": ["18:00-24:00"]})
    assert schedule.days == ("sat", "mon", "tue", "wed")
    assert schedule.holds(datetime(2026, 12, 5, 23, 59))
    assert not schedule.holds(datetime(2026, 12, 3, 23, 0))  # a Thursday
    assert Schedule().holds(datetime(2026, 1, 1, 0, 0))  # no limits: always


def test_inside_office_hours_an_internal_call_rings_desk_then_softphone() -> None:
    plan = resolve_plan(SNAPSHOT, RULES, "201", call=CallContext(internal=True, at=WEDNESDAY_10))
    assert [(leg.endpoint, leg.start) for leg in plan.legs] == [
        ("PJSIP/desk", 0.0),
        ("PJSIP/soft", 10.0),
    ]
    assert plan.skipped == (
        "user 201 followme[2]: unless office-hours: in the schedule at Wed 10:00",
    )


def test_an_external_call_leaves_the_internal_entry_out_and_its_silence_too() -> None:
    plan = resolve_plan(SNAPSHOT, RULES, "201", call=CallContext(internal=False, at=WEDNESDAY_19))
    # Out of hours: no desk; external: no softphone; the workplace from 20 s moves to 0.
    assert [(leg.endpoint, leg.start, leg.source) for leg in plan.legs] == [
        ("PJSIP/hot", 0.0, LegSource.WORKPLACE)
    ]
    assert plan.skipped == (
        "user 201 followme[0]: when office-hours: not in the schedule at Wed 19:00",
        "user 201 followme[1]: internal calls only",
    )


def test_without_the_time_entries_that_name_a_schedule_do_not_apply() -> None:
    plan = resolve_plan(SNAPSHOT, RULES, "201", call=CallContext(internal=True, at=None))
    assert [leg.endpoint for leg in plan.legs] == ["PJSIP/soft"]
    assert "the time of the call is not known" in plan.skipped[0]


def test_workplace_entries_apply_by_the_same_conditions() -> None:
    rules = RingRules.model_validate(
        {"workplaces": {"hot-1": {"ring": [{"ring": ["PJSIP/hot"], "calls": "external"}]}}}
    )
    internal = resolve_plan(SNAPSHOT, rules, "201", call=CallContext(internal=True))
    external = resolve_plan(SNAPSHOT, rules, "201", call=CallContext(internal=False))
    assert "PJSIP/hot" not in [leg.endpoint for leg in internal.legs]
    assert internal.skipped == ("workplace hot-1 ring[0]: external calls only",)
    assert "PJSIP/hot" in [leg.endpoint for leg in external.legs]


BAD: list[tuple[str, str]] = [
    (
        'users:\n  "201":\n    followme:\n      - {ring: [PJSIP/a], when: office}\n',
        'rules.yaml:4:33: users."201".followme[0].when: when: office is not a schedule of this '
        "file (schedules: none defined)",
    ),
    (
        "schedules:\n  office:\n    days: [mon-fry]\n",
        "rules.yaml:3:5: schedules.office.days: 'mon-fry' is not a day: one of "
        "mon, tue, wed, thu, fri, sat, sun, or mon-fri",
    ),
    (
        'schedules:\n  office:\n    hours: ["17:00-08:00"]\n',
        "rules.yaml:3:13: schedules.office.hours[0]: '17:00-08:00' ends before it "
        "starts (past midnight: two ranges)",
    ),
    (
        'schedules:\n  office:\n    hours: ["8-17"]\n',
        "rules.yaml:3:13: schedules.office.hours[0]: '8-17' is not a time range: "
        'HH:MM-HH:MM, e.g. "08:00-17:30"',
    ),
    (
        'users:\n  "201":\n    followme:\n      - {ring: [PJSIP/a], calls: outside}\n',
        "rules.yaml:4:34: users.\"201\".followme[0].calls: Input should be 'internal' or "
        "'external'",
    ),
    (
        "schedules:\n  office:\n    days_off: [2026-13-01]\n",
        "rules.yaml:3:16: schedules.office.days_off[0]:",
    ),
]


@pytest.mark.parametrize(("text", "error"), BAD)
def test_bad_schedules_and_conditions_name_the_file_line_and_field(
    tmp_path: Path, text: str, error: str
) -> None:
    lines = rules_errors(tmp_path, text)
    assert len(lines) == 1 and lines[0].startswith(error), lines


minutes = st.integers(min_value=0, max_value=24 * 60)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    start = draw(st.integers(min_value=0, max_value=24 * 60 - 1))
    stop = draw(st.integers(min_value=start + 1, max_value=24 * 60))

    def hhmm(m: int) -> str:
        return "24:00" if m == 24 * 60 else f"{m // 60:02d}:{m % 60:02d}"

    days = draw(
        st.lists(
            st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            min_size=1,
            unique=True,
        )
    )
    off = draw(st.lists(st.dates(date(2026, 1, 1), date(2026, 12, 31)), max_size=3))
    return Schedule.model_validate(
        {"days": days, "hours": [f"{hhmm(start)}-{hhmm(stop)}"], "days_off": off}
    )


@settings(max_examples=300, deadline=None)
@given(
    schedules(),
    st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31, 23, 59)),
    st.booleans(),
    st.sampled_from([None, "internal", "external"]),
)
def test_when_entries_ring_only_in_their_schedule_and_calls_entries_only_for_their_calls(
    schedule: Schedule, at: datetime, internal: bool, calls: str | None
) -> None:
    entry: dict[str, object] = {"ring": ["PJSIP/desk"], "when": "s"}
    if calls is not None:
        entry["calls"] = calls
    rules = RingRules.model_validate(
        {
            "schedules": {"s": schedule.model_dump()},
            "users": {"201": {"followme": [entry, {"ring": ["PJSIP/soft"], "unless": "s"}]}},
        }
    )
    plan = resolve_plan(SNAPSHOT, rules, "201", call=CallContext(internal=internal, at=at))
    rung = {leg.endpoint for leg in plan.legs}
    holds = schedule.holds(at)
    fits = calls is None or (calls == "internal") is internal
    assert ("PJSIP/desk" in rung) is (holds and fits)
    assert ("PJSIP/soft" in rung) is (not holds)  # unless: exactly outside the schedule


def test_internal_by_the_callers_endpoint_unless_the_dialplan_says_otherwise() -> None:
    from typing import cast

    from callrouter.ari import AriClient
    from callrouter.ari.events import Channel
    from callrouter.calls.intake import CallIntake

    at = datetime(2026, 12, 2, 10, 0)
    intake = CallIntake(cast(AriClient, None), lambda: (SNAPSHOT, RULES), local_time=lambda: at)
    ours = Channel("c-1", name="PJSIP/desk-00000001")
    theirs = Channel("c-2", name="PJSIP/trunk-00000002")
    assert intake.call_context(SNAPSHOT, ours, None) == CallContext(internal=True, at=at)
    assert intake.call_context(SNAPSHOT, theirs, None) == CallContext(internal=False, at=at)
    # Stasis(callrouter,EXTEN,external) from a trunk's context, or internal.
    assert not intake.call_context(SNAPSHOT, ours, "external").internal
    assert intake.call_context(SNAPSHOT, theirs, "internal").internal
    # Anything else is ignored (logged): the endpoint decides.
    assert intake.call_context(SNAPSHOT, theirs, "vip").internal is False
    # A workplace's phone counts as the directory's too.
    hot = Channel("c-3", name="PJSIP/hot-00000003")
    assert intake.call_context(SNAPSHOT, hot, None).internal


def test_the_example_rules_read_the_same_by_a_yaml_1_1_tool() -> None:
    """PyYAML (YAML 1.1) reads keys such as off/on/yes as booleans: schedules use none
    of them, so the example file means the same to the demo's copy and to admins' tools."""
    import yaml

    examples = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"
    assert RingRules.model_validate(yaml.safe_load(examples.read_text())) == load_rules(examples)
