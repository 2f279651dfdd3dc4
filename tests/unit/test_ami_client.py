"""AmiClient against the in-process fake AMI (loopback, port 0); backoff on a fake sleep."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from callrouter.ami import (
    AmiActionError,
    AmiClient,
    AmiConnectionError,
    AmiConnectionLost,
    AmiEncodeError,
    AmiLoginError,
    AmiMessage,
    AmiTimeout,
)
from tests.fakes.fake_ami import FakeAmi, event, event_list, response

WAIT = 5.0  # upper bound for anything a test waits on; reached only when a test fails


class FakeSleep:
    """Records the backoff delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class Counter:
    """An ``on_connected`` callback that counts its calls and can be waited on."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    async def __call__(self) -> None:
        self.count += 1
        self._changed.set()

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


class Events:
    """A subscriber that records events and can wait for one by name."""

    def __init__(self) -> None:
        self.seen: list[AmiMessage] = []
        self._changed = asyncio.Event()

    def __call__(self, message: AmiMessage) -> None:
        self.seen.append(message)
        self._changed.set()

    @property
    def names(self) -> list[str | None]:
        return [m.event for m in self.seen]

    async def wait_for(self, name: str, count: int = 1) -> None:
        async with asyncio.timeout(WAIT):
            while self.names.count(name) < count:
                self._changed.clear()
                await self._changed.wait()


MakeClient = Callable[..., AmiClient]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    async with FakeAmi() as server:
        yield server


@pytest.fixture
async def make(fake: FakeAmi) -> AsyncIterator[MakeClient]:
    clients: list[AmiClient] = []

    def factory(**overrides: Any) -> AmiClient:
        options: dict[str, Any] = {
            "host": fake.host,
            "port": fake.port,
            "username": fake.username,
            "secret": fake.secret,
            "ping_interval": None,
            "connect_timeout": WAIT,
            "action_timeout": WAIT,
            "sleep": FakeSleep(),
            "rand": lambda: 1.0,  # the top of the jitter range: the ceiling itself
        }
        options.update(overrides)
        client = AmiClient(
            options.pop("host"),
            options.pop("port"),
            options.pop("username"),
            options.pop("secret"),
            **options,
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- login ------------------------------------------------------------------------


async def test_login_sends_credentials_and_events_on_then_calls_on_connected(
    fake: FakeAmi, make: MakeClient
) -> None:
    on_connected = Counter()
    client = make(on_connected=on_connected)
    await client.start()
    await on_connected.wait(1)
    assert client.connected
    assert client.banner == "Asterisk Call Manager/11.0.0"
    (login,) = fake.actions("Login")
    assert login.get("Username") == "callrouter"
    assert login.get("Secret") == "fake-secret"
    assert login.get("Events") == "on"
    assert login.action_id
    assert fake.actions("Filter") == []  # all events wanted: no filter


async def test_refused_login_is_a_clear_error_without_the_secret(
    fake: FakeAmi, make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-Secret-4711"
    client = make(secret=secret)
    caplog.set_level(logging.DEBUG, logger="callrouter.ami")
    with pytest.raises(AmiLoginError) as info:
        await client.start()
    text = str(info.value)
    assert "login as 'callrouter' refused: Authentication failed" in text
    assert f"{fake.host}:{fake.port}" in text
    assert secret not in text
    assert secret not in repr(info.value.__cause__) and info.value.__cause__ is None
    assert secret not in caplog.text
    assert secret not in repr(client)
    assert fake.actions("Login")[0].get("Secret") == secret  # it was sent, only not shown
    assert not client.connected


async def test_secret_is_masked_in_debug_logs(
    fake: FakeAmi, make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callrouter.ami")
    client = make()
    await client.start()
    assert "-> Login" in caplog.text
    assert "'Secret': '***'" in caplog.text
    assert fake.secret not in caplog.text


async def test_no_server_is_a_connection_error(make: MakeClient) -> None:
    client = make(port=free_port())
    with pytest.raises(AmiConnectionError, match=r"could not connect to AMI at 127\.0\.0\.1:"):
        await client.start()


async def test_a_port_without_banner_times_out() -> None:
    async with FakeAmi(banner=None) as silent:
        client = AmiClient(
            silent.host, silent.port, "u", "s", connect_timeout=0.05, ping_interval=None
        )
        with pytest.raises(AmiConnectionError, match=r"no banner within 0\.05 s"):
            await client.start()
        await client.close()


async def test_connection_closed_before_the_banner(fake: FakeAmi, make: MakeClient) -> None:
    fake.reject_next(1)
    with pytest.raises(AmiConnectionLost, match="before the banner"):
        await make().start()


async def test_start_without_wait_keeps_trying(fake: FakeAmi, make: MakeClient) -> None:
    sleep = FakeSleep()
    client = make(sleep=sleep)
    fake.reject_next(2)
    await client.start(wait=False)
    await client.wait_connected(WAIT)
    assert sleep.delays == [0.5, 1.0]
    assert fake.logins == 1


async def test_refused_login_in_the_background_is_retried_with_backoff(
    fake: FakeAmi, make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = FakeSleep()
    client = make(secret="Wr0ng-S3cret", sleep=sleep, backoff_max=4.0)
    await client.start(wait=False)
    await fake.wait_for_action("Login", 4)
    await client.close()
    assert sleep.delays[:3] == [0.5, 1.0, 2.0]
    assert "refused: Authentication failed" in caplog.text
    assert "Wr0ng-S3cret" not in caplog.text


# -- events -----------------------------------------------------------------------


async def test_events_reach_subscribers_in_order_and_fully_booted_is_tracked(
    fake: FakeAmi, make: MakeClient
) -> None:
    client = make()
    events = Events()
    client.subscribe(events)
    await client.start()
    await events.wait_for("FullyBooted")
    assert client.fully_booted
    for n in range(5):
        await fake.push_event("DeviceStateChange", Device=f"PJSIP/p{n}", State="INUSE")
    await events.wait_for("DeviceStateChange", 5)
    devices = [m.get("Device") for m in events.seen if m.event == "DeviceStateChange"]
    assert devices == [f"PJSIP/p{n}" for n in range(5)]


async def test_event_filter_is_asked_of_asterisk(fake: FakeAmi, make: MakeClient) -> None:
    client = make(events={"DeviceStateChange", "ContactStatus"})
    events = Events()
    client.subscribe(events)
    await client.start()
    (filter_action,) = fake.actions("Filter")
    assert filter_action.get("Operation") == "Add"
    assert (
        filter_action.get("Filter")
        == "Event: (ContactStatus|DeviceStateChange|FullyBooted|Shutdown)"
    )
    assert await fake.push_event("Newchannel", Channel="PJSIP/x") == 0  # Asterisk drops it
    await fake.push_event("DeviceStateChange", Device="PJSIP/a", State="NOT_INUSE")
    await events.wait_for("DeviceStateChange")
    assert events.names == ["DeviceStateChange"]  # FullyBooted: watched, not wanted


async def test_event_filter_refused_by_asterisk_falls_back_to_the_client(
    make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeAmi(allow_filter=False) as strict:
        client = make(port=strict.port, events={"DeviceStateChange"})
        events = Events()
        client.subscribe(events)
        await client.start()
        assert "server-side event filter refused (Permission denied)" in caplog.text
        assert await strict.push_event("Newchannel", Channel="PJSIP/x") == 1
        await strict.push_event("Hangup", Channel="PJSIP/x")
        await strict.push_event("DeviceStateChange", Device="PJSIP/a", State="INUSE")
        await events.wait_for("DeviceStateChange")
        assert events.names == ["DeviceStateChange"]
        await client.close()


async def test_no_events_logs_in_with_events_off(fake: FakeAmi, make: MakeClient) -> None:
    client = make(events=set())
    await client.start()
    assert fake.actions("Login")[0].get("Events") == "off"
    assert await fake.push_event("Newchannel") == 0


async def test_a_failing_subscriber_is_logged_and_the_others_still_run(
    fake: FakeAmi, make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: AmiMessage) -> None:
        raise RuntimeError("subscriber bug")

    async def wrongly_async(message: AmiMessage) -> None:
        pass

    client = make()
    events = Events()
    client.subscribe(broken)
    client.subscribe(wrongly_async)  # type: ignore[arg-type]
    client.subscribe(events)
    await client.start()
    await fake.push_event("Newchannel", Channel="PJSIP/a")
    await fake.push_event("Hangup", Channel="PJSIP/a")
    await events.wait_for("Hangup")
    assert events.names == ["FullyBooted", "Newchannel", "Hangup"]
    assert "event subscriber failed on Newchannel" in caplog.text
    assert "subscriber bug" in caplog.text
    assert "returned a coroutine" in caplog.text
    assert client.connected


async def test_unsubscribe(fake: FakeAmi, make: MakeClient) -> None:
    client = make()
    first, second = Events(), Events()
    unsubscribe = client.subscribe(first)
    client.subscribe(second)
    await client.start()
    await second.wait_for("FullyBooted")
    unsubscribe()
    unsubscribe()  # twice is fine
    await fake.push_event("Newchannel")
    await second.wait_for("Newchannel")
    assert first.names == ["FullyBooted"]


# -- actions ----------------------------------------------------------------------


async def test_responses_are_matched_by_action_id_across_interleaved_events(
    fake: FakeAmi, make: MakeClient
) -> None:
    gate = asyncio.Event()

    async def slow(action: AmiMessage) -> list[Any]:
        await gate.wait()
        return [response(action, "Success", "slow answer")]

    fake.set_handler("Slow", slow)
    fake.set_handler(
        "Fast",
        lambda a: [
            event("Newchannel", Channel="PJSIP/a-1"),
            response(a, "Success", "fast answer"),
            event("Hangup", Channel="PJSIP/a-1"),
        ],
    )
    client = make()
    events = Events()
    client.subscribe(events)
    await client.start()

    slow_task = asyncio.create_task(client.send_action("Slow"))
    await fake.wait_for_action("Slow")
    fast = await client.send_action("Fast", Thing="x")
    assert fast.message == "fast answer"
    assert not slow_task.done()
    gate.set()
    slow_answer = await slow_task
    assert slow_answer.message == "slow answer"
    assert slow_answer.action_id != fast.action_id
    assert events.names == ["FullyBooted", "Newchannel", "Hangup"]


async def test_error_response_raises_with_the_response(fake: FakeAmi, make: MakeClient) -> None:
    client = make()
    await client.start()
    with pytest.raises(AmiActionError) as info:
        await client.send_action("NoSuchAction")
    assert info.value.action == "NoSuchAction"
    assert info.value.response.is_error
    assert info.value.message is not None
    assert info.value.message.startswith("Invalid/unknown command: NoSuchAction")


async def test_fields_as_mapping_and_repeated_keys(fake: FakeAmi, make: MakeClient) -> None:
    fake.set_handler("Originate", lambda a: [response(a, "Success", "queued")])
    client = make()
    await client.start()
    await client.send_action(
        "Originate", {"Action-000000": "x"}, Channel="PJSIP/a", Variable=["A=1", "B=2"]
    )
    (originate,) = fake.actions("Originate")
    assert originate.get_all("Variable") == ["A=1", "B=2"]
    assert originate.get("Action-000000") == "x"
    with pytest.raises(ValueError, match="given twice"):
        await client.send_action("Originate", {"Channel": "a"}, Channel="b")


async def test_injection_is_refused_before_anything_is_sent(
    fake: FakeAmi, make: MakeClient
) -> None:
    client = make()
    await client.start()
    with pytest.raises(AmiEncodeError, match="'Val'"):
        await client.db_put(
            "callrouter", "201", "PJSIP/a\r\nAction: Command\r\nCommand: core stop now"
        )
    await client.send_action("Ping")
    assert fake.actions("DBPut") == []
    assert fake.actions("Command") == []


async def test_list_action_collects_its_events_only(fake: FakeAmi, make: MakeClient) -> None:
    def contacts(action: AmiMessage) -> list[Any]:
        frames = event_list(
            action,
            "ContactList",
            [
                {"Aor": "anna-desk", "Status": "Reachable"},
                {"Aor": "anna-soft", "Status": "Unavailable"},
            ],
            "ContactListComplete",
        )
        frames.insert(2, event("DeviceStateChange", Device="PJSIP/b", State="RINGING"))
        return frames

    fake.set_handler("PJSIPShowContacts", contacts)
    client = make()
    events = Events()
    client.subscribe(events)
    await client.start()
    items = await client.send_list_action("PJSIPShowContacts")
    assert [(m.event, m.get("Aor")) for m in items] == [
        ("ContactList", "anna-desk"),
        ("ContactList", "anna-soft"),
    ]
    await events.wait_for("DeviceStateChange")
    assert "ContactList" not in events.names


async def test_list_action_error_raises(fake: FakeAmi, make: MakeClient) -> None:
    client = make()
    await client.start()
    with pytest.raises(AmiActionError, match="Database entry not found"):
        await client.send_list_action("DBGet", Family="callrouter", Key="nobody")


async def test_timeout_then_the_late_answer_is_dropped_and_the_client_goes_on(
    fake: FakeAmi, make: MakeClient
) -> None:
    gate = asyncio.Event()

    async def late(action: AmiMessage) -> list[Any]:
        await gate.wait()
        return [response(action, "Success", "too late")]

    fake.set_handler("Late", late)
    client = make(action_timeout=0.05)
    await client.start()
    with pytest.raises(
        AmiTimeout, match=r"no answer to AMI action Late \(ActionID .+\) within 0.05 s"
    ):
        await client.send_action("Late")
    gate.set()
    pong = await client.send_action("Ping")
    assert pong.get("Ping") == "Pong"
    assert client.connected


async def test_timeout_is_a_timeout_error(fake: FakeAmi, make: MakeClient) -> None:
    fake.ignore("Hang")
    client = make(action_timeout=0.01)
    await client.start()
    with pytest.raises(TimeoutError):
        await client.send_action("Hang")


async def test_not_connected_is_an_error(make: MakeClient) -> None:
    client = make()
    with pytest.raises(AmiConnectionError, match="not connected"):
        await client.send_action("Ping")


# -- connection loss and reconnect -------------------------------------------------


async def test_drop_fails_pending_actions_then_reconnects_with_growing_capped_backoff(
    fake: FakeAmi, make: MakeClient
) -> None:
    sleep = FakeSleep()
    on_connected = Counter()
    client = make(sleep=sleep, on_connected=on_connected, backoff_initial=0.5, backoff_max=2.0)
    await client.start()
    await on_connected.wait(1)

    fake.ignore("Originate")
    pending = [
        asyncio.create_task(client.send_action("Originate", Channel=f"PJSIP/{n}")) for n in range(3)
    ]
    await fake.wait_for_action("Originate", 3)
    fake.reject_next(4)  # Asterisk restarting: the next four connections end at once
    await fake.drop()
    for task in pending:
        with pytest.raises(AmiConnectionLost, match="while waiting for Originate"):
            await task

    await on_connected.wait(2)
    assert client.connected
    assert sleep.delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert fake.logins == 2
    assert fake.connections == 1 + 4 + 1
    assert (await client.send_action("Ping")).get("Ping") == "Pong"

    # A successful login resets the backoff.
    await fake.drop()
    await on_connected.wait(3)
    assert sleep.delays[5:] == [0.5]


async def test_on_connected_may_send_actions_and_its_failure_is_not_fatal(
    fake: FakeAmi, make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Counter()

    async def push_state() -> None:
        await client.db_put("callrouter", "201", "PJSIP/anna-desk")
        await calls()
        if calls.count == 1:
            raise RuntimeError("resync bug")

    client = make(on_connected=push_state)
    await client.start()
    await calls.wait(1)
    await fake.drop()
    await calls.wait(2)
    assert len(fake.actions("DBPut")) == 2
    assert "on_connected failed" in caplog.text


async def test_eof_while_idle_means_connection_lost(fake: FakeAmi, make: MakeClient) -> None:
    on_connected = Counter()
    client = make(on_connected=on_connected)
    await client.start()
    await on_connected.wait(1)
    await fake.drop()
    await on_connected.wait(2)
    assert fake.connections == 2


async def test_unanswered_ping_drops_and_reconnects(fake: FakeAmi, make: MakeClient) -> None:
    on_connected = Counter()
    client = make(on_connected=on_connected, ping_interval=0.02, action_timeout=0.2)
    await client.start()
    await fake.wait_for_action("Ping", 3)  # answered: the connection stays
    assert fake.connections == 1
    fake.ignore("Ping")  # a half-open connection: nothing comes back
    await on_connected.wait(2)
    assert fake.connections == 2


# -- convenience ------------------------------------------------------------------


async def test_astdb_round_trip(fake: FakeAmi, make: MakeClient) -> None:
    client = make()
    await client.start()
    await client.db_put("callrouter", "201", "PJSIP/anna-desk&PJSIP/anna-soft")
    assert fake.db == {("callrouter", "201"): "PJSIP/anna-desk&PJSIP/anna-soft"}
    assert await client.db_get("callrouter", "201") == "PJSIP/anna-desk&PJSIP/anna-soft"
    assert await client.db_get("callrouter", "202") is None
    await client.db_put("callrouter", "202", "")
    assert await client.db_get("callrouter", "202") == ""
    assert await client.db_del("callrouter", "201") is True
    assert await client.db_del("callrouter", "201") is False  # already gone: not an error
    assert await client.db_get("callrouter", "201") is None
    assert await client.db_deltree("callrouter") is True
    assert await client.db_deltree("callrouter") is False
    assert fake.db == {}


async def test_db_errors_other_than_not_found_raise(fake: FakeAmi, make: MakeClient) -> None:
    client = make()
    await client.start()
    with pytest.raises(AmiActionError, match="No family specified"):
        await client.db_put("", "201", "x")


async def test_command_returns_its_output_lines(fake: FakeAmi, make: MakeClient) -> None:
    fake.commands["core show channels"] = [
        "Channel              Location             State   Application(Data)",
        "0 active channels",
    ]
    client = make()
    await client.start()
    output = await client.command("core show channels")
    assert output.splitlines() == fake.commands["core show channels"]
    with pytest.raises(AmiActionError) as info:
        await client.command("no such thing")
    assert "No such command 'no such thing'" in info.value.response.output


async def test_global_variables(fake: FakeAmi, make: MakeClient) -> None:
    client = make()
    await client.start()
    await client.setvar("CALLROUTER_UP", "1")
    assert fake.globals == {"CALLROUTER_UP": "1"}
    assert await client.getvar("CALLROUTER_UP") == "1"
    (setvar,) = fake.actions("Setvar")
    assert setvar.get("Channel") is None


# -- close ------------------------------------------------------------------------


async def test_close_fails_pending_is_idempotent_and_final(fake: FakeAmi, make: MakeClient) -> None:
    fake.ignore("Hang")
    client = make()
    await client.start()
    pending = asyncio.create_task(client.send_action("Hang"))
    await fake.wait_for_action("Hang")
    await asyncio.gather(client.close(), client.close())
    with pytest.raises(AmiConnectionLost):
        await pending
    await client.close()
    assert not client.connected
    with pytest.raises(AmiConnectionError, match="closed"):
        await client.send_action("Ping")
    with pytest.raises(AmiConnectionError, match="closed"):
        await client.start()
    await fake.wait_for(lambda: fake.sessions == 0, "the client to hang up")


async def test_close_while_reconnecting(make: MakeClient) -> None:
    gate = asyncio.Event()
    delays: list[float] = []

    async def stuck_sleep(delay: float) -> None:
        delays.append(delay)
        gate.set()
        await asyncio.Event().wait()  # until cancelled by close()

    client = make(port=free_port(), sleep=stuck_sleep)
    await client.start(wait=False)
    async with asyncio.timeout(WAIT):
        await gate.wait()
    await client.close()
    assert delays == [0.5]
    with pytest.raises(AmiConnectionError):
        await client.wait_connected(WAIT)


async def test_close_during_start_makes_start_fail_instead_of_hanging() -> None:
    async with FakeAmi(banner=None) as silent:  # start() waits for a banner that never comes
        client = AmiClient(silent.host, silent.port, "u", "s", connect_timeout=WAIT)
        starting = asyncio.create_task(client.start())
        await silent.wait_for(lambda: silent.sessions == 1, "the client to connect")
        await client.close()
        with pytest.raises(AmiConnectionError, match="closed"):
            await starting


async def test_close_before_start_and_context_manager(fake: FakeAmi) -> None:
    idle = AmiClient(fake.host, fake.port, fake.username, fake.secret)
    await idle.close()
    async with AmiClient(
        fake.host, fake.port, fake.username, fake.secret, ping_interval=None
    ) as client:
        assert client.connected
    assert not client.connected


# -- backoff ----------------------------------------------------------------------


def test_invalid_event_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid AMI event names"):
        AmiClient("127.0.0.1", 5038, "u", "s", events={"Hangup|.*"})
