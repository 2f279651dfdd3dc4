"""The snapshot and the rules every new call is routed by, kept current."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory.revisions import read_revisions
from callrouter.directory.snapshot import load_personal, load_snapshot
from callrouter.domain.directory import DirectorySnapshot
from callrouter.metrics import Metrics
from callrouter.rules.loader import load_rules
from callrouter.rules.model import RingRules
from callrouter.yamlfile import YamlFileError

log = logging.getLogger(__name__)

# Told which users a change concerns (None: anyone, e.g. new rules or a full reload).
ChangeListener = Callable[[frozenset[str] | None], None]


class LiveDirectory:
    """The snapshot and the rules every new call is routed by, kept current.

    The directory is re-read when its revision counter moves (so changes made by
    another router or the CLI arrive within one poll interval); the rules file when
    its modification time changes or on SIGHUP.  A rules file that fails validation
    is refused and the previous rules keep serving.

    For readiness it keeps when the snapshot was last confirmed current against the
    database (``checked_at``, monotonic) and why the last check failed, if it did.
    """

    def __init__(
        self, engine: AsyncEngine, rules_path: Path, *, metrics: Metrics | None = None
    ) -> None:
        self.engine = engine
        self.rules_path = rules_path
        self.metrics = metrics
        self.snapshot = DirectorySnapshot()
        self.rules = RingRules()
        self.loaded = False  # load() succeeded
        self.checked_at: float | None = None  # time.monotonic() of the last good check
        self.check_error: str | None = None  # why the last check failed (None: it did not)
        self._rules_mtime: float | None = None
        self._refreshing = asyncio.Lock()  # the poll loop and login changes both refresh
        # Called after every change with the extensions it concerns (None: anyone).
        self.listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(concerned)`` after every change; returns an unsubscribe."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    async def load(self) -> None:
        """The first load: errors here stop the daemon."""
        started = time.perf_counter()
        self.rules = await asyncio.to_thread(load_rules, self.rules_path)
        self._rules_mtime = self._mtime()
        self.snapshot = await load_snapshot(self.engine)
        self._reloaded("full", started)
        _settle()
        self.loaded = True
        self.checked_at = time.monotonic()
        log.info(
            "directory revision %d: %d users, %d workplaces; rules from %s",
            self.snapshot.revision,
            len(self.snapshot.users),
            len(self.snapshot.workplaces),
            self.rules_path,
        )

    async def refresh(
        self, *, force: bool = False, announced: tuple[int, int] | None = None
    ) -> bool:
        """Reload what changed; True if anything did.

        ``announced``: (revision, content_revision) as PostgreSQL's NOTIFY gave them,
        which saves reading them first (a round trip on the way of every change).
        """
        async with self._refreshing:
            try:
                changed = await self._refresh(force, announced)
            except Exception as exc:
                self.check_error = f"{type(exc).__name__}: {exc}"
                if self.metrics is not None:
                    self.metrics.directory_refresh_failed()
                raise
            self.checked_at = time.monotonic()
            self.check_error = None
            return changed

    async def _refresh(self, force: bool, announced: tuple[int, int] | None = None) -> bool:
        changed = False
        concerned: frozenset[str] | None = None  # None: everyone
        mtime = self._mtime()
        if force or mtime != self._rules_mtime:
            self._rules_mtime = mtime
            started = time.perf_counter()
            try:
                # Parsed in a thread: a large file must not stall the calls being set up.
                self.rules = await asyncio.to_thread(load_rules, self.rules_path)
            except YamlFileError as exc:
                log.error("rules refused, the previous rules stay in force:\n%s", exc)
            except OSError as exc:
                log.error(
                    "rules file %s unreadable (%s), the previous rules stay in force",
                    self.rules_path,
                    exc.strerror,
                )
            else:
                self._reloaded("rules", started)
                log.info("rules reloaded from %s", self.rules_path)
                changed = True
        rules_changed = changed
        if announced is not None and not force:
            revision, content_revision = announced
        else:
            revision, content_revision = await read_revisions(self.engine)
        old = self.snapshot
        if not force and content_revision == old.content_revision and revision != old.revision:
            # Only what users set for themselves changed (logins, own forwardings,
            # switches): read just those (a full reload of 100,000 users would hold
            # up calls for most of a second).
            started = time.perf_counter()
            personal = await load_personal(self.engine)
            revision, content_revision = personal.revision, personal.content_revision
            if content_revision == old.content_revision:
                self.snapshot = replace(
                    old,
                    logins=personal.logins,
                    forwards=personal.forwards,
                    switched_off=personal.switched_off,
                    revision=revision,
                )
                self._reloaded("logins", started)
                log.info("logins and personal settings reloaded at revision %d", revision)
                concerned = frozenset(
                    _changed_keys(personal.logins, old.logins)
                    | _changed_keys(personal.forwards, old.forwards)
                    | _changed_keys(personal.switched_off, old.switched_off)
                )
                changed = True
        if (
            force
            or self.snapshot.revision != revision
            or self.snapshot.content_revision != content_revision
        ):
            started = time.perf_counter()
            self.snapshot = await load_snapshot(self.engine)
            self._reloaded("full", started)
            log.info("directory reloaded at revision %d", self.snapshot.revision)
            concerned = None
            changed = True
        if changed and (rules_changed or concerned is None):
            _settle()  # new rules or a whole new snapshot: the bulk of the heap
        if changed:
            if rules_changed:
                concerned = None
            for listener in list(self.listeners):
                try:
                    listener(concerned)
                except Exception:  # one broken listener must not stop the others
                    log.exception("directory change listener failed")
        return changed

    def _reloaded(self, kind: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.directory_reloaded(kind, time.perf_counter() - started)

    def _mtime(self) -> float | None:
        try:
            return self.rules_path.stat().st_mtime
        except OSError:
            return None


def _settle() -> None:
    """Move what is alive now, the snapshot and the rules above all, out of the cyclic
    garbage collector's sight (``gc.freeze``).

    They live until the next reload and are most of the heap. A full collection walks
    every tracked object with the GIL held, whichever thread's allocations set it off
    (a rules file parsed in a thread does), and the loop that sets up calls waits for
    it: 70-80 ms for a directory of 100,000 users, more in a larger heap. Frozen, they
    are still freed by reference counting once replaced (neither holds a reference
    cycle); cyclic garbage not yet collected at this moment would stay, which is why
    this runs on loads and admin changes only, not on every login.
    """
    gc.freeze()


def _changed_keys(new: Mapping[str, object], old: Mapping[str, object]) -> set[str]:
    return {key for key in new.keys() | old.keys() if new.get(key) != old.get(key)}
