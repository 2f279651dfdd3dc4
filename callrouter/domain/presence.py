"""Presence states and how they merge (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class DeviceState(StrEnum):
    """Asterisk's device states, as AMI's ``DeviceStateChange`` names them."""

    UNKNOWN = "UNKNOWN"
    NOT_INUSE = "NOT_INUSE"
    INUSE = "INUSE"
    BUSY = "BUSY"
    INVALID = "INVALID"
    UNAVAILABLE = "UNAVAILABLE"
    RINGING = "RINGING"
    RINGINUSE = "RINGINUSE"
    ONHOLD = "ONHOLD"

    @classmethod
    def parse(cls, text: str) -> DeviceState:
        """AMI's spelling (``NOT_INUSE``) or the CLI's (``Not in use``); else UNKNOWN."""
        key = text.strip().upper().replace(" ", "_")
        return _ALIASES.get(key) or (cls(key) if key in cls.__members__ else cls.UNKNOWN)

    @property
    def reachable(self) -> bool:
        # UNKNOWN counts as reachable: a phone we know nothing about is still rung.
        return self not in (DeviceState.UNAVAILABLE, DeviceState.INVALID)

    @property
    def in_use(self) -> bool:
        return self in (
            DeviceState.INUSE,
            DeviceState.BUSY,
            DeviceState.RINGINUSE,
            DeviceState.ONHOLD,
        )

    @property
    def ringing(self) -> bool:
        return self in (DeviceState.RINGING, DeviceState.RINGINUSE)


_ALIASES = {
    "NOT_IN_USE": DeviceState.NOT_INUSE,
    "IN_USE": DeviceState.INUSE,
    "RING+INUSE": DeviceState.RINGINUSE,
    "ON_HOLD": DeviceState.ONHOLD,
}


class ClientStatus(StrEnum):
    """What a user says in the client app."""

    ONLINE = "online"
    AWAY = "away"
    DND = "dnd"
    OFFLINE = "offline"


# Several clients at once: any dnd wins, then online, then away, then offline.
_CLIENT_RANK = {
    ClientStatus.DND: 3,
    ClientStatus.ONLINE: 2,
    ClientStatus.AWAY: 1,
    ClientStatus.OFFLINE: 0,
}


def merge_client(statuses: Iterable[ClientStatus]) -> ClientStatus:
    return max(statuses, key=_CLIENT_RANK.__getitem__, default=ClientStatus.OFFLINE)


@dataclass(frozen=True, slots=True)
class PhoneStatus:
    """The user's phones together: is one reachable, is one in a call, is one ringing."""

    available: bool = False
    on_call: bool = False
    ringing: bool = False


def merge_phone(states: Iterable[DeviceState]) -> PhoneStatus:
    available = on_call = ringing = False
    for state in states:
        available = available or state.reachable
        on_call = on_call or state.in_use
        ringing = ringing or state.ringing
    return PhoneStatus(available, on_call, ringing)


@dataclass(frozen=True, slots=True)
class UserPresence:
    extension: str
    phone: PhoneStatus = PhoneStatus()
    client: ClientStatus = ClientStatus.OFFLINE

    @property
    def device_state(self) -> DeviceState:
        """One state for a BLF key that watches the person (``Custom:user-EXT``)."""
        if self.phone.on_call:
            return DeviceState.RINGINUSE if self.phone.ringing else DeviceState.INUSE
        if self.phone.ringing:
            return DeviceState.RINGING
        if self.client is ClientStatus.DND:
            return DeviceState.BUSY  # calls are turned away: show it like busy
        if not self.phone.available:
            return DeviceState.UNAVAILABLE
        return DeviceState.NOT_INUSE

    @property
    def presence_state(self) -> str:
        """Asterisk's presence state for ``CustomPresence:user-EXT``."""
        return {
            ClientStatus.ONLINE: "available",
            ClientStatus.AWAY: "away",
            ClientStatus.DND: "dnd",
            ClientStatus.OFFLINE: "unavailable",
        }[self.client]

    def to_json(self) -> dict[str, Any]:
        return {
            "extension": self.extension,
            "phone": {
                "available": self.phone.available,
                "on_call": self.phone.on_call,
                "ringing": self.phone.ringing,
            },
            "client": self.client.value,
            "device_state": self.device_state.value,
        }
