"""Routes for operators: liveness, readiness and the Prometheus metrics.

Unauthenticated, like the API's ``/api/v1/health``: they say nothing about anyone
(counts and states only; the metrics' labels never hold an extension, endpoint or
PIN), and monitoring must work without a token.  The API listens on loopback by
default, where Prometheus and systemd's tools run (README: "Running it as a service").

* ``GET /api/v1/health/live``: the event loop answers (200), nothing more.
* ``GET /api/v1/health/ready``: whether the router can route a call now (200), or
  not (503), with the reasons.  Read from state the router keeps anyway (no database
  query, no request to Asterisk), so it answers in microseconds and never hangs.
* ``GET /metrics``: the Prometheus text format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from callrouter.metrics import CONTENT_TYPE, Metrics


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]  # why the router cannot route a call now (empty: it can)
    warnings: tuple[str, ...]  # it can, but something is missing (presence, fallback)
    snapshot_loaded: bool
    directory_revision: int
    ari_connected: bool
    ami_connected: bool
    database_reachable: bool
    # Seconds since the router last confirmed its snapshot against the database.
    snapshot_checked_seconds_ago: float | None
    calls_in_progress: int
    # Overloaded: new calls go straight to the AstDB fallback; the signal past its limit.
    overloaded: str | None = None
    # Active (runs the Stasis app) or standby (waits for the lease), and since when
    # (Unix time); README "Active and standby".
    role: str = "active"
    role_since: float | None = None


def assess(
    *,
    accepting: bool = True,
    snapshot_loaded: bool,
    directory_revision: int,
    ari_connected: bool,
    ami_connected: bool,
    database_error: str | None,
    checked_seconds_ago: float | None,
    max_snapshot_age: float,
    calls_in_progress: int,
    overloaded: str | None = None,
    role: str = "active",
    role_since: float | None = None,
    lease_warning: str | None = None,
) -> Readiness:
    """Ready = the snapshot is loaded, ARI is connected, and the database answers or
    the snapshot was confirmed current less than ``max_snapshot_age`` seconds ago.

    AMI is not needed to route a call: without it presence and the AstDB fallback are
    not kept current, which is a warning, not a reason. Overload is a warning too: every
    call is still answered for, by the dialplan's fallback.

    A standby router is ready when it could take over: its snapshot is loaded and
    current; it has no ARI websocket (only the active router has one).
    """
    reasons: list[str] = []
    warnings: list[str] = []
    if not accepting:
        reasons.append("the router is shutting down: it takes no new calls")
    if not snapshot_loaded:
        reasons.append("the directory snapshot is not loaded")
    if not ari_connected and role == "active":
        reasons.append("ARI is not connected: calls cannot reach the router")
    if database_error is not None:
        age = "never" if checked_seconds_ago is None else f"{checked_seconds_ago:.0f} s ago"
        if checked_seconds_ago is None or checked_seconds_ago > max_snapshot_age:
            reasons.append(
                f"the database is unreachable ({database_error}) and the snapshot was "
                f"last confirmed current {age} (limit {max_snapshot_age:g} s)"
            )
        else:
            warnings.append(
                f"the database is unreachable ({database_error}); routing by the snapshot "
                f"confirmed current {age}"
            )
    if not ami_connected:
        warnings.append("AMI is not connected: presence and the AstDB fallback are not updated")
    if overloaded is not None:
        warnings.append(f"overloaded ({overloaded}): new calls go to the AstDB fallback")
    if lease_warning is not None:
        warnings.append(lease_warning)
    return Readiness(
        ready=not reasons,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        snapshot_loaded=snapshot_loaded,
        directory_revision=directory_revision,
        ari_connected=ari_connected,
        ami_connected=ami_connected,
        database_reachable=database_error is None,
        snapshot_checked_seconds_ago=checked_seconds_ago,
        calls_in_progress=calls_in_progress,
        overloaded=overloaded,
        role=role,
        role_since=role_since,
    )


class Alive(BaseModel):
    status: str


def operations_routes(
    readiness: Callable[[], Readiness] | None, metrics: Metrics | None
) -> APIRouter:
    """The routes above; without ``readiness`` (an API built alone, in tests) ready
    always answers 503, without ``metrics`` there is no ``/metrics``."""
    router = APIRouter()

    @router.get("/api/v1/health/live")
    async def live() -> Alive:
        """The router's event loop answers."""
        return Alive(status="alive")

    @router.get(
        "/api/v1/health/ready",
        response_model=Readiness,  # the dataclass itself: one list of the fields
        responses={503: {"model": Readiness, "description": "Not ready: see reasons"}},
    )
    async def ready() -> JSONResponse:
        """Whether the router can route a call now; 503 with the reasons when not."""
        if readiness is None:
            return JSONResponse({"ready": False, "reasons": ["no router"]}, status_code=503)
        state = readiness()
        return JSONResponse(asdict(state), status_code=200 if state.ready else 503)

    if metrics is not None:

        @router.get("/metrics", include_in_schema=False)
        async def prometheus() -> Response:
            return Response(metrics.text(), media_type=CONTENT_TYPE)

    return router
