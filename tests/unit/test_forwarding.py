"""Forwarding in the resolver: each kind, DND, chains and their stops, the user's own
forwardings against the admin's, the chain ahead (plan_tree), and bad rules."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.domain.directory import DirectorySnapshot, User
from callrouter.domain.forwarding import FORWARD_KINDS, MAX_FORWARD_HOPS
from callrouter.domain.presence import ClientStatus, PhoneStatus, UserPresence
from callrouter.routing.chain import plan_tree
from callrouter.routing.plan import CallContext, ForwardHop, LegSource, PlanStatus, RingPlan
from callrouter.routing.resolver import resolve_forward, resolve_plan
from callrouter.routing.timeline import format_tree
from callrouter.rules.check import check_rules
from callrouter.rules.model import RingRules
from tests.unit.test_rules_loader import rules_errors

USERS = {
    ext: User(ext, name, "staff" if ext != "204" else "trainee", phones)
    for ext, name, phones in (
        ("201", "Anna", ("PJSIP/anna",)),
        ("202", "Boris", ("PJSIP/boris",)),
        ("203", "Clara", ("PJSIP/clara",)),
        ("204", "Dora", ("PJSIP/dora",)),
        ("205", "Emil", ("PJSIP/emil",)),
    )
}
TRUNK = "PJSIP/{number}@trunk"
MOBILE = "+4917012345678"


def snapshot(**own: dict[str, str]) -> DirectorySnapshot:
    return DirectorySnapshot(users=USERS, forwards={k.removeprefix("u"): v for k, v in own.items()})


def rules(users: dict[str, Any] | None = None, **defaults: Any) -> RingRules:
    return RingRules.model_validate(
        {"defaults": {"external_endpoint": TRUNK, **defaults}, "users": users or {}}
    )


def forward(**kinds: Any) -> dict[str, Any]:
    return {"forward": kinds}


@dataclass
class Presence:
    dnd: set[str] = field(default_factory=set)
    on_call: set[str] = field(default_factory=set)
    unreachable: set[str] = field(default_factory=set)

    def user(self, extension: str) -> UserPresence | None:
        return UserPresence(
            extension,
            PhoneStatus(True, extension in self.on_call),
            ClientStatus.DND if extension in self.dnd else ClientStatus.ONLINE,
        )

    def reachable(self, endpoint: str) -> bool:
        return endpoint not in self.unreachable


def endpoints(plan: RingPlan) -> list[str]:
    return [leg.endpoint for leg in plan.legs]


def hops(plan: RingPlan) -> list[tuple[str, str, str]]:
    return [(h.extension, h.kind, h.target) for h in plan.forwarded]


# --- each kind ----------------------------------------------------------------------


def test_always_to_an_extension_rings_that_person_by_their_own_plan() -> None:
    r = rules({"201": forward(always="202"), "202": {"followme": [{"ring": ["PJSIP/boris"]}]}})
    plan = resolve_plan(snapshot(), r, "201")
    assert plan.extension == "202" and plan.user == "Boris" and plan.status is PlanStatus.OK
    assert endpoints(plan) == ["PJSIP/boris"]
    assert plan.forwarded == (ForwardHop("201", "always", "202", "admin"),)


def test_always_to_an_external_number_rings_it_alone() -> None:
    plan = resolve_plan(snapshot(), rules({"201": forward(always=MOBILE)}, timeout=25), "201")
    assert plan.extension == "201" and plan.status is PlanStatus.OK
    assert [(leg.endpoint, leg.start, leg.stop, leg.source) for leg in plan.legs] == [
        (f"PJSIP/{MOBILE}@trunk", 0, 25, LegSource.FORWARD)
    ]


def test_dnd_beats_forwarding_unless_the_user_forwards_on_dnd() -> None:
    presence = Presence(dnd={"201"})
    r = rules({"201": forward(always="202", busy="203", unreachable="203")})
    assert resolve_plan(snapshot(), r, "201", presence=presence).status is PlanStatus.DND
    r = rules({"201": forward(always="202", dnd="203")})
    plan = resolve_plan(snapshot(), r, "201", presence=presence)
    assert plan.extension == "203" and hops(plan) == [("201", "dnd", "203")]


def test_busy_at_once_forwards_and_busy_later_is_left_to_the_driver() -> None:
    r = rules({"201": {"call_waiting": False, **forward(busy="202", no_answer="203")}})
    plan = resolve_plan(snapshot(), r, "201", presence=Presence(on_call={"201"}))
    assert plan.extension == "202" and hops(plan) == [("201", "busy", "202")]
    idle = resolve_plan(snapshot(), r, "201", presence=Presence())
    assert idle.extension == "201" and endpoints(idle) == ["PJSIP/anna"]
    assert [(h.kind, h.target) for h in idle.forward_on] == [("busy", "202"), ("no_answer", "203")]
    assert idle.forward_for("no_answer") == ForwardHop("201", "no_answer", "203", "admin")
    # Without a busy forwarding, busy at once stays busy.
    r = rules({"201": {"call_waiting": False}})
    assert resolve_plan(snapshot(), r, "201", presence=Presence(on_call={"201"})).status is (
        PlanStatus.BUSY
    )


def test_unreachable_forwards_when_no_phone_can_ring() -> None:
    r = rules({"201": forward(unreachable="202")})
    plan = resolve_plan(snapshot(), r, "201", presence=Presence(unreachable={"PJSIP/anna"}))
    assert plan.extension == "202" and hops(plan) == [("201", "unreachable", "202")]
    # A phone that looks reachable rings; if it cannot be reached after all (Asterisk
    # refuses its channel), the driver follows the same forwarding.
    rings = resolve_plan(snapshot(), r, "201", presence=Presence())
    assert rings.extension == "201" and endpoints(rings) == ["PJSIP/anna"]
    assert rings.forward_for("unreachable") == ForwardHop("201", "unreachable", "202", "admin")
    tree = plan_tree(snapshot(), r, rings)
    assert [(kind, then.plan.extension) for kind, then in tree.then] == [("unreachable", "202")]
    assert "When no phone can be reached:" in format_tree(tree)


def test_an_unreachable_forwarding_that_would_loop_warns_once() -> None:
    r = rules({"201": forward(unreachable="202"), "202": forward(always="201")})
    gone = Presence(unreachable={"PJSIP/anna"})
    plan = resolve_plan(
        snapshot(),
        r,
        "201",
        presence=gone,
        forwarded=(ForwardHop("202", "always", "201", "admin"),),
    )
    assert plan.status is PlanStatus.UNREACHABLE and plan.extension == "201"
    assert plan.warnings == (
        "forwarding stopped, it would loop: 201 forwards unreachable to 202 (rules)",
    )


# --- chains -------------------------------------------------------------------------


def test_a_loop_stops_where_it_would_come_back_and_that_user_rings() -> None:
    r = rules({"201": forward(always="202"), "202": forward(always="201")})
    plan = resolve_plan(snapshot(), r, "201")
    assert plan.extension == "202" and endpoints(plan) == ["PJSIP/boris"]
    assert hops(plan) == [("201", "always", "202")]
    assert any("would loop" in w and "202 forwards always to 201" in w for w in plan.warnings)
    assert plan.to_json()["warnings"] == list(plan.warnings)  # for the API and the page


def test_a_chain_stops_after_three_hops() -> None:
    r = rules(
        {
            "201": forward(always="202"),
            "202": forward(always="203"),
            "203": forward(always="204"),
            "204": forward(always="205"),
        }
    )
    plan = resolve_plan(snapshot(), r, "201")
    assert MAX_FORWARD_HOPS == 3
    assert hops(plan) == [
        ("201", "always", "202"),
        ("202", "always", "203"),
        ("203", "always", "204"),
    ]
    assert plan.extension == "204" and endpoints(plan) == ["PJSIP/dora"]
    assert any("stopped after 3 hops" in w for w in plan.warnings)


def test_run_time_forwards_continue_the_chain_and_stop_at_a_loop_too() -> None:
    r = rules({"201": forward(no_answer="202"), "202": forward(no_answer="201", busy="203")})
    first = resolve_plan(snapshot(), r, "201")
    hop = first.forward_for("no_answer")
    assert hop is not None
    second = resolve_forward(snapshot(), r, hop, first.forwarded)
    assert second.extension == "202" and hops(second) == [("201", "no_answer", "202")]
    # 202's own no-answer forwarding would go back to 201: not offered; busy is.
    assert [(h.kind, h.target) for h in second.forward_on] == [("busy", "203")]
    assert any("would loop" in w for w in second.warnings)


def test_forwarding_steps_apply_by_calls_and_schedules_first_match_wins() -> None:
    r = RingRules.model_validate(
        {
            "defaults": {"external_endpoint": TRUNK},
            "schedules": {"office": {"days": "mon-fri", "hours": ["08:00-18:00"]}},
            "users": {
                "201": forward(
                    always=[
                        {"to": "202", "when": "office"},
                        {"to": MOBILE, "calls": "external"},
                    ]
                )
            },
        }
    )
    tuesday_noon, tuesday_night = datetime(2026, 12, 1, 12), datetime(2026, 12, 1, 22)
    at_noon = resolve_plan(snapshot(), r, "201", call=CallContext(True, tuesday_noon))
    assert at_noon.extension == "202"
    internal_night = resolve_plan(snapshot(), r, "201", call=CallContext(True, tuesday_night))
    assert internal_night.extension == "201" and endpoints(internal_night) == ["PJSIP/anna"]
    assert any(
        "forward.always[0]: when office: not in the schedule" in s for s in internal_night.skipped
    )
    external_night = resolve_plan(snapshot(), r, "201", call=CallContext(False, tuesday_night))
    assert endpoints(external_night) == [f"PJSIP/{MOBILE}@trunk"]


# --- the user's own -------------------------------------------------------------------


def test_the_users_own_forwarding_replaces_the_admins_of_that_kind_only() -> None:
    r = rules({"201": forward(always="203", no_answer="203")})
    plan = resolve_plan(snapshot(u201={"always": "202"}), r, "201")
    assert plan.forwarded == (ForwardHop("201", "always", "202", "user"),)
    r = rules({"201": forward(no_answer="203")})
    plan = resolve_plan(snapshot(u201={"busy": "202"}), r, "201")
    assert [(h.kind, h.target, h.set_by) for h in plan.forward_on] == [
        ("busy", "202", "user"),
        ("no_answer", "203", "admin"),
    ]


@pytest.mark.parametrize(
    ("policy", "target", "followed"),
    [
        ("extensions", "202", True),
        ("extensions", MOBILE, False),
        ("anywhere", MOBILE, True),
        ("off", "202", False),
    ],
)
def test_the_admin_decides_where_users_may_forward_to(
    policy: str, target: str, followed: bool
) -> None:
    r = rules({"201": {"user_forwarding": policy}})
    plan = resolve_plan(snapshot(u201={"always": target}), r, "201")
    assert bool(plan.forwarded) is followed
    if not followed:
        assert endpoints(plan) == ["PJSIP/anna"]
        assert any(f"user_forwarding: {policy}" in w for w in plan.warnings)


def test_a_users_external_forwarding_without_a_trunk_rings_nothing_and_says_why() -> None:
    r = RingRules.model_validate({"defaults": {"user_forwarding": "anywhere"}})
    plan = resolve_plan(snapshot(u201={"always": MOBILE}), r, "201")
    assert plan.status is PlanStatus.NO_PHONES and plan.legs == ()
    assert any("external_endpoint" in w for w in plan.warnings)


# --- the chain ahead ------------------------------------------------------------------


def test_plan_tree_resolves_the_run_time_forwards_and_prints_them() -> None:
    r = rules(
        {
            "201": {
                "followme": [{"ring": ["PJSIP/anna"], "timeout": 15}],
                **forward(no_answer="202"),
            },
            "202": forward(always=MOBILE),
        }
    )
    tree = plan_tree(snapshot(), r, resolve_plan(snapshot(), r, "201"))
    [(kind, then)] = tree.then
    assert kind == "no_answer" and endpoints(then.plan) == [f"PJSIP/{MOBILE}@trunk"]
    assert hops(then.plan) == [("201", "no_answer", "202"), ("202", "always", MOBILE)]
    data = tree.to_json()
    assert data["then"]["no_answer"]["forwarded"][1] == {
        "from": "202",
        "kind": "always",
        "to": MOBILE,
        "set_by": "admin",
    }
    text = format_tree(tree)
    assert "When nobody answers (after 15 s):" in text
    assert "201 forwards no answer to 202 (rules)" in text
    assert "202 forwards always to +4917012345678 (rules)" in text


# --- bad rules ------------------------------------------------------------------------

BAD = [
    (
        'users:\n  "201":\n    forward:\n      always: 202\n',
        'rules.yaml:4:15: users."201".forward.always: 202 is a number: write the target in quotes',
    ),
    (
        'users:\n  "201":\n    forward:\n      always: "PJSIP/x"\n',
        "rules.yaml:4:15: users.\"201\".forward.always: 'PJSIP/x' is neither an extension",
    ),
    (
        'users:\n  "201":\n    forward:\n      sometimes: "202"\n',
        'rules.yaml:4:7: users."201".forward.sometimes: unknown key; allowed here: always, '
        "busy, no_answer, unreachable, dnd",
    ),
    (
        'users:\n  "201":\n    forward:\n      busy: {to: "202", when: lunch}\n',
        'rules.yaml:4:31: users."201".forward.busy.when: when: lunch is not a schedule',
    ),
    (
        'users:\n  "201":\n    forward:\n      no_answer: "+4917012345678"\n',
        'rules.yaml:4:18: users."201".forward.no_answer: external number +4917012345678 '
        "needs defaults.external_endpoint",
    ),
    (
        'users:\n  "201":\n    user_forwarding: everywhere\n',
        "rules.yaml:3:22: users.\"201\".user_forwarding: Input should be 'off', 'extensions' or "
        "'anywhere'",
    ),
]


@pytest.mark.parametrize(("text", "error"), BAD)
def test_bad_forwarding_rules_name_the_file_line_and_field(
    tmp_path: Path, text: str, error: str
) -> None:
    lines = rules_errors(tmp_path, text)
    assert len(lines) == 1 and lines[0].startswith(error), lines


# --- invariants -----------------------------------------------------------------------

EXTENSIONS = sorted(USERS)
targets = st.sampled_from([*EXTENSIONS, MOBILE])
forwardings = st.dictionaries(
    st.sampled_from(EXTENSIONS),
    st.dictionaries(st.sampled_from(FORWARD_KINDS), targets, max_size=5),
    max_size=5,
)


def _depth(tree: Any) -> int:
    return 1 + max((_depth(t) for _, t in tree.then), default=0)


@settings(max_examples=300, deadline=None)
@given(
    admin=forwardings,
    own=forwardings,
    dnd=st.sets(st.sampled_from(EXTENSIONS)),
    on_call=st.sets(st.sampled_from(EXTENSIONS)),
    down=st.sets(st.sampled_from([u.phones[0] for u in USERS.values()])),
    called=st.sampled_from(EXTENSIONS),
)
def test_forwarding_never_loops_nor_goes_past_three_hops(
    admin: dict[str, dict[str, str]],
    own: dict[str, dict[str, str]],
    dnd: set[str],
    on_call: set[str],
    down: set[str],
    called: str,
) -> None:
    r = rules(
        {ext: {"call_waiting": False, "forward": kinds} for ext, kinds in admin.items()},
        user_forwarding="anywhere",
    )
    snap = DirectorySnapshot(users=USERS, forwards=own)
    presence = Presence(dnd, on_call, down)
    tree = plan_tree(snap, r, resolve_plan(snap, r, called, presence=presence), presence=presence)
    stack = [tree]
    while stack:
        node = stack.pop()
        chain = node.plan.forwarded
        assert len(chain) <= MAX_FORWARD_HOPS
        people = [called, *(h.target for h in chain if h.target != MOBILE)]
        assert len(people) == len(set(people)), chain  # nobody is reached twice
        assert all(a.target == b.extension for a, b in itertools.pairwise(chain))
        # DND beats forwarding: a DND user's call is forwarded only by "dnd".
        assert all(h.kind == "dnd" for h in chain if h.extension in dnd)
        stack += [t for _, t in node.then]
    assert _depth(tree) <= MAX_FORWARD_HOPS + 1


def test_rules_check_names_a_forwarding_target_that_is_no_user(tmp_path: Path) -> None:
    r = rules({"201": forward(always="202", busy=["299", MOBILE])})
    problems = check_rules(r, snapshot())
    assert [(p.path, p.message) for p in problems] == [
        (
            ("users", "201", "forward", "busy", 0, "to"),
            "forwarding target 299 is no user of the directory",
        )
    ]
