"""A demo of callrouter on the sandbox Asterisk with simulated phones.

Boots the sandbox Asterisk, makes a simulated SIP phone for every PJSIP/ endpoint in
examples/directory.yaml (plus the caller, ``demo-caller``), loads the example directory
into a temporary SQLite database, starts the router in-process with examples/rules.yaml
and places a few scripted calls, printing for each which phone got what when. Last,
two ``callrouter serve`` on a throwaway PostgreSQL: the active one is killed while a
call rings, and the standby takes the call over.

Run from the repository root (as root: the sandbox needs a chroot):

    .venv/bin/python scripts/demo.py            # the example rules as they are (~50 s)
    .venv/bin/python scripts/demo.py --fast     # a copy of the rules, times x 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import yaml  # noqa: E402

from callrouter.routing.chain import plan_tree  # noqa: E402
from callrouter.routing.resolver import resolve_plan  # noqa: E402
from callrouter.routing.timeline import format_tree  # noqa: E402
from sandbox.asterisk import AsteriskSandbox, SandboxUnavailable, ensure_rootfs  # noqa: E402
from sandbox.phones import (  # noqa: E402
    Answer,
    Behaviour,
    Busy,
    CallFailed,
    PhoneBank,
    PhoneTimeout,
    Ring,
    SimulatedPhone,
)
from sandbox.router import (  # noqa: E402
    RunningRouter,
    ServeProcess,
    load_directory,
    sandbox_settings,
    start_router,
    throwaway_postgres,
    wipe_postgres,
)

DIRECTORY = REPO / "examples" / "directory.yaml"
RULES = REPO / "examples" / "rules.yaml"
CALLER = "demo-caller"


# --- what to call ---------------------------------------------------------------------


@dataclass
class Scenario:
    title: str
    extension: str
    behaviours: dict[str, Behaviour] = field(default_factory=dict)  # others just ring
    hold: float = 1.5  # seconds the caller stays connected once answered
    note: str = ""
    # Done before the call (a login, a status); returns what it did, for the output.
    before: Callable[[RunningRouter, PhoneBank, int], Awaitable[str]] | None = None


async def emma_logs_in_at_hotdesk_2(running: RunningRouter, bank: PhoneBank, sip_port: int) -> str:
    """Emma dials *44 + 205 + # + PIN on hot desk 2's phone ("#" travels as %23)."""
    desk = next(p for p in bank if p.name == "hotdesk2-desk")
    desk.behaviour = Ring()
    call = await desk.call("*44205%239090", sip_port)
    await call.wait_answered(timeout=10)
    await call.wait_ended(timeout=30)  # the router says "agent logged in" and hangs up
    outcome = running.router.feature_codes.outcomes[-1]
    return (
        f"hotdesk2-desk dialled *44205#****: {outcome.action} "
        f"{'ok' if outcome.ok else outcome.refusal}, heard {', '.join(outcome.prompts)}; "
        f"Emma is now at {running.router.live.snapshot.logins.get('205')}"
    )


async def emma_sets_dnd(running: RunningRouter, bank: PhoneBank, sip_port: int) -> str:
    """Emma's client app: a session with her PIN, then status dnd."""
    assert running.router.api_server is not None
    base = f"http://127.0.0.1:{running.router.api_server.port}"
    async with httpx.AsyncClient(base_url=base) as api:
        token = (
            await api.post("/api/v1/session", json={"extension": "205", "pin": "9090"})
        ).json()["token"]
        reply = await api.put(
            "/api/v1/presence/client",
            headers={"Authorization": f"Bearer {token}"},
            json={"client_id": "emma-laptop", "status": "dnd"},
        )
    state = reply.json()
    return (
        f"PUT /api/v1/presence/client {{status: dnd}} -> client {state['client']}, "
        f"BLF Custom:user-205 shows {state['device_state']}"
    )


def scenarios(scale: float) -> list[Scenario]:
    s = scale
    return [
        Scenario(
            "(a) direct phones only: Reception, both phones ring, the DECT answers after ~1 s",
            "210",
            {"reception-dect": Answer(after=1.0)},
        ),
        Scenario(
            "(b) FollowMe with delays: David, desk phone first, then the DECT "
            f"handset at {10 * s:g} s (answers ~2 s later)",
            "204",
            {"david-dect": Answer(after=2.0 * min(1.0, s * 2))},
        ),
        Scenario(
            "(c) mixed operation: Anna, logged in at office-1: her own phones "
            f"at once, office-1's desk phone from {5 * s:g} s (answers ~2 s later)",
            "201",
            {"office1-desk": Answer(after=2.0 * min(1.0, s * 2))},
            note="her mobile (+4917012345678 via PJSIP/{number}@trunk) would start at "
            f"{15 * s:g} s; the sandbox has no trunk, so that leg could not "
            "reach anything anyway",
        ),
        Scenario(
            "(d) nobody answers: Clara's only phone rings for the default "
            f"{20 * s:g} s -> NOANSWER",
            "203",
        ),
        Scenario(
            "(e) every phone busy: Greta's softphone says 486 -> BUSY",
            "207",
            {"greta-soft": Busy()},
        ),
        Scenario(
            "(f) hot desking: Emma logs in at hot desk 2 from its phone (feature "
            "code), then a call to her rings there and she answers",
            "205",
            {"hotdesk2-desk": Answer(after=1.0)},
            before=emma_logs_in_at_hotdesk_2,
        ),
        Scenario(
            "(g) forwarding: Emma, still at hot desk 2, does not answer; after "
            f"{20 * s:g} s her call goes to Reception (rules: forward no_answer), "
            "whose DECT answers",
            "205",
            {"reception-dect": Answer(after=1.0)},
        ),
        Scenario(
            "(h) presence: Emma sets do-not-disturb in her client app -> DND at once, "
            "no phone rings",
            "205",
            before=emma_sets_dnd,
        ),
    ]


# --- set-up ---------------------------------------------------------------------------


def pjsip_endpoints(path: Path) -> list[str]:
    """Every PJSIP/ endpoint named in the directory file, in order, once each."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for user in data.get("users") or []:
        names += user.get("phones") or []
    for workplace in data.get("workplaces") or []:
        names += workplace.get("phones") or []
    names += data.get("phones") or []
    seen: dict[str, None] = {}
    for name in names:
        if name.startswith("PJSIP/"):
            seen.setdefault(name.removeprefix("PJSIP/"), None)
    return list(seen)


def scaled_rules(source: Path, target: Path, scale: float) -> Path:
    """A copy of the rules with every delay and timeout multiplied by ``scale``."""
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}

    def scale_entry(entry: dict[str, Any]) -> None:
        for key in ("delay", "timeout"):
            if key in entry:
                entry[key] = round(entry[key] * scale, 3)

    defaults = data.setdefault("defaults", {})
    defaults["timeout"] = round(defaults.get("timeout", 20) * scale, 3)
    for user in (data.get("users") or {}).values():
        for entry in user.get("followme") or []:
            scale_entry(entry)
    for workplace in (data.get("workplaces") or {}).values():
        for entry in workplace.get("ring") or []:
            scale_entry(entry)
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


class Collect(logging.Handler):
    """Keeps the router's warnings, to show them in the call's timeline."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))


# --- printing ---------------------------------------------------------------------------


def timeline(
    t0: float, caller: SimulatedPhone, bank: PhoneBank, warnings: list[tuple[float, str]]
) -> list[str]:
    rows: list[tuple[float, str]] = []
    for phone in bank:
        for e in phone.events:
            if e.time < t0 or e.retransmission:
                continue
            who = phone.name
            if phone is caller:
                if e.direction == "in" and e.method == "INVITE" and e.kind == "180":
                    rows.append((e.time, f"{who:<16} hears ringing (180)"))
                elif e.direction == "in" and e.method == "INVITE" and e.kind == "200":
                    rows.append((e.time, f"{who:<16} ANSWERED (200 OK)"))
                elif e.direction == "in" and e.method == "INVITE" and e.message.status >= 300:
                    rows.append((e.time, f"{who:<16} call failed: {e.message.start_line[8:]}"))
                elif e.direction == "out" and e.kind == "BYE":
                    rows.append((e.time, f"{who:<16} hangs up (BYE)"))
                elif e.direction == "in" and e.kind == "BYE":
                    rows.append((e.time, f"{who:<16} got BYE"))
                continue
            if e.direction == "in" and e.kind in ("INVITE", "CANCEL", "BYE"):
                rows.append((e.time, f"{who:<16} got {e.kind}"))
            elif e.direction == "out" and e.method == "INVITE" and e.kind == "200":
                rows.append((e.time, f"{who:<16} answers (200 OK)"))
            elif (
                e.direction == "out"
                and e.method == "INVITE"
                and e.message.status in (486, 600, 603)
            ):
                rows.append((e.time, f"{who:<16} says {e.message.start_line[8:]}"))
    rows += [(t, f"router warning: {msg}") for t, msg in warnings if t >= t0]
    return [f"  {t - t0:7.3f} s  {text}" for t, text in sorted(rows)]


# --- the demo -------------------------------------------------------------------------


async def place_call(
    sc: Scenario,
    caller: SimulatedPhone,
    bank: PhoneBank,
    sip_port: int,
    limit: float,
    collect: Collect,
) -> None:
    for phone in bank:
        if phone is not caller:
            phone.behaviour = sc.behaviours.get(phone.name, Ring())
        phone.clear_events()
    t0 = time.monotonic()
    call = await caller.call(sc.extension, sip_port)
    try:
        await call.wait_answered(timeout=limit)
    except CallFailed as exc:
        outcome = f"not answered: SIP {exc.status} {exc.reason}"
    except PhoneTimeout:
        outcome = f"no outcome within {limit:g} s"
        with contextlib.suppress(Exception):
            await call.hangup()
    else:
        answered_by = [
            p.name
            for p in bank
            if p is not caller
            and any(
                e.direction == "out" and e.method == "INVITE" and e.kind == "200" and e.time >= t0
                for e in p.events
            )
        ]
        outcome = f"answered by {', '.join(answered_by) or '?'} after {call.answered_at - t0:.2f} s"  # type: ignore[operator]
        await asyncio.sleep(sc.hold)
        await call.hangup()
    await asyncio.sleep(0.7)  # let the last CANCELs and BYEs arrive
    print("  timeline (seconds from the caller's INVITE):")
    print("\n".join(timeline(t0, caller, bank, collect.records)))
    print(f"  outcome: {outcome}")
    if sc.note:
        print(f"  note: {sc.note}")


async def demo(asterisk: AsteriskSandbox, rules_path: Path, workdir: Path, scale: float) -> None:
    url = f"sqlite:///{workdir}/callrouter.db"
    await load_directory(url, DIRECTORY, actor="demo")

    collect = Collect()
    logging.getLogger().addHandler(collect)
    async with PhoneBank() as bank:
        names = pjsip_endpoints(DIRECTORY)
        for name in names:
            await bank.add(name, behaviour=Ring())
        caller = await bank.add(CALLER)
        await asterisk.add_phones_async(bank.contacts())
        print(
            f"phones: {len(names)} from {DIRECTORY.relative_to(REPO)} "
            f"({', '.join(names)}) + {CALLER}"
        )

        running = await start_router(sandbox_settings(asterisk, url, rules_path), asterisk=asterisk)
        try:
            print(f"router: connected to the sandbox Asterisk (ARI {asterisk.http_url})\n")

            for sc in scenarios(scale):
                print("=" * 78)
                print(sc.title)
                if sc.before is not None:
                    print(f"  first: {await sc.before(running, bank, asterisk.sip_port)}")
                # What the router would do now: its snapshot, its rules, live presence.
                live = running.router.live
                plan = resolve_plan(
                    live.snapshot,
                    live.rules,
                    sc.extension,
                    f"PJSIP/{CALLER}",
                    presence=running.router.presence.tracker,
                )
                print(f"  $ callrouter plan {sc.extension} --caller PJSIP/{CALLER}")
                tree = plan_tree(live.snapshot, live.rules, plan, f"PJSIP/{CALLER}")
                print("    " + format_tree(tree).rstrip("\n").replace("\n", "\n    "))
                # Long enough for the plan and every plan its forwardings lead to.
                stop_at, node = 0.0, tree
                while node.then:
                    stop_at += node.plan.stop
                    node = max((t for _, t in node.then), key=lambda t: t.plan.stop)
                stop_at += node.plan.stop
                await place_call(sc, caller, bank, asterisk.sip_port, stop_at + 10, collect)
                print()
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await running.shut_down()
            logging.getLogger().removeHandler(collect)
            print("router stopped")
        print("=" * 78)
        await failover(asterisk, rules_path, workdir, caller, bank, scale)
    print("phones closed")


async def failover(
    asterisk: AsteriskSandbox,
    rules_path: Path,
    workdir: Path,
    caller: SimulatedPhone,
    bank: PhoneBank,
    scale: float,
) -> None:
    """(i) Two routers on a PostgreSQL directory; the active one is killed (SIGKILL)
    while a call rings, and the standby takes the call over."""
    print(
        "(i) active and standby: two `callrouter serve` on a PostgreSQL directory; "
        "the active one is killed (kill -9) while Reception's phones ring"
    )
    async with throwaway_postgres() as url:
        await wipe_postgres(url)
        await load_directory(url, DIRECTORY, actor="demo")
        settings = sandbox_settings(asterisk, url, rules_path)
        a, b = (
            ServeProcess(settings, workdir, "router-a"),
            ServeProcess(settings, workdir, "router-b"),
        )
        try:
            await a.start()
            await a.wait_role("active")
            await b.start()
            await b.wait_role("standby")
            print("  router-a: active; router-b: standby")
            for phone in bank:
                if phone is not caller:
                    phone.behaviour = Ring()
                phone.clear_events()
            dect = next(p for p in bank if p.name == "reception-dect")
            t0 = time.monotonic()
            call = await caller.call("210", asterisk.sip_port)
            await dect.wait_for("INVITE", timeout=10)
            await asyncio.sleep(1.0 * min(1.0, scale * 4))
            dect.behaviour = Answer(after=1.0)  # it answers the standby's ring
            killed = time.monotonic()
            a.kill()
            await b.wait_role("active", timeout=10)
            taken = time.monotonic()
            await call.wait_answered(timeout=20)
            await asyncio.sleep(1.0)
            await call.hangup()
            await asyncio.sleep(0.7)
            print("  timeline (seconds from the caller's INVITE):")
            rows = timeline(t0, caller, bank, [])
            rows.append(f"  {killed - t0:7.3f} s  router-a killed (SIGKILL)")
            rows.append(f"  {taken - t0:7.3f} s  router-b says it is active")
            print("\n".join(sorted(rows, key=lambda row: float(row.split()[0]))))
            took = [line for line in b.output().splitlines() if "routing after" in line]
            print(f"  router-b: {took[-1].split(': ', 1)[-1] if took else '?'}")
            print(
                f"  outcome: router-b routed the call {taken - killed:.2f} s after the kill; "
                "reception-dect answered its ring"
            )
        finally:
            for router in (a, b):
                await router.stop()
        print("routers stopped")


async def main_async(
    asterisk: AsteriskSandbox, rules_path: Path, workdir: Path, scale: float
) -> None:
    # Ctrl-C cancels the demo, whose finally blocks then stop the router and the phones.
    me = asyncio.current_task()
    assert me is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, me.cancel)
    loop.add_signal_handler(signal.SIGTERM, me.cancel)
    try:
        await demo(asterisk, rules_path, workdir, scale)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fast", action="store_true", help="use a copy of the example rules with every time x 0.25"
    )
    parser.add_argument("--verbose", action="store_true", help="show the router's log")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    scale = 0.25 if args.fast else 1.0

    print("booting the sandbox Asterisk ...", flush=True)
    try:
        asterisk = AsteriskSandbox(ensure_rootfs())
        asterisk.start()
    except SandboxUnavailable as exc:
        print(f"sandbox Asterisk unavailable: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    status = 0
    try:
        print(
            f"sandbox Asterisk up in {asterisk.started_in:.1f} s "
            f"(SIP 127.0.0.1:{asterisk.sip_port})"
        )
        with tempfile.TemporaryDirectory(prefix="callrouter-demo-") as tmp:
            workdir = Path(tmp)
            rules_path = RULES
            if scale != 1.0:
                rules_path = scaled_rules(RULES, workdir / "rules.yaml", scale)
                print(
                    f"NOTE: --fast: using a copy of {RULES.relative_to(REPO)} with every "
                    f"delay and timeout x {scale:g}"
                )
            else:
                print(
                    f"rules: {RULES.relative_to(REPO)} as they are (the demo takes ~50 s; "
                    "--fast scales the times down)"
                )
            print(
                "NOTE: external numbers ring PJSIP/{number}@trunk; the sandbox has no "
                "trunk, so those legs reach nothing."
            )
            try:
                asyncio.run(main_async(asterisk, rules_path, workdir, scale))
            except (KeyboardInterrupt, asyncio.CancelledError):
                print("\ninterrupted", file=sys.stderr)
                status = 130
    finally:
        asterisk.stop()
        print("sandbox Asterisk stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
