"""What the API says back and whom it believes, in process: 422 answers that do not
echo their input, the body limit on its own, the client address behind proxies, and
the ``api_trusted_proxies`` setting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from callrouter.api import TokenSigner, create_api
from callrouter.api.limits import BodyLimit
from callrouter.api.sources import client_address, safe_label
from callrouter.config import Settings, load_settings
from callrouter.logins.service import LoginService
from tests.unit.conftest import Live

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
PIN = "73914682"  # in no message of the API
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
async def client(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    service = LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh)
    api = create_api(service, TokenSigner(b"k" * 32), "admin-token-0123456789")
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield client


# --- 422 answers ----------------------------------------------------------------------


async def test_a_422_names_the_field_but_not_its_10_kb_value(client: httpx.AsyncClient) -> None:
    value = "office-" + "x" * 10_000
    reply = await client.post(
        "/api/v1/login", json={"workplace": value, "extension": "201"}, headers=ADMIN
    )
    assert reply.status_code == 422
    assert "x" * 40 not in reply.text
    assert len(reply.content) < 1000
    body = reply.json()
    assert body["reason"] == "bad_input"
    [problem] = body["detail"]
    assert problem["loc"] == ["body", "workplace"]
    assert problem["type"] == "value_error"
    assert "10007 characters" in problem["msg"]
    assert "input" not in problem


async def test_a_long_unknown_field_name_is_not_echoed_either(client: httpx.AsyncClient) -> None:
    name = "y" * 5000
    reply = await client.post("/api/v1/session", json={"extension": "201", "pin": PIN, name: 1})
    assert reply.status_code == 422
    assert "y" * 40 not in reply.text and PIN not in reply.text
    assert reply.json()["detail"][0]["loc"] == ["body", "<5000 characters>"]


@pytest.mark.parametrize(
    "body",
    [
        {"pin": PIN},  # pydantic's input here is the whole body
        {"extension": "2o1", "pin": PIN},
        {"extension": "201", "pin": int(PIN)},
        {"extension": "201", "pin": [PIN]},
        {"extension": "201", "pin": {"value": PIN}},
        {"extension": "201", "pin": PIN + "0" * 30},  # too long
        {"extension": "201", "pin": PIN, "again": PIN},
        {"extension": ["201"], "pin": PIN},
        {"extension": PIN * 5, "pin": PIN},  # where the extension goes, over 20 digits
        [PIN],
        PIN,
    ],
)
async def test_a_422_for_a_session_never_repeats_the_pin(
    client: httpx.AsyncClient, body: Any
) -> None:
    reply = await client.post("/api/v1/session", json=body)
    assert reply.status_code == 422, reply.text
    assert PIN not in reply.text
    assert reply.json()["detail"]  # still says what is wrong


async def test_a_422_keeps_short_values_and_context(client: httpx.AsyncClient) -> None:
    reply = await client.put(
        "/api/v1/presence/client", json={"client_id": "l" * 65, "status": "dnd"}, headers=ADMIN
    )
    [problem] = reply.json()["detail"]
    assert problem["loc"] == ["body", "client_id"]
    assert problem["type"] == "string_pattern_mismatch"
    assert problem["ctx"] == {"pattern": "^[A-Za-z0-9._-]{1,64}$"}
    reply = await client.post("/api/v1/session", json={"extension": "2o1", "pin": PIN})
    assert "'2o1'" in reply.json()["detail"][0]["msg"]  # a short value may be named


# --- the body limit on its own ------------------------------------------------------------


class Echo:
    """An app that answers with the body it received, and notes later messages."""

    def __init__(self) -> None:
        self.later: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert not message.get("more_body", False)
        self.later.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})


async def call(
    app: BodyLimit, messages: list[Message], headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Run ``app`` on one request whose body arrives as ``messages``, then nothing."""
    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    queue = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)  # a client that sends no more
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    async with asyncio.timeout(5):
        await app(scope, receive, send)
    headers_sent = sent[0]["headers"]
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), headers_sent


async def test_the_body_arrives_whole_and_later_messages_pass_through() -> None:
    echo = Echo()
    disconnect: Message = {"type": "http.disconnect"}
    status, body, _ = await call(
        BodyLimit(echo, max_bytes=10),
        [
            {"type": "http.request", "body": b"12345", "more_body": True},
            {"type": "http.request", "body": b"67890", "more_body": False},
            disconnect,
        ],
    )
    assert (status, body) == (200, b"1234567890")
    assert echo.later == [disconnect]


async def test_a_body_growing_past_the_limit_is_413_and_closes() -> None:
    chunks: list[Message] = [
        {"type": "http.request", "body": b"x" * 6, "more_body": True} for _ in range(100)
    ]
    status, body, headers = await call(BodyLimit(Echo(), max_bytes=10), chunks)
    assert status == 413
    assert json.loads(body)["reason"] == "too_large"
    assert (b"connection", b"close") in headers


async def test_a_declared_length_over_the_limit_is_413_unread() -> None:
    status, _, _ = await call(
        BodyLimit(Echo(), max_bytes=10), [], headers=[(b"content-length", b"11")]
    )
    assert status == 413
    status, _, _ = await call(
        BodyLimit(Echo(), max_bytes=10), [], headers=[(b"content-length", b"ten")]
    )
    assert status == 400


async def test_a_body_that_does_not_arrive_in_time_is_408() -> None:
    status, body, headers = await call(
        BodyLimit(Echo(), timeout=0.2),
        [{"type": "http.request", "body": b"{", "more_body": True}],
    )
    assert status == 408
    assert json.loads(body)["reason"] == "too_slow"
    assert (b"connection", b"close") in headers


# --- the client address -------------------------------------------------------------------

PROXIES = [ip_network("10.0.0.0/8"), ip_network("2001:db8:1::/48")]


@pytest.mark.parametrize(
    ("peer", "xff", "forwarded", "expected"),
    [
        ("192.0.2.1", ["203.0.113.5"], [], "192.0.2.1"),  # not a proxy: headers ignored
        ("10.0.0.1", [], [], "10.0.0.1"),
        ("10.0.0.1", ["203.0.113.5"], [], "203.0.113.5"),
        ("10.0.0.1", ["203.0.113.5", "10.1.1.1"], [], "203.0.113.5"),  # two header lines
        ("10.0.0.1", ["198.51.100.1, 203.0.113.5, 10.1.1.1"], [], "203.0.113.5"),
        ("10.0.0.1", ["10.2.2.2, 10.1.1.1"], [], "10.2.2.2"),  # all proxies: the first
        ("10.0.0.1", ["203.0.113.5:4711"], [], "203.0.113.5"),
        ("10.0.0.1", ["[2001:db8::5]:4711"], [], "2001:db8::5"),
        ("10.0.0.1", ["::ffff:203.0.113.5"], [], "203.0.113.5"),
        ("10.0.0.1", [], ['for="[2001:db8::5]";proto=https, for=10.1.1.1'], "2001:db8::5"),
        ("10.0.0.1", [], ["For=203.0.113.5"], "203.0.113.5"),
        ("10.0.0.1", ["203.0.113.5"], ["for=203.0.113.5"], "203.0.113.5"),  # agreeing
        ("10.0.0.1", ["203.0.113.5"], ["for=198.51.100.1"], "10.0.0.1"),  # disagreeing
        ("10.0.0.1", ["203.0.113.5, _hidden"], [], "10.0.0.1"),
        ("10.0.0.1", ["a" * 5000], [], "10.0.0.1"),
        ("10.0.0.1", [", ".join(["10.1.1.1"] * 40)], [], "10.0.0.1"),
        ("::ffff:10.0.0.1", ["203.0.113.5"], [], "203.0.113.5"),  # a dual-stack socket
        ("2001:db8:1::9", ["203.0.113.5"], [], "203.0.113.5"),
        ("2001:db8:2::9", ["203.0.113.5"], [], "2001:db8:2::9"),
        (None, ["203.0.113.5"], [], "unknown"),
        ("testclient", ["203.0.113.5"], [], "testclient"),
        ("evil\x1b[31m<b>", [], [], "evil?[31m?b?"),
    ],
)
def test_client_address(
    peer: str | None, xff: list[str], forwarded: list[str], expected: str
) -> None:
    assert client_address(peer, xff, forwarded, PROXIES) == expected


def test_labels_are_short_and_printable() -> None:
    label = safe_label("\r\n" + "z" * 500)
    assert len(label) <= 64 and label.isprintable() and "\n" not in label


# --- the setting ---------------------------------------------------------------------------


def test_trusted_proxies_come_from_the_environment_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().api_trusted_proxies == []
    monkeypatch.setenv("CALLROUTER_API_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1")
    assert Settings().api_trusted_proxies == [
        ip_network("127.0.0.1/32"),
        ip_network("10.0.0.0/8"),
        ip_network("::1/128"),
    ]


def test_trusted_proxies_from_a_file(tmp_path: Path) -> None:
    config = tmp_path / "callrouter.yaml"
    config.write_text("api_trusted_proxies: [192.0.2.10, 2001:db8::/32]\n")
    assert load_settings(config).api_trusted_proxies == [
        ip_network("192.0.2.10/32"),
        ip_network("2001:db8::/32"),
    ]


@pytest.mark.parametrize("value", ["proxy.example", "10.0.0.1/8", "10.0.0.0/33", "*"])
def test_bad_trusted_proxies_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="api_trusted_proxies"):
        Settings(api_trusted_proxies=[value])


def test_the_example_settings_name_the_trusted_proxies() -> None:
    assert "api_trusted_proxies:" in (EXAMPLES / "callrouter.yaml").read_text()
    assert load_settings(EXAMPLES / "callrouter.yaml").api_trusted_proxies == []
