"""Wires the HTTP API: user tokens, the admin token, logins and presence; the
operators' routes (health, readiness, /metrics: api/operations.py) beside them; and
the web client for the desks at ``/`` (callrouter.web, api/desk.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from callrouter.api.app import create_api
from callrouter.api.desk import DirectoryChanges, add_web_client
from callrouter.api.operations import Readiness, operations_routes
from callrouter.api.personal import add_personal
from callrouter.api.server import ApiServer
from callrouter.api.tokens import TokenSigner
from callrouter.config import Settings
from callrouter.logins.service import LoginService
from callrouter.metrics import Metrics
from callrouter.personal.service import PersonalService
from callrouter.presence.live import PresenceService
from callrouter.web.build import build as build_web


def build(
    settings: Settings,
    logins: LoginService,
    presence: PresenceService,
    *,
    readiness: Callable[[], Readiness] | None = None,
    metrics: Metrics | None = None,
    directory_changes: DirectoryChanges | None = None,
    role: Callable[[], tuple[str, float]] | None = None,
    personal: PersonalService | None = None,
    local_time: Callable[[], datetime],
) -> ApiServer | None:
    """``local_time``: the calls' clock, which the personal plan (``/me/plan``) reads."""
    if not settings.api_enabled:
        return None
    secret = settings.api_token_secret
    signer = TokenSigner(
        None if secret is None else secret.get_secret_value().encode(),
        ttl=settings.api_token_ttl,
    )
    admin = settings.api_admin_token
    api = create_api(
        logins,
        signer,
        None if admin is None else admin.get_secret_value(),
        presence=presence,
        trusted_proxies=settings.api_trusted_proxies,
        role=role,
    )
    api.include_router(operations_routes(readiness, metrics))
    if personal is not None:
        add_personal(
            api,
            personal,
            presence=presence.tracker,
            local_time=local_time,
            node=settings.node,
        )
    add_web_client(
        api,
        build_web(settings),
        service=logins,
        presence=presence,
        directory_changes=directory_changes,
    )
    return ApiServer(api, settings.api_host, settings.api_port)
