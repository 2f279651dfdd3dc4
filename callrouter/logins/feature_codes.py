"""Workplace login from the phone: the feature codes, served over FastAGI.

From a workplace's phone, with the default prefix ``*44``:

* ``*44`` + extension + ``#`` + PIN  logs that user in at this workplace;
* ``*44`` + extension                asks for the PIN, then does the same;
* ``*44`` alone                      logs out whoever is at this workplace.

The workplace is always the one the calling phone belongs to.  Each outcome is
spoken with Asterisk's own sound files, then the call ends.

The calling phone is known from ``agi_channel`` alone, which any local process can
write: so nothing is done for a session whose channel the FastAGI server has not
verified (``AgiSession.channel_verified``: ARI knows a channel of that name and
uniqueid, running AGI).  The server hands sessions it refused to
:meth:`FeatureCodes.refuse_unverified`, which says "not available" and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from callrouter.agi import AgiCommandFailed, AgiError, AgiHangup, AgiSession, Handler
from callrouter.domain.directory import Workplace
from callrouter.domain.endpoint import caller_endpoint
from callrouter.domain.identifiers import EXTENSION_PATTERN, PIN_LENGTH
from callrouter.logins.policy import Refusal
from callrouter.logins.service import LoginDenied, LoginService

log = logging.getLogger(__name__)

AGI_SCRIPT = "workplace-login"
MAX_DIALED = 64  # more than prefix + 20-digit extension + # + 12-digit PIN is garbage
PIN_TIMEOUT_MS = 10_000
MAX_PIN_DIGITS = PIN_LENGTH

# Asterisk core sounds (English), by what they say.
NOT_AVAILABLE = "feature-not-avail-line"  # "... that feature is not available on this line"
ASK_PIN = "agent-pass"  # "Please enter your password followed by the pound key."
LOGGED_IN = "agent-loginok"  # "Agent logged in."
LOGGED_OUT = "agent-loggedoff"  # "Agent logged off."
GOODBYE = "goodbye"
PROMPTS: dict[Refusal | None, tuple[str, ...]] = {
    Refusal.BAD_CREDENTIALS: ("vm-incorrect",),  # "Login incorrect."
    Refusal.UNKNOWN_USER: ("vm-incorrect",),  # said the same way: never tell which
    Refusal.LOCKED: ("vm-incorrect", "please-try-call-later"),
    Refusal.NOT_ALLOWED: ("im-sorry", NOT_AVAILABLE),
    Refusal.OCCUPIED: ("im-sorry", "is-in-use"),
    Refusal.NOT_A_WORKPLACE_PHONE: (NOT_AVAILABLE,),
    Refusal.UNKNOWN_WORKPLACE: (NOT_AVAILABLE,),
    Refusal.BAD_INPUT: ("privacy-incorrect",),  # "I'm sorry, that number is not valid."
    None: ("im-sorry", "please-try-call-later"),  # our own failure
}
# What a session whose channel could not be verified hears (forged, or ARI down).
UNVERIFIED_PROMPTS = (NOT_AVAILABLE, GOODBYE)
ALL_PROMPTS = frozenset(
    {ASK_PIN, LOGGED_IN, LOGGED_OUT, GOODBYE, *UNVERIFIED_PROMPTS}
    | {name for names in PROMPTS.values() for name in names}
)


@dataclass(frozen=True, slots=True)
class LoginCode:
    """What was dialled after the prefix: a login (PIN maybe still to ask) or a logout."""

    extension: str | None  # None: log out
    pin: str | None = None


# The extension, then maybe "#" and the PIN (none yet: it is asked for).
_CODE = re.compile(rf"({EXTENSION_PATTERN.pattern})(?:#([0-9]{{0,{PIN_LENGTH}}}))?")


def parse_login_code(dialed: str, prefix: str) -> LoginCode | None:
    """The feature code in ``dialed``, or None when it is not a valid one."""
    if len(dialed) > MAX_DIALED or not dialed.startswith(prefix):
        return None
    rest = dialed[len(prefix) :]
    if rest in ("", "#"):
        return LoginCode(None)
    match = _CODE.fullmatch(rest)
    if match is None:
        return None
    return LoginCode(match.group(1), match.group(2) or None)


def shown_code(dialed: str) -> str:
    """The dialled code for logs: whatever follows a ``#`` may be a PIN."""
    head, hash_mark, _pin = dialed[:MAX_DIALED].partition("#")
    return head + ("#***" if hash_mark else "")


@dataclass(frozen=True, slots=True)
class FeatureOutcome:
    """One feature-code call, as it ended (kept for operators and tests)."""

    channel: str
    endpoint: str | None
    action: str  # "login", "logout" or "none"
    extension: str | None
    workplace: str | None
    refusal: Refusal | None
    ok: bool
    prompts: tuple[str, ...]  # what was played, in order
    failed_prompts: tuple[str, ...] = ()  # what Asterisk could not play (missing sounds?)


class FeatureCodes:
    def __init__(self, service: LoginService, prefix: str = "*44") -> None:
        self.service = service
        self.prefix = prefix
        self.outcomes: deque[FeatureOutcome] = deque(maxlen=200)
        self.asking_pin: set[str] = set()  # channels at the PIN prompt right now

    @property
    def handlers(self) -> dict[str, Handler]:
        return {AGI_SCRIPT: self.handle}

    def workplace_of_phone(self, endpoint: str | None) -> Workplace | None:
        if endpoint is None:
            return None
        snapshot = self.service.snapshot
        workplace_id = snapshot.phones.workplace_phones.get(endpoint)
        return None if workplace_id is None else snapshot.workplaces.get(workplace_id)

    async def refuse_unverified(self, session: AgiSession) -> None:
        """A session whose channel was not verified: "not available", and hang up.

        Acts on nothing, records no outcome and logs nothing: the server logged the
        refusal, rate-limited, and a flood of forged sessions must neither fill the
        log nor push real calls out of :attr:`outcomes`.
        """
        with contextlib.suppress(AgiError):
            await session.answer()
            for name in UNVERIFIED_PROMPTS:
                with contextlib.suppress(AgiCommandFailed):  # a missing sound
                    await session.stream_file(name)
            await session.hangup()

    async def handle(self, session: AgiSession) -> None:
        request = session.request
        if not session.channel_verified:
            # Only a server without a channel check gets here: a wiring mistake.
            log.error(
                "feature code on %s: channel not verified (the FastAGI server has no "
                "channel check?): refused",
                request.channel,
            )
            await self.refuse_unverified(session)
            return
        dialed = request.args[0] if request.args else request.extension
        endpoint = caller_endpoint(request.channel)
        call = _Call(session, request.channel, endpoint)
        try:
            await session.answer()
            await self._run(call, dialed)
        except AgiHangup:
            call.action = call.action or "none"
            log.info("feature code on %s: caller hung up", request.channel)
        except AgiError as exc:
            log.warning("feature code on %s: %s", request.channel, exc)
        finally:
            self.outcomes.append(call.outcome())
            if not session.hung_up:
                with contextlib.suppress(AgiError):  # the caller may be gone already
                    await session.hangup()

    async def _run(self, call: _Call, dialed: str) -> None:
        code = parse_login_code(dialed, self.prefix)
        if code is None:
            log.warning(
                "feature code from %s: %r is not a valid code", call.channel, shown_code(dialed)
            )
            await call.refuse(Refusal.BAD_INPUT)
            return
        call.action = "login" if code.extension else "logout"
        call.extension = code.extension
        workplace = self.workplace_of_phone(call.endpoint)
        if workplace is None:
            await call.refuse(Refusal.NOT_A_WORKPLACE_PHONE)
            return
        call.workplace = workplace.id
        source = f"phone {call.endpoint}"
        try:
            if code.extension is None:
                change = await self.service.logout_workplace(
                    workplace.id, actor="phone", source=source
                )
                call.extension = None if change is None else change.extension
                await call.succeed(LOGGED_OUT)
                return
            pin = code.pin
            if pin is None:
                call.prompts.append(ASK_PIN)
                self.asking_pin.add(call.channel)
                try:
                    pin, _timed_out = await call.session.get_data(
                        ASK_PIN, PIN_TIMEOUT_MS, MAX_PIN_DIGITS
                    )
                finally:
                    self.asking_pin.discard(call.channel)
            await self.service.check_pin(code.extension, pin, source=source)
            await self.service.login(
                code.extension, workplace.id, actor=code.extension, source=source
            )
            await call.succeed(LOGGED_IN)
        except LoginDenied as exc:
            await call.refuse(exc.reason)
        except AgiError:
            raise
        except Exception:
            log.exception("feature code from %s failed", call.channel)
            await call.refuse(None)


class _Call:
    """The state of one feature-code call while it runs."""

    def __init__(self, session: AgiSession, channel: str, endpoint: str | None) -> None:
        self.session = session
        self.channel = channel
        self.endpoint = endpoint
        self.action: str | None = None
        self.extension: str | None = None
        self.workplace: str | None = None
        self.refusal: Refusal | None = None
        self.ok = False
        self.prompts: list[str] = []
        self.failed_prompts: list[str] = []

    async def succeed(self, prompt: str) -> None:
        self.ok = True
        await self._play((prompt, GOODBYE))

    async def refuse(self, reason: Refusal | None) -> None:
        self.refusal = reason if reason is not None else None
        await self._play((*PROMPTS[reason], GOODBYE))

    async def _play(self, names: Sequence[str]) -> None:
        for name in names:
            self.prompts.append(name)
            try:
                await self.session.stream_file(name)
            except AgiCommandFailed:  # a missing sound must not stop the hang-up
                log.warning("feature code on %s: Asterisk could not play %r", self.channel, name)
                self.failed_prompts.append(name)

    def outcome(self) -> FeatureOutcome:
        return FeatureOutcome(
            self.channel,
            self.endpoint,
            self.action or "none",
            self.extension,
            self.workplace,
            self.refusal,
            self.ok,
            tuple(self.prompts),
            tuple(self.failed_prompts),
        )
