"""The simulated SIP phones: message parsing as tables, then phones talking to each other
(and to a raw UDP socket) over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sandbox import phones as phones_module
from sandbox.phones import (
    Answer,
    CallFailed,
    PhoneBank,
    PhoneTimeout,
    SipMessage,
    SipParseError,
    build_response,
    header_param,
    parse_message,
    uri_of,
    uri_user,
)

INVITE = (
    b"INVITE sip:alice@127.0.0.1:5062 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK-top\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-second\r\n"
    b"From: <sip:asterisk@127.0.0.1>;tag=from-tag\r\n"
    b"To: <sip:alice@127.0.0.1:5062>\r\n"
    b"Contact: <sip:asterisk@127.0.0.1:5060>\r\n"
    b"Call-ID: call-1@127.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\r\n"  # two bytes more than Content-Length: ignored
)


# --- parsing --------------------------------------------------------------------------


def test_parse_request() -> None:
    message = parse_message(INVITE)
    assert message.is_request
    assert (message.method, message.kind, message.uri) == (
        "INVITE",
        "INVITE",
        "sip:alice@127.0.0.1:5062",
    )
    assert message.call_id == "call-1@127.0.0.1"
    assert message.cseq == (7, "INVITE")
    assert message.branch == "z9hG4bK-top"
    assert message.from_tag == "from-tag"
    assert message.to_tag is None
    assert len(message.headers_named("via")) == 2
    assert message.body == b"v=0\r"


def test_parse_response_with_compact_and_folded_headers() -> None:
    message = parse_message(
        b"SIP/2.0 486 Busy Here\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n"
        b"f: <sip:bob@127.0.0.1>;tag=a\r\n"
        b"t: <sip:alice@127.0.0.1>\r\n"
        b" ;tag=b\r\n"
        b"i: c@h\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"l: 0\r\n\r\n"
    )
    assert not message.is_request
    assert (message.status, message.reason, message.kind, message.method) == (
        486,
        "Busy Here",
        "486",
        "INVITE",
    )
    assert message.header("To") == "<sip:alice@127.0.0.1> ;tag=b"
    assert message.to_tag == "b"
    assert message.header("Content-Length") == "0"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n", "no blank line"),
        (b"HELLO\r\n\r\n", "bad request line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "bad status line"),
        (b"INVITE sip:a@b SIP/2.0\r\nnot a header\r\n\r\n", "bad header line"),
        (INVITE.replace(b"Call-ID: call-1@127.0.0.1\r\n", b""), "no Call-ID"),
        (INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: seven"), "bad CSeq"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 400"), "truncated"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: x"), "Content-Length"),
    ],
)
def test_parse_errors(data: bytes, error: str) -> None:
    with pytest.raises(SipParseError, match=error):
        parse_message(data)


@pytest.mark.parametrize(
    ("value", "name", "expected"),
    [
        ('"Bob" <sip:bob@h;tag=uri-param>;tag=abc', "tag", "abc"),
        ("<sip:bob@h>", "tag", None),
        ("SIP/2.0/UDP h:5060;rport;branch=z9hG4bK1", "branch", "z9hG4bK1"),
        ("SIP/2.0/UDP h:5060;rport;branch=z9hG4bK1", "rport", ""),
        ("sip:bob@h;TAG=x", "tag", "x"),
    ],
)
def test_header_param(value: str, name: str, expected: str | None) -> None:
    assert header_param(value, name) == expected


@pytest.mark.parametrize(
    ("value", "uri", "user"),
    [
        ('"Bob" <sip:bob@127.0.0.1:5060>;tag=1', "sip:bob@127.0.0.1:5060", "bob"),
        ("sip:201@h;user=phone", "sip:201@h", "201"),
        ("<sip:h:5060>", "sip:h:5060", ""),
    ],
)
def test_uri_helpers(value: str, uri: str, user: str) -> None:
    assert uri_of(value) == uri
    assert uri_user(uri) == user


def test_build_response_copies_the_transaction_and_adds_a_to_tag() -> None:
    request = parse_message(INVITE)
    response = build_response(
        request, 180, to_tag="mine", headers=[("Contact", "<sip:alice@127.0.0.1:5062>")]
    )
    again = parse_message(response.to_bytes())
    assert again.start_line == "SIP/2.0 180 Ringing"
    assert again.headers_named("Via") == request.headers_named("Via")
    assert again.to_tag == "mine"
    assert again.from_tag == "from-tag"
    assert (again.call_id, again.cseq) == (request.call_id, (7, "INVITE"))
    assert again.header("Content-Length") == "0"
    # A 100 Trying carries no To tag; a tag already there is kept.
    assert build_response(request, 100, to_tag="mine").to_tag is None
    tagged = SipMessage(
        request.start_line, [(n, f"{v};tag=old" if n == "To" else v) for n, v in request.headers]
    )
    assert build_response(tagged, 200, to_tag="new").to_tag == "old"


def test_serialised_body_gets_its_content_length() -> None:
    message = SipMessage("INFO sip:a@b SIP/2.0", [("Content-Length", "99")], b"Signal=1\r\n")
    data = message.to_bytes()
    assert b"Content-Length: 10\r\n\r\nSignal=1\r\n" in data
    assert data.count(b"Content-Length") == 1


# --- phones talking -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retransmission timers at a tenth of RFC 3261's, so tests stay quick."""
    monkeypatch.setattr(phones_module, "T1", 0.05)
    monkeypatch.setattr(phones_module, "T2", 0.4)


@pytest.fixture
async def bank() -> AsyncIterator[PhoneBank]:
    async with PhoneBank() as phones:
        yield phones


async def test_call_answered_then_caller_hangs_up(bank: PhoneBank) -> None:
    caller, callee = await bank.add_many(["caller", "callee"])
    callee.answer(after=0.05)
    call = await caller.call("callee", callee.port)
    await call.wait_answered(timeout=2)
    invite = await callee.wait_for("INVITE")
    assert uri_user(uri_of(invite.message.require("From"))) == "caller"
    await callee.wait_for("ACK")
    incoming = await callee.wait_for_call()
    assert incoming.state == "confirmed"
    assert [e.kind for e in callee.events if e.direction == "out"] == ["180", "200"]
    assert [e.kind for e in caller.events if e.direction == "in"] == ["180", "200"]
    sdp = caller.matching("200")[0].message.body.decode()
    assert f"m=audio {callee.rtp_port} RTP/AVP 0" in sdp
    await call.hangup()
    bye = await callee.wait_for("BYE")
    assert bye.call_id == call.call_id
    assert (call.state, incoming.state) == ("ended", "ended")
    assert (call.ended_by, incoming.ended_by) == ("local", "remote")
    assert caller.matching("200", method="BYE")


async def test_callee_hangs_up_an_answered_call(bank: PhoneBank) -> None:
    caller, callee = await bank.add_many(["caller", "callee"], behaviour=Answer())
    call = await caller.call("x", callee.port)
    await call.wait_answered(timeout=2)
    await callee.hangup()
    await caller.wait_for("BYE")
    await call.wait_ended(timeout=2)
    assert call.ended_by == "remote"


async def test_cancel_while_ringing(bank: PhoneBank) -> None:
    caller, callee = await bank.add_many(["caller", "callee"])
    call = await caller.call("callee", callee.port)
    await call.wait_state("early", timeout=2)
    await call.hangup()
    cancel = await callee.wait_for("CANCEL")
    assert cancel.message.branch == call.invite.branch  # same transaction as the INVITE
    await callee.wait_for("487", direction="out")
    await callee.wait_for("ACK")  # the caller acknowledged the 487
    assert (call.state, call.status) == ("ended", 487)
    assert (await callee.wait_for_call()).state == "ended"


@pytest.mark.parametrize(("behaviour", "status"), [("busy", 486), ("reject", 480)])
async def test_busy_and_reject(bank: PhoneBank, behaviour: str, status: int) -> None:
    caller, callee = await bank.add_many(["caller", "callee"])
    callee.busy() if behaviour == "busy" else callee.reject(480)
    call = await caller.call("callee", callee.port)
    with pytest.raises(CallFailed) as failed:
        await call.wait_answered(timeout=2)
    assert failed.value.status == status
    await callee.wait_for("ACK")
    assert call.state == "failed"


async def test_behaviour_changes_between_calls(bank: PhoneBank) -> None:
    caller, callee = await bank.add_many(["caller", "callee"])
    callee.busy()
    first = await caller.call("callee", callee.port)
    with pytest.raises(CallFailed):
        await first.wait_answered(timeout=2)
    callee.answer()
    second = await caller.call("callee", callee.port)
    await second.wait_answered(timeout=2)
    assert [c.status for c in callee.calls.values()] == [486, 200]


async def test_silent_phone_gets_retransmissions_then_cancel(bank: PhoneBank) -> None:
    caller, callee = await bank.add_many(["caller", "callee"])
    callee.silent()
    call = await caller.call("callee", callee.port)
    retransmitted = await callee.wait_for("INVITE", n=3, retransmissions=True)
    assert retransmitted.retransmission
    assert len(callee.matching("INVITE")) == 1
    assert len(callee.calls) == 1
    assert [e.kind for e in callee.events if e.direction == "out"] == []
    await call.hangup()  # no provisional: waits briefly, then CANCELs anyway
    await callee.wait_for("CANCEL")
    assert (call.state, call.status) == ("ended", 487)


async def test_answer_now_and_dtmf(bank: PhoneBank) -> None:
    caller, callee = await bank.add_many(["caller", "callee"])
    call = await caller.call("callee", callee.port)
    await callee.wait_for("INVITE")
    callee.answer_now()
    await call.wait_answered(timeout=2)
    await call.send_dtmf("5#")
    first = await callee.wait_for("INFO")
    second = await callee.wait_for("INFO", n=2)
    assert first.message.header("Content-Type") == "application/dtmf-relay"
    assert first.message.body.startswith(b"Signal=5\r\n")
    assert second.message.body.startswith(b"Signal=#\r\n")
    with pytest.raises(ValueError, match="DTMF"):
        await call.send_dtmf("x")


async def test_wait_for_times_out_with_what_happened(bank: PhoneBank) -> None:
    phone = await bank.add("lonely")
    with pytest.raises(
        PhoneTimeout,
        match=r"lonely: no in CANCEL #1 within 0.05 s; events: "
        r"nothing",
    ):
        await phone.wait_for("CANCEL", timeout=0.05)


# --- a raw peer: retransmissions, OPTIONS, unknown dialogs ----------------------------


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[SipMessage] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(parse_message(data))

    async def next(self, timeout: float = 2.0) -> SipMessage:
        async with asyncio.timeout(timeout):
            return await self.received.get()


@pytest.fixture
async def raw() -> AsyncIterator[tuple[RawPeer, asyncio.DatagramTransport]]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    yield peer, transport
    transport.close()


async def test_invite_retransmission_repeats_the_response(
    bank: PhoneBank, raw: tuple[RawPeer, asyncio.DatagramTransport]
) -> None:
    peer, transport = raw
    phone = await bank.add("alice")
    transport.sendto(INVITE, ("127.0.0.1", phone.port))
    first = await peer.next()
    transport.sendto(INVITE, ("127.0.0.1", phone.port))
    again = await peer.next()
    assert first.start_line == again.start_line == "SIP/2.0 180 Ringing"
    assert first.to_tag == again.to_tag
    assert first.header("Contact") == f"<sip:alice@127.0.0.1:{phone.port}>"
    assert len(phone.calls) == 1
    assert [e.retransmission for e in phone.events if e.kind == "INVITE"] == [False, True]


async def test_200_is_retransmitted_until_ack(
    bank: PhoneBank, raw: tuple[RawPeer, asyncio.DatagramTransport]
) -> None:
    peer, transport = raw
    phone = await bank.add("alice", behaviour=Answer())
    transport.sendto(INVITE, ("127.0.0.1", phone.port))
    assert (await peer.next()).status == 180
    ok = await peer.next()
    assert ok.status == 200 and ok.body.startswith(b"v=0")
    assert (await peer.next()).status == 200  # no ACK yet: retransmitted
    ack = (
        f"ACK sip:alice@127.0.0.1:{phone.port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ack\r\n"
        "From: <sip:asterisk@127.0.0.1>;tag=from-tag\r\n"
        f"To: <sip:alice@127.0.0.1:5062>;tag={ok.to_tag}\r\n"
        "Call-ID: call-1@127.0.0.1\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    transport.sendto(ack.encode(), ("127.0.0.1", phone.port))
    await phone.wait_for("ACK")
    while not peer.received.empty():  # retransmissions already under way
        peer.received.get_nowait()
    with pytest.raises(TimeoutError):
        await peer.next(timeout=0.3)
    await phone.close(hang_up=False)  # the raw peer would not answer a BYE


async def test_options_unknown_dialog_and_garbage(
    bank: PhoneBank, raw: tuple[RawPeer, asyncio.DatagramTransport]
) -> None:
    peer, transport = raw
    phone = await bank.add("alice")
    transport.sendto(b"\r\n\r\n", ("127.0.0.1", phone.port))  # keep-alive: ignored
    options = INVITE.replace(b"INVITE", b"OPTIONS")
    transport.sendto(options, ("127.0.0.1", phone.port))
    reply = await peer.next()
    assert reply.status == 200 and "INFO" in (reply.header("Allow") or "")
    bye = INVITE.replace(b"INVITE", b"BYE").replace(b"call-1@", b"unknown@")
    transport.sendto(bye, ("127.0.0.1", phone.port))
    assert (await peer.next()).status == 481
    assert [e.kind for e in phone.events] == ["OPTIONS", "200", "BYE", "481"]
