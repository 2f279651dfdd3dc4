"""``callrouter serve``: builds the router from its settings and runs it.

The wiring in one place:
  directory (SQL) ──▶ LiveDirectory (snapshot + rules, reloaded on change) ──▶ calls
  ARI websocket ──StasisStart──▶ Router ──▶ one CallDriver task per call
  AMI ◀── FallbackPublisher (AstDB dial strings for when the router is down)
  FastAGI (feature codes) ─┐
  HTTP API (client, admin) ┴──▶ LoginService ──▶ directory (SQL) ──▶ LiveDirectory
  AMI DeviceStateChange ──▶ PresenceService (tracker) ──▶ routing, API, Custom:user-EXT
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.agi import AgiServer
from callrouter.ami.client import AmiClient
from callrouter.api import TokenSigner, create_api
from callrouter.api.server import ApiServer
from callrouter.ari.client import AriClient
from callrouter.ari.errors import AriError
from callrouter.ari.events import AriEvent, Channel
from callrouter.calls.driver import BRIDGE_PREFIX, LEG_PREFIX, CallDriver
from callrouter.config import Settings
from callrouter.directory.database import check_schema, create_engine
from callrouter.directory.revisions import read_revisions
from callrouter.directory.snapshot import load_logins, load_snapshot
from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.endpoint import caller_endpoint
from callrouter.fallback.astdb import FallbackPublisher
from callrouter.fallback.entries import fallback_entries
from callrouter.logins.feature_codes import FeatureCodes
from callrouter.logins.lockout import DatabaseLockout
from callrouter.logins.service import LoginService
from callrouter.logs import register_secret, setup_logging
from callrouter.presence.live import AMI_EVENTS, PresenceService
from callrouter.presence.tracker import PresenceTracker
from callrouter.routing.resolver import resolve_plan
from callrouter.rules.loader import load_rules
from callrouter.rules.model import RingRules
from callrouter.yamlfile import YamlFileError

log = logging.getLogger(__name__)


class LiveDirectory:
    """The snapshot and the rules every new call is routed by, kept current.

    The directory is re-read when its revision counter moves (so changes made by
    another router or the CLI arrive within one poll interval); the rules file when
    its modification time changes or on SIGHUP.  A rules file that fails validation
    is refused and the previous rules keep serving.
    """

    def __init__(self, engine: AsyncEngine, rules_path: Path) -> None:
        self.engine = engine
        self.rules_path = rules_path
        self.snapshot = DirectorySnapshot()
        self.rules = RingRules()
        self._rules_mtime: float | None = None
        self._refreshing = asyncio.Lock()  # the poll loop and login changes both refresh
        # Called after every change with the extensions it concerns (None: anyone).
        self.listeners: list[Callable[[frozenset[str] | None], None]] = []

    async def load(self) -> None:
        """The first load: errors here stop the daemon."""
        self.rules = load_rules(self.rules_path)
        self._rules_mtime = self._mtime()
        self.snapshot = await load_snapshot(self.engine)
        log.info(
            "directory revision %d: %d users, %d workplaces; rules from %s",
            self.snapshot.revision,
            len(self.snapshot.users),
            len(self.snapshot.workplaces),
            self.rules_path,
        )

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload what changed; True if anything did."""
        async with self._refreshing:
            return await self._refresh(force)

    async def _refresh(self, force: bool) -> bool:
        changed = False
        concerned: frozenset[str] | None = None  # None: everyone
        mtime = self._mtime()
        if force or mtime != self._rules_mtime:
            self._rules_mtime = mtime
            try:
                self.rules = load_rules(self.rules_path)
            except YamlFileError as exc:
                log.error("rules refused, the previous rules stay in force:\n%s", exc)
            except OSError as exc:
                log.error(
                    "rules file %s unreadable (%s), the previous rules stay in force",
                    self.rules_path,
                    exc.strerror,
                )
            else:
                log.info("rules reloaded from %s", self.rules_path)
                changed = True
        rules_changed = changed
        revision, content_revision = await read_revisions(self.engine)
        old = self.snapshot
        if not force and content_revision == old.content_revision and revision != old.revision:
            # Only logins changed: read just those (a full reload of 100,000 users
            # would hold up calls for most of a second).
            logins, revision, content_revision = await load_logins(self.engine)
            if content_revision == old.content_revision:
                self.snapshot = replace(old, logins=logins, revision=revision)
                log.info("logins reloaded at revision %d", revision)
                concerned = frozenset(
                    ext
                    for ext in logins.keys() | old.logins.keys()
                    if logins.get(ext) != old.logins.get(ext)
                )
                changed = True
        if (
            force
            or self.snapshot.revision != revision
            or self.snapshot.content_revision != content_revision
        ):
            self.snapshot = await load_snapshot(self.engine)
            log.info("directory reloaded at revision %d", self.snapshot.revision)
            concerned = None
            changed = True
        if changed:
            if rules_changed:
                concerned = None
            for listener in self.listeners:
                listener(concerned)
        return changed

    def _mtime(self) -> float | None:
        try:
            return self.rules_path.stat().st_mtime
        except OSError:
            return None


class Router:
    def __init__(self, settings: Settings, live: LiveDirectory) -> None:
        self.settings = settings
        self.live = live
        assert settings.ari_password is not None and settings.ami_secret is not None
        self.ari = AriClient(
            settings.ari_url,
            settings.ari_user,
            settings.ari_password.get_secret_value(),
            settings.ari_app,
            on_event=self._on_unrouted_event,
            on_connected=self._on_ari_connected,
        )
        self.ami = AmiClient(
            settings.ami_host,
            settings.ami_port,
            settings.ami_user,
            settings.ami_secret.get_secret_value(),
            events=AMI_EVENTS,  # presence; everything else is actions
            on_connected=self._on_ami_connected,
        )
        self.presence = PresenceService(
            PresenceTracker(live.snapshot, heartbeat_timeout=settings.client_heartbeat_timeout),
            self.ami,
        )
        self.fallback = FallbackPublisher(self.ami)
        self.logins = LoginService(
            live.engine,
            lambda: live.snapshot,
            policy=settings.occupied_workplace,
            lockout=DatabaseLockout(live.engine),  # shared by all routers of the directory
            on_change=live.refresh,  # this router sees its own changes at once
        )
        self.feature_codes = FeatureCodes(self.logins, settings.login_prefix)
        self.agi_server: AgiServer | None = None
        if settings.agi_enabled:
            self.agi_server = AgiServer(
                self.feature_codes.handlers, host=settings.agi_host, port=settings.agi_port
            )
        self.api_server: ApiServer | None = None
        if settings.api_enabled:
            secret = settings.api_token_secret
            signer = TokenSigner(
                None if secret is None else secret.get_secret_value().encode(),
                ttl=settings.api_token_ttl,
            )
            admin = settings.api_admin_token
            api = create_api(
                self.logins,
                signer,
                None if admin is None else admin.get_secret_value(),
                presence=self.presence,
            )
            self.api_server = ApiServer(api, settings.api_host, settings.api_port)
        self._sweeper: asyncio.Future[None] | None = None
        self.calls: dict[str, CallDriver] = {}  # by caller channel id
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = True
        live.listeners.append(self._directory_changed)

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self.presence.start()
        await self.ami.start(wait=False)
        await self.ari.start()
        if self.agi_server is not None:
            await self.agi_server.start()
            log.info("FastAGI listening on %s:%d", self.settings.agi_host, self.agi_server.port)
        if self.api_server is not None:
            await self.api_server.start()
        self._sweeper = asyncio.ensure_future(self._sweep_logins())

    async def stop(self, grace: float) -> None:
        """Stop taking calls, let ringing calls finish within ``grace``, then hand the
        rest back to the dialplan's fallback."""
        self._accepting = False
        if self.api_server is not None:
            await self.api_server.close()
        if self.agi_server is not None:
            await self.agi_server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        running = [t for t in self._tasks if not t.done()]
        if running:
            log.info("shutting down: waiting up to %.0f s for %d call(s)", grace, len(running))
            _, pending = await asyncio.wait(running, timeout=grace)
            for driver in list(self.calls.values()):
                await driver.hand_back()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.ari.close()
        await self.ami.close()
        await self.presence.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- calls --------------------------------------------------------------------

    async def _on_unrouted_event(self, event: AriEvent) -> None:
        if event.type != "StasisStart" or event.channel is None:
            return
        channel = event.channel
        if channel.id.startswith(LEG_PREFIX) or channel.id in self.calls:
            return
        extension = event.args[0] if event.args else (channel.exten or "")
        self._take_call(channel, extension)

    def _take_call(self, channel: Channel, extension: str) -> None:
        if not self._accepting:
            return
        live = self.live
        caller = caller_endpoint(channel.name)
        plan = resolve_plan(
            live.snapshot, live.rules, extension, caller, presence=self.presence.tracker
        )
        driver = CallDriver(self.ari, channel, plan)
        self.calls[channel.id] = driver
        task = self._spawn(driver.run())
        task.add_done_callback(lambda _t: self.calls.pop(channel.id, None))

    async def _on_ari_connected(self) -> None:
        """After every (re)connect: Asterisk's lists are the truth, not our memory."""
        try:
            channels, bridges = await self.ari.resync()
        except AriError as exc:
            log.warning("resync after ARI connect failed: %s", exc)
            return
        alive = {c.id for c in channels}
        owned: set[str] = set()
        for driver in list(self.calls.values()):
            driver.resync(alive)
            owned |= driver.channel_ids()
        for channel in channels:
            if channel.id in owned:
                continue
            if channel.id.startswith(LEG_PREFIX):
                log.info("resync: hanging up orphaned leg %s", channel.id)
                await self.ari.hangup(channel.id)
            elif channel.app_name == "Stasis" and (channel.app_data or "").split(",")[0] == (
                self.settings.ari_app
            ):
                # A caller waiting in our app that no task owns (the router restarted).
                args = (channel.app_data or "").split(",")
                log.info("resync: taking over waiting call %s", channel.id)
                self._take_call(channel, args[1] if len(args) > 1 else channel.exten or "")
        owned_bridges = {d.bridge_id for d in self.calls.values() if d.bridge_id}
        for bridge in bridges:
            if bridge.id.startswith(BRIDGE_PREFIX) and bridge.id not in owned_bridges:
                log.info("resync: destroying orphaned bridge %s", bridge.id)
                await self.ari.destroy_bridge(bridge.id)

    # --- automatic logout ---------------------------------------------------------

    def time_zone(self) -> tzinfo:
        if self.settings.timezone is not None:
            return ZoneInfo(self.settings.timezone)
        zone = datetime.now().astimezone().tzinfo  # asked each time: follows DST
        assert zone is not None
        return zone

    async def _sweep_logins(self) -> None:
        """End logins past their workplace's auto_logout, now and every interval."""
        while True:
            try:
                await self.logins.expire(self.live.rules, self.time_zone())
            except Exception:
                log.exception("automatic logout failed; trying again next interval")
            await asyncio.sleep(self.settings.auto_logout_interval)

    # --- fallback -----------------------------------------------------------------

    async def _on_ami_connected(self) -> None:
        entries = fallback_entries(self.live.snapshot, self.live.rules)
        await self.fallback.resync(entries)
        try:
            await self.presence.resync()
        except Exception as exc:  # AMI went again: the next connect resyncs
            log.warning("presence resync failed: %s", exc)

    def _directory_changed(self, concerned: frozenset[str] | None) -> None:
        """Only the users a change concerns are worked out again (None: everyone)."""
        self.presence.set_snapshot(self.live.snapshot, concerned)
        entries = fallback_entries(self.live.snapshot, self.live.rules, concerned)
        self._spawn(self._publish(entries, concerned))

    async def _publish(self, entries: Any, concerned: frozenset[str] | None) -> None:
        try:
            await self.fallback.publish(entries, concerned)
        except Exception as exc:  # AMI down: the next resync catches up
            log.warning("AstDB fallback not updated: %s", exc)


async def run_router(
    settings: Settings,
    stop: asyncio.Event,
    reload: asyncio.Event,
    on_started: Callable[[Router], None] | None = None,
) -> int:
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
            await router.stop(settings.shutdown_grace)
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
        stop, reload = asyncio.Event(), asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        return await run_router(settings, stop, reload)

    try:
        return asyncio.run(main())
    except YamlFileError as exc:
        log.error("cannot start:\n%s", exc)
        return 1
