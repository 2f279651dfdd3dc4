"""``callrouter serve``: builds the router from its settings and runs it.

This module only composes; each feature builds itself (``<feature>/build.py``):

  directory (SQL) ──▶ LiveDirectory (snapshot + rules, reloaded on change) ──▶ calls
  PostgreSQL NOTIFY ──▶ ChangeFeed ──▶ LiveDirectory, PresenceService (client statuses)
  ARI websocket ──StasisStart──▶ CallIntake ──▶ one CallDriver task per call
  AMI ◀── FallbackService (AstDB dial strings for when the router is down)
  FastAGI (feature codes) ─┐
  HTTP API (client, admin) ┴──▶ LoginService ──▶ directory (SQL) ──▶ LiveDirectory
  AMI DeviceStateChange ──▶ PresenceService (tracker) ──▶ routing, API, Custom:user-EXT
  lease (PostgreSQL advisory lock | SQLite file lock) ──▶ Election: active ⇄ standby
      active: ARI websocket + call intake; standby: everything else, warm

Active and standby (cluster/): every part runs on every router but the ARI websocket
and the call intake, which only the active one (the lease holder) runs.

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
from callrouter.cluster.build import build as build_election
from callrouter.cluster.build import build_lease
from callrouter.cluster.election import Election, Role
from callrouter.cluster.lease import Lease, LeaseRefused
from callrouter.config import Settings
from callrouter.directory.changes import build as build_changes
from callrouter.directory.database import check_schema, create_engine
from callrouter.directory.live import LiveDirectory
from callrouter.fallback.build import build as build_fallback
from callrouter.logins.build import build as build_logins
from callrouter.logs import register_secret, setup_logging
from callrouter.metrics import Metrics, watch_loop_lag
from callrouter.personal.build import build as build_personal
from callrouter.presence.build import build as build_presence
from callrouter.presence.live import AMI_EVENTS
from callrouter.systemd import Notifier, keep_alive, watchdog_interval
from callrouter.tasks import TaskSet
from callrouter.yamlfile import YamlFileError

log = logging.getLogger(__name__)


class Router:
    """Every running part of one router, built from its settings and the live directory."""

    def __init__(
        self,
        settings: Settings,
        live: LiveDirectory,
        metrics: Metrics | None = None,
        *,
        lease: Lease | None = None,
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
        # PostgreSQL announces directory and client status changes (None on SQLite).
        self.changes = build_changes(live, metrics=metrics)
        self.presence = build_presence(
            self.ami,
            live,
            heartbeat_timeout=settings.client_heartbeat_timeout,
            poll_interval=settings.directory_poll_interval,
            changes=self.changes,
            metrics=metrics,
        )
        self.fallback = build_fallback(self.ami, live, node=settings.node)
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
            timezone=settings.timezone,
            node=settings.node,
        )
        # ARI checks that a FastAGI session is a real call on this Asterisk.
        # The users' own forwardings and switches; their feature codes share FastAGI.
        self.personal = build_personal(settings, live)
        self.login_parts = build_logins(
            settings,
            live,
            self.ari,
            metrics=metrics,
            more_handlers=self.personal.feature_codes.handlers,
        )
        self.logins = self.login_parts.service
        self.feature_codes = self.login_parts.feature_codes
        self.agi_server = self.login_parts.agi_server
        # No lease (an in-memory directory): this router is the only one, always active.
        self.election: Election | None = None
        if lease is not None:
            self.election = build_election(
                lease, settings, promote=self._promote, demote=self._demote
            )
            self.ari.on_replaced = self.election.replaced
        self.api_server = build_api(
            settings,
            self.logins,
            self.presence,
            readiness=self.readiness,
            metrics=metrics,
            role=lambda: (self.role.value, self.role_since),
            directory_changes=live.subscribe,  # the web client's live desk view
            personal=self.personal.service,
            local_time=lambda: self.intake.local_time(),  # the calls' clock, so tests can set it
        )
        metrics.track_ari(lambda: self.ari.is_connected, lambda: self.ari.connection_count)
        metrics.track_ami(lambda: self.ami.connected, lambda: self.ami.connection_count)
        metrics.track_directory(lambda: live.snapshot.revision)
        metrics.track_ready(lambda: self.readiness().ready)
        metrics.track_role(lambda: self.role.value)
        self._monitors = TaskSet("monitors")
        self._electing = TaskSet("election")
        self._started_at = time.time()

    @property
    def role(self) -> Role:
        return Role.ACTIVE if self.election is None else self.election.role

    @property
    def role_since(self) -> float:
        """When the current role began (Unix time)."""
        return self._started_at if self.election is None else self.election.since

    async def _promote(self) -> None:
        """The lease is ours: connect the app, resync, take over waiting callers."""
        self.metrics.activated()
        await self.ari.start()
        try:
            await self.ari.wait_connected(10)
        except TimeoutError:
            log.warning("active, but ARI is not connected yet: it keeps trying")

    async def _demote(self, reason: str) -> None:
        """Another router is active: stop taking calls, leave every channel to it."""
        await self.ari.stop_listening()
        await self.intake.abandon()

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
            role=self.role.value,
            role_since=self.role_since,
            lease_warning=None if self.election is None else self.election.unconfirmed,
        )

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status callrouter``)."""
        state = self.readiness()
        if not state.ready:
            role = "standby, " if state.role == Role.STANDBY else ""
            return f"{role}not ready: " + "; ".join(state.reasons)
        if state.role == Role.STANDBY:
            line = f"standby: directory revision {state.directory_revision}"
            return "; ".join((line, *state.warnings))
        line = f"routing: {state.calls_in_progress} call(s) in progress, "
        line += f"directory revision {state.directory_revision}"
        return "; ".join((line, *state.warnings))

    async def start(self) -> None:
        # The lag is an overload signal of the call intake too.
        self._monitors.spawn(
            watch_loop_lag(self.metrics, on_lag=self.intake.loop_lag_measured), "event-loop-lag"
        )
        self.presence.start()
        if self.changes is not None:
            self.changes.start()
        await self.ami.start(wait=False)
        self.ari.warm()
        if self.election is None:
            await self.ari.start()
        else:
            self._electing.spawn(self.election.run(), "election")
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
        await self._electing.close()  # an active router stays active until the end
        election = self.election
        if (
            election is not None
            and election.role is Role.ACTIVE
            and await election.lease.standby_waiting()
        ):
            # A standby waits: it takes every call over (ringing ones ring again from
            # it) in a moment; better than fallback rings, or callers left waiting.
            log.info("stopping: the standby takes the calls over")
            self.intake.accepting = False
            await self._demote("stopping")
            await election.lease.release()
        await self.intake.stop(grace, force=force)
        await self.fallback.close()
        await self.ari.close()
        if self.election is not None:
            await self.election.lease.release()  # a standby takes over now
        await self.ami.close()
        await self.presence.close()
        if self.changes is not None:
            await self.changes.close()
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
    lease = build_lease(settings)
    try:
        if lease is not None and not lease.shared:
            await lease.acquire()  # SQLite: one router per database, or none starts
        await check_schema(engine)
        metrics = Metrics()
        live = LiveDirectory(engine, settings.rules, metrics=metrics)
        await live.load()
        router = Router(settings, live, metrics, lease=lease)
        await router.start()
        log.info("callrouter serving ARI app %r at %s", settings.ari_app, settings.ari_url)
        if on_started is not None:
            on_started(router)
        reporting = TaskSet("systemd status")
        if notifier.enabled:
            reporting.spawn(_report_to_systemd(router, notifier), "systemd-status")
        refresh_failing = False
        try:
            while not stop.is_set():
                # A stop ends the wait too: with PostgreSQL's NOTIFY the poll may be long.
                try:
                    await asyncio.wait_for(_either(reload, stop), settings.directory_poll_interval)
                except TimeoutError:
                    forced = False
                else:
                    forced = reload.is_set()
                    if forced:
                        reload.clear()
                        log.info("SIGHUP: reloading directory and rules")
                if stop.is_set():
                    break
                if forced:
                    notifier.reloading()
                try:
                    await live.refresh(force=forced)
                except Exception:
                    # Once per outage, not every poll; the details at DEBUG.
                    if not refresh_failing:
                        log.warning(
                            "directory refresh failed (%s); routing by the current snapshot",
                            live.check_error,
                        )
                    log.debug("directory refresh failed", exc_info=True)
                    refresh_failing = True
                else:
                    if refresh_failing:
                        log.info("directory refresh works again")
                    refresh_failing = False
                finally:
                    if forced:
                        notifier.reloaded(router.status_line())
        finally:
            notifier.stopping(f"stopping: {len(router.calls)} call(s) in progress")
            await reporting.close()
            await router.stop(settings.shutdown_grace, force=force)
    finally:
        if lease is not None:
            await lease.release()
        await engine.dispose()
        await watchdog.close()
        notifier.close()
    log.info("callrouter stopped")
    return 0


async def _either(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _report_to_systemd(router: Router, notifier: Notifier) -> None:
    """READY=1 once ARI and AMI are both connected (the snapshot is loaded and the
    listeners are up before this starts), then STATUS= whenever the line changes."""
    last = ""
    while not (router.ami.connected and (router.role is Role.STANDBY or router.ari.is_connected)):
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
    except LeaseRefused as exc:
        log.error("cannot start: %s", exc)
        return 1
