"""Health, readiness and /metrics, as api/build.py serves them beside the API; and the
login attempts the login service counts (a real directory database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from callrouter.api import TokenSigner, create_api
from callrouter.api.operations import Readiness, assess, operations_routes
from callrouter.logins.service import LoginService
from callrouter.metrics import CONTENT_TYPE, Metrics
from tests.unit.conftest import Live
from tests.unit.test_metrics import samples

READY = assess(
    snapshot_loaded=True,
    directory_revision=7,
    ari_connected=True,
    ami_connected=True,
    database_error=None,
    checked_seconds_ago=0.4,
    max_snapshot_age=60,
    calls_in_progress=2,
)


def test_ready_needs_the_snapshot_ari_and_a_current_database() -> None:
    assert READY.ready and READY.reasons == () and READY.warnings == ()
    no_ari = assess(**{**_inputs(), "ari_connected": False})
    assert not no_ari.ready and "ARI is not connected" in no_ari.reasons[0]
    # AMI down: calls are still routed (presence and fallback go stale): a warning.
    no_ami = assess(**{**_inputs(), "ami_connected": False})
    assert no_ami.ready and "AMI is not connected" in no_ami.warnings[0]
    # Overloaded: calls go to the dialplan's fallback, still answered for: a warning.
    overloaded = assess(**{**_inputs(), "overloaded": "ari_latency"})
    assert overloaded.ready and overloaded.overloaded == "ari_latency"
    assert overloaded.warnings == ("overloaded (ari_latency): new calls go to the AstDB fallback",)
    # The database gone for a while: still ready on a recently confirmed snapshot …
    recent = assess(**{**_inputs(), "database_error": "OSError: gone", "checked_seconds_ago": 5})
    assert recent.ready and not recent.database_reachable
    assert "OSError: gone" in recent.warnings[0]
    # … not once it is older than the limit, nor when it never was confirmed.
    for ago in (61.0, None):
        stale = assess(
            **{**_inputs(), "database_error": "OSError: gone", "checked_seconds_ago": ago}
        )
        assert not stale.ready and "limit 60 s" in stale.reasons[0]
    stopping = assess(**{**_inputs(), "accepting": False})
    assert not stopping.ready and "shutting down" in stopping.reasons[0]
    # A standby router has no ARI websocket (only the active one has), and is ready to
    # take over when its snapshot is current; an active one without ARI is not.
    standby = assess(**{**_inputs(), "ari_connected": False, "role": "standby"})
    assert standby.ready and standby.role == "standby" and standby.reasons == ()
    active = assess(**{**_inputs(), "ari_connected": False, "role": "active"})
    assert not active.ready and "ARI is not connected" in active.reasons[0]
    # An active router whose lease cannot be confirmed routes on, with a warning.
    unconfirmed = assess(**{**_inputs(), "lease_warning": "the lease cannot be confirmed"})
    assert unconfirmed.ready and unconfirmed.warnings == ("the lease cannot be confirmed",)


def _inputs() -> dict[str, object]:
    return {
        "snapshot_loaded": True,
        "directory_revision": 7,
        "ari_connected": True,
        "ami_connected": True,
        "database_error": None,
        "checked_seconds_ago": 0.4,
        "max_snapshot_age": 60.0,
        "calls_in_progress": 2,
    }


@pytest.fixture
async def served(
    live: Live,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Readiness], Metrics]]:
    metrics = Metrics()
    service = LoginService(
        live.engine, lambda: live.snapshot, on_change=live.refresh, metrics=metrics
    )
    api = create_api(service, TokenSigner(b"k" * 32), "admin-token-0123456789")
    state = {"now": READY}
    api.include_router(operations_routes(lambda: state["now"], metrics))  # as api/build.py
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield client, state, metrics


async def test_live_ready_and_the_old_health(
    served: tuple[httpx.AsyncClient, dict[str, Readiness], Metrics],
) -> None:
    client, state, _ = served
    reply = await client.get("/api/v1/health/live")
    assert reply.status_code == 200 and reply.json() == {"status": "alive"}
    reply = await client.get("/api/v1/health/ready")
    assert reply.status_code == 200
    assert reply.json() == {
        "ready": True,
        "reasons": [],
        "warnings": [],
        "snapshot_loaded": True,
        "directory_revision": 7,
        "ari_connected": True,
        "ami_connected": True,
        "database_reachable": True,
        "snapshot_checked_seconds_ago": 0.4,
        "calls_in_progress": 2,
        "overloaded": None,
        "role": "active",
        "role_since": None,
    }
    state["now"] = replace(READY, ready=False, reasons=("ARI is not connected",))
    reply = await client.get("/api/v1/health/ready")
    assert reply.status_code == 503 and reply.json()["reasons"] == ["ARI is not connected"]
    # The health every client already asks, as before.
    reply = await client.get("/api/v1/health")
    assert reply.status_code == 200 and reply.json()["status"] == "ok"


async def test_health_says_the_role_and_since_when(live: Live) -> None:
    service = LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh)
    role = {"now": ("standby", 1_764_633_600.0)}
    api = create_api(service, TokenSigner(b"k" * 32), role=lambda: role["now"])
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        reply = (await client.get("/api/v1/health")).json()
        assert (reply["role"], reply["since"]) == ("standby", "2025-12-02T00:00:00+00:00")
        role["now"] = ("active", 1_764_633_601.5)
        reply = (await client.get("/api/v1/health")).json()
        assert (reply["role"], reply["since"]) == ("active", "2025-12-02T00:00:01.500000+00:00")


async def test_metrics_in_the_text_format_count_login_attempts(
    served: tuple[httpx.AsyncClient, dict[str, Readiness], Metrics],
) -> None:
    client, _, metrics = served
    wrong = await client.post("/api/v1/session", json={"extension": "201", "pin": "0000"})
    assert wrong.status_code == 401
    right = await client.post("/api/v1/session", json={"extension": "201", "pin": "4711"})
    headers = {"Authorization": f"Bearer {right.json()['token']}"}
    assert (
        await client.post("/api/v1/login", json={"workplace": "hotdesk-1"}, headers=headers)
    ).status_code == 200
    refused = await client.post(
        "/api/v1/login", json={"workplace": "no-such-desk"}, headers=headers
    )
    assert refused.status_code == 404
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == CONTENT_TYPE
    assert "# TYPE callrouter_logins_total counter" in reply.text
    found = samples(metrics)
    logins = {
        labels[0][1]: value
        for (name, labels), value in found.items()
        if name == "callrouter_logins_total" and value
    }
    # The wrong PIN, the login, the unknown workplace; the right PIN alone is no login.
    assert logins == {"wrong_pin": 1, "ok": 1, "unknown_workplace": 1}
