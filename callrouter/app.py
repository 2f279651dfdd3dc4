"""``callrouter serve``: builds the router from its settings and runs it.

This module only composes; each feature builds itself (``<feature>/build.py``):

  directory (SQL) ──▶ LiveDirectory (snapshot + rules, reloaded on change) ──▶ calls
  ARI websocket ──StasisStart──▶ CallIntake ──▶ one CallDriver task per call
  AMI ◀── FallbackService (AstDB dial strings for when the router is down)
  FastAGI (feature codes) ─┐
  HTTP API (client, admin) ┴──▶ LoginService ──▶ directory (SQL) ──▶ LiveDirectory
  AMI DeviceStateChange ──▶ PresenceService (tracker) ──▶ routing, API, Custom:user-EXT

Operations: one ``Metrics`` (metrics.py) handed to the features, served at ``/metrics``
with the health routes (api/operations.py); ``Router.readiness()`` says whether a call can
be routed now; ``run_router`` tells systemd (systemd.py) when it is ready, how it is,
that it reloads or stops, and keeps its watchdog fed from the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from callrouter.ami.client import AmiClient
from callrouter.api.build import build as build_api
from callrouter.api.operations import Readiness, assess
from callrouter.ari.client import AriClient
from callrouter.calls.build import build as build_calls
from callrouter.calls.driver import ARI_EVENTS, CallDriver
from callrouter.calls.overload import OverloadLimits
from callrouter.config import Settings
from callrouter.directory.database import check_schema, create_engine
from callrouter.directory.live import LiveDirectory
from callrouter.fallback.build import build as build_fallback
from callrouter.logins.build import build as build_logins
from callrouter.logs import register_secret, setup_logging
from callrouter.metrics import Metrics, watch_loop_lag
from callrouter.presence.build import build as build_presence
from callrouter.presence.live import AMI_EVENTS
from callrouter.systemd import Notifier, keep_alive, watchdog_interval
from callrouter.tasks import TaskSet
from callrouter.yamlfile import YamlFileError

log = logging.getLogger(__name__)


class Router:
    """Every running part of one router, built from its settings and the live directory."""

    def __init__(
        self, settings: Settings, live: LiveDirectory, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.live = live
        self.metrics = metrics = metrics if metrics is not None else Metrics()
        assert settings.ari_password is not None and settings.ami_secret is not None
        self.ari = AriClient(
            settings.ari_url,
            settings.ari_user,
            settings.ari_password.get_secret_value(),
            settings.ari_app,
            events=ARI_EVENTS,  # what the call path reads
        )
        self.ami = AmiClient(
            settings.ami_host,
            settings.ami_port,
            settings.ami_user,
            settings.ami_secret.get_secret_value(),
            events=AMI_EVENTS,  # presence; everything else is actions
        )
        self.presence = build_presence(
            self.ami, live, heartbeat_timeout=settings.client_heartbeat_timeout, metrics=metrics
        )
        self.fallback = build_fallback(self.ami, live)
        self.intake = build_calls(
            self.ari,
            live,
            self.presence.tracker,
            metrics=metrics,
            overload=OverloadLimits(
                max_pending=settings.overload_max_pending,
                max_loop_lag=settings.overload_max_loop_lag,
                max_ari_latency=settings.overload_max_ari_latency,
                recover=settings.overload_recover,
            ),
        )
        # ARI checks that a FastAGI session is a real call on this Asterisk.
        self.login_parts = build_logins(settings, live, self.ari, metrics=metrics)
        self.logins = self.login_parts.service
        self.feature_codes = self.login_parts.feature_codes
        self.agi_server = self.login_parts.agi_server
        self.api_server = build_api(
            settings,
            self.logins,
            self.presence,
            readiness=self.readiness,
            metrics=metrics,
            directory_changes=live.subscribe,  # the web client's live desk view
        )
        metrics.track_ari(lambda: self.ari.is_connected, lambda: self.ari.connection_count)
        metrics.track_ami(lambda: self.ami.connected, lambda: self.ami.connection_count)
        metrics.track_directory(lambda: live.snapshot.revision)
        metrics.track_ready(lambda: self.readiness().ready)
        self._monitors = TaskSet("monitors")

    @property
    def calls(self) -> dict[str, CallDriver]:
        """The calls in progress, by the caller's channel id."""
        return self.intake.calls

    def readiness(self) -> Readiness:
        """Whether a call can be routed now, from what the parts know (no I/O)."""
        checked_at = self.live.checked_at
        return assess(
            accepting=self.intake.accepting,
            snapshot_loaded=self.live.loaded,
            directory_revision=self.live.snapshot.revision,
            ari_connected=self.ari.is_connected,
            ami_connected=self.ami.connected,
            database_error=self.live.check_error,
            checked_seconds_ago=None if checked_at is None else time.monotonic() - checked_at,
            max_snapshot_age=self.settings.snapshot_max_age,
            calls_in_progress=len(self.calls),
            overloaded=self.intake.overload.reason,
        )

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status callrouter``)."""
        state = self.readiness()
        if not state.ready:
            return "not ready: " + "; ".join(state.reasons)
        line = f"routing: {state.calls_in_progress} call(s) in progress, "
        line += f"directory revision {state.directory_revision}"
        return "; ".join((line, *state.warnings))

    async def start(self) -> None:
        # The lag is an overload signal of the call intake too.
        self._monitors.spawn(
            watch_loop_lag(self.metrics, on_lag=self.intake.loop_lag_measured), "event-loop-lag"
        )
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
        await self._monitors.close()


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
    ``force`` (set while stopping) ends the shutdown grace.

    Under systemd (``$NOTIFY_SOCKET``): ``READY=1`` once the snapshot is loaded, the
    listeners are up and ARI and AMI are connected; ``WATCHDOG=1`` from this loop
    at half of ``$WATCHDOG_USEC``; ``STOPPING=1`` when the shutdown starts."""
    notifier = Notifier.from_environment()
    watchdog = TaskSet("systemd watchdog")  # from the start to the very end
    interval = watchdog_interval()
    if notifier.enabled and interval is not None:
        watchdog.spawn(keep_alive(notifier, interval), "systemd-watchdog")
    notifier.status("loading the directory")
    engine = create_engine(settings.db)
    try:
        await check_schema(engine)
        metrics = Metrics()
        live = LiveDirectory(engine, settings.rules, metrics=metrics)
        await live.load()
        router = Router(settings, live, metrics)
        await router.start()
        log.info("callrouter serving ARI app %r at %s", settings.ari_app, settings.ari_url)
        if on_started is not None:
            on_started(router)
        reporting = TaskSet("systemd status")
        if notifier.enabled:
            reporting.spawn(_report_to_systemd(router, notifier), "systemd-status")
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
                if forced:
                    notifier.reloading()
                try:
                    await live.refresh(force=forced)
                except Exception:
                    log.exception("directory refresh failed; the current snapshot stays")
                finally:
                    if forced:
                        notifier.reloaded(router.status_line())
        finally:
            notifier.stopping(f"stopping: {len(router.calls)} call(s) in progress")
            await reporting.close()
            await router.stop(settings.shutdown_grace, force=force)
    finally:
        await engine.dispose()
        await watchdog.close()
        notifier.close()
    log.info("callrouter stopped")
    return 0


async def _report_to_systemd(router: Router, notifier: Notifier) -> None:
    """READY=1 once ARI and AMI are both connected (the snapshot is loaded and the
    listeners are up before this starts), then STATUS= whenever the line changes."""
    last = ""
    while not (router.ari.is_connected and router.ami.connected):
        if (line := router.status_line()) != last:
            notifier.status(line)
            last = line
        await asyncio.sleep(0.05)
    last = router.status_line()
    notifier.ready(last)
    log.info("ready: %s", last)
    while True:
        await asyncio.sleep(1.0)
        if (line := router.status_line()) != last:
            notifier.status(line)
            last = line


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (libuv: the same asyncio API at a
    fraction of the CPU per request and event); asyncio's own otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


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
        log.info("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
        signals, reload = StopSignals(), asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.received)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        return await run_router(settings, signals.stop, reload, force=signals.force)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(main())
    except YamlFileError as exc:
        log.error("cannot start:\n%s", exc)
        return 1
