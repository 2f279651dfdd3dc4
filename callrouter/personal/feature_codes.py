"""The users' own forwardings and switches from the phone: feature codes over FastAGI.

With the default prefixes ``*7`` (forward_prefix) and ``*5`` (switch_prefix):

* ``*7`` + kind + target  forwards calls of that kind to the target;
* ``*7`` + kind           clears the forwarding of that kind;
* ``*7`` + ``0``          clears every own forwarding;
* ``*5`` + N              toggles the user's N-th switch (1 to 9, FollowMe order);
* ``*5`` + N + ``0``/``1``  turns it off / on.

Kinds: 1 always, 2 busy, 3 no answer, 4 unreachable, 5 do not disturb.  A target is
an extension, or ``00`` and the international number for an external one (``0049…``
is ``+49…``), which the rules must allow (``user_forwarding: anywhere``).

Whose settings: the user the calling phone is assigned to, or the user logged in at
the workplace the phone belongs to; a phone of nobody is refused.  As for the login
codes, only a channel the FastAGI server verified through ARI is acted on (the
phone is known from ``agi_channel``, which any local process could write).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import deque
from dataclasses import dataclass

from callrouter.agi import AgiCommandFailed, AgiError, AgiHangup, AgiSession, Handler
from callrouter.domain.endpoint import caller_endpoint
from callrouter.domain.forwarding import FORWARD_KINDS
from callrouter.personal.service import PersonalRefused, PersonalService

log = logging.getLogger(__name__)

AGI_SCRIPT = "personal-settings"
MAX_DIALED = 40  # a prefix, a kind and "00" + 20 digits, with room; longer is garbage
KIND_DIGITS = {str(i): kind for i, kind in enumerate(FORWARD_KINDS, start=1)}

# Asterisk core sounds (English), by what they say.
ACTIVATED = "activated"  # "activated"
DEACTIVATED = "de-activated"  # "de-activated"
GOODBYE = "goodbye"
NOT_AVAILABLE = "feature-not-avail-line"  # "... that feature is not available on this line"
INVALID = ("privacy-incorrect",)  # "I'm sorry, that number is not valid."
OUR_FAILURE = ("im-sorry", "please-try-call-later")
REFUSED: dict[str, tuple[str, ...]] = {
    "not_allowed": ("im-sorry", NOT_AVAILABLE),
    "no_external_endpoint": ("im-sorry", NOT_AVAILABLE),
    "unknown_switch": INVALID,
    "unknown_target": INVALID,
    "bad_target": INVALID,
    "to_self": INVALID,
    "unknown_kind": INVALID,
    "unknown_user": (NOT_AVAILABLE,),
}


@dataclass(frozen=True, slots=True)
class ForwardCode:
    kind: str | None  # None: every kind (clear all)
    target: str | None  # None: clear


@dataclass(frozen=True, slots=True)
class SwitchCode:
    number: int  # 1-based, in the order of user_switches
    on: bool | None  # None: toggle


_FORWARD = re.compile(r"([1-5])([0-9]{0,22})")
_SWITCH = re.compile(r"([1-9])([01]?)")


def parse_personal_code(
    dialed: str, forward_prefix: str, switch_prefix: str
) -> ForwardCode | SwitchCode | None:
    """The feature code in ``dialed``, or None when it is not a valid one."""
    if len(dialed) > MAX_DIALED:
        return None
    if dialed.startswith(forward_prefix):
        rest = dialed[len(forward_prefix) :]
        if rest == "0":
            return ForwardCode(None, None)
        match = _FORWARD.fullmatch(rest)
        if match is None:
            return None
        kind, target = KIND_DIGITS[match.group(1)], match.group(2)
        if target.startswith("00"):
            target = "+" + target[2:]
        return ForwardCode(kind, target or None)
    if dialed.startswith(switch_prefix):
        match = _SWITCH.fullmatch(dialed[len(switch_prefix) :])
        if match is None:
            return None
        state = match.group(2)
        return SwitchCode(int(match.group(1)), None if state == "" else state == "1")
    return None


@dataclass(frozen=True, slots=True)
class PersonalOutcome:
    """One feature-code call, as it ended (kept for operators and tests)."""

    channel: str
    endpoint: str | None
    extension: str | None  # whose settings
    action: str  # "forward", "unforward", "switch" or "none"
    detail: str | None  # e.g. "busy -> 202", "mobile off"
    refusal: str | None
    ok: bool
    prompts: tuple[str, ...]


class PersonalCodes:
    def __init__(
        self, service: PersonalService, forward_prefix: str = "*7", switch_prefix: str = "*5"
    ) -> None:
        self.service = service
        self.forward_prefix = forward_prefix
        self.switch_prefix = switch_prefix
        self.outcomes: deque[PersonalOutcome] = deque(maxlen=200)

    @property
    def handlers(self) -> dict[str, Handler]:
        return {AGI_SCRIPT: self.handle}

    def user_of_phone(self, endpoint: str | None) -> str | None:
        """The user the phone is assigned to, or who sits at its workplace."""
        if endpoint is None:
            return None
        return self.service.snapshot.user_at(endpoint)

    async def handle(self, session: AgiSession) -> None:
        request = session.request
        record = _Record(request.channel, caller_endpoint(request.channel))
        if not session.channel_verified:
            # Only a server without a channel check gets here: a wiring mistake.
            log.error("personal code on %s: channel not verified: refused", request.channel)
            record.refusal = "unverified"
            with contextlib.suppress(AgiError):
                await self._play(session, record, (NOT_AVAILABLE, GOODBYE))
                await session.hangup()
            return
        dialed = request.args[0] if request.args else request.extension
        try:
            await session.answer()
            prompts = await self._run(record, dialed)
            await self._play(session, record, (*prompts, GOODBYE))
        except AgiHangup:
            log.info("personal code on %s: caller hung up", request.channel)
        except AgiError as exc:
            log.warning("personal code on %s: %s", request.channel, exc)
        finally:
            self.outcomes.append(record.outcome())
            if not session.hung_up:
                with contextlib.suppress(AgiError):
                    await session.hangup()

    async def _run(self, record: _Record, dialed: str) -> tuple[str, ...]:
        """Do what the code says; the prompts that say how it went."""
        code = parse_personal_code(dialed, self.forward_prefix, self.switch_prefix)
        if code is None:
            log.warning("personal code from %s: %r is not valid", record.channel, dialed[:40])
            record.refusal = "bad_input"
            return INVALID
        extension = self.user_of_phone(record.endpoint)
        record.extension = extension
        if extension is None:
            log.warning("personal code from %s: the phone is nobody's", record.channel)
            record.refusal = "nobody's phone"
            return (NOT_AVAILABLE,)
        source = f"phone {record.endpoint}"
        service = self.service
        try:
            if isinstance(code, SwitchCode):
                record.action = "switch"
                names = [v.name for v in service.switches(extension)]
                if code.number > len(names):
                    record.refusal = "unknown_switch"
                    return INVALID
                name = names[code.number - 1]
                change = await service.set_switch(
                    extension, name, code.on, actor=extension, source=source
                )
                record.detail = f"{name} {'on' if change.on else 'off'}"
                record.ok = True
                return (ACTIVATED if change.on else DEACTIVATED,)
            if code.target is None:
                record.action = "unforward"
                record.detail = code.kind or "all"
                await service.clear_forward(extension, code.kind, actor=extension, source=source)
                record.ok = True
                return (DEACTIVATED,)
            assert code.kind is not None
            record.action = "forward"
            record.detail = f"{code.kind} -> {code.target}"
            await service.set_forward(
                extension, code.kind, code.target, actor=extension, source=source
            )
            record.ok = True
            return (ACTIVATED,)
        except PersonalRefused as exc:
            log.info("personal code from %s for %s refused: %s", record.channel, extension, exc)
            record.refusal = exc.reason
            return REFUSED[exc.reason]
        except Exception:
            log.exception("personal code from %s failed", record.channel)
            record.refusal = "failed"
            return OUR_FAILURE

    async def _play(self, session: AgiSession, record: _Record, names: tuple[str, ...]) -> None:
        for name in names:
            record.prompts.append(name)
            try:
                await session.stream_file(name)
            except AgiCommandFailed:  # a missing sound must not stop the hang-up
                log.warning("personal code on %s: could not play %r", record.channel, name)


class _Record:
    def __init__(self, channel: str, endpoint: str | None) -> None:
        self.channel = channel
        self.endpoint = endpoint
        self.extension: str | None = None
        self.action = "none"
        self.detail: str | None = None
        self.refusal: str | None = None
        self.ok = False
        self.prompts: list[str] = []

    def outcome(self) -> PersonalOutcome:
        return PersonalOutcome(
            self.channel,
            self.endpoint,
            self.extension,
            self.action,
            self.detail,
            self.refusal,
            self.ok,
            tuple(self.prompts),
        )
