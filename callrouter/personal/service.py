"""The users' own forwardings and switches: the one place every way in goes through.

The API, the web client and the phone's feature codes call ``PersonalService``; it
checks a change against the rules in force (the admin's rules are the frame: a user
forwards only where ``user_forwarding`` allows, and switches only the switches the
admin gave them), lets the store write it atomically, and then tells the router at
once, so its next call is routed by the change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory.errors import UnknownExtension
from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.endpoint import is_external_number
from callrouter.domain.forwarding import FORWARD_KINDS, forward_target_problem
from callrouter.personal import store
from callrouter.rules.model import (
    ForwardStep,
    RingRules,
    UserForwarding,
    user_forwarding,
    user_switches,
)

log = logging.getLogger(__name__)

Reason = Literal[
    "unknown_user",  # the extension is nobody's
    "unknown_kind",  # not a kind of forwarding
    "bad_target",  # neither an extension nor an external number
    "to_self",  # forwarding to oneself
    "unknown_target",  # an extension that is nobody's
    "not_allowed",  # user_forwarding: off, or an external number where only extensions
    "no_external_endpoint",  # external numbers allowed, but the rules cannot dial them
    "unknown_switch",  # not a switch the admin gave this user
]


class PersonalRefused(Exception):
    """A change that did not happen: why (``reason``) and which field it concerns."""

    def __init__(self, reason: Reason, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class KindView:
    """One kind of forwarding for a user: their own, the admin's, and which is in force."""

    kind: str
    own: str | None  # the user's own target (None: none set)
    admin: tuple[ForwardStep, ...]  # the admin's rule for this kind (first that applies)
    in_force: Literal["user", "admin"] | None  # whose applies (admin: may depend on the call)
    own_ignored: bool  # an own target the rules no longer allow (user_forwarding)


@dataclass(frozen=True, slots=True)
class SwitchView:
    name: str
    on: bool
    rings: tuple[str, ...]  # what the switch's FollowMe entries ring


class PersonalService:
    def __init__(
        self,
        engine: AsyncEngine,
        snapshot: Callable[[], DirectorySnapshot],
        rules: Callable[[], RingRules],
        *,
        on_change: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.engine = engine
        self._snapshot = snapshot
        self._rules = rules
        self._on_change = on_change

    @property
    def snapshot(self) -> DirectorySnapshot:
        return self._snapshot()

    @property
    def rules(self) -> RingRules:
        return self._rules()

    # --- views ----------------------------------------------------------------------

    def policy(self, extension: str) -> UserForwarding:
        return user_forwarding(self.rules, extension)

    def forwarding(self, extension: str) -> list[KindView]:
        """Each kind of forwarding of ``extension``, in the order of FORWARD_KINDS."""
        self._user(extension)
        rules = self.rules
        own = self.snapshot.forwards.get(extension, {})
        rule = rules.users.get(extension)
        policy = user_forwarding(rules, extension)
        views = []
        for kind in FORWARD_KINDS:
            target = own.get(kind)
            ignored = target is not None and (
                policy == "off" or (is_external_number(target) and policy != "anywhere")
            )
            admin: tuple[ForwardStep, ...] = getattr(rule.forward, kind) if rule else ()
            in_force: Literal["user", "admin"] | None = (
                "user" if target is not None and not ignored else "admin" if admin else None
            )
            views.append(KindView(kind, target, admin, in_force, ignored))
        return views

    def switches(self, extension: str) -> list[SwitchView]:
        """The switches the admin gave ``extension``, in FollowMe order, on or off."""
        self._user(extension)
        rules = self.rules
        off = self.snapshot.switched_off.get(extension, frozenset())
        rule = rules.users.get(extension)
        entries = rule.followme or () if rule is not None else ()
        return [
            SwitchView(
                name,
                name not in off,
                tuple(t for e in entries if e.switch == name for t in e.ring),
            )
            for name in user_switches(rules, extension)
        ]

    # --- changes --------------------------------------------------------------------

    async def set_forward(
        self, extension: str, kind: str, target: str, *, actor: str, source: str
    ) -> store.ForwardChange:
        self._user(extension)
        self._check_kind(kind)
        self._check_target(extension, target)
        try:
            change = await store.set_forward(
                self.engine, extension, kind, target, actor=actor, source=source
            )
        except store.UnknownTarget as exc:
            raise PersonalRefused("unknown_target", "to", str(exc)) from None
        except UnknownExtension as exc:  # removed since the snapshot was read
            raise PersonalRefused("unknown_user", "extension", str(exc)) from None
        if change.changed:
            log.info(
                "forwarding: %s %s -> %s by %s from %s", extension, kind, target, actor, source
            )
            await self._changed()
        return change

    async def clear_forward(
        self, extension: str, kind: str | None, *, actor: str, source: str
    ) -> list[store.ForwardChange]:
        """Clear one kind of ``extension``'s own forwarding (None: every kind)."""
        self._user(extension)
        try:
            if kind is None:
                changes = await store.clear_forwards(
                    self.engine, extension, actor=actor, source=source
                )
            else:
                self._check_kind(kind)
                change = await store.set_forward(
                    self.engine, extension, kind, None, actor=actor, source=source
                )
                changes = [change] if change.changed else []
        except UnknownExtension as exc:
            raise PersonalRefused("unknown_user", "extension", str(exc)) from None
        if changes:
            log.info(
                "forwarding: %s cleared %s by %s from %s",
                extension,
                ", ".join(c.kind for c in changes),
                actor,
                source,
            )
            await self._changed()
        return changes

    async def set_switch(
        self, extension: str, name: str, on: bool | None, *, actor: str, source: str
    ) -> store.SwitchChange:
        """Turn a switch on or off (None: toggle)."""
        self._user(extension)
        if name not in user_switches(self.rules, extension):
            raise PersonalRefused(
                "unknown_switch",
                "name",
                f"{name[:40]!r} is not one of the switches of {extension}",
            )
        try:
            change = await store.set_switch(
                self.engine, extension, name, on, actor=actor, source=source
            )
        except UnknownExtension as exc:
            raise PersonalRefused("unknown_user", "extension", str(exc)) from None
        if change.changed:
            log.info(
                "switch: %s %s %s by %s from %s",
                extension,
                name,
                "on" if change.on else "off",
                actor,
                source,
            )
            await self._changed()
        return change

    # --- checks ---------------------------------------------------------------------

    def _user(self, extension: str) -> None:
        if extension not in self.snapshot.users:
            raise PersonalRefused(
                "unknown_user", "extension", f"no user has extension {extension[:40]}"
            )

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in FORWARD_KINDS:
            raise PersonalRefused(
                "unknown_kind",
                "kind",
                f"{kind[:40]!r} is no kind of forwarding: one of {', '.join(FORWARD_KINDS)}",
            )

    def _check_target(self, extension: str, target: str) -> None:
        problem = forward_target_problem(target)
        if problem is not None:
            raise PersonalRefused("bad_target", "to", problem)
        if target == extension:
            raise PersonalRefused("to_self", "to", "a forwarding to oneself goes nowhere")
        rules = self.rules
        policy = user_forwarding(rules, extension)
        if policy == "off":
            raise PersonalRefused(
                "not_allowed", "to", f"the rules do not let {extension} forward their calls"
            )
        if is_external_number(target):
            if policy != "anywhere":
                raise PersonalRefused(
                    "not_allowed",
                    "to",
                    f"the rules let {extension} forward to other extensions only, "
                    "not to external numbers",
                )
            if rules.defaults.external_endpoint is None:
                raise PersonalRefused(
                    "no_external_endpoint",
                    "to",
                    "external numbers cannot be dialled: the rules have no "
                    "defaults.external_endpoint",
                )
        elif target not in self.snapshot.users:
            raise PersonalRefused("unknown_target", "to", f"no user has extension {target}")

    async def _changed(self) -> None:
        if self._on_change is not None:
            try:
                await self._on_change()
            except Exception:  # the change is stored; the next poll catches up
                log.exception("refreshing after a personal setting changed failed")
