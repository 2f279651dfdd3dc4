"""The HTTP API, in process (httpx's ASGI transport) on a real directory database."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from callrouter.api import TokenSigner, create_api
from callrouter.directory.importer import import_document
from callrouter.directory.revisions import read_revision
from callrouter.directory.snapshot import load_snapshot
from callrouter.logins.service import LoginService
from tests.unit.conftest import Live
from tests.unit.test_directory_store import audit_entries, document

ADMIN_TOKEN = "admin-token-0123456789"
URLSAFE = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


@pytest.fixture
async def client(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    service = LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh)
    api = create_api(service, TokenSigner(b"k" * 32), ADMIN_TOKEN)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def session(client: httpx.AsyncClient, extension: str, pin: str) -> dict[str, str]:
    reply = await client.post("/api/v1/session", json={"extension": extension, "pin": pin})
    assert reply.status_code == 200, reply.text
    return bearer(reply.json()["token"])


async def test_a_user_logs_in_and_out_with_a_token(client: httpx.AsyncClient, live: Live) -> None:
    anna = await session(client, "201", "4711")
    me = (await client.get("/api/v1/me", headers=anna)).json()
    assert me == {"extension": "201", "name": "Anna Berger", "workplace": "office-1"}

    reply = await client.post("/api/v1/login", json={"workplace": "hotdesk-1"}, headers=anna)
    assert reply.status_code == 200
    assert reply.json() == {
        "extension": "201",
        "workplace": "hotdesk-1",
        "previous_workplace": "office-1",
        "displaced": None,
    }
    assert live.snapshot.logins == {"201": "hotdesk-1"}  # this router knows at once

    reply = await client.post("/api/v1/logout", headers=anna)
    assert reply.json()["workplace"] is None
    assert live.snapshot.logins == {}
    audit = await audit_entries(live.engine)
    assert audit[-2:] == [
        ("login", "201", "office-1", "hotdesk-1", "201", "api 127.0.0.1"),
        ("logout", "201", "hotdesk-1", None, "201", "api 127.0.0.1"),
    ]


async def test_workplaces_lists_what_the_role_allows_and_who_is_where(
    client: httpx.AsyncClient,
) -> None:
    boris = await session(client, "202", "0815")  # intern: hotdesk-1 only
    views = (await client.get("/api/v1/workplaces", headers=boris)).json()
    assert [v["id"] for v in views] == ["hotdesk-1"]
    admin = (await client.get("/api/v1/workplaces", headers=bearer(ADMIN_TOKEN))).json()
    office = next(v for v in admin if v["id"] == "office-1")
    assert office["occupant"] == {"extension": "201", "name": "Anna Berger"}


async def test_wrong_pin_and_unknown_extension_look_the_same(client: httpx.AsyncClient) -> None:
    wrong = await client.post("/api/v1/session", json={"extension": "201", "pin": "0000"})
    unknown = await client.post("/api/v1/session", json={"extension": "999", "pin": "0000"})
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"detail": "wrong extension or PIN", "reason": "bad_credentials"}
    )


async def test_lockout_after_five_wrong_pins(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        reply = await client.post("/api/v1/session", json={"extension": "201", "pin": "1"})
        assert reply.status_code == 401
    reply = await client.post("/api/v1/session", json={"extension": "201", "pin": "4711"})
    assert reply.status_code == 429
    assert reply.json()["reason"] == "locked"
    assert 0 < int(reply.headers["Retry-After"]) <= 901


async def test_role_refusal_is_403_and_changes_nothing(
    client: httpx.AsyncClient, live: Live
) -> None:
    boris = await session(client, "202", "0815")
    revision = await read_revision(live.engine)
    reply = await client.post("/api/v1/login", json={"workplace": "office-1"}, headers=boris)
    assert reply.status_code == 403 and reply.json()["reason"] == "not_allowed"
    assert await read_revision(live.engine) == revision


async def test_admin_acts_on_anyone_users_only_on_themselves(
    client: httpx.AsyncClient, live: Live
) -> None:
    admin = bearer(ADMIN_TOKEN)
    reply = await client.post(
        "/api/v1/login", json={"workplace": "office-1", "extension": "203"}, headers=admin
    )
    assert reply.status_code == 200 and reply.json()["displaced"] == "201"
    assert (await audit_entries(live.engine))[-1][4] == "admin"

    reply = await client.post("/api/v1/login", json={"workplace": "office-1"}, headers=admin)
    assert reply.status_code == 422  # the admin must say whom

    anna = await session(client, "201", "4711")
    reply = await client.post("/api/v1/logout", json={"extension": "203"}, headers=anna)
    assert reply.status_code == 403
    assert live.snapshot.logins == {"203": "office-1"}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/session", {"extension": "201"}, 422),  # no PIN
        ("/api/v1/session", {"extension": "2o1", "pin": "4711"}, 422),
        ("/api/v1/session", {"extension": "201", "pin": "4711", "extra": 1}, 422),
        ("/api/v1/session", ["201", "4711"], 422),
        ("/api/v1/session", {"extension": "201", "pin": "1" * 33}, 422),
        ("/api/v1/login", {"workplace": "Office 1"}, 422),
        ("/api/v1/login", {"workplace": "nowhere"}, 404),
        ("/api/v1/login", {"workplace": 7}, 422),
        ("/api/v1/logout", {"extension": "abc"}, 422),
    ],
)
async def test_bad_bodies_get_a_4xx_with_a_message(
    client: httpx.AsyncClient, live: Live, path: str, body: Any, status: int
) -> None:
    revision = await read_revision(live.engine)
    reply = await client.post(
        path, json=body, headers=bearer(ADMIN_TOKEN) if path != "/api/v1/session" else {}
    )
    if path == "/api/v1/login" and status == 404:
        reply = await client.post(
            path, json={**body, "extension": "201"}, headers=bearer(ADMIN_TOKEN)
        )
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"]
    assert await read_revision(live.engine) == revision


async def test_malformed_json_is_a_4xx(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/api/v1/session", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 422 and reply.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("nonsense"),
        bearer("cr1.201.99999999999." + "A" * 43),
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
)
async def test_requests_without_a_valid_token_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    reply = await client.get("/api/v1/workplaces", headers=headers)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"


async def test_a_new_pin_ends_old_tokens(client: httpx.AsyncClient, live: Live) -> None:
    anna = await session(client, "201", "4711")
    users = document().users
    changed = document(
        users=[
            u.model_dump(exclude_none=True) | ({"pin": "2468"} if u.extension == "201" else {})
            for u in users
        ]
    )
    await import_document(live.engine, changed, prune=False, actor="test")
    live.snapshot = await load_snapshot(live.engine)
    assert (await client.get("/api/v1/me", headers=anna)).status_code == 401


async def test_tokens_expire() -> None:
    now = [1000.0]
    signer = TokenSigner(b"k" * 32, ttl=60, clock=lambda: now[0])
    token, expires = signer.issue("201", "hash")
    assert expires == 1060
    assert signer.verify(token, lambda ext: "hash") == "201"
    assert signer.verify(token, lambda ext: "other hash") is None
    assert TokenSigner(b"x" * 32, clock=lambda: now[0]).verify(token, lambda e: "hash") is None
    now[0] = 1061
    assert signer.verify(token, lambda ext: "hash") is None


async def test_a_token_has_one_spelling_only() -> None:
    """An expiry with a leading zero was accepted: a second string for the same token."""
    signer = TokenSigner(b"k" * 32, clock=lambda: 1000.0)
    token, expires = signer.issue("201", "hash")
    prefix, extension, expiry, mac = token.split(".")
    assert expiry == str(expires)
    assert signer.verify(token, lambda ext: "hash") == "201"
    for other in (
        f"{prefix}.{extension}.0{expiry}.{mac}",
        f"{prefix}.{extension}.00{expiry}.{mac}",
        f"{prefix}.{extension}.{expiry}.{mac}\n",
        f"{prefix}.0{extension}.{expiry}.{mac}",
        # The same digest: the last character's two unused bits set differently.
        f"{prefix}.{extension}.{expiry}.{mac[:-1]}{URLSAFE[URLSAFE.index(mac[-1]) ^ 1]}",
    ):
        assert signer.verify(other, lambda ext: "hash") is None, other


async def test_openapi_is_published(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/api/v1/session", "/api/v1/login", "/api/v1/logout", "/api/v1/workplaces"} <= set(
        spec["paths"]
    )
