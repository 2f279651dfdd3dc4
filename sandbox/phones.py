"""Simulated SIP phones: asyncio UDP user agents on loopback, for tests and benchmarks.

A :class:`SimulatedPhone` is enough of a SIP user agent for Asterisk's PJSIP to ring,
cancel, bridge and hang up: it answers INVITE according to its behaviour (:class:`Ring`,
:class:`Answer`, :class:`Busy`, :class:`Silent`, :class:`Reject`), answers CANCEL with 200
and the INVITE with 487, BYE/OPTIONS/INFO with 200, handles retransmissions in both
directions, and can place calls itself (:meth:`SimulatedPhone.call`), send DTMF as SIP
INFO (``application/dtmf-relay``) and hang up (BYE or CANCEL).

Every message in and out is recorded as a :class:`PhoneEvent` with a ``time.monotonic()``
timestamp; tests wait on them with :meth:`SimulatedPhone.wait_for` instead of sleeping.

Deliberate simplifications: UDP only, no authentication, no route sets (requests in a
dialog go to the address the dialog's first message came from), media is one RTP socket
per phone that discards what it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

#: RFC 3261 timers (seconds).
T1 = 0.5
T2 = 4.0
TRANSACTION_TIMEOUT = 64 * T1

Address = tuple[str, int]
Direction = Literal["in", "out"]
CallState = Literal["calling", "early", "confirmed", "ended", "failed"]

# ---------------------------------------------------------------------------------------
# Messages: pure parsing and building
# ---------------------------------------------------------------------------------------

_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "Record-Route",
        "Route",
        "User-Agent",
        "Server",
        "Allow",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Accept",
    )
}

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


class SipParseError(ValueError):
    """A datagram that is not a SIP message."""


class PhoneTimeout(TimeoutError):
    """What a test waited for did not happen; the message lists what did."""


class CallFailed(RuntimeError):
    """An outgoing call ended without being answered."""

    def __init__(self, call_id: str, status: int, reason: str) -> None:
        super().__init__(f"call {call_id} failed: {status} {reason}")
        self.call_id = call_id
        self.status = status
        self.reason = reason


def canonical_header(name: str) -> str:
    lower = name.strip().lower()
    lower = _COMPACT.get(lower, lower)
    return _CANONICAL.get(lower, name.strip())


@dataclass
class SipMessage:
    """One SIP request or response; header names canonical, order and repeats kept."""

    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        """The request's method, or for a response the method of its CSeq."""
        return self.start_line.split(" ", 1)[0] if self.is_request else self.cseq[1]

    @property
    def uri(self) -> str:
        return self.start_line.split(" ")[1] if self.is_request else ""

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start_line.split(" ")[1])

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if not self.is_request and len(parts) > 2 else ""

    @property
    def kind(self) -> str:
        """``INVITE``, ``BYE``... for requests; ``180``, ``200``... for responses."""
        return self.method if self.is_request else str(self.status)

    def header(self, name: str) -> str | None:
        wanted = canonical_header(name).lower()
        return next((v for n, v in self.headers if n.lower() == wanted), None)

    def headers_named(self, name: str) -> list[str]:
        wanted = canonical_header(name).lower()
        return [v for n, v in self.headers if n.lower() == wanted]

    def require(self, name: str) -> str:
        value = self.header(name)
        if value is None:
            raise SipParseError(f"{self.start_line!r}: no {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self.require("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.require("CSeq").partition(" ")
        if not number.isdigit() or not method.strip():
            raise SipParseError(f"bad CSeq {self.header('CSeq')!r}")
        return int(number), method.strip()

    @property
    def branch(self) -> str:
        """The branch of the top Via (the transaction id)."""
        top = self.require("Via").split(",")[0]
        return header_param(top, "branch") or ""

    @property
    def from_tag(self) -> str | None:
        return header_param(self.require("From"), "tag")

    @property
    def to_tag(self) -> str | None:
        return header_param(self.require("To"), "tag")

    def to_bytes(self) -> bytes:
        lines = [self.start_line]
        lines += [f"{n}: {v}" for n, v in self.headers if n != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse_message(data: bytes) -> SipMessage:
    """Parse one datagram; raise :class:`SipParseError` when it is not SIP."""
    if not data.strip():
        raise SipParseError("empty datagram (keep-alive)")
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, rest = data.partition(b"\n\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    lines = re.split(r"\r?\n", head.decode("utf-8", errors="replace"))
    start = lines[0].strip()
    parts = start.split(" ")
    if start.startswith("SIP/2.0 "):
        if len(parts) < 2 or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise SipParseError(f"bad status line {start!r}")
    elif len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[0].isalpha():
        raise SipParseError(f"bad request line {start!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t":
            if not headers:
                raise SipParseError(f"continuation line before any header: {line!r}")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipParseError(f"bad header line {line!r}")
        headers.append((canonical_header(name), value.strip()))
    message = SipMessage(start, headers)
    length = message.header("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise SipParseError(f"bad Content-Length {length!r}")
        if int(length) > len(rest):
            raise SipParseError(f"body truncated: {len(rest)} of {length} bytes")
        rest = rest[: int(length)]
    message.body = rest
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        message.require(required)
    message.cseq  # noqa: B018 (validates it)
    return message


def header_param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header (outside any ``<...>``); '' if valueless."""
    params = value.rsplit(">", 1)[1] if "<" in value and ">" in value else value
    for item in params.split(";")[1:]:
        key, _, val = item.partition("=")
        if key.strip().lower() == name.lower():
            return val.strip()
    return None


def uri_of(value: str) -> str:
    """The URI of a From/To/Contact value (``"A" <sip:a@h>;tag=x`` -> ``sip:a@h``)."""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()


def uri_user(uri: str) -> str:
    """``sip:alice@127.0.0.1:5060`` -> ``alice``."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""


def build_response(
    request: SipMessage,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> SipMessage:
    """A response to ``request`` (RFC 3261 8.2.6): Vias, From, Call-ID, CSeq copied."""
    out: list[tuple[str, str]] = [("Via", v) for v in request.headers_named("Via")]
    if 100 < status < 300:
        out += [("Record-Route", v) for v in request.headers_named("Record-Route")]
    out.append(("From", request.require("From")))
    to = request.require("To")
    if to_tag and status > 100 and header_param(to, "tag") is None:
        to = f"{to};tag={to_tag}"
    out += [("To", to), ("Call-ID", request.call_id), ("CSeq", request.require("CSeq"))]
    out += list(headers)
    if body:
        out.append(("Content-Type", content_type))
    return SipMessage(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", out, body)


def build_sdp(user: str, rtp_port: int, session: int, host: str = "127.0.0.1") -> bytes:
    """An audio offer/answer: G.711 u-law only, on ``host:rtp_port``."""
    return (
        f"v=0\r\no={user} {session} {session} IN IP4 {host}\r\ns=callrouter-sandbox\r\n"
        f"c=IN IP4 {host}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    ).encode()


def _new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def _new_tag() -> str:
    return secrets.token_hex(6)


# ---------------------------------------------------------------------------------------
# Behaviours and events
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ring:
    """Answer INVITE with 180 and keep ringing."""


@dataclass(frozen=True)
class Answer:
    """180, then 200 OK with SDP after ``after`` seconds."""

    after: float = 0.0


@dataclass(frozen=True)
class Busy:
    """486 Busy Here."""


@dataclass(frozen=True)
class Silent:
    """No response at all (the INVITE is retransmitted, then times out)."""


@dataclass(frozen=True)
class Reject:
    """A final response ``code`` (e.g. 603, 480)."""

    code: int = 603
    reason: str | None = None


Behaviour = Ring | Answer | Busy | Silent | Reject


@dataclass(frozen=True)
class PhoneEvent:
    """One SIP message a phone received (``in``) or sent (``out``)."""

    time: float
    direction: Direction
    kind: str  # INVITE, CANCEL, ... or "180", "200", ...
    method: str  # the request's method, or the CSeq method of a response
    call_id: str
    message: SipMessage
    retransmission: bool = False


# ---------------------------------------------------------------------------------------
# Calls (dialogs)
# ---------------------------------------------------------------------------------------


class Call:
    """One call of a phone, incoming (Asterisk rang it) or outgoing (it dialled)."""

    def __init__(
        self,
        phone: SimulatedPhone,
        direction: Literal["incoming", "outgoing"],
        invite: SipMessage,
        peer: Address,
        local_tag: str,
    ) -> None:
        self.phone = phone
        self.direction = direction
        self.invite = invite
        self.call_id = invite.call_id
        self.peer = peer
        self.local_tag = local_tag
        self.remote_tag: str | None = None
        self.remote_target = ""
        self.state: CallState = "calling"
        self.status = 0  # the INVITE's final status (0 while there is none)
        self.reason = ""
        self.created = time.monotonic()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.ended_by: Literal["local", "remote"] | None = None
        self.local_cseq = 1 if direction == "outgoing" else 0
        self.behaviour: Behaviour | None = None
        self._last_response: SipMessage | None = None  # incoming: resent on retransmission
        self._acked = False
        self._ack: SipMessage | None = None  # outgoing: resent on 2xx retransmission
        self._got_response = asyncio.Event()
        self._cancelling = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._answer_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Call {self.direction} {self.phone.name} {self.call_id} {self.state}>"

    # -- dialog headers ---------------------------------------------------------------

    @property
    def local_header(self) -> str:
        base = self.invite.require("From" if self.direction == "outgoing" else "To")
        return base if header_param(base, "tag") else f"{base};tag={self.local_tag}"

    @property
    def remote_header(self) -> str:
        base = self.invite.require("To" if self.direction == "outgoing" else "From")
        if self.direction == "outgoing" and self.remote_tag and not header_param(base, "tag"):
            return f"{base};tag={self.remote_tag}"
        return base

    def _request(
        self, method: str, *, body: bytes = b"", content_type: str = "", cseq: int | None = None
    ) -> SipMessage:
        """A request in this dialog (``cseq`` given: reuse it, as an ACK does)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        headers = [
            (
                "Via",
                f"SIP/2.0/UDP {self.phone.host}:{self.phone.port};branch={_new_branch()};rport",
            ),
            ("Max-Forwards", "70"),
            ("From", self.local_header),
            ("To", self.remote_header),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", self.phone.user_agent),
        ]
        if content_type:
            headers.append(("Content-Type", content_type))
        return SipMessage(
            f"{method} {self.remote_target or self.invite.uri} SIP/2.0", headers, body
        )

    # -- waiting ----------------------------------------------------------------------

    async def wait_state(self, *states: CallState, timeout: float = 5.0) -> CallState:
        await self.phone._wait_until(
            lambda: self.state in states, timeout, f"{self!r} to reach {states}"
        )
        return self.state

    async def wait_answered(self, timeout: float = 10.0) -> None:
        """Wait until answered; raise :class:`CallFailed` if it ended unanswered."""
        await self.wait_state("confirmed", "ended", "failed", timeout=timeout)
        if self.answered_at is None:
            raise CallFailed(self.call_id, self.status, self.reason)

    async def wait_ended(self, timeout: float = 10.0) -> None:
        await self.wait_state("ended", "failed", timeout=timeout)

    # -- incoming: answering ----------------------------------------------------------

    def _respond(
        self,
        status: int,
        reason: str | None = None,
        *,
        sdp: bool = False,
        to: SipMessage | None = None,
    ) -> SipMessage:
        request = to or self.invite
        headers = [("Server", self.phone.user_agent)]
        if request is self.invite and 100 < status < 300:
            headers.append(
                ("Contact", f"<sip:{self.phone.name}@{self.phone.host}:{self.phone.port}>")
            )
        body = build_sdp(self.phone.name, self.phone.rtp_port, self.phone.session) if sdp else b""
        response = build_response(
            request, status, reason, to_tag=self.local_tag, headers=headers, body=body
        )
        if request is self.invite:
            self._last_response = response
        self.phone._send(response, self.peer)
        return response

    @property
    def pending(self) -> bool:
        """An incoming call still waiting for its final response."""
        return self.direction == "incoming" and self.status == 0

    def answer_now(self) -> None:
        """Answer a ringing incoming call (200 OK with SDP) now."""
        if not self.pending:
            raise RuntimeError(f"{self!r} is not ringing (status {self.status})")
        self._cancel_answer_timer()
        self._respond(200, sdp=True)
        self.status, self.reason = 200, "OK"
        self.answered_at = time.monotonic()
        self._set_state("confirmed")
        self._spawn(self._retransmit_2xx())

    def reject_now(self, code: int = 603, reason: str | None = None) -> None:
        """End a ringing incoming call with a final response ``code`` now."""
        if not self.pending:
            raise RuntimeError(f"{self!r} is not ringing (status {self.status})")
        self._cancel_answer_timer()
        response = self._respond(code, reason)
        self.status, self.reason = code, response.start_line.split(" ", 2)[-1]
        self.ended_at = time.monotonic()
        self.ended_by = "local"
        self._set_state("failed")

    async def _retransmit_2xx(self) -> None:
        interval = T1
        deadline = time.monotonic() + TRANSACTION_TIMEOUT
        while not self._acked and self.state == "confirmed":
            await asyncio.sleep(interval)
            if self._acked or self.state != "confirmed" or self._last_response is None:
                return
            if time.monotonic() > deadline:
                log.warning("%s: no ACK for 200 OK of %s", self.phone.name, self.call_id)
                return
            self.phone._send(self._last_response, self.peer, retransmission=True)
            interval = min(interval * 2, T2)

    def _cancel_answer_timer(self) -> None:
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None

    # -- outgoing: the INVITE client transaction --------------------------------------

    async def _send_invite(self) -> None:
        self.phone._send(self.invite, self.peer)
        interval = T1
        deadline = time.monotonic() + TRANSACTION_TIMEOUT
        while not self._got_response.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._got_response.wait()
                break
            if time.monotonic() > deadline:
                self.status, self.reason = 408, "Request Timeout (no response)"
                self._end("failed", by=None)
                return
            self.phone._send(self.invite, self.peer, retransmission=True)
            interval *= 2

    def _on_invite_response(self, response: SipMessage) -> None:
        self._got_response.set()
        status = response.status
        if status < 200:
            if status > 100 and self.state == "calling":
                self.remote_tag = response.to_tag or self.remote_tag
                self._set_state("early")
            return
        if 200 <= status < 300:
            if self._ack is not None:  # a retransmitted 200: the ACK got lost
                self.phone._send(self._ack, self.peer, retransmission=True)
                return
            self.remote_tag = response.to_tag
            contact = response.header("Contact")
            self.remote_target = uri_of(contact) if contact else self.invite.uri
            self.status, self.reason = status, response.reason
            self._ack = self._request("ACK", cseq=self.invite.cseq[0])
            self.phone._send(self._ack, self.peer)
            self.answered_at = time.monotonic()
            self._set_state("confirmed")
            if self._cancelling:  # 200 crossed our CANCEL: end the call properly
                self._spawn(self.hangup())
            return
        # A final failure: ACK it in the INVITE's transaction (same branch).
        ack = SipMessage(
            f"ACK {self.invite.uri} SIP/2.0",
            [
                ("Via", self.invite.require("Via")),
                ("Max-Forwards", "70"),
                ("From", self.invite.require("From")),
                ("To", response.require("To")),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self.invite.cseq[0]} ACK"),
            ],
        )
        self.phone._send(ack, self.peer, retransmission=self.status != 0)
        if self.status == 0:
            self.status, self.reason = status, response.reason
            self._end(
                "ended" if self._cancelling else "failed",
                by="local" if self._cancelling else "remote",
            )

    # -- ending -----------------------------------------------------------------------

    async def hangup(self, timeout: float = 5.0) -> None:
        """Hang up: BYE when answered, CANCEL while an outgoing call rings,
        603 Decline while an incoming call rings; nothing when already over."""
        if self.state in ("ended", "failed"):
            return
        if self.state == "confirmed":
            bye = self._request("BYE")
            self._end("ended", by="local")
            await self.phone._transaction(bye, self.peer, timeout=timeout)
            return
        if self.direction == "incoming":
            self.reject_now(603)
            return
        self._cancelling = True
        if not self._got_response.is_set():  # RFC 3261 9.1: CANCEL after a provisional
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * T1):
                    await self._got_response.wait()
        if self.state in ("ended", "failed", "confirmed"):
            return  # it ended meanwhile, or the 200's handler sends BYE
        cancel = SipMessage(
            f"CANCEL {self.invite.uri} SIP/2.0",
            [
                ("Via", self.invite.require("Via")),
                ("Max-Forwards", "70"),
                ("From", self.invite.require("From")),
                ("To", self.invite.require("To")),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self.invite.cseq[0]} CANCEL"),
                ("User-Agent", self.phone.user_agent),
            ],
        )
        await self.phone._transaction(cancel, self.peer, timeout=timeout)
        await self.wait_state("ended", "failed", "confirmed", timeout=timeout)

    async def send_dtmf(self, digits: str, *, duration_ms: int = 250, timeout: float = 5.0) -> None:
        """Send digits as SIP INFO ``application/dtmf-relay`` (endpoint dtmf_mode=info)."""
        if self.state != "confirmed":
            raise RuntimeError(f"{self!r}: DTMF needs an answered call")
        for digit in digits:
            if digit not in "0123456789*#ABCD":
                raise ValueError(f"not a DTMF digit: {digit!r}")
            body = f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
            info = self._request("INFO", body=body, content_type="application/dtmf-relay")
            response = await self.phone._transaction(info, self.peer, timeout=timeout)
            if response.status >= 300:
                raise RuntimeError(f"{self!r}: INFO for {digit!r} got {response.start_line}")

    def _end(self, state: CallState, by: Literal["local", "remote"] | None) -> None:
        self._cancel_answer_timer()
        if self.ended_at is None:
            self.ended_at = time.monotonic()
            self.ended_by = by
        self._set_state(state)

    def _set_state(self, state: CallState) -> None:
        if state != self.state:
            log.debug("%s: call %s %s -> %s", self.phone.name, self.call_id, self.state, state)
            self.state = state
        self.phone._notify()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        self.phone._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self.phone._tasks.discard)


# ---------------------------------------------------------------------------------------
# A phone
# ---------------------------------------------------------------------------------------


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, phone: SimulatedPhone) -> None:
        self.phone = phone

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.phone._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: socket error %s", self.phone.name, exc)


class _Discard(asyncio.DatagramProtocol):
    """The phone's RTP socket: media is accepted and dropped."""


class SimulatedPhone:
    """A SIP phone on ``host:port`` (UDP); ``port=0`` lets the OS pick one."""

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.rtp_port = 0
        self.behaviour: Behaviour = behaviour or Ring()
        self.user_agent = f"callrouter-sandbox-phone/{name}"
        self.session = int(time.time())
        self.events: list[PhoneEvent] = []
        self.calls: dict[str, Call] = {}
        #: Called with every event as it is recorded (the demo prints them).
        self.on_event: Callable[[SimulatedPhone, PhoneEvent], None] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._client_transactions: dict[str, asyncio.Future[SipMessage]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<SimulatedPhone {self.name} {self.host}:{self.port} {self.behaviour}>"

    async def start(self) -> SimulatedPhone:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _SipProtocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        rtp, _ = await loop.create_datagram_endpoint(_Discard, local_addr=(self.host, 0))
        self._rtp = rtp
        self.rtp_port = rtp.get_extra_info("sockname")[1]
        return self

    async def close(self, *, hang_up: bool = True) -> None:
        """Hang up calls still going (best effort, so no channel leaks), then close."""
        if hang_up and self._transport is not None:
            for call in self.active_calls():
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await call.hangup(timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for transport in (self._transport, self._rtp):
            if transport is not None:
                transport.close()
        self._transport = self._rtp = None

    async def __aenter__(self) -> SimulatedPhone:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- behaviour (for the next INVITEs) ---------------------------------------------

    def ring(self) -> SimulatedPhone:
        self.behaviour = Ring()
        return self

    def answer(self, after: float = 0.0) -> SimulatedPhone:
        self.behaviour = Answer(after)
        return self

    def busy(self) -> SimulatedPhone:
        self.behaviour = Busy()
        return self

    def silent(self) -> SimulatedPhone:
        self.behaviour = Silent()
        return self

    def reject(self, code: int = 603, reason: str | None = None) -> SimulatedPhone:
        self.behaviour = Reject(code, reason)
        return self

    # -- events -----------------------------------------------------------------------

    def matching(
        self,
        kind: str,
        *,
        call_id: str | None = None,
        direction: Direction = "in",
        method: str | None = None,
        retransmissions: bool = False,
    ) -> list[PhoneEvent]:
        """Recorded events of ``kind`` (``INVITE``, ``CANCEL``, ``"200"``...)."""
        return [
            e
            for e in self.events
            if e.kind == kind
            and e.direction == direction
            and (call_id is None or e.call_id == call_id)
            and (method is None or e.method == method)
            and (retransmissions or not e.retransmission)
        ]

    async def wait_for(
        self,
        kind: str,
        timeout: float = 5.0,
        *,
        call_id: str | None = None,
        direction: Direction = "in",
        method: str | None = None,
        n: int = 1,
        retransmissions: bool = False,
    ) -> PhoneEvent:
        """Wait until the ``n``-th event of ``kind`` and return it (retransmitted
        messages count only with ``retransmissions=True``)."""

        def found() -> list[PhoneEvent]:
            return self.matching(
                kind,
                call_id=call_id,
                direction=direction,
                method=method,
                retransmissions=retransmissions,
            )

        await self._wait_until(lambda: len(found()) >= n, timeout, f"{direction} {kind} #{n}")
        return found()[n - 1]

    async def wait_for_call(self, timeout: float = 5.0, n: int = 1) -> Call:
        """The ``n``-th incoming call, once its INVITE arrived."""

        def incoming() -> list[Call]:
            return [c for c in self.calls.values() if c.direction == "incoming"]

        await self._wait_until(lambda: len(incoming()) >= n, timeout, f"incoming call #{n}")
        return incoming()[n - 1]

    def clear_events(self) -> None:
        """Forget recorded events and finished calls (between test steps)."""
        self.events.clear()
        for call_id in [c for c, call in self.calls.items() if call.state in ("ended", "failed")]:
            del self.calls[call_id]

    @property
    def last_call(self) -> Call | None:
        return next(reversed(self.calls.values()), None)

    def active_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.state not in ("ended", "failed")]

    # -- acting -----------------------------------------------------------------------

    async def call(self, extension: str, port: int, *, host: str = "127.0.0.1") -> Call:
        """Call ``extension`` at the SIP server ``host:port`` (Asterisk) as user ``name``.

        Returns at once with the :class:`Call`; await ``call.wait_answered()`` etc.
        """
        call_id = f"{secrets.token_hex(10)}@{self.host}"
        tag = _new_tag()
        uri = f"sip:{extension}@{host}:{port}"
        invite = SipMessage(
            f"INVITE {uri} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={_new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.name}@{self.host}>;tag={tag}"),
                ("To", f"<{uri}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:{self.name}@{self.host}:{self.port}>"),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"),
                ("User-Agent", self.user_agent),
                ("Content-Type", "application/sdp"),
            ],
            build_sdp(self.name, self.rtp_port, self.session, self.host),
        )
        call = Call(self, "outgoing", invite, (host, port), tag)
        self.calls[call_id] = call
        call._spawn(call._send_invite())
        return call

    def answer_now(self, call_id: str | None = None) -> Call:
        """Answer the (given or latest) ringing incoming call now."""
        call = self._find_call(call_id, lambda c: c.pending)
        call.answer_now()
        return call

    async def hangup(self, call_id: str | None = None) -> Call:
        """Hang up the given call, or the latest call still going."""
        call = self._find_call(call_id, lambda c: c.state not in ("ended", "failed"))
        await call.hangup()
        return call

    def _find_call(self, call_id: str | None, predicate: Callable[[Call], bool]) -> Call:
        if call_id is not None:
            return self.calls[call_id]
        for call in reversed(self.calls.values()):
            if predicate(call):
                return call
        raise LookupError(f"{self.name}: no such call (calls: {list(self.calls.values())})")

    # -- internals --------------------------------------------------------------------

    def _record(
        self, direction: Direction, message: SipMessage, retransmission: bool = False
    ) -> None:
        event = PhoneEvent(
            time.monotonic(),
            direction,
            message.kind,
            message.method,
            message.call_id,
            message,
            retransmission,
        )
        self.events.append(event)
        if self.on_event is not None:
            try:
                self.on_event(self, event)
            except Exception:
                log.exception("%s: on_event callback failed", self.name)
        self._notify()

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            seen = (
                ", ".join(
                    f"{e.direction}:{e.kind}" + ("(re)" if e.retransmission else "")
                    for e in self.events[-30:]
                )
                or "nothing"
            )
            raise PhoneTimeout(
                f"{self.name}: no {what} within {timeout} s; events: {seen}"
            ) from None

    def _send(self, message: SipMessage, addr: Address, retransmission: bool = False) -> None:
        if self._transport is None:
            raise RuntimeError(f"{self.name}: phone is not started (or closed)")
        self._transport.sendto(message.to_bytes(), addr)
        self._record("out", message, retransmission)

    async def _transaction(
        self, request: SipMessage, addr: Address, timeout: float = TRANSACTION_TIMEOUT
    ) -> SipMessage:
        """Send a non-INVITE request, retransmitting until a final response."""
        future: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        branch = request.branch
        self._client_transactions[branch] = future
        interval = T1
        try:
            self._send(request, addr)
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval):
                            return await asyncio.shield(future)
                    self._send(request, addr, retransmission=True)
                    interval = min(interval * 2, T2)
        except TimeoutError:
            raise PhoneTimeout(
                f"{self.name}: no response to {request.method} within {timeout} s"
            ) from None
        finally:
            self._client_transactions.pop(branch, None)

    def _received(self, data: bytes, addr: Address) -> None:
        try:
            message = parse_message(data)
        except SipParseError as exc:
            if data.strip():
                log.warning("%s: ignoring datagram from %s: %s", self.name, addr, exc)
            return
        try:
            if message.is_request:
                self._on_request(message, addr)
            else:
                self._on_response(message)
        except Exception:  # one bad message must not stop the phone
            log.exception("%s: failed to handle %r from %s", self.name, message.start_line, addr)

    def _on_response(self, response: SipMessage) -> None:
        call = self.calls.get(response.call_id)
        retransmission = (
            response.method == "INVITE"
            and call is not None
            and response.status >= 200
            and call.status != 0
            and call.direction == "outgoing"
        )
        self._record("in", response, retransmission)
        future = self._client_transactions.get(response.branch)
        if future is not None and response.status >= 200 and not future.done():
            future.set_result(response)
        if response.method == "INVITE" and call is not None and call.direction == "outgoing":
            call._on_invite_response(response)

    def _on_request(self, request: SipMessage, addr: Address) -> None:
        method = request.method
        call = self.calls.get(request.call_id)
        if method == "INVITE" and request.to_tag is None:
            if call is not None:  # a retransmission: repeat what we said
                self._record("in", request, retransmission=True)
                if call._last_response is not None:
                    self._send(call._last_response, addr, retransmission=True)
                return
            self._record("in", request)
            self._on_new_invite(request, addr)
            return
        self._record(
            "in", request, retransmission=method == "ACK" and call is not None and call._acked
        )
        if method == "ACK":
            if call is not None:
                call._acked = True
            return
        if method == "OPTIONS":
            self._reply(
                request,
                addr,
                200,
                headers=[
                    ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"),
                    ("Accept", "application/sdp"),
                ],
            )
            return
        if call is None:
            self._reply(request, addr, 481)
            return
        if method == "CANCEL":
            call._respond(200, to=request)
            if call.pending:
                call._respond(487)
                call.status, call.reason = 487, "Request Terminated"
                call._end("ended", by="remote")
        elif method == "BYE":
            call._respond(200, to=request)
            call._end("ended", by="remote")
        elif method == "INVITE":  # a re-INVITE in the dialog: same media again
            call._respond(200, sdp=True, to=request)
        elif method in ("INFO", "UPDATE", "NOTIFY", "MESSAGE", "PRACK"):
            call._respond(200, to=request)
        else:
            call._respond(501, to=request)

    def _reply(
        self,
        request: SipMessage,
        addr: Address,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._send(
            build_response(
                request, status, to_tag=_new_tag(), headers=[("Server", self.user_agent), *headers]
            ),
            addr,
        )

    def _on_new_invite(self, invite: SipMessage, addr: Address) -> None:
        call = Call(self, "incoming", invite, addr, _new_tag())
        contact = invite.header("Contact")
        call.remote_target = uri_of(contact) if contact else ""
        call.remote_tag = invite.from_tag
        call.behaviour = behaviour = self.behaviour
        self.calls[call.call_id] = call
        match behaviour:
            case Silent():
                pass
            case Ring():
                call._respond(180)
                call._set_state("early")
            case Answer(after=after):
                call._respond(180)
                call._set_state("early")
                if after <= 0:
                    call.answer_now()
                else:
                    call._answer_timer = asyncio.get_running_loop().call_later(
                        after, lambda: call.answer_now() if call.pending else None
                    )
            case Busy():
                call.reject_now(486)
            case Reject(code=code, reason=reason):
                call.reject_now(code, reason)


# ---------------------------------------------------------------------------------------
# Many phones
# ---------------------------------------------------------------------------------------


class PhoneBank:
    """Named :class:`SimulatedPhone` objects, each on its own UDP port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._phones: dict[str, SimulatedPhone] = {}

    async def add(
        self, name: str, *, port: int = 0, behaviour: Behaviour | None = None
    ) -> SimulatedPhone:
        if name in self._phones:
            raise ValueError(f"phone {name!r} exists already")
        phone = await SimulatedPhone(name, host=self.host, port=port, behaviour=behaviour).start()
        self._phones[name] = phone
        return phone

    async def add_many(
        self, names: Iterable[str], *, behaviour: Behaviour | None = None
    ) -> list[SimulatedPhone]:
        return [await self.add(name, behaviour=behaviour) for name in names]

    def __getitem__(self, name: str) -> SimulatedPhone:
        return self._phones[name]

    def __contains__(self, name: object) -> bool:
        return name in self._phones

    def __iter__(self) -> Iterator[SimulatedPhone]:
        return iter(list(self._phones.values()))

    def __len__(self) -> int:
        return len(self._phones)

    def contacts(self) -> dict[str, int]:
        """name -> UDP port, for ``AsteriskSandbox.add_phones``."""
        return {name: phone.port for name, phone in self._phones.items()}

    def all_events(self) -> list[tuple[str, PhoneEvent]]:
        """Every phone's events, oldest first."""
        merged = [(p.name, e) for p in self._phones.values() for e in p.events]
        return sorted(merged, key=lambda item: item[1].time)

    def clear_events(self) -> None:
        for phone in self._phones.values():
            phone.clear_events()

    async def close(self) -> None:
        for phone in list(self._phones.values()):
            await phone.close()
        self._phones.clear()

    async def __aenter__(self) -> PhoneBank:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
