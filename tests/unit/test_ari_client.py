"""The ARI client against the in-process fake ARI: REST, routing, reconnect, shutdown."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from callrouter.ari import (
    AriClient,
    AriClosedError,
    AriConnectionError,
    AriEvent,
    AriHttpError,
    Bridge,
    Channel,
    new_id,
)
from tests.fakes import FakeAri, make_channel, make_event

PASSWORD = "pw-Sup3r-s3cret"
WAIT = 5.0  # upper bound for anything that should happen "at once"


class FakeSleep:
    """Records reconnect delays instead of sleeping; ``hook`` runs after each one.

    After ``limit`` calls it blocks for good, so a test that goes wrong cannot spin.
    """

    def __init__(self, hook: Callable[[list[float]], None] | None = None, limit: int = 50) -> None:
        self.delays: list[float] = []
        self.hook = hook
        self.limit = limit
        self._never = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.hook is not None:
            self.hook(self.delays)
        if len(self.delays) >= self.limit:
            await self._never.wait()
        await asyncio.sleep(0)


class Inbox:
    """An ``on_event`` that collects unrouted events."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AriEvent] = asyncio.Queue()

    async def __call__(self, event: AriEvent) -> None:
        self.queue.put_nowait(event)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri(password=PASSWORD) as server:
        yield server


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def client(fake: FakeAri, sleep: FakeSleep, inbox: Inbox) -> AsyncIterator[AriClient]:
    ari = AriClient(
        fake.base_url, fake.user, PASSWORD, fake.app, on_event=inbox, sleep=sleep, rand=lambda: 0.5
    )
    yield ari
    await ari.close()


@pytest.fixture
async def connected(client: AriClient) -> AriClient:
    await client.start()
    await client.wait_connected(WAIT)
    return client


async def get(queue: asyncio.Queue[AriEvent]) -> AriEvent:
    async with asyncio.timeout(WAIT):
        return await queue.get()


def drain(queue: asyncio.Queue[AriEvent]) -> list[AriEvent]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def stasis_start(channel_id: str, *args: str) -> dict[str, Any]:
    return make_event("StasisStart", args=list(args), channel=make_channel(channel_id))


def state_change(channel_id: str, state: str) -> dict[str, Any]:
    return make_event("ChannelStateChange", channel=make_channel(channel_id, state=state))


def token() -> str:
    return base64.b64encode(f"callrouter:{PASSWORD}".encode()).decode()


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert token() not in text


# ---------------------------------------------------------------------------- REST


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"message": "Channel not found"}, "Channel not found"),
        (
            409,
            {"message": "Channel not in Stasis application"},
            "Channel not in Stasis application",
        ),
        (422, {"message": "Endpoint not found"}, "Endpoint not found"),
        (500, {"message": "Internal error"}, "Internal error"),
        (500, {"error": "Allocation failed"}, "Allocation failed"),  # seen from /channels/create
        (500, b"Internal Server Error\n", "Internal Server Error"),
        (503, None, "Service Unavailable"),
    ],
)
async def test_rest_errors_keep_status_and_asterisk_message_but_no_secret(
    fake: FakeAri, client: AriClient, status: int, body: Any, message: str
) -> None:
    fake.set_response("POST", "/channels/{id}/dial", status, body)
    with pytest.raises(AriHttpError) as info:
        await client.dial("cr-1", caller="1764331200.41", timeout=20)
    error = info.value
    assert (error.status, error.method, error.path, error.message) == (
        status,
        "POST",
        "/channels/cr-1/dial",
        message,
    )
    assert str(error) == f"POST /channels/cr-1/dial: HTTP {status}: {message}"
    assert_no_secret(f"{error!s} {error!r} {error.args}")


async def test_hangup_and_destroy_bridge_return_false_when_already_gone(
    fake: FakeAri, client: AriClient
) -> None:
    assert await client.hangup("cr-gone") is False
    assert await client.destroy_bridge("cr-b-gone") is False
    await client.create_channel("PJSIP/phone1", channel_id="cr-1")
    await client.create_bridge("cr-b-1")
    assert await client.hangup("cr-1", reason="answered_elsewhere") is True
    assert fake.requests[-1].params == {"reason": "answered_elsewhere"}
    assert await client.destroy_bridge("cr-b-1") is True
    # other errors are errors
    fake.set_response("DELETE", "/channels/{id}", 500, {"message": "boom"})
    fake.set_response("DELETE", "/bridges/{id}", 409, {"message": "busy"})
    with pytest.raises(AriHttpError, match="boom"):
        await client.hangup("cr-2")
    with pytest.raises(AriHttpError, match="busy"):
        await client.destroy_bridge("cr-b-2")


async def test_basic_auth_on_rest_and_websocket_and_no_credentials_in_urls(
    fake: FakeAri, connected: AriClient
) -> None:
    await connected.asterisk_info()
    assert fake.requests[-1].headers["authorization"] == f"Basic {token()}"
    (upgrade,) = fake.ws_requests
    assert upgrade.path == "/events"
    assert upgrade.params == {"app": "callrouter", "subscribeAll": "false"}
    assert upgrade.headers["authorization"] == f"Basic {token()}"
    assert_no_secret(connected.events_url + connected.rest_url)


async def test_wrong_password_is_an_http_401_without_the_password(fake: FakeAri) -> None:
    async with AriClient(fake.base_url, fake.user, "wrong-pass", fake.app) as ari:
        with pytest.raises(AriHttpError) as info:
            await ari.list_channels()
    assert info.value.status == 401
    assert "wrong-pass" not in str(info.value)


async def test_keep_alive_one_connection_for_sequential_requests(
    fake: FakeAri, client: AriClient
) -> None:
    for _ in range(5):
        await client.list_channels()
    assert len(fake.requests) == 5
    assert fake.http_connections == 1  # one keep-alive connection served them all


async def test_connections_are_opened_ahead_of_need_and_reused(fake: FakeAri) -> None:
    async with AriClient(fake.base_url, fake.user, PASSWORD, fake.app, warm_connections=3) as ari:
        await ari.wait_connected(WAIT)
        async with asyncio.timeout(WAIT):
            while fake.http_connections < 4:  # the websocket and three REST connections
                await asyncio.sleep(0.01)
        await asyncio.gather(*(ari.list_channels() for _ in range(3)))
        await ari.asterisk_info()
        assert len(fake.requests) == 4
        assert fake.http_connections == 4  # no new connection was needed


async def test_idle_connections_the_server_closed_are_replaced_in_the_background(
    fake: FakeAri, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("callrouter.ari.client._WARM_INTERVAL", 0.02)
    async with AriClient(fake.base_url, fake.user, PASSWORD, fake.app, warm_connections=2) as ari:
        async with asyncio.timeout(WAIT):
            while fake.http_connections < 3:  # the websocket and two REST connections
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert fake.close_idle_http() == 2  # Asterisk's session_inactivity
            while fake.http_connections < 5:
                await asyncio.sleep(0.01)
        await ari.list_channels()
        assert fake.http_connections == 5  # served by a replacement


async def test_concurrent_requests_each_get_a_connection_up_to_the_limit(
    fake: FakeAri,
) -> None:
    fake.set_response("GET", "/channels", 200, [], delay=0.05)
    ari = AriClient(fake.base_url, fake.user, PASSWORD, fake.app, max_connections=2)
    try:
        await asyncio.gather(*(ari.list_channels() for _ in range(5)))
    finally:
        await ari.close()
    assert len(fake.requests) == 5
    assert fake.http_connections == 2


async def test_an_idle_connection_the_server_closed_is_replaced_without_resending(
    fake: FakeAri, client: AriClient
) -> None:
    await client.list_channels()
    assert fake.close_idle_http() == 1  # like Asterisk's session_inactivity
    await asyncio.sleep(0.05)
    await client.create_bridge("cr-b-1")
    fake.close_idle_http()
    await client.hangup("cr-gone")  # closed but maybe not yet seen: retried once
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", "/channels"),
        ("POST", "/bridges"),
        ("DELETE", "/channels/cr-gone"),
    ]
    assert fake.http_connections == 3


async def test_connection_close_and_chunked_answers(fake: FakeAri, client: AriClient) -> None:
    fake.set_response("GET", "/channels", 200, [make_channel("c1")], chunked=True, close=True)
    (channel,) = await client.list_channels()
    assert channel.id == "c1"
    fake.set_response("GET", "/channels", 404, {"message": "chunked error"}, chunked=True)
    with pytest.raises(AriHttpError, match="chunked error"):
        await client.list_channels()
    await client.asterisk_info()
    assert fake.http_connections == 2  # the first was closed as the answer said


async def test_a_timed_out_request_does_not_leave_its_answer_for_the_next(
    fake: FakeAri,
) -> None:
    fake.set_response("GET", "/channels/{id}", 200, make_channel("late"), delay=0.3, times=1)
    ari = AriClient(fake.base_url, fake.user, PASSWORD, fake.app, request_timeout=0.1)
    try:
        with pytest.raises(AriConnectionError, match="timed out") as info:
            await ari.get_channel("late")
        assert info.value.path == "/channels/late"
        await asyncio.sleep(0.3)  # the late answer is sent by now, on the old connection
        assert await ari.get_channel("cr-none") is None  # its own answer (404), not "late"
    finally:
        await ari.close()
    assert fake.http_connections == 2


async def test_request_bytes_are_one_write_with_what_asterisk_needs(
    fake: FakeAri, client: AriClient
) -> None:
    await client.originate(
        "PJSIP/phone 1", channel_id="cr-1", app="callrouter", app_args="a&b=c", variables={"X": "1"}
    )
    request = fake.requests[-1]
    assert request.params == {
        "endpoint": "PJSIP/phone 1",
        "channelId": "cr-1",
        "app": "callrouter",
        "appArgs": "a&b=c",
    }
    assert request.body == {"variables": {"X": "1"}}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == f"127.0.0.1:{fake.port}"


async def test_convenience_methods_send_what_asterisk_expects(
    fake: FakeAri, client: AriClient
) -> None:
    caller = await client.originate(
        "Local/201@callrouter", channel_id="caller-1", context="callrouter", extension="201"
    )
    assert caller == Channel(
        id="caller-1", name=caller.name, state="Down", context="default", exten="s", priority=1
    )
    leg = await client.create_channel(
        "PJSIP/phone1",
        channel_id="cr-leg",
        app_args="leg",
        originator="caller-1",
        variables={"CALLERID(name)": "Alice"},
        formats="ulaw,alaw",
    )
    assert leg.id == "cr-leg"
    created = fake.requests[-1]
    assert (created.method, created.path) == ("POST", "/channels/create")
    assert created.params == {
        "endpoint": "PJSIP/phone1",
        "app": "callrouter",
        "appArgs": "leg",
        "channelId": "cr-leg",
        "originator": "caller-1",
        "formats": "ulaw,alaw",
    }
    assert created.body == {"variables": {"CALLERID(name)": "Alice"}}

    await client.dial("cr-leg", caller="caller-1", timeout=20)
    assert fake.requests[-1].params == {"caller": "caller-1", "timeout": "20"}
    await client.ring("caller-1")
    await client.ring_stop("caller-1")
    await client.answer("caller-1")
    await client.set_variable("caller-1", "CALLROUTER_RESULT", "NOANSWER")
    assert await client.channel_var("caller-1", "CALLROUTER_RESULT") == "NOANSWER"
    bridge = await client.create_bridge("cr-b-1")
    assert bridge == Bridge(
        id="cr-b-1",
        technology="simple_bridge",
        bridge_type="mixing",
        bridge_class="stasis",
        creator="Stasis",
    )
    await client.add_channel("cr-b-1", ["caller-1", "cr-leg"])
    assert fake.requests[-1].params == {"channel": "caller-1,cr-leg"}
    await client.remove_channel("cr-b-1", "cr-leg")
    channels, bridges = await client.resync()
    assert {c.id for c in channels} == {"caller-1", "cr-leg"}
    assert bridges[0].channels == ("caller-1",)
    assert await client.get_channel("cr-leg") == leg
    assert await client.get_channel("nope") is None
    await client.continue_in_dialplan("caller-1", "callrouter-result", "s", 1)
    assert fake.requests[-1].params == {
        "context": "callrouter-result",
        "extension": "s",
        "priority": "1",
    }
    await client.continue_in_dialplan("caller-1", "callrouter", "201", label="fallback")
    assert fake.requests[-1].params == {
        "context": "callrouter",
        "extension": "201",
        "label": "fallback",
    }
    assert [(r.method, r.path) for r in fake.requests[2:]] == [
        ("POST", "/channels/cr-leg/dial"),
        ("POST", "/channels/caller-1/ring"),
        ("DELETE", "/channels/caller-1/ring"),
        ("POST", "/channels/caller-1/answer"),
        ("POST", "/channels/caller-1/variable"),
        ("GET", "/channels/caller-1/variable"),
        ("POST", "/bridges"),
        ("POST", "/bridges/cr-b-1/addChannel"),
        ("POST", "/bridges/cr-b-1/removeChannel"),
        ("GET", "/channels"),
        ("GET", "/bridges"),
        ("GET", "/channels/cr-leg"),
        ("GET", "/channels/nope"),
        ("POST", "/channels/caller-1/continue"),
        ("POST", "/channels/caller-1/continue"),
    ]
    info = await client.asterisk_info()
    assert info["system"]["version"] == "22.10.1"


async def test_connection_refused_is_an_ari_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AriClient(f"http://127.0.0.1:{port}", "callrouter", PASSWORD, "app") as ari:
        with pytest.raises(AriConnectionError) as info:
            await ari.asterisk_info()
    assert info.value.path == "/asterisk/info"
    assert_no_secret(str(info.value))


def test_new_id_is_short_prefixed_and_random() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"cr-[0-9a-f]{16}", i) for i in ids)
    assert re.fullmatch(r"cr-b-[0-9a-f]{16}", new_id("cr-b"))
    assert re.fullmatch(r"leg-[0-9a-f]{16}", AriClient.new_id("leg"))


@pytest.mark.parametrize(
    ("base_url", "rest", "events"),
    [
        ("http://127.0.0.1:8088", "http://127.0.0.1:8088/ari", "ws://127.0.0.1:8088/ari/events"),
        ("http://pbx:8088/ari/", "http://pbx:8088/ari", "ws://pbx:8088/ari/events"),
        ("https://pbx/asterisk", "https://pbx/asterisk/ari", "wss://pbx/asterisk/ari/events"),
    ],
)
async def test_urls(base_url: str, rest: str, events: str) -> None:
    ari = AriClient(base_url, "u", PASSWORD, "my app")
    assert ari.rest_url == rest
    assert ari.events_url == events + "?app=my+app&subscribeAll=false"
    await ari.close()


@pytest.mark.parametrize("base_url", ["http://u:p@pbx:8088", "ws://pbx:8088", "pbx:8088"])
def test_bad_base_urls_are_refused(base_url: str) -> None:
    with pytest.raises(ValueError) as info:
        AriClient(base_url, "u", PASSWORD, "app")
    assert "p@" not in str(info.value)


async def test_closed_client_refuses_requests(client: AriClient) -> None:
    await client.close()
    with pytest.raises(AriClosedError):
        await client.list_channels()
    with pytest.raises(AriClosedError):
        await client.start()


# ---------------------------------------------------------------------------- routing


async def test_route_before_create_catches_the_stasis_start_sent_before_the_reply(
    fake: FakeAri, connected: AriClient, inbox: Inbox
) -> None:
    leg_id = new_id()
    fake.set_response(
        "POST",
        "/channels/create",
        200,
        make_channel(leg_id),
        events=[stasis_start(leg_id), state_change(leg_id, "Ringing")],
    )
    queue: asyncio.Queue[AriEvent] = asyncio.Queue()
    connected.route(leg_id, queue)
    channel = await connected.create_channel("PJSIP/phone1", channel_id=leg_id)
    assert channel.id == leg_id
    first, second = await get(queue), await get(queue)
    assert (first.type, second.type) == ("StasisStart", "ChannelStateChange")
    assert second.channel is not None and second.channel.state == "Ringing"
    assert inbox.queue.empty()


async def test_interleaved_events_of_two_calls_arrive_in_order_in_their_own_queues(
    fake: FakeAri, connected: AriClient, inbox: Inbox
) -> None:
    call_a: asyncio.Queue[AriEvent] = asyncio.Queue()
    call_b: asyncio.Queue[AriEvent] = asyncio.Queue()
    for ident in ("a-caller", "a-leg1", "a-leg2", "a-bridge"):
        connected.route(ident, call_a)
    for ident in ("b-caller", "b-leg1"):
        connected.route(ident, call_b)
    script: list[tuple[str, dict[str, Any]]] = []
    for n in range(20):
        script += [
            ("a", state_change("a-leg1" if n % 2 else "a-leg2", f"Ringing{n}")),
            ("b", state_change("b-leg1", f"Ringing{n}")),
        ]
    script += [
        (
            "a",
            make_event(
                "Dial",
                caller=make_channel("a-caller"),
                peer=make_channel("a-leg1", state="Up"),
                dialstatus="ANSWER",
            ),
        ),
        (
            "a",
            make_event(
                "ChannelEnteredBridge",
                bridge={"id": "a-bridge", "channels": []},
                channel=make_channel("a-caller"),
            ),
        ),
        ("a", make_event("BridgeDestroyed", bridge={"id": "a-bridge", "channels": []})),
        ("b", make_event("ChannelHangupRequest", cause=16, channel=make_channel("b-caller"))),
        ("-", stasis_start("c-caller", "203")),
    ]
    for _, event in script:
        await fake.send_event(event)
    await fake.send_event(make_event("StasisEnd", channel=make_channel("end-marker")))
    assert (await get(inbox.queue)).args == ("203",)
    assert (await get(inbox.queue)).type == "StasisEnd"  # everything before it is dispatched
    expected_a = [e for who, e in script if who == "a"]
    expected_b = [e for who, e in script if who == "b"]
    assert [dict(e.raw) for e in drain(call_a)] == expected_a  # the Dial only once
    assert [dict(e.raw) for e in drain(call_b)] == expected_b


async def test_an_event_for_two_calls_goes_to_both_queues(
    fake: FakeAri, connected: AriClient
) -> None:
    mine: asyncio.Queue[AriEvent] = asyncio.Queue()
    other: asyncio.Queue[AriEvent] = asyncio.Queue()
    connected.route("caller", mine)
    connected.route("peer", other)
    await fake.send_event(
        make_event("Dial", caller=make_channel("caller"), peer=make_channel("peer"), dialstatus="")
    )
    assert (await get(mine)).type == (await get(other)).type == "Dial"


async def test_unrouted_event_reaches_on_event_and_a_route_made_there_catches_the_next_one(
    fake: FakeAri, client: AriClient
) -> None:
    calls: asyncio.Queue[asyncio.Queue[AriEvent]] = asyncio.Queue()

    async def on_event(event: AriEvent) -> None:
        # what the router does: a new call gets its queue before the next frame is read
        if event.type == "StasisStart" and event.channel is not None:
            queue: asyncio.Queue[AriEvent] = asyncio.Queue()
            client.route(event.channel.id, queue)
            queue.put_nowait(event)
            calls.put_nowait(queue)

    client.on_event = on_event
    await client.start()
    await client.wait_connected(WAIT)
    # back to back: no chance for anything to run between the two frames
    await fake.send_event(stasis_start("1764331200.41", "201"))
    await fake.send_event(
        make_event("ChannelHangupRequest", cause=16, channel=make_channel("1764331200.41"))
    )
    async with asyncio.timeout(WAIT):
        queue = await calls.get()
    assert [(await get(queue)).type, (await get(queue)).type] == [
        "StasisStart",
        "ChannelHangupRequest",
    ]
    client.unroute("1764331200.41")
    client.unroute("1764331200.41")  # idempotent
    assert not client.is_routed("1764331200.41")


async def test_route_refuses_to_steal_an_id(client: AriClient) -> None:
    first: asyncio.Queue[AriEvent] = asyncio.Queue()
    client.route("x", first)
    client.route("x", first)  # same queue: fine
    with pytest.raises(ValueError, match="already routed"):
        client.route("x", asyncio.Queue())


async def test_a_failing_on_event_or_a_garbled_frame_does_not_stop_the_reader(
    fake: FakeAri, client: AriClient, caplog: pytest.LogCaptureFixture
) -> None:
    seen: asyncio.Queue[AriEvent] = asyncio.Queue()

    async def on_event(event: AriEvent) -> None:
        if event.type == "StasisStart":
            raise RuntimeError("router bug")
        seen.put_nowait(event)

    client.on_event = on_event
    await client.start()
    await client.wait_connected(WAIT)
    await fake.send_event(stasis_start("c1"))
    await fake.send_event('{"type": "StasisStart", "channel": ')
    await fake.send_event(make_event("StasisEnd", channel=make_channel("c1")))
    assert (await get(seen)).type == "StasisEnd"
    assert "router bug" in caplog.text
    assert "unreadable frame" in caplog.text
    assert connected_once(client)


def connected_once(client: AriClient) -> bool:
    return client.connection_count == 1 and client.is_connected


# ---------------------------------------------------------------------------- reconnect


async def test_reconnect_after_the_socket_is_dropped_calls_on_connected_again(
    fake: FakeAri, client: AriClient, sleep: FakeSleep, inbox: Inbox
) -> None:
    resyncs: list[tuple[list[Channel], list[Bridge]]] = []
    connections: asyncio.Queue[int] = asyncio.Queue()

    async def on_connected() -> None:
        resyncs.append(await client.resync())
        connections.put_nowait(client.connection_count)

    client.on_connected = on_connected
    await client.start()
    assert await _get_int(connections) == 1
    await fake.drop_websockets()
    assert await _get_int(connections) == 2
    await fake.close_websockets()  # a clean close (Asterisk stopping) also reconnects
    assert await _get_int(connections) == 3
    await client.reconnect()  # asked for: reconnects without a back-off delay
    assert await _get_int(connections) == 4
    await client.wait_connected(WAIT)
    # the first retry after each loss waits base * (0.5 + 0.5 * rand) = 0.15 s
    assert sleep.delays == [pytest.approx(0.15), pytest.approx(0.15)]
    assert len(resyncs) == 4
    assert sorted((r.method, r.path) for r in fake.requests) == sorted(
        [("GET", "/channels"), ("GET", "/bridges")] * 4
    )
    assert fake.websockets_accepted == 4 and fake.websocket_count == 1
    await fake.send_event(stasis_start("after-reconnect", "202"))
    assert (await get(inbox.queue)).args == ("202",)


async def _get_int(queue: asyncio.Queue[int]) -> int:
    async with asyncio.timeout(WAIT):
        return await queue.get()


async def test_reconnect_delays_grow_with_jitter_and_are_capped(fake: FakeAri) -> None:
    randoms = iter([0.0, 1.0, 0.5, 0.25, 0.75, 0.0, 0.5, 1.0, 0.0, 0.3])

    def reopen(delays: list[float]) -> None:
        if len(delays) == 10:
            fake.refuse_websockets(None)

    sleep = FakeSleep(reopen)
    fake.refuse_websockets(503)
    async with AriClient(
        fake.base_url,
        fake.user,
        PASSWORD,
        fake.app,
        sleep=sleep,
        rand=lambda: next(randoms),
    ) as ari:
        await ari.wait_connected(WAIT)
        assert ari.connection_count == 1
    ceilings = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0, 10.0]
    rands = [0.0, 1.0, 0.5, 0.25, 0.75, 0.0, 0.5, 1.0, 0.0, 0.3]
    assert sleep.delays == pytest.approx(
        [c / 2 + c / 2 * r for c, r in zip(ceilings, rands, strict=True)]
    )
    assert max(sleep.delays) <= 10.0
    assert len(fake.ws_requests) == 11


async def test_on_connected_runs_before_the_connection_s_first_event(
    fake: FakeAri, client: AriClient, inbox: Inbox
) -> None:
    order: list[str] = []
    release = asyncio.Event()

    async def on_connected() -> None:
        order.append("resync started")
        await release.wait()
        order.append("resync done")

    client.on_connected = on_connected
    await client.start()
    await fake.wait_websockets(1)
    await fake.send_event(stasis_start("c1", "201"))  # arrives while resyncing
    assert not client.is_connected
    release.set()
    event = await get(inbox.queue)
    order.append(event.type)
    assert order == ["resync started", "resync done", "StasisStart"]
    assert client.is_connected


async def test_wait_connected_times_out_while_asterisk_refuses(fake: FakeAri) -> None:
    fake.refuse_websockets(503)
    forever = asyncio.Event()

    async def stuck_sleep(delay: float) -> None:
        await forever.wait()

    async with AriClient(fake.base_url, fake.user, PASSWORD, fake.app, sleep=stuck_sleep) as ari:
        with pytest.raises(TimeoutError):
            await ari.wait_connected(0.05)
    # close() cancelled the reader in its back-off sleep: nothing left running
    assert not ari._tasks


# ---------------------------------------------------------------------------- shutdown, logs


def _reader_task(client: AriClient) -> asyncio.Task[object]:
    (reader,) = (t for t in client._tasks if t.get_name().startswith("ari-events"))
    return reader


async def test_close_is_clean_and_idempotent(fake: FakeAri, connected: AriClient) -> None:
    reader = _reader_task(connected)
    await connected.close()
    await connected.close()
    assert reader.done() and not connected._tasks
    assert not connected.is_connected
    await fake.wait_websockets_closed()


async def test_close_from_inside_on_event_does_not_deadlock(
    fake: FakeAri, client: AriClient
) -> None:
    closed = asyncio.Event()

    async def on_event(event: AriEvent) -> None:
        await client.close()
        closed.set()

    client.on_event = on_event
    await client.start()
    await client.wait_connected(WAIT)
    reader = _reader_task(client)
    await fake.send_event(stasis_start("c1"))
    async with asyncio.timeout(WAIT):
        await closed.wait()
        await reader  # ended by itself, not cancelled
    await fake.wait_websockets_closed()


async def test_no_secret_in_any_log_line(
    fake: FakeAri, client: AriClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    connections: asyncio.Queue[int] = asyncio.Queue()

    async def on_connected() -> None:
        connections.put_nowait(client.connection_count)

    client.on_connected = on_connected
    await client.start()
    assert await _get_int(connections) == 1
    await client.list_channels()
    with pytest.raises(AriHttpError):
        await client.answer("missing")
    await fake.drop_websockets()
    assert await _get_int(connections) == 2
    ours = [r for r in caplog.records if not r.name.startswith("tests.")]  # not the fake's
    lines = [r.getMessage() for r in ours]
    assert "> Authorization: <redacted>" in lines  # the handshake was logged...
    for line in lines:
        assert_no_secret(line)  # ...without the credentials
    assert {r.name for r in ours} >= {"callrouter.ari.client", "callrouter.ari.client.websocket"}


async def test_the_event_filter_is_set_on_every_connect_before_on_connected(
    fake: FakeAri, sleep: FakeSleep, inbox: Inbox
) -> None:
    seen_at_connect: list[set[str]] = []

    async def on_connected() -> None:
        seen_at_connect.append(set(fake.model.allowed_events))

    async with AriClient(
        fake.base_url,
        fake.user,
        PASSWORD,
        fake.app,
        on_event=inbox,
        on_connected=on_connected,
        events=["StasisStart", "StasisEnd"],
        sleep=sleep,
        rand=lambda: 0.5,
    ) as ari:
        await ari.wait_connected(WAIT)
        fake.model.allowed_events = set()  # Asterisk restarted: the app is new
        await fake.drop_websockets()
        await fake.wait_websockets(2)
        await ari.wait_connected(WAIT)
        # ApplicationReplaced always: it says another router took the app over.
        wanted = {"StasisStart", "StasisEnd", "ApplicationReplaced"}
        assert seen_at_connect == [wanted] * 2
        (put, _) = fake.requests_to("PUT", f"/applications/{fake.app}/eventFilter")
        assert put.body == {"allowed": [{"type": "ApplicationReplaced"},
                                        {"type": "StasisEnd"}, {"type": "StasisStart"}],
                            "disallowed": []}  # fmt: skip
        # What the filter leaves out never reaches the app.
        await fake.send_event(state_change("c-1", "Up"))
        await fake.send_event(stasis_start("c-1", "201"))
        assert (await get(inbox.queue)).type == "StasisStart"
        assert drain(inbox.queue) == []


async def test_a_refused_event_filter_is_logged_and_events_flow_unfiltered(
    fake: FakeAri, client: AriClient, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    fake.set_response("PUT", f"/applications/{fake.app}/eventFilter", 400, {"message": "bad"})
    client.events = ("StasisStart",)
    await client.start()
    await client.wait_connected(WAIT)
    assert "could not set the event filter" in caplog.text
    await fake.send_event(state_change("c-2", "Ringing"))
    assert (await get(inbox.queue)).type == "ChannelStateChange"


async def test_application_replaced_ends_listening_without_reconnecting(
    fake: FakeAri, sleep: FakeSleep, inbox: Inbox
) -> None:
    # Another router connected the app: Asterisk sends its events there now. Reading
    # on, or reconnecting (which would take the app back), would make two routers.
    replaced = asyncio.Event()
    async with AriClient(
        fake.base_url,
        fake.user,
        PASSWORD,
        fake.app,
        on_event=inbox,
        on_replaced=replaced.set,
        events=["StasisStart"],
        sleep=sleep,
        rand=lambda: 0.5,
    ) as ari:
        await ari.wait_connected(WAIT)
        await fake.send_event({"type": "ApplicationReplaced", "application": fake.app})
        await asyncio.wait_for(replaced.wait(), WAIT)
        assert ari.replaced and not ari.is_connected
        await fake.wait_websockets_closed()
        await fake.send_event(stasis_start("c-1", "201"))
        assert sleep.delays == [] and fake.websockets_accepted == 1  # no reconnect
        assert drain(inbox.queue) == []
        # Listening again (this router became active again) connects anew.
        await ari.stop_listening()
        await ari.start()
        await ari.wait_connected(WAIT)
        assert fake.websockets_accepted == 2 and not ari.replaced


async def test_stop_listening_closes_the_websocket_and_rest_goes_on(
    fake: FakeAri, inbox: Inbox
) -> None:
    async with AriClient(fake.base_url, fake.user, PASSWORD, fake.app, on_event=inbox) as ari:
        await ari.wait_connected(WAIT)
        await ari.stop_listening()
        assert not ari.is_connected
        await fake.wait_websockets_closed()
        await ari.list_channels()  # a standby router's FastAGI checks need REST
        assert fake.websockets_accepted == 1
