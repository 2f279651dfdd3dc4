"""AgiServer on real loopback TCP (port 0) against a scripted fake Asterisk in the test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from callrouter.agi import (
    AgiCommandFailed,
    AgiHangup,
    AgiServer,
    AgiSession,
    AgiTimeout,
    Handler,
)

WAIT = 5.0  # upper bound for anything a test waits on; reached only when a test fails
SHORT = 0.2  # read_timeout of the tests that let it expire


class FakeAsterisk:
    """One FastAGI connection as Asterisk makes it: the environment, then replies
    to the commands it reads, written by the test line by line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: AgiServer) -> FakeAsterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def send(self, *lines: str | bytes) -> None:
        for line in lines:
            self.writer.write(line if isinstance(line, bytes) else f"{line}\n".encode())
        await self.writer.drain()

    async def send_env(self, script: str = "login", *args: str, **extra: str) -> None:
        headers = {
            "agi_network": "yes",
            "agi_network_script": script,
            "agi_request": f"agi://127.0.0.1:4573/{script}",
            "agi_channel": "PJSIP/alice-00000001",
            "agi_uniqueid": "1732800000.17",
            "agi_callerid": "201",
            "agi_context": "internal",
            "agi_extension": "*100",
            "agi_priority": "1",
            **{f"agi_arg_{n}": arg for n, arg in enumerate(args, 1)},
            **extra,
        }
        await self.send(*(f"{key}: {value}" for key, value in headers.items()), "")

    async def read_command(self) -> str:
        async with asyncio.timeout(WAIT):
            line = await self.reader.readline()
        assert line.endswith(b"\n"), f"connection closed instead of a command: {line!r}"
        return line.decode().removesuffix("\n")

    async def expect(self, command: str, *reply: str) -> None:
        """Read ``command`` and answer it with the ``reply`` lines."""
        assert await self.read_command() == command
        await self.send(*reply)

    async def wait_closed(self) -> None:
        """Wait until the server closes the connection, having sent nothing more."""
        async with asyncio.timeout(WAIT):
            rest = await self.reader.read()
        assert rest == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class Outcome:
    """What a handler saw, and an event set when it ended (however it ended)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.calls = 0
        self.done = asyncio.Event()

    def handler(self, body: Callable[[AgiSession, dict[str, Any]], Awaitable[None]]) -> Handler:
        async def run(session: AgiSession) -> None:
            self.calls += 1
            try:
                await body(session, self.values)
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.done.set()

        return run

    async def wait(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.done.wait()


MakeServer = Callable[..., Awaitable[AgiServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    servers: list[AgiServer] = []

    async def factory(handlers: Mapping[str, Handler], **options: Any) -> AgiServer:
        options.setdefault("port", 0)
        options.setdefault("read_timeout", WAIT)
        server = AgiServer(handlers, **options)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.close(grace=0)
        assert server.sessions == 0


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeAsterisk]]:
    opened: list[FakeAsterisk] = []
    yield opened
    for fake in opened:
        await fake.close()


async def connect(server: AgiServer, fakes: list[FakeAsterisk]) -> FakeAsterisk:
    fake = await FakeAsterisk.connect(server)
    fakes.append(fake)
    return fake


StartCall = Callable[..., Awaitable[tuple[Outcome, FakeAsterisk]]]


@pytest.fixture
def start_call(make_server: MakeServer, fakes: list[FakeAsterisk]) -> StartCall:
    """``await start_call(body)``: a server running ``body`` as script ``login``, and
    a fake Asterisk that has connected and sent its environment."""

    async def start(body: Any, **options: Any) -> tuple[Outcome, FakeAsterisk]:
        outcome = Outcome()
        server = await make_server({"login": outcome.handler(body)}, **options)
        fake = await connect(server, fakes)
        await fake.send_env()
        return outcome, fake

    return start


# -- a call -----------------------------------------------------------------------


async def test_a_handler_drives_the_call_and_the_connection_is_closed_after_it(
    make_server: MakeServer, fakes: list[FakeAsterisk]
) -> None:
    outcome = Outcome()

    async def login(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["request"] = session.request
        seen["peer"] = session.peer
        await session.answer()
        seen["pin"] = await session.get_data("custom/enter-pin", 5000, 4)
        seen["again"] = await session.get_data("custom/enter-pin", 3000, 4)
        seen["key"] = await session.stream_file("custom/welcome", "#*")
        seen["played"] = await session.stream_file("beep")
        seen["var"] = await session.get_variable("CALLERID(name)")
        seen["unset"] = await session.get_variable("NOPE")
        await session.set_variable("LOGIN_RESULT", "ok two")
        await session.verbose("logged in", 3)
        await session.hangup()

    server = await make_server({"login": outcome.handler(login)})
    fake = await connect(server, fakes)
    await fake.send_env("login", "4711", "de")
    await fake.expect("ANSWER", "200 result=0")
    await fake.expect("GET DATA custom/enter-pin 5000 4", "200 result=1234")
    await fake.expect("GET DATA custom/enter-pin 3000 4", "200 result=12 (timeout)")
    await fake.expect("STREAM FILE custom/welcome #*", "200 result=35 endpos=8000")
    await fake.expect('STREAM FILE beep ""', "200 result=0 endpos=16000")
    await fake.expect("GET VARIABLE CALLERID(name)", "200 result=1 (Alice (desk))")
    await fake.expect("GET VARIABLE NOPE", "200 result=0")
    await fake.expect('SET VARIABLE LOGIN_RESULT "ok two"', "200 result=1")
    await fake.expect('VERBOSE "logged in" 3', "200 result=1")
    await fake.expect("HANGUP", "200 result=1")
    await fake.wait_closed()
    await outcome.wait()

    assert outcome.error is None
    seen = outcome.values
    assert seen["request"].script == "login"
    assert seen["request"].args == ("4711", "de")
    assert seen["request"].channel == "PJSIP/alice-00000001"
    assert seen["peer"].startswith("127.0.0.1:")
    assert seen["pin"] == ("1234", False)
    assert seen["again"] == ("12", True)
    assert seen["key"] == "#"
    assert seen["played"] is None
    assert seen["var"] == "Alice (desk)"
    assert seen["unset"] is None


async def test_get_data_with_no_digit_before_the_timeout(start_call: StartCall) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["digits"] = await session.get_data("beep", 2000, 1)

    outcome, fake = await start_call(body)
    await fake.expect("GET DATA beep 2000 1", "200 result= (timeout)")
    await outcome.wait()
    assert outcome.values["digits"] == ("", True)
    await fake.wait_closed()


async def test_get_data_waits_longer_than_read_timeout_for_its_reply(
    make_server: MakeServer, fakes: list[FakeAsterisk]
) -> None:
    outcome = Outcome()

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["digits"] = await session.get_data("custom/long-prompt", 100, 4)

    server = await make_server({"login": outcome.handler(body)}, read_timeout=SHORT)
    fake = await connect(server, fakes)
    await fake.send_env()
    assert await fake.read_command() == "GET DATA custom/long-prompt 100 4"
    # A clock without sleep: a silent peer of a server with twice the read_timeout
    # is dropped only after the first server's read_timeout has passed.
    clock = await connect(await make_server({}, read_timeout=2 * SHORT), fakes)
    await clock.wait_closed()
    await fake.send("200 result=42")
    await outcome.wait()
    assert outcome.error is None
    assert outcome.values["digits"] == ("42", False)
    await fake.wait_closed()


# -- hang-ups and failures of commands ----------------------------------------------


async def test_hangup_notification_before_the_reply_is_noted_and_the_reply_still_read(
    start_call: StartCall,
) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["before"] = session.hung_up
        seen["value"] = await session.get_variable("X")
        seen["after"] = session.hung_up

    outcome, fake = await start_call(body)
    await fake.expect("GET VARIABLE X", "HANGUP", "200 result=1 (still here)")
    await outcome.wait()
    assert outcome.values == {"before": False, "value": "still here", "after": True}
    await fake.wait_closed()  # no HANGUP sent: the channel is gone already


async def test_511_is_a_hangup_and_the_server_sends_nothing_more(
    start_call: StartCall, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter.agi")

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        await session.stream_file("beep")

    outcome, fake = await start_call(body)
    await fake.expect(
        'STREAM FILE beep ""',
        "HANGUP",
        "511 Command Not Permitted on a dead channel or intercept routine",
    )
    await fake.wait_closed()
    await outcome.wait()
    assert isinstance(outcome.error, AgiHangup)
    assert "511 Command Not Permitted" in str(outcome.error)
    assert "channel hung up" in caplog.text
    assert "Traceback" not in caplog.text  # a hang-up is not a bug


async def test_get_data_result_minus_one_is_a_hangup(start_call: StartCall) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        await session.get_data("beep", 1000, 4)

    outcome, fake = await start_call(body)
    await fake.expect("GET DATA beep 1000 4", "200 result=-1")
    await outcome.wait()
    assert isinstance(outcome.error, AgiHangup)
    await fake.wait_closed()


async def test_end_of_stream_while_waiting_for_a_reply_is_a_hangup(start_call: StartCall) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        await session.answer()

    outcome, fake = await start_call(body)
    assert await fake.read_command() == "ANSWER"
    await fake.send(b"200 res")  # a partial line, then the end of the stream
    fake.writer.write_eof()
    await outcome.wait()
    assert isinstance(outcome.error, AgiHangup)
    assert "connection closed by Asterisk" in str(outcome.error)
    await fake.wait_closed()


async def test_stream_file_failure_is_a_failed_command_and_the_call_is_hung_up(
    start_call: StartCall, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        await session.stream_file("no-such-file")

    outcome, fake = await start_call(body)
    await fake.expect('STREAM FILE no-such-file ""', "200 result=-1 endpos=0")
    await fake.expect("HANGUP", "200 result=1")
    await fake.wait_closed()
    error = outcome.error
    assert isinstance(error, AgiCommandFailed)
    assert error.command == "STREAM FILE"
    assert (error.reply.result, error.reply.extras["endpos"]) == ("-1", "0")
    assert "handler for 'login' failed" in caplog.text


async def test_usage_reply_is_read_whole_and_refused(start_call: StartCall) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        try:
            await session.set_variable("X", "1")
        except AgiCommandFailed as exc:
            seen["failed"] = exc
        seen["next"] = await session.get_variable("X")  # still in step

    outcome, fake = await start_call(body)
    await fake.expect(
        "SET VARIABLE X 1",
        "520-Invalid command syntax.  Proper usage follows:",
        " Usage: SET VARIABLE <variablename> <value>",
        "        Sets a variable to the current channel.",
        "520 End of proper usage.",
    )
    await fake.expect("GET VARIABLE X", "200 result=1 (1)")
    await outcome.wait()
    failed = outcome.values["failed"]
    assert failed.reply.code == 520
    assert failed.reply.data.splitlines()[0] == " Usage: SET VARIABLE <variablename> <value>"
    assert outcome.values["next"] == "1"
    await fake.wait_closed()


async def test_unknown_command_is_a_failed_command(start_call: StartCall) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["raw"] = await session.command("FROB", "x")
        await session.verbose("x")

    outcome, fake = await start_call(body)
    await fake.expect("FROB x", "510 Invalid or unknown command")
    await fake.expect("VERBOSE x 1", "510 Invalid or unknown command")
    await fake.expect("HANGUP", "200 result=1")
    await fake.wait_closed()
    assert outcome.values["raw"].code == 510
    assert isinstance(outcome.error, AgiCommandFailed)
    assert str(outcome.error) == "VERBOSE refused: 510 Invalid or unknown command"


async def test_a_reply_that_does_not_come_times_out_and_the_session_is_then_unusable(
    start_call: StartCall,
) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        with pytest.raises(AgiTimeout, match=r"ANSWER: no reply within 0\.2 s"):
            await session.answer()
        with pytest.raises(AgiTimeout, match="an earlier command got no clean reply"):
            await session.verbose("late")
        raise RuntimeError("give up")

    outcome, fake = await start_call(body, read_timeout=SHORT)
    assert await fake.read_command() == "ANSWER"
    await outcome.wait()
    # The HANGUP is sent without waiting for its reply: replies are out of step.
    assert await fake.read_command() == "HANGUP"
    await fake.wait_closed()
    assert isinstance(outcome.error, RuntimeError)


async def test_a_garbled_reply_is_a_protocol_error(
    start_call: StartCall, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        await session.answer()

    _outcome, fake = await start_call(body)
    await fake.expect("ANSWER", "hello there")
    assert await fake.read_command() == "HANGUP"
    await fake.wait_closed()
    assert "garbled AGI reply: 'hello there'" in caplog.text


async def test_command_words_with_line_breaks_are_refused_before_sending(
    start_call: StartCall,
) -> None:
    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            await session.set_variable("X", "1\nHANGUP")
        await session.verbose("fine")

    outcome, fake = await start_call(body)
    await fake.expect("VERBOSE fine 1", "200 result=1")
    await fake.wait_closed()
    assert outcome.error is None


# -- bad peers ----------------------------------------------------------------------


async def test_a_silent_peer_is_dropped_after_the_environment_timeout(
    make_server: MakeServer, fakes: list[FakeAsterisk], caplog: pytest.LogCaptureFixture
) -> None:
    outcome = Outcome()
    server = await make_server(
        {"login": outcome.handler(lambda s, v: asyncio.sleep(0))}, environment_timeout=SHORT
    )
    fake = await connect(server, fakes)
    await fake.wait_closed()
    assert "no complete environment within 0.2 s" in caplog.text
    assert outcome.calls == 0


async def test_a_peer_dripping_the_environment_is_dropped_after_the_environment_timeout(
    make_server: MakeServer, fakes: list[FakeAsterisk], caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server({}, environment_timeout=SHORT)
    fake = await connect(server, fakes)
    await fake.send("agi_network: yes", "agi_channel: PJSIP/a")  # and no more
    await fake.wait_closed()
    assert "no complete environment within 0.2 s" in caplog.text


@pytest.mark.parametrize(
    "partial",
    [b"", b"agi_network: yes\n", b"agi_network: yes\nagi_chan"],
    ids=["nothing", "after-a-line", "mid-line"],
)
async def test_a_peer_closing_mid_header_is_dropped(
    make_server: MakeServer,
    fakes: list[FakeAsterisk],
    caplog: pytest.LogCaptureFixture,
    partial: bytes,
) -> None:
    outcome = Outcome()
    server = await make_server({"login": outcome.handler(lambda s, v: asyncio.sleep(0))})
    fake = await connect(server, fakes)
    await fake.send(partial)
    fake.writer.write_eof()  # our half closed: the server reads b''
    await fake.wait_closed()
    assert "closed before the end of the environment" in caplog.text
    assert outcome.calls == 0


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["GET / HTTP/1.1", "Host: x", ""], "line 1 is not 'agi_key: value'"),
        (["agi_network: yes", "agi_request: agi://h/login", ""], "without the 'agi_channel'"),
        (["agi_network: yes", "x_channel: PJSIP/a"], "bad header name 'x_channel'"),
        ([b"agi_network: yes\n", b"agi_channel: " + b"x" * 3000 + b"\n"], "longer than 2048"),
        ([b"agi_network: yes\n", b"agi_x: " + b"x" * 100_000 + b"\n"], "longer than 2048"),
        ([f"agi_h{n}: v" for n in range(200)], "longer than 128 lines"),
    ],
    ids=["http", "no-channel", "bad-key", "long-line", "huge-line", "too-many"],
)
async def test_a_garbled_environment_closes_the_connection_without_calling_a_handler(
    make_server: MakeServer,
    fakes: list[FakeAsterisk],
    caplog: pytest.LogCaptureFixture,
    lines: list[str | bytes],
    reason: str,
) -> None:
    outcome = Outcome()
    server = await make_server({"login": outcome.handler(lambda s, v: asyncio.sleep(0))})
    fake = await connect(server, fakes)
    await fake.send(*lines)
    await fake.wait_closed()
    assert outcome.calls == 0
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert reason in record.getMessage()
    assert record.getMessage().startswith("FastAGI 127.0.0.1:")
    assert len(record.getMessage()) < 300  # never the raw line


async def test_an_unknown_script_is_hung_up(
    make_server: MakeServer, fakes: list[FakeAsterisk], caplog: pytest.LogCaptureFixture
) -> None:
    outcome = Outcome()
    server = await make_server({"login": outcome.handler(lambda s, v: asyncio.sleep(0))})
    fake = await connect(server, fakes)
    await fake.send_env("lgoin")
    await fake.expect("HANGUP", "200 result=1")
    await fake.wait_closed()
    assert "no handler for script 'lgoin' (channel PJSIP/alice-00000001)" in caplog.text
    assert outcome.calls == 0


async def test_a_failing_handler_is_logged_hung_up_and_the_server_serves_the_next_call(
    make_server: MakeServer, fakes: list[FakeAsterisk], caplog: pytest.LogCaptureFixture
) -> None:
    outcome = Outcome()

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        if outcome.calls == 1:
            raise KeyError("bug in the handler")
        await session.verbose("second call")

    server = await make_server({"login": outcome.handler(body)})
    first = await connect(server, fakes)
    await first.send_env()
    await first.expect("HANGUP", "200 result=1")
    await first.wait_closed()
    assert "handler for 'login' failed on PJSIP/alice-00000001" in caplog.text
    assert "KeyError: 'bug in the handler'" in caplog.text  # with its traceback

    second = await connect(server, fakes)
    await second.send_env()
    await second.expect('VERBOSE "second call" 1', "200 result=1")
    await second.wait_closed()
    assert outcome.calls == 2


# -- capacity and shutdown ------------------------------------------------------------


async def test_calls_over_max_sessions_are_closed_at_once(
    make_server: MakeServer, fakes: list[FakeAsterisk], caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def hold(session: AgiSession) -> None:
        started.set()
        await release.wait()
        await session.verbose("released")

    server = await make_server({"login": hold}, max_sessions=1)
    busy = await connect(server, fakes)
    await busy.send_env()
    async with asyncio.timeout(WAIT):
        await started.wait()

    refused = await connect(server, fakes)
    await refused.send_env()
    await refused.wait_closed()
    assert "refused, 1 calls already running (max_sessions)" in caplog.text
    assert server.sessions == 1 and server.verified_sessions == 1

    release.set()
    await busy.expect("VERBOSE released 1", "200 result=1")
    await busy.wait_closed()

    # Room again: the next call is served.
    started.clear()
    release.clear()
    again = await connect(server, fakes)
    await again.send_env()
    async with asyncio.timeout(WAIT):
        await started.wait()
    release.set()
    await again.expect("VERBOSE released 1", "200 result=1")
    await again.wait_closed()


async def test_close_lets_calls_finish_within_the_grace_period(
    make_server: MakeServer, fakes: list[FakeAsterisk]
) -> None:
    outcome = Outcome()

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["reply"] = await session.get_variable("X")

    server = await make_server({"login": outcome.handler(body)})
    fake = await connect(server, fakes)
    await fake.send_env()
    assert await fake.read_command() == "GET VARIABLE X"
    closing = asyncio.create_task(server.close(grace=WAIT))
    await fake.send("200 result=1 (done)")
    async with asyncio.timeout(WAIT):
        await closing
    assert outcome.values["reply"] == "done"
    assert outcome.error is None
    await fake.wait_closed()


async def test_close_cancels_calls_after_the_grace_period_and_leaves_no_task(
    make_server: MakeServer, fakes: list[FakeAsterisk]
) -> None:
    outcome = Outcome()
    before = asyncio.all_tasks()

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        await session.get_data("beep", 60_000, 4)  # the fake never answers

    server = await make_server({"login": outcome.handler(body)})
    calls = [await connect(server, fakes) for _ in range(3)]
    for fake in calls:
        await fake.send_env()
        assert await fake.read_command() == "GET DATA beep 60000 4"
    assert server.sessions == 3

    await server.close(grace=0.05)
    assert server.sessions == 0
    assert isinstance(outcome.error, asyncio.CancelledError)
    assert asyncio.all_tasks() - before == set()
    for fake in calls:
        await fake.wait_closed()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)
    await server.close()  # twice is fine


async def test_the_server_works_as_a_context_manager_on_a_port_it_is_given(
    fakes: list[FakeAsterisk],
) -> None:
    outcome = Outcome()

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["script"] = session.request.script

    async with AgiServer({"login": outcome.handler(body)}, port=0) as server:
        assert server.port != 0
        fake = await connect(server, fakes)
        await fake.send_env()
        await outcome.wait()
        await fake.wait_closed()
    assert outcome.values["script"] == "login"


# -- only real calls: the channel check --------------------------------------------------


class Checks:
    """A channel check that says yes to the uniqueids in ``live``, and records calls."""

    def __init__(self, *live: str, error: Exception | None = None) -> None:
        self.live = set(live)
        self.error = error
        self.asked: list[tuple[str, str]] = []
        self.release: asyncio.Event | None = None  # set: checks wait for it

    async def __call__(self, channel: str, uniqueid: str) -> bool:
        self.asked.append((channel, uniqueid))
        if self.release is not None:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        return uniqueid in self.live


async def refuse(session: AgiSession) -> None:
    await session.stream_file("feature-not-avail-line")
    await session.hangup()


async def test_a_session_whose_channel_is_live_reaches_its_handler_verified(
    start_call: StartCall,
) -> None:
    checks = Checks("1732800000.17")

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen["verified"] = session.channel_verified
        await session.verbose("real")

    outcome, fake = await start_call(body, channel_check=checks, on_refused=refuse)
    await fake.expect("VERBOSE real 1", "200 result=1")
    await fake.wait_closed()
    assert outcome.values["verified"] is True
    assert checks.asked == [("PJSIP/alice-00000001", "1732800000.17")]


@pytest.mark.parametrize(
    ("checks", "env", "logged"),
    [
        (Checks(), {}, "refused PJSIP/alice-00000001 (uniqueid 1732800000.17): not a live"),
        (Checks(), {"agi_uniqueid": ""}, "refused PJSIP/alice-00000001: no agi_uniqueid"),
        (
            Checks("1732800000.17", error=ConnectionRefusedError(111, "Connection refused")),
            {},
            "refused PJSIP/alice-00000001: cannot check the channel (ConnectionRefusedError: "
            "[Errno 111] Connection refused); a feature code that cannot be verified changes "
            "nothing",
        ),
    ],
    ids=["not-live", "no-uniqueid", "ari-down"],
)
async def test_a_session_whose_channel_is_not_verified_hears_the_refusal_only(
    make_server: MakeServer,
    fakes: list[FakeAsterisk],
    caplog: pytest.LogCaptureFixture,
    checks: Checks,
    env: dict[str, str],
    logged: str,
) -> None:
    outcome = Outcome()
    server = await make_server(
        {"login": outcome.handler(lambda s, v: asyncio.sleep(0))},
        channel_check=checks,
        on_refused=refuse,
    )
    fake = await connect(server, fakes)
    await fake.send_env(**env)
    await fake.expect('STREAM FILE feature-not-avail-line ""', "200 result=0 endpos=100")
    await fake.expect("HANGUP", "200 result=1")
    await fake.wait_closed()
    assert outcome.calls == 0
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert logged in record.getMessage()
    assert server.stats["verified"] == 0


async def test_a_check_that_does_not_answer_in_time_refuses(
    make_server: MakeServer, fakes: list[FakeAsterisk], caplog: pytest.LogCaptureFixture
) -> None:
    checks = Checks("1732800000.17")
    checks.release = asyncio.Event()  # never set: ARI hangs
    server = await make_server({"login": refuse}, channel_check=checks, check_timeout=SHORT)
    fake = await connect(server, fakes)
    await fake.send_env()
    await fake.expect("HANGUP", "200 result=1")  # no on_refused: hung up
    await fake.wait_closed()
    assert "cannot check the channel (no answer within 0.2 s)" in caplog.text
    assert server.stats["unverifiable"] == 1


async def test_a_silent_peer_makes_room_for_a_new_one_and_a_talking_peer_is_spared(
    make_server: MakeServer, fakes: list[FakeAsterisk], caplog: pytest.LogCaptureFixture
) -> None:
    outcome = Outcome()

    async def body(session: AgiSession, seen: dict[str, Any]) -> None:
        seen.setdefault("served", []).append(session.request.channel)
        await session.verbose("served")

    server = await make_server(
        {"login": outcome.handler(body)}, max_unverified=10, max_unverified_per_source=2
    )
    silent = await connect(server, fakes)
    talking = await connect(server, fakes)
    await talking.send("agi_network: yes")  # the start of an environment, the rest to come
    async with asyncio.timeout(WAIT):
        while server.unverified_sessions < 2:
            await asyncio.sleep(0.01)

    newcomer = await connect(server, fakes)  # the third from 127.0.0.1: one must go
    await silent.wait_closed()
    assert server.stats["evicted"] == 1
    assert "dropped (silent so far) to make room for a new connection" in caplog.text

    await newcomer.send_env(agi_channel="PJSIP/new-00000002")
    await newcomer.expect("VERBOSE served 1", "200 result=1")
    await newcomer.wait_closed()
    await talking.send(  # the rest of it
        "agi_network_script: login", "agi_channel: PJSIP/talking-00000003", ""
    )
    await talking.expect("VERBOSE served 1", "200 result=1")
    await talking.wait_closed()
    assert outcome.values["served"] == ["PJSIP/new-00000002", "PJSIP/talking-00000003"]


async def test_the_server_accepts_no_faster_than_it_checks(
    make_server: MakeServer, fakes: list[FakeAsterisk]
) -> None:
    checks = Checks(*(f"1.{n}" for n in range(4)))
    checks.release = asyncio.Event()
    outcome = Outcome()
    server = await make_server(
        {"login": outcome.handler(lambda s, v: s.verbose("ok"))},
        channel_check=checks,
        max_checks=1,
    )
    first, second = await connect(server, fakes), await connect(server, fakes)
    await first.send_env(agi_uniqueid="1.0")
    await second.send_env(agi_uniqueid="1.1")
    async with asyncio.timeout(WAIT):
        while len(checks.asked) < 1 or server.unverified_sessions < 2:
            await asyncio.sleep(0.01)
    # One being checked, one waiting: the server stops accepting; a third connection
    # waits in the kernel's queue, its environment sent, until checks catch up.
    third = await connect(server, fakes)
    await third.send_env(agi_uniqueid="1.2")
    await asyncio.sleep(SHORT)
    assert server.stats["connections"] == 2

    checks.release.set()
    for fake in (first, second, third):
        await fake.expect("VERBOSE ok 1", "200 result=1")
        await fake.wait_closed()
    assert server.stats["connections"] == 3 and server.stats["verified"] == 3
