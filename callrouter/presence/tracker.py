"""PresenceTracker: every user's merged presence, kept current incrementally (pure).

Fed device states (from Asterisk), client statuses (from the API) and directory
snapshots (logins move workplace phones between users); each feed returns the
users whose merged presence changed, for the caller to publish.  A device change
touches only the users owning that device, so a flood of events stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.presence import (
    ClientStatus,
    DeviceState,
    UserPresence,
    merge_client,
    merge_phone,
)

DEFAULT_HEARTBEAT_TIMEOUT = 90.0


@dataclass(slots=True)
class _Client:
    status: ClientStatus
    expires: float  # monotonic time after which a silent client counts as offline


class PresenceTracker:
    def __init__(
        self,
        snapshot: DirectorySnapshot | None = None,
        *,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self._devices: dict[str, DeviceState] = {}  # endpoint -> state
        self._clients: dict[str, dict[str, _Client]] = {}  # extension -> client id -> …
        self._owners: dict[str, tuple[str, ...]] = {}  # endpoint -> extensions
        self._phones: dict[str, tuple[str, ...]] = {}  # extension -> endpoints
        self._users: dict[str, UserPresence] = {}
        self.set_snapshot(snapshot or DirectorySnapshot())

    # --- reading ------------------------------------------------------------------

    def user(self, extension: str) -> UserPresence | None:
        return self._users.get(extension)

    def users(self) -> Mapping[str, UserPresence]:
        return self._users

    def device_state(self, endpoint: str) -> DeviceState:
        return self._devices.get(endpoint, DeviceState.UNKNOWN)

    def reachable(self, endpoint: str) -> bool:
        return self.device_state(endpoint).reachable

    def devices(self) -> Mapping[str, DeviceState]:
        return self._devices

    # --- feeding ------------------------------------------------------------------

    def set_device(self, endpoint: str, state: DeviceState) -> list[UserPresence]:
        if self._devices.get(endpoint) is state:
            return []
        self._devices[endpoint] = state
        return self._recompute(self._owners.get(endpoint, ()))

    def replace_devices(self, states: Mapping[str, DeviceState]) -> list[UserPresence]:
        """A full resync: ``states`` is everything Asterisk knows now; others are
        forgotten (UNKNOWN)."""
        touched: set[str] = set()
        for endpoint in set(self._devices) | set(states):
            state = states.get(endpoint, DeviceState.UNKNOWN)
            if self._devices.get(endpoint, DeviceState.UNKNOWN) is not state:
                touched.update(self._owners.get(endpoint, ()))
        self._devices = {e: s for e, s in states.items() if s is not DeviceState.UNKNOWN}
        return self._recompute(touched)

    def set_client(
        self, extension: str, client_id: str, status: ClientStatus, *, expires: float | None = None
    ) -> list[UserPresence]:
        """A client's status; also its heartbeat (it must come again within the
        heartbeat time-out, or by ``expires``, monotonic).  ``offline`` removes the
        client."""
        clients = self._clients.setdefault(extension, {})
        if status is ClientStatus.OFFLINE:
            clients.pop(client_id, None)
        else:
            due = self.clock() + self.heartbeat_timeout if expires is None else expires
            clients[client_id] = _Client(status, due)
        if not clients:
            del self._clients[extension]
        return self._recompute((extension,))

    def client_statuses(self, extension: str) -> dict[str, ClientStatus]:
        return {cid: c.status for cid, c in self._clients.get(extension, {}).items()}

    def client(self, extension: str, client_id: str) -> tuple[ClientStatus, float] | None:
        """One client's status and when it lapses (monotonic), or None (offline)."""
        found = self._clients.get(extension, {}).get(client_id)
        return None if found is None else (found.status, found.expires)

    def load_clients(
        self,
        clients: Mapping[str, Mapping[str, tuple[ClientStatus, float]]],
        only: Iterable[str] | None = None,
    ) -> list[UserPresence]:
        """Client statuses as another source holds them (the shared table): by
        extension, client id -> (status, expires, monotonic).  With ``only``, just
        those users' clients are replaced; without, everyone's."""
        touched = set(self._clients) | set(clients) if only is None else set(only)
        for extension in touched:
            loaded = {
                client_id: _Client(status, expires)
                for client_id, (status, expires) in clients.get(extension, {}).items()
                if status is not ClientStatus.OFFLINE
            }
            if loaded:
                self._clients[extension] = loaded
            else:
                self._clients.pop(extension, None)
        return self._recompute(sorted(touched))

    def expire_clients(self) -> list[UserPresence]:
        """Clients whose heartbeat stopped count as offline from now on."""
        now = self.clock()
        touched = []
        for extension, clients in list(self._clients.items()):
            for client_id in [cid for cid, c in clients.items() if c.expires <= now]:
                del clients[client_id]
                touched.append(extension)
            if not clients:
                del self._clients[extension]
        return self._recompute(touched)

    def next_expiry(self) -> float | None:
        """When the next client falls silent (monotonic), or None."""
        return min(
            (c.expires for clients in self._clients.values() for c in clients.values()),
            default=None,
        )

    def set_snapshot(
        self, snapshot: DirectorySnapshot, only: Iterable[str] | None = None
    ) -> list[UserPresence]:
        """A new directory: owners of phones (a login moves a workplace's phones).

        With ``only``, just those users changed (a login): their phones are looked
        up again and the rest of the index is left as it is.
        """
        if only is not None:
            return self._update_users(snapshot, only)
        phones: dict[str, tuple[str, ...]] = {}
        for extension in snapshot.users:
            phones[extension] = snapshot.phones_of(extension)
        owners: dict[str, list[str]] = {}
        for extension, endpoints in phones.items():
            for endpoint in endpoints:
                owners.setdefault(endpoint, []).append(extension)
        touched = [ext for ext, endpoints in phones.items() if self._phones.get(ext) != endpoints]
        gone = [ext for ext in self._users if ext not in phones]
        self._phones = phones
        self._owners = {endpoint: tuple(exts) for endpoint, exts in owners.items()}
        for extension in gone:
            del self._users[extension]
            self._clients.pop(extension, None)
        return self._recompute(touched)

    def _update_users(
        self, snapshot: DirectorySnapshot, extensions: Iterable[str]
    ) -> list[UserPresence]:
        touched = []
        for extension in extensions:
            old = self._phones.get(extension, ())
            new = snapshot.phones_of(extension)
            if extension not in snapshot.users:
                self._phones.pop(extension, None)
                self._users.pop(extension, None)
                self._clients.pop(extension, None)
            else:
                self._phones[extension] = new
            if new == old:
                continue
            for endpoint in set(old) - set(new):
                owners = tuple(e for e in self._owners.get(endpoint, ()) if e != extension)
                if owners:
                    self._owners[endpoint] = owners
                else:
                    self._owners.pop(endpoint, None)
            for endpoint in set(new) - set(old):
                self._owners[endpoint] = (*self._owners.get(endpoint, ()), extension)
            touched.append(extension)
        return self._recompute(touched)

    # --- merging ------------------------------------------------------------------

    def _recompute(self, extensions: Iterable[str]) -> list[UserPresence]:
        changed = []
        for extension in dict.fromkeys(extensions):  # once each, in order
            if extension not in self._phones:
                continue
            devices = self._devices
            presence = UserPresence(
                extension,
                merge_phone(devices.get(e, DeviceState.UNKNOWN) for e in self._phones[extension]),
                merge_client(c.status for c in self._clients.get(extension, {}).values()),
            )
            if self._users.get(extension) != presence:
                self._users[extension] = presence
                changed.append(presence)
        return changed
