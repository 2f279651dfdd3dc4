"""Ring rules against the directory: does each rule ring only its owner's phones?

Pure: (rules, directory snapshot) -> problems, each pointing at the offending item
of the rules file (e.g. ``("users", "201", "followme", 0, "ring", 1)``) so that
``callrouter rules check`` can print it as ``FILE:LINE:COLUMN: message``.  At run
time the resolver skips the same targets with a warning.

``check_rules_data`` does the same for a file that failed validation, on the parts
of it that are valid, so that ``rules check`` reports both kinds of errors in one run.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from callrouter.domain.directory import DirectorySnapshot, PhoneOwner
from callrouter.domain.endpoint import is_external_number
from callrouter.domain.identifiers import Extension, WorkplaceId
from callrouter.rules.model import (
    WORKPLACE_TARGET,
    RingEntry,
    RingRules,
    UserRule,
    WorkplaceRule,
)
from callrouter.yamlfile import Path, Problem, Salvage, salvage


def check_rules(rules: RingRules, snapshot: DirectorySnapshot) -> list[Problem]:
    """Every reference in ``rules`` that ``snapshot`` does not back up.

    A rule for an extension or workplace the directory does not have; a phone in a
    FollowMe rule that is not one of the user's phones, or in a workplace rule that is
    not one of the workplace's (saying whose it is instead).  External numbers and the
    ``workplace`` target need no directory entry.  A role in ``picked_up_by`` the
    directory does not have.
    """
    checker = _Checker(snapshot)
    checker.roles(("defaults", "picked_up_by"), rules.defaults.picked_up_by)
    for extension, user_rule in rules.users.items():
        user = snapshot.users.get(extension)
        if user is None:
            checker.problems.append(
                Problem(("users", extension), f"no user has the extension {extension}", at_key=True)
            )
            continue
        checker.roles(("users", extension, "picked_up_by"), user_rule.picked_up_by)
        checker.entries(
            ("users", extension, "followme"),
            user_rule.followme,
            frozenset(user.phones),
            f"user {extension}",
        )
        for kind, index, step in user_rule.forward.steps():
            if not is_external_number(step.to) and step.to not in snapshot.users:
                checker.problems.append(
                    Problem(
                        ("users", extension, "forward", kind, index, "to"),
                        f"forwarding target {step.to} is no user of the directory",
                    )
                )
    for workplace_id, workplace_rule in rules.workplaces.items():
        workplace = snapshot.workplaces.get(workplace_id)
        if workplace is None:
            checker.problems.append(
                Problem(
                    ("workplaces", workplace_id),
                    f"no workplace has the id {workplace_id}",
                    at_key=True,
                )
            )
            continue
        checker.entries(
            ("workplaces", workplace_id, "ring"),
            workplace_rule.ring,
            frozenset(workplace.phones),
            f"workplace {workplace_id}",
        )
    return checker.problems


class _Checker:
    def __init__(self, snapshot: DirectorySnapshot) -> None:
        self.snapshot = snapshot
        self.owners = snapshot.phone_owners()
        self.unassigned = frozenset(snapshot.unassigned_phones)
        self.problems: list[Problem] = []

    def entries(
        self,
        path: Path,
        entries: tuple[RingEntry, ...] | None,
        own_phones: frozenset[str],
        owner_name: str,
    ) -> None:
        for i, entry in enumerate(entries or ()):
            for j, target in enumerate(entry.ring):
                if target == WORKPLACE_TARGET or is_external_number(target):
                    continue
                if target not in own_phones:
                    self.problems.append(
                        Problem((*path, i, "ring", j), self.whose(target, owner_name))
                    )

    def roles(self, path: Path, roles: tuple[str, ...] | None) -> None:
        # A misspelt role would silently refuse every pickup by that role's users.
        for i, role in enumerate(roles or ()):
            if role not in self.snapshot.roles:
                known = ", ".join(sorted(self.snapshot.roles)) or "none"
                self.problems.append(
                    Problem((*path, i), f"no role is named {role} (the directory's: {known})")
                )

    def whose(self, target: str, owner_name: str) -> str:
        owner = self.owners.get(target)
        if owner is not None:
            return f"{target} belongs to {self.describe(owner)}, not to {owner_name}"
        if target in self.unassigned:
            return f"{target} is an unassigned phone, not one of {owner_name}'s phones"
        return f"{target} is not in the directory"

    def describe(self, owner: PhoneOwner) -> str:
        if owner.kind == "user":
            user = self.snapshot.users.get(owner.key)
            return f"user {owner.key} ({user.name})" if user is not None else f"user {owner.key}"
        return f"workplace {owner.key}"


# --- rules that failed validation -----------------------------------------------------

_KEYS: dict[str, TypeAdapter[str]] = {
    "users": TypeAdapter(Extension),
    "workplaces": TypeAdapter(WorkplaceId),
}
_ENTRIES = {"users": "followme", "workplaces": "ring"}  # where each section's rules ring


def check_rules_data(data: Any, snapshot: DirectorySnapshot) -> list[Problem]:
    """``check_rules`` for rules data (from ``read_yaml``) that is not valid as a whole.

    Each rule is checked on its own and each of its ring entries is validated on its
    own, invalid values left out (their validation errors say what is wrong with
    them), so that one bad rule or entry, or an error elsewhere in the file, does not
    hide the directory problems of the rest.  A rule whose extension or workplace id
    is itself invalid is left out.  Paths are the file's.
    """
    if not isinstance(data, dict):
        return []
    sections: dict[str, dict[str, Any]] = {"users": {}, "workplaces": {}}
    # (section, key, index in the partial rule) -> (index in the file, the entry's salvage)
    origins: dict[tuple[str, str, int], tuple[int, Salvage[RingEntry]]] = {}
    for section, rules in sections.items():
        written = data.get(section)
        if not isinstance(written, dict):
            continue
        for key, rule in written.items():
            try:
                _KEYS[section].validate_python(key)
            except ValidationError:
                continue
            entries: list[RingEntry] = []
            listed = rule.get(_ENTRIES[section]) if isinstance(rule, dict) else None
            for index, entry in enumerate(listed if isinstance(listed, list) else ()):
                part = salvage(entry, RingEntry)
                if part is not None:
                    origins[(section, key, len(entries))] = (index, part)
                    entries.append(part.model)
            # model_construct: the rule-level checks (e.g. 'workplace' in one entry only)
            # are the validation errors' business, not a reason to skip its phones.
            if section == "users":
                rules[key] = UserRule.model_construct(followme=tuple(entries))
            else:
                rules[key] = WorkplaceRule.model_construct(ring=tuple(entries))
    partial = RingRules.model_construct(users=sections["users"], workplaces=sections["workplaces"])
    return [_in_file(problem, origins) for problem in check_rules(partial, snapshot)]


def _in_file(
    problem: Problem, origins: dict[tuple[str, str, int], tuple[int, Salvage[RingEntry]]]
) -> Problem:
    """``problem`` with its path into the partial rules turned into one into the file."""
    path = problem.path
    if len(path) < 4:
        return problem  # a rule's key: the same in both
    section, key, field, index, *rest = path
    origin = origins.get((str(section), str(key), index)) if isinstance(index, int) else None
    if origin is None:
        return problem
    file_index, part = origin
    return Problem(
        (section, key, field, file_index, *part.original_path(tuple(rest))),
        problem.message,
        problem.at_key,
    )
