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


@dataclass(frozen=True, slots=True, eq=False)
class PhoneIndex:
    """Whose each phone is, built once per set of users and workplaces (a snapshot's
    logins-only reload keeps it): routing asks per call whether the caller is a phone
    of the directory, pickup and the phone's feature codes whose phone it is."""

    users: Mapping[str, User]  # the maps it was built from, to tell when it is stale
    workplaces: Mapping[str, Workplace]
    unassigned_phones: tuple[str, ...]
    user_phones: dict[str, str]  # endpoint -> the extension it is assigned to
    workplace_phones: dict[str, str]  # endpoint -> the workplace id it belongs to
    unassigned: frozenset[str]

    @classmethod
    def of(
        cls,
        users: Mapping[str, User],
        workplaces: Mapping[str, Workplace],
        unassigned: tuple[str, ...],
    ) -> PhoneIndex:
        return cls(
            users,
            workplaces,
            unassigned,
            {p: u.extension for u in users.values() for p in u.phones},
            {p: w.id for w in workplaces.values() for p in w.phones},
            frozenset(unassigned),
        )

    def built_from(self, snapshot: DirectorySnapshot) -> bool:
        return (
            self.users is snapshot.users
            and self.workplaces is snapshot.workplaces
            and self.unassigned_phones is snapshot.unassigned_phones
        )


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
    # Derived, never given: whose each phone is (kept by a logins-only replace(), which
    # passes it on with the same users and workplaces) and who sits at each workplace.
    phone_index: PhoneIndex | None = field(default=None, compare=False, repr=False)
    occupants: Mapping[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        index = self.phone_index
        if index is None or not index.built_from(self):
            index = PhoneIndex.of(self.users, self.workplaces, self.unassigned_phones)
            object.__setattr__(self, "phone_index", index)
        # workplace id -> the extension logged in there (one user per workplace).
        object.__setattr__(self, "occupants", {wp: ext for ext, wp in self.logins.items()})

    @property
    def phones(self) -> PhoneIndex:
        assert self.phone_index is not None  # set by __post_init__
        return self.phone_index

    def is_phone(self, endpoint: str) -> bool:
        """Whether ``endpoint`` is a phone of the directory (assigned or not)."""
        index = self.phones
        return (
            endpoint in index.user_phones
            or endpoint in index.workplace_phones
            or endpoint in index.unassigned
        )

    def user_at(self, endpoint: str) -> str | None:
        """The extension of whoever is at the phone: its user, or the user logged in at
        its workplace (None: nobody, or no phone of the directory)."""
        index = self.phones
        extension = index.user_phones.get(endpoint)
        if extension is not None:
            return extension
        workplace_id = index.workplace_phones.get(endpoint)
        return None if workplace_id is None else self.occupants.get(workplace_id)

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
        index = self.phones
        owners = {p: PhoneOwner("user", ext) for p, ext in index.user_phones.items()}
        owners.update((p, PhoneOwner("workplace", w)) for p, w in index.workplace_phones.items())
        return owners
