"""The directory as the router sees it: an immutable in-memory snapshot.

Loaded from SQL by ``callrouter.directory`` and swapped atomically when the
database changes; the resolver only ever reads it.  Plain slotted dataclasses and
tuples keep 100,000 users within a modest memory budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    # None: users of this role may log in at any workplace (the default).
    workplaces: frozenset[str] | None = None

    def allows(self, workplace_id: str) -> bool:
        return self.workplaces is None or workplace_id in self.workplaces


@dataclass(frozen=True, slots=True)
class User:
    extension: str
    name: str
    role: str | None = None
    phones: tuple[str, ...] = ()  # directly assigned endpoints
    pin_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Workplace:
    id: str  # slug, e.g. "office-1"
    name: str
    code: str  # numeric dial code, e.g. "801"
    phones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PhoneOwner:
    """Who a phone belongs to: a user (by extension) or a workplace (by id)."""

    kind: str  # "user" or "workplace"
    key: str


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    users: Mapping[str, User] = field(default_factory=dict)  # by extension
    workplaces: Mapping[str, Workplace] = field(default_factory=dict)  # by id
    roles: Mapping[str, Role] = field(default_factory=dict)  # by name
    logins: Mapping[str, str] = field(default_factory=dict)  # extension -> workplace id
    unassigned_phones: tuple[str, ...] = ()
    # endpoint -> node (the Asterisk it is on), for phones that have one; a phone
    # without is on every router's own Asterisk (a directory of one node).
    phone_nodes: Mapping[str, str] = field(default_factory=dict)
    # What users set for themselves (API, client, feature codes), stored beside the
    # logins: their forwardings (extension -> kind -> target, kinds as in
    # domain.forwarding) and the rule switches they turned off (extension -> names).
    forwards: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    switched_off: Mapping[str, frozenset[str]] = field(default_factory=dict)
    revision: int = 0  # the directory's change counter when this snapshot was read
    content_revision: int = 0  # the last change to anything but the logins

    def workplace_of(self, extension: str) -> Workplace | None:
        """The workplace the user is logged in to now, if any."""
        workplace_id = self.logins.get(extension)
        return None if workplace_id is None else self.workplaces.get(workplace_id)

    def phones_of(self, extension: str) -> tuple[str, ...]:
        """The user's phones now: directly assigned ones, then their workplace's."""
        user = self.users.get(extension)
        if user is None:
            return ()
        workplace = self.workplace_of(extension)
        if workplace is None:
            return user.phones
        return user.phones + tuple(p for p in workplace.phones if p not in user.phones)

    def on_node(self, endpoint: str, node: str | None) -> bool:
        """Whether the router of ``node`` can dial ``endpoint`` on its own Asterisk:
        phones without a node are on every one; ``node`` None (a router of a single
        Asterisk) dials every phone."""
        phone_node = self.phone_nodes.get(endpoint)
        return node is None or phone_node is None or phone_node == node

    def nodes(self) -> frozenset[str]:
        """Every node the directory puts a phone on."""
        return frozenset(self.phone_nodes.values())

    def phone_owners(self) -> dict[str, PhoneOwner]:
        """Every assigned phone with its owner (computed; used for checks, not per call)."""
        owners: dict[str, PhoneOwner] = {}
        for user in self.users.values():
            for endpoint in user.phones:
                owners[endpoint] = PhoneOwner("user", user.extension)
        for workplace in self.workplaces.values():
            for endpoint in workplace.phones:
                owners[endpoint] = PhoneOwner("workplace", workplace.id)
        return owners
