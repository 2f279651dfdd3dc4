"""Ring rules against the directory: does each rule ring only its owner's phones?

Pure: (rules, directory snapshot) -> problems, each pointing at the offending item
of the rules file (e.g. ``("users", "201", "followme", 0, "ring", 1)``) so that
``callrouter rules check`` can print it as ``FILE:LINE:COLUMN: message``.  At run
time the resolver skips the same targets with a warning.
"""

from __future__ import annotations

from callrouter.domain.directory import DirectorySnapshot, PhoneOwner
from callrouter.domain.endpoint import is_external_number
from callrouter.rules.model import WORKPLACE_TARGET, RingEntry, RingRules
from callrouter.yamlfile import Path, Problem


def check_rules(rules: RingRules, snapshot: DirectorySnapshot) -> list[Problem]:
    """Every reference in ``rules`` that ``snapshot`` does not back up.

    A rule for an extension or workplace the directory does not have; a phone in a
    FollowMe rule that is not one of the user's phones, or in a workplace rule that is
    not one of the workplace's (saying whose it is instead).  External numbers and the
    ``workplace`` target need no directory entry.
    """
    checker = _Checker(snapshot)
    for extension, user_rule in rules.users.items():
        user = snapshot.users.get(extension)
        if user is None:
            checker.problems.append(
                Problem(("users", extension), f"no user has the extension {extension}", at_key=True)
            )
            continue
        checker.entries(
            ("users", extension, "followme"),
            user_rule.followme,
            frozenset(user.phones),
            f"user {extension}",
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
