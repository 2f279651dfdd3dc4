"""Wires the users' own forwardings and switches: one PersonalService for the API,
the web client and the phone's feature codes (served by the logins' FastAGI server)."""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.config import Settings
from callrouter.directory.live import LiveDirectory
from callrouter.personal.feature_codes import PersonalCodes
from callrouter.personal.service import PersonalService


@dataclass(slots=True)
class Personal:
    service: PersonalService
    feature_codes: PersonalCodes


def build(settings: Settings, live: LiveDirectory) -> Personal:
    service = PersonalService(
        live.engine,
        lambda: live.snapshot,
        lambda: live.rules,
        on_change=live.refresh,  # this router routes by the change at once
    )
    return Personal(
        service, PersonalCodes(service, settings.forward_prefix, settings.switch_prefix)
    )
