"""``callrouter serve``: builds the router from its settings and runs it.

This module only composes; each feature builds itself (``<feature>/build.py``):

  directory (SQL) ──▶ LiveDirectory (snapshot + rules, reloaded on change) ──▶ calls
  ARI websocket ──StasisStart──▶ CallIntake ──▶ one CallDriver task per call
  AMI ◀── FallbackService (AstDB dial strings for when the router is down)
  FastAGI (feature codes) ─┐
  HTTP API (client, admin) ┴──▶ LoginService ──▶ directory (SQL) ──▶ LiveDirectory
  AMI DeviceStateChange ──▶ PresenceService (tracker) ──▶ routing, API, Custom:user-EXT
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from callrouter.ami.client import AmiClient
from callrouter.api.build import build as build_api
from callrouter.ari.client import AriClient
from callrouter.calls.build import build as build_calls
from callrouter.calls.driver import CallDriver
from callrouter.config import Settings
from callrouter.directory.database import check_schema, create_engine
from callrouter.directory.live import LiveDirectory
from callrouter.fallback.build import build as build_fallback
from callrouter.logins.build import build as build_logins
from callrouter.logs import register_secret, setup_logging
from callrouter.presence.build import build as build_presence
from callrouter.presence.live import AMI_EVENTS
from callrouter.yamlfile import YamlFileError

log = logging.getLogger(__name__)


class Router:
    """Every running part of one router, built from its settings and the live directory."""

    def __init__(self, settings: Settings, live: LiveDirectory) -> None:
        self.settings = settings
        self.live = live
        assert settings.ari_password is not None and settings.ami_secret is not None
        self.ari = AriClient(
            settings.ari_url,
            settings.ari_user,
            settings.ari_password.get_secret_value(),
            settings.ari_app,
        )
        self.ami = AmiClient(
            settings.ami_host,
            settings.ami_port,
            settings.ami_user,
            settings.ami_secret.get_secret_value(),
            events=AMI_EVENTS,  # presence; everything else is actions
        )
        self.presence = build_presence(
            self.ami, live, heartbeat_timeout=settings.client_heartbeat_timeout
        )
        self.fallback = build_fallback(self.ami, live)
        self.intake = build_calls(self.ari, live, self.presence.tracker)
        self.login_parts = build_logins(settings, live, self.ari)  # ARI checks AGI channels
        self.logins = self.login_parts.service
        self.feature_codes = self.login_parts.feature_codes
        self.agi_server = self.login_parts.agi_server
        self.api_server = build_api(settings, self.logins, self.presence)

    @property
    def calls(self) -> dict[str, CallDriver]:
        """The calls in progress, by the caller's channel id."""
        return self.intake.calls

    async def start(self) -> None:
        self.presence.start()
        await self.ami.start(wait=False)
        await self.ari.start()
        if self.agi_server is not None:
            await self.agi_server.start()
        if self.api_server is not None:
            await self.api_server.start()
        self.login_parts.auto_logout.start()

    async def stop(self, grace: float, *, force: asyncio.Event | None = None) -> None:
        """Stop taking calls and logins, let ringing calls finish within ``grace`` (cut
        short when ``force`` is set), hand the rest back, then close the connections."""
        if self.api_server is not None:
            await self.api_server.close()
        if self.agi_server is not None:
            await self.agi_server.close()
        await self.login_parts.auto_logout.close()
        await self.intake.stop(grace, force=force)
        await self.fallback.close()
        await self.ari.close()
        await self.ami.close()
        await self.presence.close()


class StopSignals:
    """SIGTERM or SIGINT stops the router gracefully; a second one ends the grace."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()

    def received(self) -> None:
        if not self.stop.is_set():
            log.info("stop signal: no new calls; ringing calls may finish")
            self.stop.set()
        elif not self.force.is_set():
            log.warning("second stop signal: handing every call back now")
            self.force.set()


async def run_router(
    settings: Settings,
    stop: asyncio.Event,
    reload: asyncio.Event,
    on_started: Callable[[Router], None] | None = None,
    *,
    force: asyncio.Event | None = None,
) -> int:
    """Serve until ``stop`` is set; ``reload`` re-reads directory and rules at once,
    ``force`` (set while stopping) ends the shutdown grace."""
    engine = create_engine(settings.db)
    try:
        await check_schema(engine)
        live = LiveDirectory(engine, settings.rules)
        await live.load()
        router = Router(settings, live)
        await router.start()
        log.info("callrouter serving ARI app %r at %s", settings.ari_app, settings.ari_url)
        if on_started is not None:
            on_started(router)
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(reload.wait(), settings.directory_poll_interval)
                except TimeoutError:
                    forced = False
                else:
                    reload.clear()
                    forced = True
                    log.info("SIGHUP: reloading directory and rules")
                if stop.is_set():
                    break
                try:
                    await live.refresh(force=forced)
                except Exception:
                    log.exception("directory refresh failed; the current snapshot stays")
        finally:
            await router.stop(settings.shutdown_grace, force=force)
    finally:
        await engine.dispose()
    log.info("callrouter stopped")
    return 0


def serve(settings: Settings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    for secret in (
        settings.ari_password,
        settings.ami_secret,
        settings.api_admin_token,
        settings.api_token_secret,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())

    async def main() -> int:
        loop = asyncio.get_running_loop()
        signals, reload = StopSignals(), asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.received)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        return await run_router(settings, signals.stop, reload, force=signals.force)

    try:
        return asyncio.run(main())
    except YamlFileError as exc:
        log.error("cannot start:\n%s", exc)
        return 1
