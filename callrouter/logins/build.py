"""Wires workplace logins: one LoginService for the phone (FastAGI), the API and the
automatic logout, counting wrong PINs in the directory database."""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.agi import AgiServer
from callrouter.config import Settings
from callrouter.directory.live import LiveDirectory
from callrouter.logins.feature_codes import FeatureCodes
from callrouter.logins.lockout import DatabaseLockout
from callrouter.logins.metered import MeteredLoginService
from callrouter.logins.service import LoginService
from callrouter.logins.sweeper import AutoLogout
from callrouter.metrics import Metrics


@dataclass(slots=True)
class Logins:
    service: LoginService
    feature_codes: FeatureCodes
    agi_server: AgiServer | None  # None: FastAGI switched off
    auto_logout: AutoLogout


def build(settings: Settings, live: LiveDirectory, *, metrics: Metrics | None = None) -> Logins:
    service = MeteredLoginService(
        metrics if metrics is not None else Metrics(),
        live.engine,
        lambda: live.snapshot,
        policy=settings.occupied_workplace,
        lockout=DatabaseLockout(live.engine),  # shared by all routers of the directory
        on_change=live.refresh,  # this router sees its own changes at once
    )
    feature_codes = FeatureCodes(service, settings.login_prefix)
    agi_server = (
        AgiServer(feature_codes.handlers, host=settings.agi_host, port=settings.agi_port)
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
