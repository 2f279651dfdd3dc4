"""Benchmark: a change made through one router, applied by another (PostgreSQL NOTIFY).

    .venv/bin/python -m benchmarks.propagation [--changes 200] [--users 1000] [--url URL]

The goal (issue 12, "Every change everywhere at once"): every router applies a
directory or login change within 100 ms (p99), and client status (DND) set through
any router is in force on the others at once.

Set-up: a directory of ``--users`` users (one phone each) and a tenth as many
workplaces on PostgreSQL, and two routers' directory parts in two processes.  Router A
(a child process, ``--writer``) makes the changes: logins (``set_login``, a workplace
changing hands), then client statuses (``ClientStatusStore.write``, dnd and online in
turn), one at a time.  Router B (this process) has a ``LiveDirectory``, its change feed
(directory/changes.py) and presence with the shared client statuses
(presence/shared.py), and would poll only once an hour, so only NOTIFY can be in time.
Each change is timed from A's commit (its ``COMMIT`` answered) to B's listener seeing
B's snapshot or presence hold it, on CLOCK_MONOTONIC, which both processes share;
beside it, when B's feed heard the NOTIFY and how long A's write itself took.

The database: ``--url`` (or ``$CALLROUTER_TEST_POSTGRES``) names an empty, throwaway
database: its ``public`` schema is dropped first.  Without either, a throwaway server
is started with scripts/postgres.sh and stopped at the end (``throwaway_postgres``).
``measure_propagation`` is the measuring function, for a combined benchmark to call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import percentile
from callrouter.directory.changes import CLIENT_STATUS_CHANNEL, DIRECTORY_CHANNEL
from callrouter.directory.changes import build as build_changes
from callrouter.directory.database import create_engine, upgrade
from callrouter.directory.document import DirectoryDocument
from callrouter.directory.importer import import_document
from callrouter.directory.live import LiveDirectory
from callrouter.domain.presence import ClientStatus, UserPresence
from callrouter.logins.store import set_login
from callrouter.presence.build import listen_for_client_statuses
from callrouter.presence.live import PresenceService
from callrouter.presence.shared import ClientStatusStore
from callrouter.presence.tracker import PresenceTracker
from sandbox.router import throwaway_postgres, wipe_postgres

P99_GOAL_MS = 100.0
ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "examples" / "rules.yaml"
WAIT_S = 10.0  # a change not applied by then counts as lost
NEVER_S = 3600.0  # router B's poll: only NOTIFY can be in time
PAUSE_S = 0.005  # between changes: each one is timed on its own, not as a burst


@dataclass
class Propagation:
    """Per change: router A's write, and from its commit to router B holding it (ms)."""

    what: str
    samples_ms: list[float] = field(default_factory=list)  # commit -> applied by B
    write_ms: list[float] = field(default_factory=list)  # A's write, commit included
    heard_ms: list[float] = field(default_factory=list)  # commit -> B's feed heard it
    lost: int = 0

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    @property
    def ok(self) -> bool:
        return not self.lost and bool(self.samples_ms) and self.p99 <= P99_GOAL_MS

    def line(self) -> str:
        if not self.samples_ms:
            return f"{self.what}: nothing applied, {self.lost} lost MISSED"
        heard = (
            f"NOTIFY heard p50 {percentile(self.heard_ms, 50):.1f} ms, "
            f"p99 {percentile(self.heard_ms, 99):.1f} ms"
            if self.heard_ms
            else "NOTIFY not timed"
        )
        return (
            f"{self.what} ({len(self.samples_ms)} changes, {self.lost} lost): "
            f"p50 {self.p50:.1f} ms, p99 {self.p99:.1f} ms, max {max(self.samples_ms):.1f} ms "
            f"(goal p99 ≤ {P99_GOAL_MS:g} ms) {'ok' if self.ok else 'MISSED'}; "
            f"{heard}; A's write itself p50 {percentile(self.write_ms, 50):.1f} ms"
        )


@dataclass
class PropagationReport:
    users: int
    workplaces: int
    logins: Propagation
    client_status: Propagation

    @property
    def ok(self) -> bool:
        return self.logins.ok and self.client_status.ok

    def lines(self) -> list[str]:
        return [
            f"directory: {self.users:,} users, {self.workplaces:,} workplaces (PostgreSQL); "
            "times from the commit on router A (its own process) to router B",
            self.logins.line(),
            self.client_status.line(),
        ]


def directory(users: int) -> DirectoryDocument:
    workplaces = max(1, users // 10)
    return DirectoryDocument.model_validate(
        {
            "users": [
                {"extension": str(10000 + n), "name": f"User {n}", "phones": [f"PJSIP/u{n}"]}
                for n in range(users)
            ],
            "workplaces": [
                {
                    "id": f"desk-{n}",
                    "name": f"Desk {n}",
                    "code": str(80000 + n),
                    "phones": [f"PJSIP/desk-{n}"],
                }
                for n in range(workplaces)
            ],
        }
    )


class _Writer:
    """Router A: a process of its own making one change per request (``--writer``);
    it answers with ``time.monotonic()`` before the write and after its commit (one
    clock for every process on Linux: CLOCK_MONOTONIC)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str) -> _Writer:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.propagation",
            "--writer",
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        writer = cls(process)
        await writer.ask("ping")
        return writer

    async def ask(self, *words: str) -> tuple[float, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((" ".join(words) + "\n").encode())
        await self.process.stdin.drain()
        reply = (await asyncio.wait_for(self.process.stdout.readline(), WAIT_S)).split()
        if len(reply) != 2:
            raise RuntimeError(f"router A (the writer) failed: {reply!r}")
        return float(reply[0]), float(reply[1])

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        await asyncio.wait_for(self.process.wait(), WAIT_S)


async def _serve_writes(url: str) -> None:
    """``--writer``: router A's side, one change per line on stdin."""
    engine = create_engine(url)
    store = ClientStatusStore(engine, heartbeat_timeout=90)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            words = line.split()
            started = time.monotonic()
            if words[0] == "login":
                await set_login(engine, words[1], words[2], actor="benchmark", source="benchmark")
            elif words[0] == "status":
                await store.write(words[1], "benchmark-app", ClientStatus(words[2]))
            print(f"{started} {time.monotonic()}", flush=True)
    finally:
        await engine.dispose()


async def measure_propagation(
    url: str, *, changes: int = 200, users: int = 1000, wipe: bool = True
) -> PropagationReport:
    """Time ``changes`` logins and as many client status changes made through router A
    (a process of its own) from their commit until router B holds them (see the
    module's docstring).

    ``url``: a PostgreSQL database; with ``wipe`` its ``public`` schema is dropped and
    the benchmark's directory imported, else it must hold that directory already.
    """
    if wipe:
        await wipe_postgres(url)
        await upgrade(url)
    doc = directory(users)
    engine = create_engine(url)
    feed = None
    presence: PresenceService | None = None
    writer: _Writer | None = None
    try:
        if wipe:
            await import_document(engine, doc, prune=True, actor="benchmark")
        live = LiveDirectory(engine, RULES)
        await live.load()
        feed = build_changes(live)
        if feed is None:
            raise SystemExit(f"{url}: not PostgreSQL (asyncpg): nothing announces changes")
        presence = PresenceService(
            PresenceTracker(live.snapshot), store=ClientStatusStore(engine, heartbeat_timeout=90)
        )
        live.subscribe(lambda concerned: presence.set_snapshot(live.snapshot, concerned))
        listen_for_client_statuses(presence, feed)
        heard: dict[str, float] = {}
        for channel in (DIRECTORY_CHANNEL, CLIENT_STATUS_CHANNEL):
            feed.on(channel, lambda _payload, c=channel: heard.__setitem__(c, time.monotonic()))
        feed.start()
        await feed.wait_connected(WAIT_S)
        await feed.coalesced["directory"].idle()
        presence.start()
        await presence.reload_clients()
        writer = await _Writer.start(url)
        extensions = [u.extension for u in doc.users]
        desks = [w.id for w in doc.workplaces]

        logins = Propagation("login on router A -> applied by router B")
        for n in range(changes):
            extension, desk = extensions[n % len(extensions)], desks[n % len(desks)]

            def login_held(e: str = extension, d: str = desk) -> bool:
                return live.snapshot.logins.get(e) == d

            applied = _Waiter(login_held)

            def on_change(_concerned: frozenset[str] | None, applied: _Waiter = applied) -> None:
                applied.check()

            unsubscribe = live.subscribe(on_change)
            heard.clear()
            await _record(
                logins,
                applied,
                await writer.ask("login", extension, desk),
                lambda: heard.get(DIRECTORY_CHANNEL),
            )
            unsubscribe()
            await asyncio.sleep(PAUSE_S)

        statuses = Propagation("client status on router A -> in force on router B")
        for n in range(changes):
            extension = extensions[n % len(extensions)]
            status = ClientStatus.DND if (n // len(extensions)) % 2 == 0 else ClientStatus.ONLINE

            def status_held(e: str = extension, st: ClientStatus = status) -> bool:
                state = presence.tracker.user(e) if presence is not None else None
                return state is not None and state.client is st

            seen = _Waiter(status_held)

            def on_presence(_state: UserPresence, seen: _Waiter = seen) -> None:
                seen.check()

            unsubscribe = presence.subscribe(on_presence)
            heard.clear()
            await _record(
                statuses,
                seen,
                await writer.ask("status", extension, status.value),
                lambda: heard.get(CLIENT_STATUS_CHANNEL),
            )
            unsubscribe()
            await asyncio.sleep(PAUSE_S)
        return PropagationReport(len(doc.users), len(doc.workplaces), logins, statuses)
    finally:
        if writer is not None:
            await writer.close()
        if presence is not None:
            await presence.close()
        if feed is not None:
            await feed.close()
        await engine.dispose()


class _Waiter:
    """Set, with the time, the first time ``holds()`` is true when checked."""

    def __init__(self, holds: Callable[[], bool]) -> None:
        self.holds = holds
        self.event = asyncio.Event()
        self.at = 0.0

    def check(self) -> None:
        if not self.event.is_set() and self.holds():
            self.at = time.monotonic()
            self.event.set()


async def _record(
    into: Propagation,
    waiter: _Waiter,
    write: tuple[float, float],
    heard: Callable[[], float | None],
) -> None:
    started, committed = write
    into.write_ms.append((committed - started) * 1000)
    waiter.check()  # applied before the writer's answer came back
    try:
        await asyncio.wait_for(waiter.event.wait(), WAIT_S)
    except TimeoutError:
        into.lost += 1
        return
    # B may hold it a hair before A hears its commit acknowledged: counted as 0.
    into.samples_ms.append(max(0.0, waiter.at - committed) * 1000)
    at = heard()
    if at is not None:
        into.heard_ms.append(max(0.0, at - committed) * 1000)


async def _run(url: str | None, changes: int, users: int) -> PropagationReport:
    if url:
        return await measure_propagation(url, changes=changes, users=users)
    async with throwaway_postgres() as fresh:
        return await measure_propagation(fresh, changes=changes, users=users)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=200, help="changes of each kind")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--url", default=os.environ.get("CALLROUTER_TEST_POSTGRES"), help="a throwaway database"
    )
    parser.add_argument("--writer", metavar="URL", help=argparse.SUPPRESS)  # router A's process
    args = parser.parse_args(argv)
    if args.writer:
        asyncio.run(_serve_writes(args.writer))
        return 0
    report = asyncio.run(_run(args.url, args.changes, args.users))
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
