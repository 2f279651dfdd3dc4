"""Benchmark: how fast a phone's device state reaches the other Asterisk.

    .venv/bin/python -m benchmarks.node_presence_bench [--calls 30]

Two sandbox Asterisks, nodes A and B, share their PJSIP device states with
res_pjsip_publish_asterisk (``sandbox.asterisk.link_nodes``, the configuration of
asterisk-config/pjsip_nodes.conf.example).  A phone of node B is called through
B's native ``Dial()`` (no router) and answers after 0.2 s, then the caller hangs up,
``--calls`` times: each call moves the phone RINGING -> INUSE -> NOT_INUSE.  One AMI
client on each Asterisk, in this process, records when each ``DeviceStateChange``
of that phone arrives; the figure is the time from B's event to A's event for the
same change: B's PUBLISH, A's processing and A's AMI event (both AMI deliveries
cost about the same, so they cancel out).  A router on node A sees the state when
A's event arrives (its own processing: presence_bench).

Goal (issue "No single point of failure": every change everywhere at once): p99 ≤
100 ms, and every change arrives.  Needs root (the sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.common import NATIVE_FAMILY, native_dial_string, native_number, percentile
from callrouter.ami import AmiClient
from callrouter.ami.protocol import AmiMessage
from sandbox.asterisk import AsteriskSandbox, ensure_rootfs, link_nodes
from sandbox.phones import PhoneBank

P99_GOAL_MS = 100.0
PHONE = "nb-desk"
EXTENSION = "790"


def recorder(seen: list[tuple[float, str]]) -> Callable[[AmiMessage], None]:
    def record(event: AmiMessage) -> None:
        if event.event == "DeviceStateChange" and event.get("Device") == f"PJSIP/{PHONE}":
            seen.append((time.monotonic(), event.get("State") or ""))

    return record


async def run(calls: int) -> int:
    root = ensure_rootfs()
    node_a, node_b = AsteriskSandbox(root, verbose=0), AsteriskSandbox(root, verbose=0)
    link_nodes(node_a, "node-a", node_b, "node-b")
    at_a: list[tuple[float, str]] = []
    at_b: list[tuple[float, str]] = []
    async with node_a, node_b, PhoneBank() as bank:
        caller, desk = await bank.add("nb-caller"), await bank.add(PHONE)
        desk.answer(after=0.2)
        await node_b.add_phones_async({caller.name: caller.port, desk.name: desk.port})
        node_b.db_put(NATIVE_FAMILY, EXTENSION, native_dial_string([PHONE]))
        clients = [
            AmiClient("127.0.0.1", s.ami_port, s.ami_user, s.ami_secret, ping_interval=None)
            for s in (node_a, node_b)
        ]
        clients[0].subscribe(recorder(at_a))
        clients[1].subscribe(recorder(at_b))
        for client in clients:
            await client.start()
        try:
            # The phone's first state reaches A on its own time (it was set when the
            # phone was added): wait for it, then measure from a clean slate.
            deadline = time.monotonic() + 10
            while not at_a and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            at_a.clear()
            at_b.clear()
            for _ in range(calls):
                call = await caller.call(native_number(EXTENSION), node_b.sip_port)
                await call.wait_answered(timeout=10)
                await asyncio.sleep(0.3)
                await call.hangup()
                await asyncio.sleep(0.3)
            await asyncio.sleep(1.0)  # the last changes on their way
        finally:
            for client in clients:
                await client.close()

    # Pair the changes in order: the same sequence of states must arrive at A.
    states_b, states_a = [s for _, s in at_b], [s for _, s in at_a]
    lost = len(states_b) - len(states_a)
    delays = [(ta - tb) * 1000 for (tb, sb), (ta, sa) in zip(at_b, at_a, strict=False) if sb == sa]
    in_order = states_a == states_b[: len(states_a)]
    print(f"changes of {PHONE} on node B: {len(states_b)} in {calls} calls; on node A: {len(at_a)}")
    if not delays or not in_order:
        print(f"states at B {states_b[:12]} ... at A {states_a[:12]} ...: MISSED")
        return 1
    p50, p99 = statistics.median(delays), percentile(delays, 99)
    print(
        f"B's event -> A's event: median {p50:.1f} ms, p99 {p99:.1f} ms, max {max(delays):.1f} ms"
    )
    ok = p99 <= P99_GOAL_MS and lost == 0
    print(
        f"p99 {p99:.1f} ms (goal ≤ {P99_GOAL_MS:g} ms), {lost} lost (goal 0) "
        f"{'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.calls))


if __name__ == "__main__":
    sys.exit(main())
