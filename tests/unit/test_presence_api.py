"""The presence routes of the HTTP API: in process, and the event stream on a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from callrouter.api import TokenSigner, create_api
from callrouter.api.server import ApiServer
from callrouter.domain.presence import ClientStatus, DeviceState
from callrouter.logins.service import LoginService
from callrouter.presence.live import Listener, PresenceService
from callrouter.presence.tracker import PresenceTracker
from tests.unit.conftest import Live

ADMIN_TOKEN = "admin-token-0123456789"
ANNA_PIN, BORIS_PIN = "4711", "0815"  # from test_directory_store.document()


@pytest.fixture
def presence(live: Live) -> PresenceService:
    return PresenceService(PresenceTracker(live.snapshot), ami=None)


def login_service(live: Live) -> LoginService:
    return LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh)


@pytest.fixture
def api(live: Live, presence: PresenceService) -> FastAPI:
    return create_api(login_service(live), TokenSigner(b"k" * 32), ADMIN_TOKEN, presence=presence)


@pytest.fixture
async def client(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


async def session(client: httpx.AsyncClient, extension: str, pin: str) -> dict[str, str]:
    reply = await client.post("/api/v1/session", json={"extension": extension, "pin": pin})
    assert reply.status_code == 200, reply.text
    return bearer(reply.json()["token"])


def view(
    extension: str,
    name: str,
    *,
    available: bool = True,
    on_call: bool = False,
    ringing: bool = False,
    client: str = "offline",
    device_state: str = "NOT_INUSE",
) -> dict[str, Any]:
    return {
        "extension": extension,
        "name": name,
        "phone": {"available": available, "on_call": on_call, "ringing": ringing},
        "client": client,
        "device_state": device_state,
    }


# --- reading ---------------------------------------------------------------------------


async def test_everyones_presence_by_extension(client: httpx.AsyncClient) -> None:
    anna = await session(client, "201", ANNA_PIN)
    reply = await client.get("/api/v1/presence", headers=anna)
    assert reply.status_code == 200
    assert reply.json() == [
        view("201", "Anna Berger"),
        view("202", "Boris Chen"),
        view("203", "Clara Diaz", available=False, device_state="UNAVAILABLE"),  # no phone
    ]
    assert (await client.get("/api/v1/presence", headers=ADMIN)).json() == reply.json()


async def test_one_users_presence_follows_the_tracker(
    client: httpx.AsyncClient, presence: PresenceService
) -> None:
    boris = await session(client, "202", BORIS_PIN)
    # Anna is logged in at office-1: its phones are hers.
    presence.tracker.set_device("PJSIP/office1-desk", DeviceState.INUSE)
    presence.tracker.set_device("PJSIP/anna-soft", DeviceState.RINGING)
    reply = await client.get("/api/v1/presence/201", headers=boris)
    assert reply.status_code == 200
    assert reply.json() == view(
        "201", "Anna Berger", on_call=True, ringing=True, device_state="RINGINUSE"
    )


async def test_unknown_extension_is_404(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/v1/presence/999", headers=ADMIN)
    assert reply.status_code == 404
    assert reply.json() == {"detail": "no user with extension 999"}


# --- a client's status -------------------------------------------------------------------


async def test_a_user_sets_their_own_client_status(
    client: httpx.AsyncClient, presence: PresenceService
) -> None:
    anna = await session(client, "201", ANNA_PIN)
    reply = await client.put(
        "/api/v1/presence/client", headers=anna, json={"client_id": "anna-laptop", "status": "dnd"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == view("201", "Anna Berger", client="dnd", device_state="BUSY")
    assert presence.tracker.client_statuses("201") == {"anna-laptop": ClientStatus.DND}

    reply = await client.put(
        "/api/v1/presence/client",
        headers=anna,
        json={"client_id": "anna.mobile_2", "status": "online", "extension": "201"},
    )  # naming herself is fine
    assert reply.status_code == 200
    assert reply.json()["client"] == "dnd"  # merged: any dnd wins

    reply = await client.put(
        "/api/v1/presence/client",
        headers=anna,
        json={"client_id": "anna-laptop", "status": "offline"},
    )
    assert reply.json()["client"] == "online"
    assert presence.tracker.client_statuses("201") == {"anna.mobile_2": ClientStatus.ONLINE}
    assert (await client.get("/api/v1/presence/201", headers=anna)).json()["client"] == "online"


async def test_a_user_may_not_set_another_users_status(
    client: httpx.AsyncClient, presence: PresenceService
) -> None:
    anna = await session(client, "201", ANNA_PIN)
    reply = await client.put(
        "/api/v1/presence/client",
        headers=anna,
        json={"client_id": "x", "status": "dnd", "extension": "202"},
    )
    assert reply.status_code == 403
    assert presence.tracker.client_statuses("202") == {}
    assert presence.tracker.client_statuses("201") == {}


async def test_the_admin_names_any_user(
    client: httpx.AsyncClient, presence: PresenceService
) -> None:
    reply = await client.put(
        "/api/v1/presence/client",
        headers=ADMIN,
        json={"client_id": "desk-app", "status": "away", "extension": "203"},
    )
    assert reply.status_code == 200
    assert reply.json() == view(
        "203", "Clara Diaz", available=False, client="away", device_state="UNAVAILABLE"
    )
    assert presence.tracker.client_statuses("203") == {"desk-app": ClientStatus.AWAY}

    reply = await client.put(
        "/api/v1/presence/client", headers=ADMIN, json={"client_id": "desk-app", "status": "away"}
    )
    assert reply.status_code == 422  # the admin must say whom
    reply = await client.put(
        "/api/v1/presence/client",
        headers=ADMIN,
        json={"client_id": "desk-app", "status": "away", "extension": "999"},
    )
    assert reply.status_code == 404
    assert presence.tracker.client_statuses("999") == {}


@pytest.mark.parametrize(
    "body",
    [
        {"client_id": "laptop", "status": "busy"},
        {"client_id": "laptop", "status": "DND"},
        {"client_id": "laptop", "status": None},
        {"client_id": "laptop"},
        {"status": "online"},
        {"client_id": "", "status": "online"},
        {"client_id": "my laptop", "status": "online"},
        {"client_id": "laptop/1", "status": "online"},
        {"client_id": "l" * 65, "status": "online"},
        {"client_id": 7, "status": "online"},
        {"client_id": "laptop", "status": "online", "extension": "abc"},
        {"client_id": "laptop", "status": "online", "mood": "happy"},
        ["laptop", "online"],
    ],
)
async def test_bad_client_status_bodies_are_422(
    client: httpx.AsyncClient, presence: PresenceService, body: Any
) -> None:
    anna = await session(client, "201", ANNA_PIN)
    reply = await client.put("/api/v1/presence/client", headers=anna, json=body)
    assert reply.status_code == 422
    assert reply.json()["detail"]
    assert presence.tracker.client_statuses("201") == {}


async def test_the_longest_client_id_is_accepted(client: httpx.AsyncClient) -> None:
    reply = await client.put(
        "/api/v1/presence/client",
        headers=ADMIN,
        json={"client_id": "l" * 64, "status": "online", "extension": "202"},
    )
    assert reply.status_code == 200


# --- devices ---------------------------------------------------------------------------


async def test_devices_are_for_the_admin_only(
    client: httpx.AsyncClient, presence: PresenceService
) -> None:
    presence.tracker.set_device("PJSIP/spare-1", DeviceState.UNAVAILABLE)
    presence.tracker.set_device("PJSIP/anna-desk", DeviceState.INUSE)
    reply = await client.get("/api/v1/devices", headers=ADMIN)
    assert reply.status_code == 200
    assert list(reply.json().items()) == [
        ("PJSIP/anna-desk", "INUSE"),
        ("PJSIP/spare-1", "UNAVAILABLE"),
    ]
    anna = await session(client, "201", ANNA_PIN)
    reply = await client.get("/api/v1/devices", headers=anna)
    assert reply.status_code == 403


# --- authentication, and a router without presence ----------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/presence"),
        ("GET", "/api/v1/presence/201"),
        ("GET", "/api/v1/presence/events"),
        ("PUT", "/api/v1/presence/client"),
        ("GET", "/api/v1/devices"),
    ],
)
@pytest.mark.parametrize("headers", [{}, bearer("nonsense"), {"Authorization": "Basic eDp5"}])
async def test_presence_routes_need_a_token(
    client: httpx.AsyncClient,
    presence: PresenceService,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    body = {"client_id": "laptop", "status": "dnd", "extension": "201"}
    reply = await client.request(
        method, path, headers=headers, json=body if method == "PUT" else None
    )
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert presence.tracker.client_statuses("201") == {}
    assert presence.listeners == []


async def test_without_presence_the_routes_say_503(live: Live) -> None:
    api = create_api(login_service(live), TokenSigner(b"k" * 32), ADMIN_TOKEN)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        for method, path in [
            ("GET", "/api/v1/presence"),
            ("GET", "/api/v1/presence/201"),
            ("GET", "/api/v1/devices"),
            ("GET", "/api/v1/presence/events"),
        ]:
            reply = await client.request(method, path, headers=ADMIN)
            assert reply.status_code == 503, path
        reply = await client.put(
            "/api/v1/presence/client",
            headers=ADMIN,
            json={"client_id": "x", "status": "dnd", "extension": "201"},
        )
        assert reply.status_code == 503


async def test_openapi_lists_the_presence_routes(client: httpx.AsyncClient) -> None:
    paths = set((await client.get("/openapi.json")).json()["paths"])
    assert {
        "/api/v1/presence",
        "/api/v1/presence/{extension}",
        "/api/v1/presence/client",
        "/api/v1/presence/events",
        "/api/v1/devices",
    } <= paths


# --- the event stream, on a real server (httpx's ASGI transport buffers responses) ---------


async def sse_events(response: httpx.Response) -> AsyncGenerator[tuple[str, Any], None]:
    """(event, data) of each Server-Sent Event; comment lines (keepalives) skipped."""
    name: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if name is not None or data:
                yield name or "message", json.loads("\n".join(data))
            name, data = None, []
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


@pytest.fixture
async def server(api: FastAPI) -> AsyncIterator[ApiServer]:
    server = ApiServer(api, "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_event_stream_sends_a_snapshot_then_each_change(
    api: FastAPI, presence: PresenceService
) -> None:
    server = ApiServer(api, "127.0.0.1", 0)
    await server.start()
    try:
        async with (
            asyncio.timeout(10),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
        ):
            boris = await session(http, "202", BORIS_PIN)
            async with http.stream("GET", "/api/v1/presence/events", headers=boris) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-cache"
                events = sse_events(response)
                assert await anext(events) == (
                    "snapshot",
                    [
                        view("201", "Anna Berger"),
                        view("202", "Boris Chen"),
                        view("203", "Clara Diaz", available=False, device_state="UNAVAILABLE"),
                    ],
                )
                assert len(presence.listeners) == 1

                presence.set_client("201", "anna-laptop", ClientStatus.DND)
                assert await anext(events) == (
                    "presence",
                    view("201", "Anna Berger", client="dnd", device_state="BUSY"),
                )
                presence.set_client("201", "anna-laptop", ClientStatus.DND)  # no change
                # Straight into the tracker: nobody is told (the service is).
                presence.tracker.set_device("PJSIP/boris-desk", DeviceState.RINGING)
                presence.set_client("202", "boris-app", ClientStatus.AWAY)
                assert await anext(events) == (
                    "presence",
                    view("202", "Boris Chen", ringing=True, client="away", device_state="RINGING"),
                )
                await events.aclose()
    finally:
        await server.close()
    assert presence.listeners == []  # no listener left behind


class WatchedListeners(list[Listener]):
    """The PresenceService's listener list, telling when one is removed."""

    def __init__(self) -> None:
        super().__init__()
        self.removed = asyncio.Event()

    def remove(self, value: Listener) -> None:
        super().remove(value)
        self.removed.set()


async def test_a_reader_that_goes_away_takes_its_listener_with_it(
    server: ApiServer, presence: PresenceService
) -> None:
    listeners = WatchedListeners()
    presence.listeners = listeners
    async with (
        asyncio.timeout(10),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
    ):
        async with http.stream("GET", "/api/v1/presence/events", headers=ADMIN) as response:
            events = sse_events(response)
            name, everyone = await anext(events)
            assert name == "snapshot" and len(everyone) == 3
            assert len(listeners) == 1
            await events.aclose()
        # The client hung up; the server is still running.
        await listeners.removed.wait()
    assert listeners == []
    # Changes after the reader left go nowhere and break nothing.
    assert presence.set_client("201", "anna-laptop", ClientStatus.AWAY) is not None


async def test_a_reader_that_does_not_keep_up_is_cut_off(
    server: ApiServer, presence: PresenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("callrouter.api.app.STREAM_QUEUE", 2)
    async with (
        asyncio.timeout(10),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
        http.stream("GET", "/api/v1/presence/events", headers=ADMIN) as response,
    ):
        events = sse_events(response)
        assert (await anext(events))[0] == "snapshot"
        # Three changes before the stream can take one: the third does not fit.
        for status in (ClientStatus.ONLINE, ClientStatus.AWAY, ClientStatus.DND):
            presence.set_client("201", "anna-laptop", status)
        assert presence.listeners == []  # cut off at once
        rest = [(name, data["client"]) async for name, data in events]
    # What was queued is still delivered; then the stream ends (the client reconnects).
    assert rest == [("presence", "online"), ("presence", "away")]


async def test_a_quiet_stream_sends_keepalive_comments(
    server: ApiServer, presence: PresenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("callrouter.api.app.KEEPALIVE_SECONDS", 0.01)
    async with (
        asyncio.timeout(10),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
        http.stream("GET", "/api/v1/presence/events", headers=ADMIN) as response,
    ):
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("event: snapshot")
        while (line := await anext(lines)) != ": keepalive":
            assert line.startswith("data: ") or line == ""
        presence.set_client("202", "boris-app", ClientStatus.ONLINE)  # still delivered
        async for line in lines:
            if line.startswith("event: "):
                assert line == "event: presence"
                break
