"""The call intake under overload, on the fake ARI: each signal as the intake gathers it,
the one hand-back request, the counters, and routing again once the load dropped (the
overload state on a fake clock; the calls themselves on real time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from callrouter.ari import AriClient
from callrouter.calls.intake import CallIntake
from callrouter.calls.overload import OverloadLimits
from callrouter.domain.directory import DirectorySnapshot, User
from callrouter.metrics import Metrics
from callrouter.rules.model import RingRules
from tests.fakes import FakeAri, make_channel, make_event
from tests.unit.test_metrics import samples

SNAPSHOT = DirectorySnapshot(
    users={
        "201": User("201", "Alice", phones=("PJSIP/a",)),
        "202": User("202", "Bert", phones=("PJSIP/b",)),
    }
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(cond: Callable[[], object], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


class Rig:
    def __init__(self, fake: FakeAri, ari: AriClient, intake: CallIntake, clock: FakeClock):
        self.fake, self.ari, self.intake, self.clock = fake, ari, intake, clock
        self.metrics = intake.metrics

    async def call(self, caller: str, extension: str) -> None:
        self.fake.model.channels[caller] = make_channel(caller)
        await self.fake.send_event(
            make_event("StasisStart", args=[extension], channel=make_channel(caller))
        )

    async def hang_up(self, caller: str) -> None:
        await self.fake.send_event(make_event("StasisEnd", channel=make_channel(caller)))

    def originates(self) -> list[str]:
        return [r.params["channelId"] for r in self.fake.requests_to("POST", "/channels")]

    def continued(self, caller: str) -> list[dict[str, str]]:
        return [r.params for r in self.fake.requests_to("POST", f"/channels/{caller}/continue")]

    def count(self, name: str, **labels: str) -> float:
        return samples(self.metrics)[name, tuple(sorted(labels.items()))]


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """Room for one waiting call unless the test asks for other limits or rules
    (``indirect`` parametrisation with ``{"limits": ..., "rules": ...}``)."""
    given = getattr(request, "param", {})
    limits: OverloadLimits = given.get("limits", OverloadLimits(max_pending=1))
    rules = RingRules.model_validate(given.get("rules", {}))
    clock = FakeClock()
    async with (
        FakeAri(password="pw") as fake,
        AriClient(fake.base_url, fake.user, "pw", fake.app) as ari,
    ):
        intake = CallIntake(
            ari, lambda: (SNAPSHOT, rules), metrics=Metrics(), overload=limits, clock=clock
        )
        ari.on_event = intake.on_event
        await ari.wait_connected(3)
        yield Rig(fake, ari, intake, clock)
        await intake.stop(0.5)


async def test_a_call_that_finds_the_router_overloaded_goes_to_the_fallback_at_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Room for one waiting call: while the first call's leg request is held, the second
    caller goes back with one request; the held one is routed on."""
    caplog.set_level(logging.INFO, logger="callrouter.calls")
    held = asyncio.Event()
    rig.fake.set_response("POST", "/channels", 200, make_channel("held"), hold=held, times=1)
    await rig.call("caller-1", "201")
    await until(lambda: rig.originates())
    assert rig.intake.signals().pending == 1
    assert rig.count("callrouter_calls_pending") == 1
    await rig.call("caller-2", "202")
    await until(lambda: rig.continued("caller-2"))
    assert rig.continued("caller-2") == [
        {"context": "callrouter", "extension": "202", "label": "fallback"}
    ]
    assert len(rig.originates()) == 1  # nothing asked for caller-2
    assert set(rig.intake.calls) == {"caller-1"}  # and no call of the router's
    assert not rig.fake.requests_to("POST", "/channels/caller-2/ring")
    assert rig.count("callrouter_calls_handed_back_total", reason="overload") == 1
    assert rig.count("callrouter_calls_handed_back_total", reason="shutdown") == 0
    assert rig.count("callrouter_calls_total", result="handed_back") == 1
    assert rig.count("callrouter_overloaded") == 1
    assert rig.count("callrouter_overloads_total", reason="pending") == 1
    assert rig.count("callrouter_overloads_total", reason="loop_lag") == 0
    (line,) = [r for r in caplog.records if "handed back" in r.getMessage()]
    assert line.getMessage() == (
        "call caller-2: 202 handed back to the dialplan fallback (overload: pending)"
    )
    assert getattr(line, "call_id", None) == "caller-2"
    # Asterisk answers the held request: the first call rings on, nothing waits now.
    held.set()
    await until(lambda: rig.fake.requests_to("POST", "/channels/caller-1/ring"))
    await until(lambda: rig.intake.signals().pending == 0)
    # Still overloaded until the signals stayed calm for the recover time ...
    await rig.call("caller-3", "202")
    await until(lambda: rig.continued("caller-3"))
    assert rig.count("callrouter_calls_handed_back_total", reason="overload") == 2
    rig.clock.now += 1.0
    # ... then routed again, without anything else to do.
    await rig.call("caller-4", "202")
    await until(lambda: len(rig.originates()) == 2)
    assert not rig.continued("caller-4")
    assert set(rig.intake.calls) == {"caller-1", "caller-4"}
    assert rig.count("callrouter_overloaded") == 0
    assert rig.count("callrouter_overloads_total", reason="pending") == 1
    assert any(
        r.getMessage().startswith("overload over after 1.0 s, 2 call(s)") for r in caplog.records
    )
    for caller in ("caller-1", "caller-4"):
        await rig.hang_up(caller)
    await until(lambda: not rig.intake.calls)
    assert rig.intake.signals().pending == 0


@pytest.mark.parametrize(
    "rig",
    [{"rules": {"users": {"201": {"followme": [{"ring": ["PJSIP/a"], "delay": 30}]}}}}],
    indirect=True,
)
async def test_a_call_whose_rule_delays_its_first_leg_is_not_waiting_for_the_router(
    rig: Rig,
) -> None:
    await rig.call("caller-1", "201")
    await until(lambda: rig.fake.requests_to("POST", "/channels/caller-1/ring"))
    await until(lambda: rig.intake.signals().pending == 0)
    assert not rig.originates()  # its first entry is 30 s away
    await rig.call("caller-2", "202")
    await until(lambda: rig.originates())
    assert not rig.continued("caller-2")
    assert rig.count("callrouter_overloaded") == 0
    for caller in ("caller-1", "caller-2"):
        await rig.hang_up(caller)
    await until(lambda: not rig.intake.calls)


async def test_a_call_with_nothing_to_ring_stops_waiting_when_it_ends(rig: Rig) -> None:
    await rig.call("caller-1", "999")  # unknown: straight to [callrouter-result]
    await until(lambda: rig.continued("caller-1"))
    await until(lambda: not rig.intake.calls)
    assert rig.continued("caller-1")[0]["context"] == "callrouter-result"
    assert rig.intake.signals().pending == 0
    await rig.call("caller-2", "202")
    await until(lambda: rig.originates())
    await rig.hang_up("caller-2")
    await until(lambda: not rig.intake.calls)
    assert rig.count("callrouter_overloaded") == 0


async def test_the_loop_lag_probe_puts_the_intake_into_overload_and_out_again(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter.calls.overload")
    rig.intake.loop_lag_measured(0.3)  # the default limit is 0.25 s
    assert rig.count("callrouter_overloaded") == 1
    assert rig.count("callrouter_overloads_total", reason="loop_lag") == 1
    await rig.call("caller-1", "201")
    await until(lambda: rig.continued("caller-1"))
    # The probe's next samples: calm, and after the recover time the overload is over,
    # logged then, with no call needed to notice.
    rig.intake.loop_lag_measured(0.001)
    rig.clock.now += 0.5
    rig.intake.loop_lag_measured(0.001)
    assert rig.intake.overload.overloaded
    rig.clock.now += 0.5
    rig.intake.loop_lag_measured(0.001)
    assert not rig.intake.overload.overloaded
    assert caplog.records[-1].getMessage().startswith("overload over after 1.0 s, 1 call(s)")
    await rig.call("caller-2", "201")
    await until(lambda: rig.originates())
    await rig.hang_up("caller-2")
    await until(lambda: not rig.intake.calls)


@pytest.mark.parametrize("rig", [{"limits": OverloadLimits(max_ari_latency=1e-6)}], indirect=True)
async def test_the_leg_requests_round_trip_is_the_ari_latency_signal(rig: Rig) -> None:
    """Any real round trip exceeds a microsecond: the first call's leg request puts the
    router into overload, and the next call is handed back."""
    await rig.call("caller-1", "201")
    await until(lambda: rig.intake.signals().ari_latency > 0)
    assert rig.count("callrouter_ari_latency_seconds") > 0
    await rig.call("caller-2", "202")
    await until(lambda: rig.continued("caller-2"))
    assert rig.count("callrouter_overloads_total", reason="ari_latency") == 1
    assert len(rig.originates()) == 1
    await rig.hang_up("caller-1")
    await until(lambda: not rig.intake.calls)


async def test_a_hand_back_that_fails_is_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.intake.loop_lag_measured(1.0)
    rig.fake.set_response("POST", "/channels/{id}/continue", 404, {"message": "Channel not found"})
    await rig.call("caller-1", "201")
    await until(lambda: any("hand-back failed" in r.getMessage() for r in caplog.records))
    assert not rig.intake.calls


async def test_a_caller_arriving_while_the_router_shuts_down_goes_to_the_fallback_at_once(
    rig: Rig,
) -> None:
    """A ringing call may finish within the grace; a new one would wait in the app for
    a router that is leaving (and, after it left, for the next one to start)."""
    await rig.call("caller-1", "201")
    await until(lambda: rig.originates())
    stopping = asyncio.ensure_future(rig.intake.stop(5.0))
    await until(lambda: not rig.intake.accepting)
    await rig.call("caller-2", "202")
    await until(lambda: rig.continued("caller-2"))
    assert rig.continued("caller-2") == [
        {"context": "callrouter", "extension": "202", "label": "fallback"}
    ]
    assert len(rig.originates()) == 1 and set(rig.intake.calls) == {"caller-1"}
    assert rig.count("callrouter_calls_handed_back_total", reason="shutdown") == 1
    await rig.hang_up("caller-1")
    await asyncio.wait_for(stopping, 5)
