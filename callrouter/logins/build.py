"""Wires workplace logins: one LoginService for the phone (FastAGI), the API and the
automatic logout, counting wrong PINs in the directory database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from callrouter.agi import AgiServer, ChannelCheck, Handler
from callrouter.ari.rest import AriRest
from callrouter.config import Settings
from callrouter.directory.live import LiveDirectory
from callrouter.logins.feature_codes import FeatureCodes
from callrouter.logins.lockout import DatabaseLockout
from callrouter.logins.service import LoginService
from callrouter.logins.sweeper import AutoLogout
from callrouter.metrics import Metrics

# The dialplan application a channel runs while it talks to our FastAGI server.
AGI_APP = "AGI"


@dataclass(slots=True)
class Logins:
    service: LoginService
    feature_codes: FeatureCodes
    agi_server: AgiServer | None  # None: FastAGI switched off
    auto_logout: AutoLogout


def ari_channel_check(ari: AriRest) -> ChannelCheck:
    """A FastAGI session is a real call when ARI has a channel whose id is the
    session's ``agi_uniqueid`` (a channel's ARI id is its uniqueid), whose name is
    exactly its ``agi_channel``, and which is running AGI now (so the name and
    uniqueid of a call that is merely in progress, ringing or talking, do not do).

    A 404 is False; ARI unreachable or answering with another error raises, and the
    server refuses the session as unverifiable.
    """

    async def check(channel: str, uniqueid: str) -> bool:
        found = await ari.get_channel(uniqueid)  # GET /channels/{uniqueid}
        return found is not None and found.name == channel and found.app_name == AGI_APP

    return check


def build(
    settings: Settings,
    live: LiveDirectory,
    ari: AriRest,
    *,
    metrics: Metrics | None = None,
    more_handlers: Mapping[str, Handler] | None = None,  # other features' AGI scripts
) -> Logins:
    service = LoginService(
        live.engine,
        lambda: live.snapshot,
        policy=settings.occupied_workplace,
        lockout=DatabaseLockout(live.engine),  # shared by all routers of the directory
        on_change=live.refresh,  # this router sees its own changes at once
        metrics=metrics,
    )
    feature_codes = FeatureCodes(service, settings.login_prefix)
    agi_server = (
        AgiServer(
            {**(more_handlers or {}), **feature_codes.handlers},
            host=settings.agi_host,
            port=settings.agi_port,
            channel_check=ari_channel_check(ari),
            on_refused=feature_codes.refuse_unverified,
            max_sessions=settings.agi_max_sessions,
            max_unverified=settings.agi_max_unverified,
            max_unverified_per_source=settings.agi_max_unverified_per_source,
            environment_timeout=settings.agi_environment_timeout,
        )
        if settings.agi_enabled
        else None
    )
    auto_logout = AutoLogout(
        service,
        lambda: live.rules,
        timezone=settings.timezone,
        interval=settings.auto_logout_interval,
    )
    return Logins(service, feature_codes, agi_server, auto_logout)
