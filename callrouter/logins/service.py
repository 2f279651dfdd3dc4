"""Logging users in and out of workplaces: the one place every way in goes through.

The phone (feature codes), the client API and the admin all call ``LoginService``;
it checks PINs with the lockout, lets the store apply the rules atomically, and
then tells the router at once (so this router's next call and its AstDB fallback
see the change without waiting for the next directory poll).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, tzinfo

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory.errors import UnknownExtension, UnknownWorkplace
from callrouter.directory.pins import hash_pin, verify_pin
from callrouter.domain.directory import DirectorySnapshot, User
from callrouter.domain.identifiers import PIN_INPUT_PATTERN
from callrouter.logins import store
from callrouter.logins.autologout import logout_cutoffs
from callrouter.logins.lockout import Locked, Lockout, MemoryLockout
from callrouter.logins.policy import OccupiedPolicy, Refusal
from callrouter.metrics import Metrics
from callrouter.rules.model import RingRules

log = logging.getLogger(__name__)

# Verified when the extension is unknown or has no PIN, so that the answer takes as
# long as for a real user: timing must not tell which extensions exist.
_DECOY_HASH = hash_pin("000000")


class LoginDenied(Exception):
    """A login or logout that did not happen, with the reason as a ``Refusal``."""

    def __init__(
        self,
        reason: Refusal,
        message: str,
        *,
        retry_after: float | None = None,
        occupant: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after
        self.occupant = occupant


# A login attempt is counted once (metrics), by how far it got: a PIN check that fails
# ends it; otherwise the login says ``ok`` or why not.  A PIN check that succeeds is
# not counted by itself (an API session is no login yet; the phone's *44 goes on to
# the login, which counts).  Every Refusal has its label (tests/unit/test_metrics.py).
OUTCOMES: dict[Refusal, str] = {
    Refusal.BAD_CREDENTIALS: "wrong_pin",  # or an unknown extension: never say which
    Refusal.LOCKED: "locked",
    Refusal.NOT_ALLOWED: "refused_role",
    Refusal.OCCUPIED: "occupied",
    Refusal.UNKNOWN_WORKPLACE: "unknown_workplace",
    Refusal.UNKNOWN_USER: "unknown_user",
    Refusal.NOT_A_WORKPLACE_PHONE: "not_a_workplace_phone",
    Refusal.BAD_INPUT: "bad_input",
}
OK = "ok"


class LoginService:
    def __init__(
        self,
        engine: AsyncEngine,
        snapshot: Callable[[], DirectorySnapshot],
        *,
        policy: OccupiedPolicy = "displace",
        lockout: Lockout | None = None,
        on_change: Callable[[], Awaitable[object]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self._snapshot = snapshot
        self.policy = policy
        self.lockout: Lockout = lockout or MemoryLockout()
        self._on_change = on_change
        self.metrics = metrics

    @property
    def snapshot(self) -> DirectorySnapshot:
        return self._snapshot()

    # --- PINs -----------------------------------------------------------------------

    async def check_pin(self, extension: str, pin: str, *, source: str) -> User:
        try:
            return await self._check_pin(extension, pin, source=source)
        except LoginDenied as exc:
            self._count(OUTCOMES[exc.reason])
            raise

    async def _check_pin(self, extension: str, pin: str, *, source: str) -> User:
        """The user, if ``pin`` is theirs; else ``LoginDenied`` (BAD_CREDENTIALS or
        LOCKED), the same for unknown extensions as for wrong PINs.

        The try is counted before the PIN is checked (``Lockout.reserve``), so requests
        racing each other cannot check more PINs than the lockout allows; a try that
        cannot be counted is refused, never checked uncounted.
        """
        try:
            reservation = await self.lockout.reserve(extension, source)
        except Locked as locked:
            log.warning(
                "PIN check for %.40s from %.100s refused: %s for %.0f s",
                extension,
                source,
                "source locked" if locked.source_locked else "user slowed down",
                locked.retry_after,
            )
            message = (
                "too many wrong PINs from here; try again later"
                if locked.source_locked
                else "too many wrong PINs for this extension lately; try again shortly"
            )
            raise LoginDenied(Refusal.LOCKED, message, retry_after=locked.retry_after) from None
        except Exception:
            # Fail closed: a PIN that cannot be counted is not checked.
            log.exception(
                "PIN check for %.40s from %.100s refused: the try could not be counted",
                extension,
                source,
            )
            raise LoginDenied(
                Refusal.LOCKED, "PIN tries cannot be counted right now; try again later"
            ) from None
        user = self.snapshot.users.get(extension)
        stored = user.pin_hash if user is not None else None
        well_formed = PIN_INPUT_PATTERN.fullmatch(pin) is not None
        # scrypt takes milliseconds: keep it off the event loop.
        matches = await asyncio.to_thread(
            verify_pin, pin if well_formed else "0", stored or _DECOY_HASH
        )
        if user is None or stored is None or not well_formed or not matches:
            # The reservation stays: it is the wrong PIN's count.
            log.warning("wrong extension or PIN for %.40s from %.100s", extension, source)
            raise LoginDenied(Refusal.BAD_CREDENTIALS, "wrong extension or PIN")
        try:
            await self.lockout.succeeded(reservation)
        except Exception:  # the try stays counted as a wrong one: safe, if unkind
            log.exception("clearing the wrong PINs of %s after a right one failed", extension)
        return user

    # --- changes --------------------------------------------------------------------

    async def login(
        self, extension: str, workplace_id: str, *, actor: str, source: str
    ) -> store.LoginChange:
        try:
            change = await self._login(extension, workplace_id, actor=actor, source=source)
        except LoginDenied as exc:
            self._count(OUTCOMES[exc.reason])
            raise
        self._count(OK)
        return change

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.login(outcome)

    async def _login(
        self, extension: str, workplace_id: str, *, actor: str, source: str
    ) -> store.LoginChange:
        try:
            change = await store.set_login(
                self.engine, extension, workplace_id, actor=actor, source=source, policy=self.policy
            )
        except store.LoginRefused as exc:
            log.info("login of %s at %s from %s refused: %s", extension, workplace_id, source, exc)
            raise LoginDenied(exc.reason, str(exc), occupant=exc.occupant) from None
        except UnknownWorkplace as exc:
            raise LoginDenied(Refusal.UNKNOWN_WORKPLACE, str(exc)) from None
        except UnknownExtension as exc:
            raise LoginDenied(Refusal.UNKNOWN_USER, str(exc)) from None
        if change.changed:
            log.info(
                "login: %s at %s (was %s%s) by %s from %s",
                extension,
                workplace_id,
                change.old_workplace or "nowhere",
                f"; {change.displaced} moved out" if change.displaced else "",
                actor,
                source,
            )
            await self._changed()
        return change

    async def logout(self, extension: str, *, actor: str, source: str) -> store.LoginChange:
        try:
            change = await store.clear_login(self.engine, extension, actor=actor, source=source)
        except UnknownExtension as exc:
            raise LoginDenied(Refusal.UNKNOWN_USER, str(exc)) from None
        if change.changed:
            log.info(
                "logout: %s from %s by %s from %s", extension, change.old_workplace, actor, source
            )
            await self._changed()
        return change

    async def logout_workplace(
        self, workplace_id: str, *, actor: str, source: str
    ) -> store.LoginChange | None:
        try:
            change = await store.clear_workplace(
                self.engine, workplace_id, actor=actor, source=source
            )
        except UnknownWorkplace as exc:
            raise LoginDenied(Refusal.UNKNOWN_WORKPLACE, str(exc)) from None
        if change is not None:
            log.info(
                "logout: %s from %s by %s from %s", change.extension, workplace_id, actor, source
            )
            await self._changed()
        return change

    async def expire(
        self, rules: RingRules, zone: tzinfo, now: datetime | None = None
    ) -> list[store.LoginChange]:
        """Automatic logout: end the logins that began before their workplace's cut-off."""
        at = now or datetime.now(UTC)
        cutoffs: Mapping[str, datetime] = logout_cutoffs(
            rules, self.snapshot.workplaces.keys(), at, zone
        )
        changes = await store.expire_logins(self.engine, cutoffs, now=at)
        for change in changes:
            log.info("automatic logout: %s from %s", change.extension, change.old_workplace)
        if changes:
            await self._changed()
        return changes

    async def _changed(self) -> None:
        if self._on_change is not None:
            try:
                await self._on_change()
            except Exception:  # the change is stored; the next poll catches up
                log.exception("refreshing after a login change failed")
