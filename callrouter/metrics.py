"""The router's Prometheus metrics: one ``Metrics`` object per router, its own registry.

``app.py`` builds one and hands it to the features' ``build()``; they count where they
see things happen (the call driver and intake, the login service, the live directory,
the AMI events of presence).  The pure parts (the call flow, the resolver, the login
policy) never see it.  Gauges that mirror a state (connected, calls in progress, the
directory revision) are read when Prometheus scrapes, from callbacks, so keeping them
current costs nothing on the call path.

Label values come from the closed sets below only: never an extension, an endpoint, a
workplace or a PIN.  Every child is created up front, so each series exists (at 0)
from the first scrape and ``rate()`` sees its first increment.

A registry of our own, not prometheus_client's global one: the tests (and the demo)
run several routers in one process, one after another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from callrouter.domain.forwarding import RUN_TIME_KINDS

M = TypeVar("M", Counter, Histogram)

# The ``*_created`` series double every counter's series in the text format, and
# nobody queries them: off, for this process (the router's own).
_disable_created_metrics()  # type: ignore[no-untyped-call]

# The text format every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# --- the closed sets of label values ---------------------------------------------------

# CallResult's values, lower-case (tests/unit/test_metrics.py holds them to the enum).
CALL_RESULTS = (
    "answered",
    "noanswer",
    "busy",
    "unknown",
    "nophones",
    "dnd",
    "hangup",
    "handed_back",
    "failed",
)
# Why a call went back to the dialplan's fallback instead of being routed (on):
# "shutdown" (a ringing call), "overload" (a new call, at once; calls/overload.py).
# (The active/standby issue adds "standby" here.)
HAND_BACK_REASONS = ("shutdown", "overload")
ROLES = ("active", "standby")
# Which signal put the router into overload (calls/overload.py's OVERLOAD_REASONS;
# tests/unit/test_metrics.py holds them together).
OVERLOAD_REASONS = ("pending", "loop_lag", "ari_latency")
# "started" counts every leg asked for; the others how each started leg ended.
LEG_OUTCOMES = (
    "started",
    "answered",
    "timeout",
    "busy",
    "unreachable",
    "failed",
    "cancelled",
    "unconfirmed",
)
# A pickup (*8 + extension), by how it ended (calls/pickup.py's PickupResult, lower-case).
PICKUP_OUTCOMES = ("picked_up", "nocall", "refused")
# A login attempt, counted once by how it ended (logins.service maps the refusals).
LOGIN_OUTCOMES = (
    "ok",
    "wrong_pin",
    "locked",
    "refused_role",
    "occupied",
    "unknown_workplace",
    "unknown_user",
    "not_a_workplace_phone",
    "bad_input",
)
# What a directory refresh read again: everything, only the logins, the rules file.
RELOAD_KINDS = ("full", "logins", "rules")
# What a PostgreSQL notification announced (directory/changes.py's CHANNEL_KINDS).
CHANGE_KINDS = ("directory", "client_status")

# --- buckets (seconds) ----------------------------------------------------------------

_SETUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_ANSWER_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_RELOAD_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

LOOP_LAG_INTERVAL = 0.25  # seconds the loop-lag probe sleeps between measurements


def _children(metric: M, values: Iterable[str]) -> dict[str, M]:
    """One child per label value of a closed set, made at once: every series is there
    (at 0) from the first scrape, and no value outside the set can be recorded."""
    return {value: metric.labels(value) for value in values}


class _SampledCounters(Collector):
    """Counters kept by someone else (the ARI and AMI clients count their connections),
    read at scrape time."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[str, Callable[[], float]]] = {}

    def add(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self._counters[name] = (documentation, value)

    def collect(self) -> Iterator[Metric]:
        for name, (documentation, value) in self._counters.items():
            yield CounterMetricFamily(name, documentation, value=value())


class Metrics:
    """Every metric of one router, in its own registry (``text()`` for ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        # Calls.
        self._calls = _children(
            Counter("callrouter_calls", "Calls routed, by how they ended.", ["result"], registry=r),
            CALL_RESULTS,
        )
        self._handed_back = _children(
            Counter(
                "callrouter_calls_handed_back",
                "Ringing calls handed back to the dialplan's fallback, by why.",
                ["reason"],
                registry=r,
            ),
            HAND_BACK_REASONS,
        )
        self._forwards = _children(
            Counter(
                "callrouter_calls_forwarded",
                "Calls forwarded once their phones rang (busy, no answer, unreachable), by kind.",
                ["kind"],
                registry=r,
            ),
            RUN_TIME_KINDS,  # the others are resolved before any phone rings
        )
        self._call_errors = Counter(
            "callrouter_call_errors",
            "Call tasks that ended with an error (a bug; the next ARI resync takes "
            "over a caller left waiting).",
            registry=r,
        )
        self._in_progress = Gauge(
            "callrouter_calls_in_progress", "Calls the router is handling now.", registry=r
        )
        self._legs = _children(
            Counter(
                "callrouter_legs",
                "Legs (one phone rung for a call): started, and how each started leg ended.",
                ["outcome"],
                registry=r,
            ),
            LEG_OUTCOMES,
        )
        self._pickups = _children(
            Counter(
                "callrouter_pickups",
                "Pickups (*8 + extension): picked up, nothing ringing, or refused.",
                ["outcome"],
                registry=r,
            ),
            PICKUP_OUTCOMES,
        )
        self._setup = Histogram(
            "callrouter_call_setup_seconds",
            "From a call's StasisStart to the request for its first leg.",
            buckets=_SETUP_BUCKETS,
            registry=r,
        )
        self._answer = Histogram(
            "callrouter_call_answer_seconds",
            "From a call's StasisStart to a phone answering it.",
            buckets=_ANSWER_BUCKETS,
            registry=r,
        )

        # Overload: new calls handed back at once (calls/overload.py).
        self._overloaded = Gauge(
            "callrouter_overloaded",
            "1 while the router is overloaded: new calls go straight to the dialplan fallback.",
            registry=r,
        )
        self._overloads = _children(
            Counter(
                "callrouter_overloads",
                "Times the router went into overload, by the signal that put it there.",
                ["reason"],
                registry=r,
            ),
            OVERLOAD_REASONS,
        )
        self._pending = Gauge(
            "callrouter_calls_pending",
            "Calls waiting for their first leg's request to be answered (an overload signal).",
            registry=r,
        )
        self._ari_latency = Gauge(
            "callrouter_ari_latency_seconds",
            "The call path's ARI round trip, smoothed over time (an overload signal).",
            registry=r,
        )

        # Connections to Asterisk.
        self._ari_connected = Gauge(
            "callrouter_ari_connected", "1 while the ARI websocket is up.", registry=r
        )
        self._ami_connected = Gauge(
            "callrouter_ami_connected", "1 while logged in to AMI.", registry=r
        )
        self._sampled = _SampledCounters()
        r.register(self._sampled)

        # The event loop, presence, logins, the directory.
        self._loop_lag = Histogram(
            "callrouter_event_loop_lag_seconds",
            f"How late the event loop wakes a task that sleeps {LOOP_LAG_INTERVAL:g} s.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self._presence_events = Counter(
            "callrouter_presence_events",
            "Device and contact state events from Asterisk (AMI).",
            registry=r,
        )
        self._logins = _children(
            Counter(
                "callrouter_logins",
                "Workplace login attempts (phone, API), by how they ended.",
                ["outcome"],
                registry=r,
            ),
            LOGIN_OUTCOMES,
        )
        self._reloads = _children(
            Counter(
                "callrouter_directory_reloads",
                "Directory refreshes that read something again (the first load included).",
                ["kind"],
                registry=r,
            ),
            RELOAD_KINDS,
        )
        self._reload_seconds = _children(
            Histogram(
                "callrouter_directory_reload_seconds",
                "How long each reload took.",
                ["kind"],
                buckets=_RELOAD_BUCKETS,
                registry=r,
            ),
            RELOAD_KINDS,
        )
        self._refresh_failures = Counter(
            "callrouter_directory_refresh_failures",
            "Directory refreshes that failed (the database unreachable); the snapshot stays.",
            registry=r,
        )
        self._revision = Gauge(
            "callrouter_directory_revision",
            "The revision of the directory snapshot calls are routed by.",
            registry=r,
        )
        self._changes = _children(
            Counter(
                "callrouter_change_notifications",
                "Changes announced by PostgreSQL (LISTEN/NOTIFY), by what changed.",
                ["kind"],
                registry=r,
            ),
            CHANGE_KINDS,
        )
        self._change_feed_connected = Gauge(
            "callrouter_change_feed_connected",
            "1 while the PostgreSQL LISTEN connection is up (0: changes arrive by polling).",
            registry=r,
        )
        self._ready = Gauge(
            "callrouter_ready", "1 while the router can route a call (health/ready).", registry=r
        )
        # One series per role, 1 for the role it has now: alert unless exactly one
        # router of each Asterisk has callrouter_role{role="active"} == 1.
        self._role = Gauge(
            "callrouter_role",
            "1 for the router's role now: active (runs the Stasis app) or standby.",
            ["role"],
            registry=r,
        )
        self._terms = Counter(
            "callrouter_activations",
            "How often this router became active (took the lease).",
            registry=r,
        )

    # --- exposition -----------------------------------------------------------------

    def text(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    # --- calls ----------------------------------------------------------------------

    def call_finished(self, result: str) -> None:
        self._calls[result].inc()

    def call_handed_back(self, reason: str) -> None:
        self._handed_back[reason].inc()

    def call_forwarded(self, kind: str) -> None:
        self._forwards[kind].inc()

    def call_error(self) -> None:
        self._call_errors.inc()

    def leg_started(self) -> None:
        self._legs["started"].inc()

    def legs_ended(self, outcomes: Iterable[str]) -> None:
        for outcome in outcomes:
            self._legs[outcome].inc()

    def pickup(self, outcome: str) -> None:
        self._pickups[outcome].inc()

    def call_setup(self, seconds: float) -> None:
        self._setup.observe(seconds)

    def call_answered(self, seconds: float) -> None:
        self._answer.observe(seconds)

    def overload_entered(self, reason: str) -> None:
        self._overloads[reason].inc()

    # --- the rest -------------------------------------------------------------------

    def presence_event(self) -> None:
        self._presence_events.inc()

    def login(self, outcome: str) -> None:
        self._logins[outcome].inc()

    def directory_reloaded(self, kind: str, seconds: float) -> None:
        self._reloads[kind].inc()
        self._reload_seconds[kind].observe(seconds)

    def directory_refresh_failed(self) -> None:
        self._refresh_failures.inc()

    def change_notified(self, kind: str) -> None:
        self._changes[kind].inc()

    def loop_lag(self, seconds: float) -> None:
        self._loop_lag.observe(seconds)

    # --- states read at scrape time -------------------------------------------------

    def track_calls(self, in_progress: Callable[[], int]) -> None:
        self._in_progress.set_function(in_progress)

    def track_ari(self, connected: Callable[[], bool], connections: Callable[[], int]) -> None:
        self._ari_connected.set_function(lambda: float(connected()))
        self._sampled.add(
            "callrouter_ari_reconnects",
            "ARI websocket connections made after the first.",
            lambda: max(0, connections() - 1),
        )

    def track_ami(self, connected: Callable[[], bool], connections: Callable[[], int]) -> None:
        self._ami_connected.set_function(lambda: float(connected()))
        self._sampled.add(
            "callrouter_ami_reconnects",
            "AMI logins made after the first.",
            lambda: max(0, connections() - 1),
        )

    def track_overload(
        self,
        overloaded: Callable[[], bool],
        pending: Callable[[], int],
        ari_latency: Callable[[], float],
    ) -> None:
        self._overloaded.set_function(lambda: float(overloaded()))
        self._pending.set_function(pending)
        self._ari_latency.set_function(ari_latency)

    def track_directory(self, revision: Callable[[], int]) -> None:
        self._revision.set_function(revision)

    def track_change_feed(
        self, connected: Callable[[], bool], connections: Callable[[], int]
    ) -> None:
        self._change_feed_connected.set_function(lambda: float(connected()))
        self._sampled.add(
            "callrouter_change_feed_reconnects",
            "PostgreSQL LISTEN connections made after the first.",
            lambda: max(0, connections() - 1),
        )

    def track_ready(self, ready: Callable[[], bool]) -> None:
        self._ready.set_function(lambda: float(ready()))

    def track_role(self, role: Callable[[], str]) -> None:
        def has(name: str) -> Callable[[], float]:
            return lambda: float(role() == name)

        for name in ROLES:
            self._role.labels(name).set_function(has(name))

    def activated(self) -> None:
        self._terms.inc()


async def watch_loop_lag(
    metrics: Metrics,
    interval: float = LOOP_LAG_INTERVAL,
    *,
    on_lag: Callable[[float], None] | None = None,
) -> None:
    """Sleep ``interval`` again and again; how much later than asked the loop woke us
    is the lag every other task saw meanwhile (a blocking call, a CPU-heavy step).
    ``on_lag`` gets each measurement too (the overload signal)."""
    loop = asyncio.get_running_loop()
    while True:
        asleep = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - asleep - interval)
        metrics.loop_lag(lag)
        if on_lag is not None:
            on_lag(lag)
