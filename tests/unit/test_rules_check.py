"""check_rules(): ring rules against the directory, each problem at the offending item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callrouter.directory.document import DirectoryDocument
from callrouter.directory.loader import load_document
from callrouter.domain.directory import DirectorySnapshot, Role, User, Workplace
from callrouter.rules.check import check_rules
from callrouter.rules.loader import load_rules
from callrouter.rules.model import RingRules
from callrouter.yamlfile import Problem, locate_problems

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SNAPSHOT = DirectorySnapshot(
    users={
        "201": User("201", "Anna Berger", "staff", ("PJSIP/anna-desk", "PJSIP/anna-soft")),
        "202": User("202", "Boris Chen", "staff", ("PJSIP/boris-desk",)),
        "203": User("203", "Clara Diaz", "staff", ()),
    },
    workplaces={
        "office-1": Workplace("office-1", "Office 1", "801", ("PJSIP/office1-desk",)),
        "office-2": Workplace("office-2", "Office 2", "802", ("PJSIP/office2-desk",)),
    },
    unassigned_phones=("PJSIP/spare-1",),
)


def rules(data: dict[str, Any]) -> RingRules:
    return RingRules.model_validate(
        {"defaults": {"external_endpoint": "PJSIP/{number}@trunk"}, **data}
    )


def followme(extension: str, *entries: list[str]) -> dict[str, Any]:
    return {"users": {extension: {"followme": [{"ring": ring} for ring in entries]}}}


def workplace_rule(workplace_id: str, *entries: list[str]) -> dict[str, Any]:
    return {"workplaces": {workplace_id: {"ring": [{"ring": ring} for ring in entries]}}}


CASES: list[tuple[str, dict[str, Any], list[Problem]]] = [
    (
        "own phones, an external number and the workplace are fine",
        followme("201", ["PJSIP/anna-desk"], ["PJSIP/anna-soft", "+4917012345678", "workplace"]),
        [],
    ),
    (
        "a workplace's own phones are fine",
        workplace_rule("office-1", ["PJSIP/office1-desk"], ["+4930123456"]),
        [],
    ),
    (
        "another user's phone",
        followme("201", ["PJSIP/anna-desk", "PJSIP/boris-desk"]),
        [
            Problem(
                ("users", "201", "followme", 0, "ring", 1),
                "PJSIP/boris-desk belongs to user 202 (Boris Chen), not to user 201",
            )
        ],
    ),
    (
        "a workplace's phone in a FollowMe rule",
        followme("201", ["PJSIP/anna-desk"], ["PJSIP/office2-desk"]),
        [
            Problem(
                ("users", "201", "followme", 1, "ring", 0),
                "PJSIP/office2-desk belongs to workplace office-2, not to user 201",
            )
        ],
    ),
    (
        "a phone not in the directory",
        followme("203", ["PJSIP/ghost"]),
        [
            Problem(
                ("users", "203", "followme", 0, "ring", 0), "PJSIP/ghost is not in the directory"
            )
        ],
    ),
    (
        "an unassigned phone",
        followme("203", ["PJSIP/spare-1"]),
        [
            Problem(
                ("users", "203", "followme", 0, "ring", 0),
                "PJSIP/spare-1 is an unassigned phone, not one of user 203's phones",
            )
        ],
    ),
    (
        "a rule for an unknown extension, at its key",
        followme("299", ["PJSIP/anna-desk"]),
        [Problem(("users", "299"), "no user has the extension 299", at_key=True)],
    ),
    (
        "a user's phone in a workplace rule",
        workplace_rule("office-1", ["PJSIP/office1-desk", "PJSIP/anna-desk"]),
        [
            Problem(
                ("workplaces", "office-1", "ring", 0, "ring", 1),
                "PJSIP/anna-desk belongs to user 201 (Anna Berger), not to workplace office-1",
            )
        ],
    ),
    (
        "another workplace's phone in a workplace rule",
        workplace_rule("office-1", ["PJSIP/office1-desk"], ["PJSIP/office2-desk"]),
        [
            Problem(
                ("workplaces", "office-1", "ring", 1, "ring", 0),
                "PJSIP/office2-desk belongs to workplace office-2, not to workplace office-1",
            )
        ],
    ),
    (
        "a rule for an unknown workplace, at its key",
        workplace_rule("office-9", ["PJSIP/office1-desk"]),
        [Problem(("workplaces", "office-9"), "no workplace has the id office-9", at_key=True)],
    ),
    (
        "users without FollowMe and workplaces without a ring rule need nothing",
        {"users": {"201": {}}, "workplaces": {"office-1": {}}},
        [],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_rules(data: dict[str, Any], expected: list[Problem]) -> None:
    assert check_rules(rules(data), SNAPSHOT) == expected


def test_every_problem_is_reported() -> None:
    data = {
        **followme("201", ["PJSIP/boris-desk", "PJSIP/ghost"], ["PJSIP/anna-desk"]),
        **workplace_rule("office-2", ["PJSIP/office1-desk"]),
    }
    data["users"]["299"] = {}
    assert [p.path for p in check_rules(rules(data), SNAPSHOT)] == [
        ("users", "201", "followme", 0, "ring", 0),
        ("users", "201", "followme", 0, "ring", 1),
        ("users", "299"),
        ("workplaces", "office-2", "ring", 0, "ring", 0),
    ]


def test_problems_are_located_in_the_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "users:\n"
        "  '201':\n"
        "    followme:\n"
        "      - ring: [PJSIP/anna-desk, PJSIP/boris-desk]\n"
        "  '299': {}\n"
    )
    lines = locate_problems(path, check_rules(load_rules(path), SNAPSHOT))
    assert lines == [
        f'{path}:4:33: users."201".followme[0].ring[1]: PJSIP/boris-desk belongs to user 202 '
        "(Boris Chen), not to user 201",
        f'{path}:5:3: users."299": no user has the extension 299',
    ]


def snapshot_of(document: DirectoryDocument) -> DirectorySnapshot:
    """The snapshot the router would load after importing ``document``."""
    return DirectorySnapshot(
        users={u.extension: User(u.extension, u.name, u.role, u.phones) for u in document.users},
        workplaces={w.id: Workplace(w.id, w.name, w.code, w.phones) for w in document.workplaces},
        roles={
            r.name: Role(r.name, None if r.workplaces is None else frozenset(r.workplaces))
            for r in document.roles
        },
        logins=dict(document.logins),
        unassigned_phones=document.phones,
    )


def test_the_example_rules_fit_the_example_directory() -> None:
    snapshot = snapshot_of(load_document(EXAMPLES / "directory.yaml"))
    example_rules = load_rules(EXAMPLES / "rules.yaml", snapshot)
    assert check_rules(example_rules, snapshot) == []
    # Every rule in the example names something the directory has.
    assert set(example_rules.users) <= set(snapshot.users)
    assert set(example_rules.workplaces) <= set(snapshot.workplaces)
