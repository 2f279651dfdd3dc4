"""Running it like any other service, on the real Asterisk: /metrics after real calls,
systemd's notify protocol (READY=1 only once ARI is connected, the watchdog, STOPPING),
readiness following Asterisk away and back, and ``callrouter status``."""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callrouter.app import Router, run_router
from callrouter.domain.forwarding import RUN_TIME_KINDS
from callrouter.metrics import (
    CALL_RESULTS,
    CHANGE_KINDS,
    HAND_BACK_REASONS,
    LEG_OUTCOMES,
    LOGIN_OUTCOMES,
    OVERLOAD_REASONS,
    PICKUP_OUTCOMES,
    RELOAD_KINDS,
    ROLES,
)
from sandbox import router as in_process
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import CallFailed
from tests.e2e.conftest import MakePhones, started_sandbox, until
from tests.e2e.test_routing import (  # noqa: F401 (fixtures)
    StartRouter,
    _quiet_logs,
    _sip_port,
    directory,
    start_router,
)
from tests.fakes.fake_systemd import NotifySocket

# A connection per request: the API closes idle keep-alive connections after 5 s, and a
# request sent on one just then fails (the tests wait that long for calls and Asterisk).
ONE_CONNECTION_PER_REQUEST = httpx.Limits(max_keepalive_connections=0)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def moved(before: Samples, after: Samples) -> dict[str, float]:
    """What changed, as ``name{label=value}``: buckets and sums left out."""
    changes = {}
    for key, value in after.items():
        name, labels = key
        if name.endswith(("_bucket", "_sum")) or "lag" in name:
            continue
        delta = value - before.get(key, 0.0)
        if delta:
            shown = ",".join(f"{k}={v}" for k, v in labels)
            changes[f"{name}{{{shown}}}" if labels else name] = delta
    return changes


async def test_metrics_count_real_calls_and_logins_and_name_nobody(
    start_router: StartRouter,  # noqa: F811
    make_phones: MakePhones,
    asterisk: AsteriskSandbox,
) -> None:
    caller, desk, busy = await make_phones("rt-caller61", "rt-desk61", "rt-busy61")
    desk.answer(after=0.2)
    busy.busy()
    running = await start_router(
        directory("""
        - {extension: "601", name: Anna, pin: "918273", phones: [PJSIP/rt-desk61]}
        - {extension: "602", name: Boris, phones: [PJSIP/rt-busy61]}
        - {extension: "609", name: Caller, phones: [PJSIP/rt-caller61]}
    """),
        "defaults: {timeout: 20}\n",
    )
    assert running.router.api_server is not None
    base = f"http://127.0.0.1:{running.router.api_server.port}"
    async with httpx.AsyncClient(base_url=base, limits=ONE_CONNECTION_PER_REQUEST) as api:

        async def scrape() -> Samples:
            reply = await api.get("/metrics")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
            return parse(reply.text)

        before = await scrape()
        assert before["callrouter_ari_connected", ()] == 1
        assert before["callrouter_ami_connected", ()] == 1
        assert before["callrouter_ready", ()] == 1

        answered = await caller.call("601", asterisk.sip_port)
        await answered.wait_answered(timeout=10)
        during = await scrape()
        assert during["callrouter_calls_in_progress", ()] == 1
        await answered.hangup()
        await desk.wait_for("BYE")

        to_busy = await caller.call("602", asterisk.sip_port)
        with pytest.raises(CallFailed) as failed:
            await to_busy.wait_answered(timeout=10)
        assert failed.value.status == 486

        unknown = await caller.call("6999", asterisk.sip_port)
        with pytest.raises(CallFailed):
            await unknown.wait_answered(timeout=15)

        wrong = await api.post("/api/v1/session", json={"extension": "601", "pin": "000000"})
        assert wrong.status_code == 401

        await until(lambda: not running.router.calls, "every call to end in the router")
        text = (await api.get("/metrics")).text
        after = parse(text)

    changes = moved(before, after)
    assert changes.pop("callrouter_presence_events_total", 0) >= 1  # the desk was in use
    # An overload signal, a gauge of state: the legs' requests' round trip, smoothed.
    assert after["callrouter_ari_latency_seconds", ()] > 0
    changes.pop("callrouter_ari_latency_seconds", None)
    for revision_and_reloads in [k for k in changes if k.startswith("callrouter_directory_")]:
        changes.pop(revision_and_reloads)  # the poll may pick up the sessions' audit
    assert changes == {
        "callrouter_calls_total{result=answered}": 1,
        "callrouter_calls_total{result=busy}": 1,
        "callrouter_calls_total{result=unknown}": 1,
        "callrouter_legs_total{outcome=started}": 2,
        "callrouter_legs_total{outcome=answered}": 1,
        "callrouter_legs_total{outcome=busy}": 1,
        "callrouter_call_setup_seconds_count": 2,
        "callrouter_call_answer_seconds_count": 1,
        "callrouter_logins_total{outcome=wrong_pin}": 1,
    }
    assert after["callrouter_calls_in_progress", ()] == 0
    assert 0 < after["callrouter_call_setup_seconds_sum", ()] < 0.5
    assert 0.1 < after["callrouter_call_answer_seconds_sum", ()] < 5
    assert after["callrouter_directory_revision", ()] == running.router.live.snapshot.revision

    # Nobody is named anywhere: every label value comes from a closed set, and no
    # extension, endpoint, phone or PIN appears in any line's name and labels.
    allowed = {
        "result": set(CALL_RESULTS),
        "reason": set(HAND_BACK_REASONS) | set(OVERLOAD_REASONS),
        "outcome": set(LEG_OUTCOMES) | set(LOGIN_OUTCOMES) | set(PICKUP_OUTCOMES),
        "kind": set(RELOAD_KINDS) | set(CHANGE_KINDS) | set(RUN_TIME_KINDS),
        "role": set(ROLES),
    }
    for name, labels in after:
        assert name.startswith("callrouter_"), name  # the router's own registry only
        for label, value in labels:
            if label == "le":
                float(value)  # a bucket bound
            else:
                assert value in allowed[label], (name, label, value)
    forbidden = ["601", "602", "609", "6999", "918273", "000000", "PJSIP", "rt-"]
    for line in text.splitlines():
        if line.startswith("#"):
            words = line.split(" ", 3)[:3]  # "# HELP name" / "# TYPE name"
            assert not any(f in w for f in forbidden for w in words), line
            continue
        series, _, value = line.rpartition(" ")
        float(value)
        for word in forbidden:
            assert not re.search(rf"(?<![\w.]){re.escape(word)}", series), (word, line)


# --- systemd, readiness and `callrouter status` on an Asterisk of this test's own --------


@pytest.fixture
def own_asterisk() -> Iterator[AsteriskSandbox]:
    """A sandbox Asterisk that this test stops and starts (the session's one goes on)."""
    sandbox = started_sandbox()
    try:
        yield sandbox
    finally:
        sandbox.stop()


async def callrouter_status(router_url: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callrouter",
        "status",
        "--router",
        router_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_ready_only_with_asterisk_watchdog_from_the_loop_and_status(
    own_asterisk: AsteriskSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WatchdogSec=0.4s: WATCHDOG=1 each 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    directory_file = tmp_path / "directory.yaml"
    directory_file.write_text(
        textwrap.dedent(
            directory("""
        - {extension: "701", name: Olga}
    """)
        )
    )
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("defaults: {timeout: 20}\n")
    url = f"sqlite:///{tmp_path}/callrouter.db"
    await in_process.load_directory(url, directory_file, actor="test")
    settings = in_process.sandbox_settings(own_asterisk, url, rules_file, poll_interval=0.2)

    await asyncio.to_thread(own_asterisk.stop)  # the router starts without Asterisk
    ari_up: list[float] = []  # when ARI's resync ended, just before it counts as connected

    def started(router: Router) -> None:
        resync = router.ari.on_connected
        assert resync is not None

        async def recorded() -> None:
            await resync()
            ari_up.append(time.monotonic())

        router.ari.on_connected = recorded
        routers.append(router)

    routers: list[Router] = []
    stop, reload = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(run_router(settings, stop, reload, on_started=started))
    try:
        await until(lambda: routers or task.done(), "the router to start", 20)
        router = routers[0]
        assert router.api_server is not None
        base = f"http://127.0.0.1:{router.api_server.port}"
        async with httpx.AsyncClient(base_url=base, limits=ONE_CONNECTION_PER_REQUEST) as api:
            assert (await api.get("/api/v1/health/live")).status_code == 200
            await asyncio.sleep(1.5)  # long enough to connect, had there been Asterisk
            reply = await api.get("/api/v1/health/ready")
            assert reply.status_code == 503, reply.text
            body = reply.json()
            assert not body["ready"] and not body["ari_connected"]
            assert any("ARI is not connected" in r for r in body["reasons"])
            assert any("AMI is not connected" in w for w in body["warnings"])
            assert notify.with_field("READY") == []
            statuses = [n.fields["STATUS"] for n in notify.with_field("STATUS")]
            assert "loading the directory" in statuses
            assert any(s.startswith("not ready: ARI is not connected") for s in statuses)
            code, out = await callrouter_status(base)
            assert code == 1, out
            assert "NOT READY" in out and "ARI        NOT connected" in out

            await asyncio.to_thread(own_asterisk.start)
            await until(lambda: notify.with_field("READY", "1"), "READY=1", 30)
            (ready,) = notify.with_field("READY", "1")
            assert ari_up and ari_up[0] < ready.at  # READY=1 came after ARI was connected
            assert router.ami.connected
            assert ready.fields["STATUS"].startswith("routing: 0 call(s) in progress")
            reply = await api.get("/api/v1/health/ready")
            assert reply.status_code == 200 and reply.json()["ready"], reply.text
            code, out = await callrouter_status(base)
            assert code == 0, out
            assert "ready" in out.splitlines()[0] and "ARI        connected" in out

            # Asterisk goes away: not ready; back: ready again, and routing.
            await asyncio.to_thread(own_asterisk.stop)
            await until(
                lambda: not router.ari.is_connected, "the router to notice Asterisk is gone"
            )
            reply = await api.get("/api/v1/health/ready")
            assert reply.status_code == 503, reply.text
            assert (await callrouter_status(base))[0] == 1
            await asyncio.to_thread(own_asterisk.start)
            await router.ari.wait_connected(30)
            reply = await api.get("/api/v1/health/ready")
            assert reply.status_code == 200, reply.text
            assert notify.with_field("READY", "1") == [ready]  # READY=1 once, at the start
            await until(
                # The latest STATUS=, not the latest datagram: WATCHDOG=1 comes between.
                lambda: notify.with_field("STATUS")[-1].fields["STATUS"].startswith("routing"),
                "STATUS= to say it routes again",
            )

        # The watchdog came at its interval all along, from the start on.
        times = [n.at for n in notify.with_field("WATCHDOG", "1")]
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        assert len(gaps) > 20
        assert 0.15 < gaps[len(gaps) // 2] < 0.3, gaps  # the median: 0.2 s
        assert max(gaps) < 1.0, gaps  # no stall, Asterisk away or not

        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        stopping = notify.with_field("STOPPING", "1")
        assert len(stopping) == 1 and stopping[0].at > ready.at
        assert (await callrouter_status(base))[0] == 2  # nothing listens there now
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 30)
        notify.close()
