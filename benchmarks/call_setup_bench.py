"""Benchmark: call set-up latency through the router against Asterisk's own Dial().

    .venv/bin/python -m benchmarks.call_setup_bench [--calls N] [--users U]

Boots the sandbox Asterisk, simulated phones (two ringing phones per user and one
caller phone) and the router in-process (as tests/e2e/test_routing.py does, with a
temporary SQLite directory).  Then it places ``--calls`` calls of each kind, one at
a time and interleaved (router, native, router, native, ...), so that latency and
not load is measured:

* router: the caller dials ``EXT`` -> [callrouter] -> Stasis() -> the router
  originates a leg to each of the user's two phones through ARI (``POST /channels``);
* native: the caller dials ``**EXT`` -> [bench-native] -> Dial() of the same two
  phones, from the AstDB entry ``native/EXT``.

Latency of a call: from the moment the caller phone sent its INVITE to the first
INVITE arriving at either callee phone (both ``time.monotonic()`` stamps recorded
by the simulated phones).  Each call is then cancelled by the caller and the next
one starts once both callee phones saw the CANCEL (and, for router calls, once the
router finished the call).

Prints each figure beside its goal; exit status 0 regardless (it is a report).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from benchmarks.common import (
    NATIVE_FAMILY,
    directory_yaml,
    native_dial_string,
    native_number,
    percentile,
)
from callrouter.app import Router
from callrouter.ari.events import Channel
from sandbox.asterisk import AsteriskSandbox, ensure_rootfs
from sandbox.phones import PhoneBank, SimulatedPhone
from sandbox.router import running_router

RATIO_GOAL = 1.25  # median router latency / median native latency
ADDED_P99_GOAL_MS = 5.0  # p99(router) - median(native)
FIRST_EXTENSION = 5000

Kind = Literal["router", "native"]


# --- measurements -----------------------------------------------------------------


@dataclass(slots=True)
class RouterTrace:
    """When the router saw a call and issued its ARI requests (first leg's)."""

    stasis: float | None = None
    originate_sent: float | None = None
    originate_done: float | None = None
    requests: int = 0  # leg requests (POST /channels) of the call

    def reset(self) -> None:
        self.stasis = self.originate_sent = self.originate_done = None
        self.requests = 0


@dataclass(slots=True)
class CallSample:
    kind: Kind
    latency: float  # caller INVITE sent -> first callee INVITE received (s)
    spread: float  # first -> second callee INVITE (s)
    cpu: float  # process CPU time over the whole call, set-up to teardown (s)
    # Router calls only: the RouterTrace stamps, as seconds after the caller's INVITE.
    marks: dict[str, float] = field(default_factory=dict)
    requests: int = 0


@dataclass(slots=True)
class Results:
    samples: list[CallSample] = field(default_factory=list)

    def of(self, kind: Kind) -> list[CallSample]:
        return [s for s in self.samples if s.kind == kind]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- the router, in-process -------------------------------------------------------


def instrument(router: Router, trace: RouterTrace) -> None:
    """Stamp StasisStart and the ARI requests that originate a leg."""
    take_call = router.intake.take_call
    ari = router.ari
    originate = ari.originate

    def timed_take_call(channel: Channel, extension: str, kind: str | None = None) -> None:
        if trace.stasis is None:
            trace.stasis = time.monotonic()
        take_call(channel, extension, kind)

    async def timed_originate(*args: Any, **kwargs: Any) -> Any:
        trace.requests += 1
        if trace.originate_sent is None:
            trace.originate_sent = time.monotonic()
        result = await originate(*args, **kwargs)
        if trace.originate_done is None:
            trace.originate_done = time.monotonic()
        return result

    router.intake.take_call = timed_take_call  # type: ignore[method-assign]
    ari.originate = timed_originate  # type: ignore[method-assign]


# --- one call ---------------------------------------------------------------------


async def place_call(
    kind: Kind,
    caller: SimulatedPhone,
    callees: tuple[SimulatedPhone, SimulatedPhone],
    extension: str,
    port: int,
    trace: RouterTrace,
    router_idle: Callable[[], Awaitable[None]],
) -> CallSample:
    for phone in (caller, *callees):
        phone.clear_events()
    trace.reset()
    cpu_start = time.process_time()
    call = await caller.call(extension if kind == "router" else native_number(extension), port)
    invites = [await phone.wait_for("INVITE", timeout=10) for phone in callees]
    t0 = (await caller.wait_for("INVITE", direction="out", call_id=call.call_id)).time
    first, second = sorted(invite.time for invite in invites)
    await call.hangup()
    for phone in callees:
        await phone.wait_for("CANCEL", timeout=10)
    if kind == "router":
        await router_idle()
    cpu = time.process_time() - cpu_start
    sample = CallSample(kind, first - t0, second - first, cpu)
    if kind == "router":
        stamps = {
            "stasis": trace.stasis,
            "originate_sent": trace.originate_sent,
            "originate_done": trace.originate_done,
            "invite": first,
        }
        sample.marks = {k: v - t0 for k, v in stamps.items() if v is not None}
        sample.requests = trace.requests
    return sample


# --- the run ----------------------------------------------------------------------


async def benchmark(asterisk: AsteriskSandbox, calls: int, users: int, warmup: int) -> Results:
    results = Results()
    trace = RouterTrace()
    async with PhoneBank() as bank:
        caller = await bank.add("bench-caller")
        pairs: list[tuple[SimulatedPhone, SimulatedPhone]] = []
        for i in range(users):
            a = await bank.add(f"bench-u{i}-desk")
            b = await bank.add(f"bench-u{i}-soft")
            a.ring()
            b.ring()
            pairs.append((a, b))
        await asterisk.add_phones_async(bank.contacts())
        entries: list[tuple[str, str, list[str]]] = []
        for i, (a, b) in enumerate(pairs):
            extension = str(FIRST_EXTENSION + i)
            asterisk.db_put(NATIVE_FAMILY, extension, native_dial_string([a.name, b.name]))
            entries.append((extension, f"User {i}", [a.name, b.name]))
        entries.append(("4999", "Caller", ["bench-caller"]))
        with tempfile.TemporaryDirectory(prefix="callrouter-bench-") as tmp:
            directory_file = Path(tmp) / "directory.yaml"
            rules_file = Path(tmp) / "rules.yaml"
            directory_file.write_text(directory_yaml(entries))
            rules_file.write_text("defaults: {timeout: 20}\n")
            async with running_router(
                asterisk, Path(tmp), directory_file, rules_file, actor="benchmark"
            ) as running:
                router = running.router
                instrument(router, trace)

                async def router_idle() -> None:
                    for _ in range(500):
                        if not router.calls:
                            return
                        await asyncio.sleep(0.002)
                    raise RuntimeError(f"router calls still going: {list(router.calls)}")

                kinds: tuple[Kind, Kind] = ("router", "native")
                total = warmup + calls
                for n in range(total):
                    i = n % users
                    extension = str(FIRST_EXTENSION + i)
                    order = kinds if n % 2 == 0 else kinds[::-1]  # alternate who goes first
                    for kind in order:
                        sample = await place_call(
                            kind, caller, pairs[i], extension, asterisk.sip_port, trace, router_idle
                        )
                        if n >= warmup:
                            results.samples.append(sample)
                        await asyncio.sleep(0.01)  # let Asterisk finish tearing down
                    if (n + 1) % 50 == 0:
                        print(f"  {n + 1}/{total} call pairs", file=sys.stderr)
        for i in range(users):
            asterisk.db_del(NATIVE_FAMILY, str(FIRST_EXTENSION + i))
        names = [p.name for p in bank]
    if asterisk.running:
        asterisk.remove_phones(names)
    return results


def report(results: Results) -> None:
    routed, native = results.of("router"), results.of("native")
    r = [s.latency for s in routed]
    n = [s.latency for s in native]
    r_med, n_med = statistics.median(r), statistics.median(n)
    r_p99, n_p99 = percentile(r, 99), percentile(n, 99)
    ratio = r_med / n_med
    added = r_p99 - n_med

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"calls: {len(routed)} routed, {len(native)} native (sequential, interleaved)")
    print("latency = caller INVITE sent -> first INVITE at a callee phone")
    print(
        f"  router: median {ms(r_med)}, p90 {ms(percentile(r, 90))}, p99 {ms(r_p99)}, "
        f"max {ms(max(r))}"
    )
    print(
        f"  native: median {ms(n_med)}, p90 {ms(percentile(n, 90))}, p99 {ms(n_p99)}, "
        f"max {ms(max(n))}"
    )
    print(
        f"median router {ms(r_med)}, native {ms(n_med)}, ratio {ratio:.2f} "
        f"(goal ≤ {RATIO_GOAL}) {verdict(ratio <= RATIO_GOAL)}"
    )
    print(
        f"p99 added latency {ms(added)} (goal ≤ {ADDED_P99_GOAL_MS:g} ms) "
        f"{verdict(added * 1000 <= ADDED_P99_GOAL_MS)}   "
        f"[p99(router) - median(native)]"
    )
    print(
        f"  for comparison: p99(router) - p99(native) = {ms(r_p99 - n_p99)}, "
        f"median(router) - median(native) = {ms(r_med - n_med)}"
    )
    print(
        f"spread between the two callee INVITEs (median): router "
        f"{ms(statistics.median(s.spread for s in routed))}, native "
        f"{ms(statistics.median(s.spread for s in native))}"
    )

    steps = [
        ("caller INVITE sent -> StasisStart handled by the router", None, "stasis"),
        ("StasisStart -> POST /channels sent", "stasis", "originate_sent"),
        ("POST /channels sent -> first INVITE at a phone", "originate_sent", "invite"),
        ("(POST /channels sent -> its response)", "originate_sent", "originate_done"),
    ]
    traced = [s.marks for s in routed if len(s.marks) == 4]
    if traced:
        print(
            f"where a routed call's time goes (medians over {len(traced)} calls; "
            "the first leg's requests):"
        )
        for label, start, end in steps:
            values = [m[end] - (m[start] if start else 0.0) for m in traced]
            print(f"  {label:<58} {ms(statistics.median(values))}")
        print(
            "  slowest routed calls (ms after the caller's INVITE: StasisStart, "
            "POST /channels sent, INVITE, POST /channels returned):"
        )
        for sample in sorted(routed, key=lambda s: s.latency, reverse=True)[:3]:
            m = sample.marks
            stamps = ", ".join(
                f"{m[k] * 1000:.1f}"
                for k in ("stasis", "originate_sent", "invite", "originate_done")
                if k in m
            )
            print(f"    {ms(sample.latency)}: {stamps}")
        odd = sum(1 for s in routed if s.requests != 2)
        print(f"  calls with other than one POST /channels per phone: {odd} of {len(routed)}")

    r_cpu = sum(s.cpu for s in routed) / len(routed)
    n_cpu = sum(s.cpu for s in native) / len(native)
    print(
        f"router CPU per routed call: {ms(r_cpu - n_cpu)}   [benchmark process CPU per "
        f"router call ({ms(r_cpu)}) minus per native call ({ms(n_cpu)}): the process "
        f"also runs the phones, the same for both kinds]"
    )


async def main_async(args: argparse.Namespace) -> None:
    root = ensure_rootfs()
    asterisk = AsteriskSandbox(root)
    await asterisk.start_async()
    try:
        results = await benchmark(asterisk, args.calls, args.users, args.warmup)
    finally:
        await asterisk.stop_async()
    report(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200, help="calls of each kind")
    parser.add_argument(
        "--users", type=int, default=5, help="users (two ringing phones each) the calls rotate over"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="call pairs placed first and not counted"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="log level for the router and the phones"
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.users < 1 or args.warmup < 0:
        parser.error("--calls and --users must be ≥ 1, --warmup ≥ 0")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
