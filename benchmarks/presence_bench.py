"""Benchmark: presence under a sustained flood of device-state changes.

    .venv/bin/python -m benchmarks.presence_bench [--seconds 60] [--rate 1000]

The goal (issue "Presence"): 1,000 device-state changes per second sustained for
60 s, every user's merged state kept current, p99 from event to updated state
≤ 20 ms, and no growth in memory.

Set-up: a directory of 10,000 users (1 to 3 PJSIP phones each) and 1,000 workplaces
(2 phones each, 1,000 users logged in) -> PresenceTracker -> PresenceService, fed by
the real AmiClient over loopback TCP from the in-process fake AMI of the unit tests
(tests/fakes/fake_ami.py).  The fake AMI sends ``DeviceStateChange`` events for
random phones at a steady rate; each carries a sequence number.  A subscriber added
after the service's own sees each event once the tracker has applied it and records
the time since the event was written to the socket: parsing, dispatch, the merge
and the publication queue included.  The service's coalesced ``Setvar`` publications
go back over the same connection, as they would to Asterisk.

No Asterisk is involved: this measures the router's side (a real Asterisk could not
be made to change 1,000 PJSIP device states a second without as many real calls).
Memory is the process's resident set (and its count of Python objects) at 10 s and
at the end; the fake AMI's own record of actions is cleared every second.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable

from callrouter.ami import AmiClient
from callrouter.ami.protocol import AmiMessage
from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.presence.live import AMI_EVENTS, PresenceService
from callrouter.presence.tracker import PresenceTracker
from tests.fakes.fake_ami import FakeAmi, Reply, event_list

P99_GOAL_MS = 20.0
MEMORY_GROWTH_GOAL_MB = 5.0
STATES = ("INUSE", "NOT_INUSE", "RINGING", "UNAVAILABLE", "ONHOLD")


def directory(users: int = 10_000, workplaces: int = 1_000) -> DirectorySnapshot:
    rng = random.Random(1)
    people = {}
    for i in range(users):
        extension = str(10_000 + i)
        phones = tuple(f"PJSIP/u{i}-{k}" for k in range(rng.randint(1, 3)))
        people[extension] = User(extension, f"User {i}", phones=phones)
    desks = {
        f"desk-{j}": Workplace(
            f"desk-{j}", f"Desk {j}", str(900_000 + j), (f"PJSIP/desk{j}-a", f"PJSIP/desk{j}-b")
        )
        for j in range(workplaces)
    }
    logins = {str(10_000 + j * 7): f"desk-{j}" for j in range(workplaces)}
    return DirectorySnapshot(users=people, workplaces=desks, logins=logins)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def empty_list(item: str, done: str) -> Callable[[AmiMessage], Reply]:
    return lambda action: event_list(action, item, [], done)


async def run(seconds: float, rate: int) -> int:
    snapshot = directory()
    endpoints = sorted(
        {p for u in snapshot.users.values() for p in u.phones}
        | {p for w in snapshot.workplaces.values() for p in w.phones}
    )
    fake = FakeAmi()
    for action, item, done in (
        ("DeviceStateList", "DeviceStateChange", "DeviceStateListComplete"),
        ("PJSIPShowEndpoints", "EndpointList", "EndpointListComplete"),
    ):
        fake.set_handler(action, empty_list(item, done))
    await fake.start()
    tracker = PresenceTracker(snapshot)
    # As in the router, the resync follows the FullyBooted the fake sends on login.
    ami = AmiClient(
        fake.host,
        fake.port,
        fake.username,
        fake.secret,
        events=AMI_EVENTS,
        ping_interval=None,
    )
    presence = PresenceService(tracker, ami)
    presence.start()

    sent: dict[int, float] = {}
    latencies: list[float] = []
    stale = 0

    def measure(event: AmiMessage) -> None:
        nonlocal stale
        if event.event != "DeviceStateChange":
            return
        seq = int(event.get("Seq") or -1)
        started = sent.pop(seq, None)
        if started is None:
            return
        if tracker.device_state(event.get("Device") or "").value != event.get("State"):
            stale += 1
        latencies.append(time.perf_counter() - started)

    ami.subscribe(measure)  # after the service's own subscriber: sees the applied state
    await ami.start()
    rng = random.Random(2)
    gc.collect()
    cpu0, wall0 = time.process_time(), time.monotonic()
    rss_at_10: float | None = None
    objects_at_10: int | None = None
    total = setvars = 0
    batch = max(1, rate // 100)  # every 10 ms
    next_at = time.monotonic()
    try:
        while time.monotonic() - wall0 < seconds:
            for _ in range(batch):
                total += 1
                sent[total] = time.perf_counter()
                await fake.push_event(
                    "DeviceStateChange",
                    Device=rng.choice(endpoints),
                    State=rng.choice(STATES),
                    Seq=str(total),
                )
            if total % rate < batch:  # the fake's own log of actions, not the router's
                setvars += sum(1 for a in fake.received if a.action == "Setvar")
                fake.received.clear()
            elapsed = time.monotonic() - wall0
            if rss_at_10 is None and elapsed >= 10:
                gc.collect()
                rss_at_10, objects_at_10 = resident_mb(), len(gc.get_objects())
            next_at += batch / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        deadline = time.monotonic() + 5
        while sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        wall = time.monotonic() - wall0
        cpu = time.process_time() - cpu0
        gc.collect()
        rss_end, objects_end = resident_mb(), len(gc.get_objects())
        setvars += sum(1 for a in fake.received if a.action == "Setvar")
        await presence.close()
        await ami.close()
        await fake.close()

    latencies.sort()
    ms = [x * 1000 for x in latencies]
    p99 = ms[int(len(ms) * 0.99) - 1] if ms else float("inf")
    print(
        f"directory: {len(snapshot.users):,} users, {len(endpoints):,} phones, "
        f"{len(snapshot.logins):,} logged in at workplaces"
    )
    print(
        f"events: {total:,} sent in {wall:.1f} s ({total / wall:,.0f}/s, asked {rate:,}/s); "
        f"{len(latencies):,} applied, {len(sent):,} lost, {stale} seen stale"
    )
    print(
        f"event -> updated state: median {statistics.median(ms):.2f} ms, "
        f"p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"
    )
    ok_latency = p99 <= P99_GOAL_MS and not sent and not stale and total / wall >= 0.95 * rate
    print(
        f"p99 {p99:.2f} ms (goal ≤ {P99_GOAL_MS:g} ms, every event applied at "
        f"≥ 95 % of the asked rate) {'ok' if ok_latency else 'MISSED'}"
    )
    flood = setvars - 2 * len(snapshot.users)  # the resync first publishes everyone
    print(
        f"publications: {setvars:,} Setvar actions, two per user update: "
        f"{len(snapshot.users):,} users at the resync, then {flood / 2 / total:.2f} "
        "updates per event (only when a user's merged state changed, coalesced)"
    )
    print(
        f"CPU: {cpu / total * 1000 * 1000:.1f} ms per 1,000 events "
        "(the process also runs the fake AMI)"
    )
    if rss_at_10 is None or objects_at_10 is None:
        print("memory: run for more than 10 s to compare")
        return 0 if ok_latency else 1
    rss_growth = rss_end - rss_at_10
    ok_memory = rss_growth <= MEMORY_GROWTH_GOAL_MB
    print(
        f"memory from 10 s to the end: resident {rss_at_10:.1f} -> {rss_end:.1f} MB "
        f"({rss_growth:+.1f} MB; goal: no growth, ≤ {MEMORY_GROWTH_GOAL_MB:g} MB) "
        f"{'ok' if ok_memory else 'MISSED'}; Python objects {objects_at_10:,} -> "
        f"{objects_end:,}"
    )
    return 0 if ok_latency and ok_memory else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=1000, help="device-state changes per second")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.seconds, args.rate))


if __name__ == "__main__":
    sys.exit(main())
