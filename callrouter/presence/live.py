"""Presence from and to Asterisk, over AMI.

In: ``DeviceStateChange`` events move the tracker; on every AMI (re)connect, when
Asterisk says ``FullyBooted``, ``DeviceStateList`` resyncs all device states, since
events missed while we were away (or an Asterisk restart) are not replayed.
Out: each user's merged state is published as the custom device state
``Custom:user-EXT`` and the presence state ``CustomPresence:user-EXT`` (hints in
``[callrouter-hints]`` light BLF keys for the person).  Publishing is coalesced per
user, so a burst of device changes costs one AMI action per user, not one per event.
Client statuses come from the API and, with a ``ClientStatusStore``, are shared with the
other routers through the directory database (``shared.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable

from callrouter.ami import AmiClient, AmiError
from callrouter.ami.protocol import AmiMessage
from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.presence import ClientStatus, DeviceState, UserPresence
from callrouter.presence.shared import ClientStatusStore
from callrouter.presence.tracker import PresenceTracker
from callrouter.tasks import TaskSet

log = logging.getLogger(__name__)

# FullyBooted: AMI takes logins while Asterisk still loads its modules (the device
# state list and custom states among them), so the resync is done again then.
AMI_EVENTS = frozenset({"DeviceStateChange", "ContactStatus", "FullyBooted"})
# ContactStatus values that mean a contact cannot be reached now.
_CONTACT_DOWN = frozenset({"unreachable", "removed"})
CUSTOM_DEVICE_PREFIX = "Custom:user-"
CUSTOM_PRESENCE_PREFIX = "CustomPresence:user-"

Listener = Callable[[UserPresence], None]


class PresenceService:
    def __init__(
        self,
        tracker: PresenceTracker,
        ami: AmiClient | None = None,
        *,
        publish: bool = True,
        store: ClientStatusStore | None = None,
        poll_delay: Callable[[], float] | None = None,
    ) -> None:
        self.tracker = tracker
        self.ami = ami
        # Client statuses shared through the directory database (None: in memory only),
        # re-read again after ``poll_delay()`` seconds (None: never; a function, since
        # the poll is slower while PostgreSQL announces the changes).
        self.store = store
        self.poll_delay = poll_delay
        self._reloading = asyncio.Lock()
        self.publish = publish and ami is not None
        self.listeners: list[Listener] = []
        self._pending: dict[str, UserPresence] = {}
        self._published: dict[str, tuple[str, str]] = {}  # extension -> (device, presence)
        self._wake = asyncio.Event()
        # PJSIP contacts by endpoint (URI -> up?): an endpoint whose every contact is
        # down is UNAVAILABLE, whatever its last device state event said.
        self._contacts: dict[str, dict[str, bool]] = {}
        # Device states set while a resync reads Asterisk's lists, one dict per resync
        # in progress: they are newer than the lists (remote nodes' states arrive at
        # any time), so the resync applies them over what it read.
        self._set_during_resync: list[dict[str, DeviceState]] = []
        self._tasks = TaskSet("presence")
        # Time from an event's arrival to the tracker holding its result (seconds),
        # for the benchmark and for operators; a bounded window.
        self.update_latencies: list[float] = []

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.spawn(self._expirer(), "presence-expirer")
        if self.store is not None and self.poll_delay is not None:
            self._tasks.spawn(self._poller(self.poll_delay), "client-status-poll")
        if self.ami is not None:
            self.ami.subscribe(self._on_ami_event)
            self._tasks.spawn(self._publisher(), "presence-publisher")

    async def close(self) -> None:
        await self._tasks.close()

    # --- inputs -----------------------------------------------------------------------

    def _on_ami_event(self, event: AmiMessage) -> None:
        received = time.perf_counter()
        if event.event == "FullyBooted":
            # Asterisk sends it to every new AMI session once it is booted (at once
            # when it already is): one resync per connection, with every module loaded.
            self._tasks.spawn(self._resync_quietly(), "presence-resync")
            return
        if event.event == "ContactStatus":
            self._on_contact_status(event)
            return
        if event.event != "DeviceStateChange":
            return
        device = event.get("Device") or ""
        if device.startswith("Custom:"):
            return  # our own publications coming back
        self._set_device(device, DeviceState.parse(event.get("State") or ""))
        latencies = self.update_latencies
        latencies.append(time.perf_counter() - received)
        if len(latencies) > 10_000:
            del latencies[:5_000]

    def _on_contact_status(self, event: AmiMessage) -> None:
        name, uri = event.get("EndpointName"), event.get("URI")
        if not name or not uri:
            return
        endpoint = f"PJSIP/{name}"
        status = (event.get("ContactStatus") or "").lower()
        contacts = self._contacts.setdefault(endpoint, {})
        if status == "removed":
            contacts.pop(uri, None)
        else:
            contacts[uri] = status not in _CONTACT_DOWN
        if contacts and not any(contacts.values()):
            self._set_device(endpoint, DeviceState.UNAVAILABLE)
        elif any(contacts.values()) and not self.tracker.reachable(endpoint):
            # Back: free until a device state event says more.
            self._set_device(endpoint, DeviceState.NOT_INUSE)

    def _set_device(self, endpoint: str, state: DeviceState) -> None:
        for newer in self._set_during_resync:
            newer[endpoint] = state
        self._changed(self.tracker.set_device(endpoint, state))

    async def _resync_quietly(self) -> None:
        assert self.ami is not None
        try:
            # FullyBooted can arrive right after the login, before the client
            # reports itself connected.
            await self.ami.wait_connected(10)
            await self.resync()
        except Exception as exc:  # the next (re)connect tries again
            log.warning("presence resync failed: %s", exc)

    async def resync(self) -> None:
        """Rebuild every device state from Asterisk's own lists, then publish everyone.

        ``DeviceStateList`` holds only the states Asterisk has cached (those of other
        nodes' phones too, see README "Several Asterisks"); every PJSIP endpoint's
        current state comes from ``PJSIPShowEndpoints``.  Events that arrive while
        the lists are read win over them.
        """
        assert self.ami is not None
        self._contacts.clear()
        newer: dict[str, DeviceState] = {}
        self._set_during_resync.append(newer)
        try:
            items = await self.ami.send_list_action("DeviceStateList")
            endpoints = await self.ami.send_list_action("PJSIPShowEndpoints")
        finally:
            self._set_during_resync.remove(newer)
        states = {
            item.get("Device") or "": DeviceState.parse(item.get("State") or "")
            for item in items
            if not (item.get("Device") or "").startswith("Custom:")
        }
        for item in endpoints:
            name = item.get("ObjectName")
            if name:
                states[f"PJSIP/{name}"] = DeviceState.parse(item.get("DeviceState") or "")
        states.update(newer)
        changed = self.tracker.replace_devices(states)
        log.info("presence resync: %d device states, %d users changed", len(states), len(changed))
        self._published.clear()  # Asterisk may have restarted: publish everybody again
        self._changed(list(self.tracker.users().values()), notify=False)
        self._notify(changed)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(presence)`` for every user whose state changed; returns an
        unsubscribe."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def set_snapshot(self, snapshot: DirectorySnapshot, only: Iterable[str] | None = None) -> None:
        self._changed(self.tracker.set_snapshot(snapshot, only))

    def set_client(
        self, extension: str, client_id: str, status: ClientStatus
    ) -> UserPresence | None:
        """This router's own view only (no shared store, or the tests')."""
        self._changed(self.tracker.set_client(extension, client_id, status))
        return self.tracker.user(extension)

    async def report_client(
        self, extension: str, client_id: str, status: ClientStatus
    ) -> UserPresence | None:
        """A client's status or heartbeat, as the API receives it.

        With a shared store: written to the database when it changes something
        (``ClientStatusStore.needs_write``), then read back, so this router holds
        what every other router will; raises ``DatabaseError`` (nothing changed)
        when the write fails.  Without one: this router's memory only.
        """
        store = self.store
        if store is None:
            return self.set_client(extension, client_id, status)
        if store.needs_write(status, self.tracker.client(extension, client_id)):
            await store.write(extension, client_id, status)
            await self.reload_clients((extension,))
        return self.tracker.user(extension)

    async def reload_clients(self, extensions: Collection[str] | None = None) -> None:
        """Take the shared client statuses of ``extensions`` (None: everyone's) from
        the database.  One at a time: a read that started later is applied later,
        so an older read never overwrites a newer one."""
        if self.store is None:
            return
        async with self._reloading:
            clients = await self.store.read(extensions)
            self._changed(self.tracker.load_clients(clients, extensions))

    # --- outputs ----------------------------------------------------------------------

    def _changed(self, users: list[UserPresence], *, notify: bool = True) -> None:
        if not users:
            return
        if self.publish:
            for presence in users:
                self._pending[presence.extension] = presence
            self._wake.set()
        if notify:
            self._notify(users)

    def _notify(self, users: list[UserPresence]) -> None:
        for presence in users:
            for listener in list(self.listeners):
                try:
                    listener(presence)
                except Exception:
                    log.exception("presence listener failed")

    async def _publisher(self) -> None:
        assert self.ami is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                extension, presence = self._pending.popitem()
                if self.tracker.user(extension) is None:
                    continue  # the user left the directory meanwhile
                wanted = (presence.device_state.value, presence.presence_state)
                if self._published.get(extension) == wanted:
                    continue
                try:
                    await self.ami.setvar(
                        f"DEVICE_STATE({CUSTOM_DEVICE_PREFIX}{extension})", wanted[0]
                    )
                    await self.ami.setvar(
                        f"PRESENCE_STATE({CUSTOM_PRESENCE_PREFIX}{extension})", f"{wanted[1]},,"
                    )
                except AmiError as exc:  # AMI down: the resync after reconnect catches up
                    log.debug("presence of %s not published: %s", extension, exc)
                    continue
                self._published[extension] = wanted

    async def _poller(self, delay: Callable[[], float]) -> None:
        """The shared client statuses, re-read now and then: the only way on SQLite,
        the safety net on PostgreSQL (a notification lost while reconnecting)."""
        failing = False
        while True:
            try:
                await self.reload_clients()
            except Exception as exc:  # the database away: the tracker keeps what it has
                if not failing:
                    log.warning("client statuses not re-read: %s: %s", type(exc).__name__, exc)
                failing = True
            else:
                failing = False
            await asyncio.sleep(delay())

    async def _expirer(self) -> None:
        """Clients that stop sending heartbeats become offline, on time."""
        while True:
            due = self.tracker.next_expiry()
            delay = 5.0 if due is None else max(0.0, min(5.0, due - self.tracker.clock()))
            await asyncio.sleep(delay)
            try:
                self._changed(self.tracker.expire_clients())
            except Exception:  # keep expiring: a bad entry must not freeze everyone's status
                log.exception("presence: expiring clients failed")
