"""The router's metrics: closed label sets held to the enums, a registry per router,
and the calls counted where the intake and the driver see them (fake ARI)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from callrouter.calls.flow import CallFlow, CallResult, LegEnd
from callrouter.calls.intake import leg_outcomes
from callrouter.logins.policy import Refusal
from callrouter.logins.service import OUTCOMES
from callrouter.metrics import (
    CALL_RESULTS,
    LEG_OUTCOMES,
    LOGIN_OUTCOMES,
    Metrics,
    watch_loop_lag,
)
from callrouter.routing.plan import Leg, LegSource, PlanStatus, RingPlan


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the text format, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(metrics.text().decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_label_sets_are_the_enums() -> None:
    assert set(CALL_RESULTS) == {r.value.lower() for r in CallResult}
    assert set(OUTCOMES) == set(Refusal)  # every refusal has its label
    assert set(OUTCOMES.values()) | {"ok"} == set(LOGIN_OUTCOMES)
    assert {e.value for e in LegEnd} | {"started", "answered"} == set(LEG_OUTCOMES)


def test_two_routers_in_one_process_count_apart() -> None:
    one, two = Metrics(), Metrics()
    one.call_finished("answered")
    assert samples(one)["callrouter_calls_total", (("result", "answered"),)] == 1
    assert samples(two)["callrouter_calls_total", (("result", "answered"),)] == 0


def test_every_series_exists_from_the_start_and_states_are_read_when_scraped() -> None:
    metrics = Metrics()
    calls = {"n": 0}
    connections = {"ari": 1}
    metrics.track_calls(lambda: calls["n"])
    metrics.track_ari(lambda: True, lambda: connections["ari"])
    metrics.track_ami(lambda: False, lambda: 0)
    metrics.track_directory(lambda: 42)
    found = samples(metrics)
    for result in CALL_RESULTS:
        assert found["callrouter_calls_total", (("result", result),)] == 0
    assert found["callrouter_calls_handed_back_total", (("reason", "shutdown"),)] == 0
    assert found["callrouter_calls_handed_back_total", (("reason", "overload"),)] == 0
    assert found["callrouter_overloads_total", (("reason", "loop_lag"),)] == 0
    assert found["callrouter_logins_total", (("outcome", "wrong_pin"),)] == 0
    assert found["callrouter_directory_reloads_total", (("kind", "logins"),)] == 0
    assert found["callrouter_call_setup_seconds_count", ()] == 0
    assert found["callrouter_ari_connected", ()] == 1
    assert found["callrouter_ami_connected", ()] == 0
    assert found["callrouter_ari_reconnects_total", ()] == 0
    assert found["callrouter_ami_reconnects_total", ()] == 0
    assert found["callrouter_directory_revision", ()] == 42
    calls["n"], connections["ari"] = 3, 4
    found = samples(metrics)
    assert found["callrouter_calls_in_progress", ()] == 3
    assert found["callrouter_ari_reconnects_total", ()] == 3
    assert not any(name.endswith("_created") for name, _ in found)


async def test_loop_lag_is_measured_when_the_loop_is_blocked() -> None:
    metrics = Metrics()
    task = asyncio.create_task(watch_loop_lag(metrics, interval=0.05))
    await asyncio.sleep(0.12)
    time.sleep(0.3)  # the loop is blocked: the probe wakes late
    await asyncio.sleep(0.12)
    task.cancel()
    found = samples(metrics)
    assert found["callrouter_event_loop_lag_seconds_count", ()] >= 3
    assert (
        found["callrouter_event_loop_lag_seconds_bucket", (("le", "0.1"),)]
        < (found["callrouter_event_loop_lag_seconds_count", ()])
    )  # one wake-up was more than 0.1 s late
    assert found["callrouter_event_loop_lag_seconds_sum", ()] >= 0.2


def test_leg_outcomes_name_the_winner_answered_and_skip_legs_never_asked_for() -> None:
    plan = RingPlan(
        "301",
        "Anna",
        None,
        PlanStatus.OK,
        (
            Leg("PJSIP/a", 0, 20, LegSource.FOLLOWME),
            Leg("PJSIP/b", 0, 20, LegSource.FOLLOWME),
            Leg("PJSIP/c", 10, 20, LegSource.FOLLOWME),
        ),
    )
    ids = iter(["leg-a", "leg-b", "leg-c"])
    flow = CallFlow("caller", plan, lambda: next(ids))
    flow.start(0.0)
    flow.leg_answered("leg-b")
    flow.caller_gone()  # the caller hangs up after talking: the winner stays "answered"
    assert flow.result is CallResult.ANSWERED
    assert sorted(leg_outcomes(flow)) == ["answered", "cancelled"]  # leg-c never rang


async def test_calls_are_counted_as_the_intake_and_the_driver_see_them() -> None:
    """Real ARI client and call intake on the fake ARI: a busy call and an unknown
    extension move their counters by one each, and nothing else moves."""
    from callrouter.ari import AriClient
    from callrouter.calls.intake import CallIntake
    from callrouter.domain.directory import DirectorySnapshot, User
    from callrouter.rules.model import RingRules
    from tests.fakes import FakeAri, make_channel, make_event

    snapshot = DirectorySnapshot(users={"201": User("201", "Alice", phones=("PJSIP/a",))})
    metrics = Metrics()
    async with (
        FakeAri(password="pw") as fake,
        AriClient(fake.base_url, fake.user, "pw", fake.app) as ari,
    ):
        intake = CallIntake(ari, lambda: (snapshot, RingRules()), metrics=metrics)
        ari.on_event = intake.on_event
        await ari.wait_connected(3)
        fake.model.channels["caller-1"] = make_channel("caller-1")
        await fake.send_event(
            make_event("StasisStart", args=["201"], channel=make_channel("caller-1"))
        )
        async with asyncio.timeout(3):
            while not fake.requests_to("POST", "/channels"):
                await asyncio.sleep(0.005)
        assert samples(metrics)["callrouter_calls_in_progress", ()] == 1
        leg = fake.requests_to("POST", "/channels")[0].params["channelId"]
        await fake.send_event(make_event("Dial", dialstatus="BUSY", peer=make_channel(leg)))
        await fake.send_event(make_event("ChannelDestroyed", cause=17, channel=make_channel(leg)))
        fake.model.channels["caller-2"] = make_channel("caller-2")
        await fake.send_event(
            make_event("StasisStart", args=["999"], channel=make_channel("caller-2"))
        )
        async with asyncio.timeout(3):
            while intake.calls or len(intake.tasks):
                await asyncio.sleep(0.005)
    found = samples(metrics)
    moved = {key: value for key, value in found.items() if value and "_bucket" not in key[0]}
    setup = found["callrouter_call_setup_seconds_sum", ()]
    assert 0 < setup < 1
    # A gauge of state (an overload signal): the leg request's round trip, smoothed.
    assert 0 < moved.pop(("callrouter_ari_latency_seconds", ())) < 1
    assert moved == {
        ("callrouter_calls_total", (("result", "busy"),)): 1,
        ("callrouter_calls_total", (("result", "unknown"),)): 1,
        ("callrouter_legs_total", (("outcome", "started"),)): 1,
        ("callrouter_legs_total", (("outcome", "busy"),)): 1,
        ("callrouter_call_setup_seconds_count", ()): 1,
        ("callrouter_call_setup_seconds_sum", ()): setup,
    }


async def test_the_live_directory_counts_reloads_and_keeps_its_last_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What readiness reads (when the snapshot was last confirmed, why not) and the
    reload counters, by kind, on a real SQLite directory."""
    from callrouter.directory import live as live_module
    from callrouter.directory.database import create_engine, upgrade
    from callrouter.directory.importer import import_document
    from callrouter.directory.live import LiveDirectory
    from callrouter.directory.loader import load_document
    from callrouter.logins.store import set_login

    examples = Path(__file__).resolve().parents[2] / "examples"
    url = f"sqlite:///{tmp_path}/d.db"
    await upgrade(url)
    engine = create_engine(url)
    rules = tmp_path / "rules.yaml"
    rules.write_text((examples / "rules.yaml").read_text())
    metrics = Metrics()
    try:
        await import_document(
            engine, load_document(examples / "directory.yaml"), prune=False, actor="test"
        )
        live = LiveDirectory(engine, rules, metrics=metrics)
        assert not live.loaded and live.checked_at is None
        await live.load()
        assert live.loaded and live.checked_at is not None and live.check_error is None
        snapshot = live.snapshot
        extension = next(e for e in snapshot.users if e not in snapshot.logins)
        free = next(w for w in snapshot.workplaces if w not in snapshot.logins.values())
        await set_login(engine, extension, free, actor="test", source="test")
        await live.refresh()  # the logins only
        await live.refresh(force=True)  # SIGHUP: the rules and everything
        confirmed = live.checked_at

        async def unreachable(_engine: object) -> tuple[int, int]:
            raise OSError("connection refused")

        monkeypatch.setattr(live_module, "read_revisions", unreachable)
        with pytest.raises(OSError):
            await live.refresh()
        assert live.check_error == "OSError: connection refused"
        assert live.checked_at == confirmed  # the snapshot's last confirmation stays
        monkeypatch.undo()
        assert not await live.refresh()
        assert live.check_error is None and live.checked_at is not None
        assert live.checked_at > confirmed  # type: ignore[operator]
    finally:
        await engine.dispose()
    found = samples(metrics)
    reloads = {
        labels[0][1]: value
        for (name, labels), value in found.items()
        if name == "callrouter_directory_reloads_total"
    }
    assert reloads == {"full": 2, "logins": 1, "rules": 1}
    assert found["callrouter_directory_reload_seconds_count", (("kind", "logins"),)] == 1
    assert found["callrouter_directory_refresh_failures_total", ()] == 1


def test_the_role_is_one_series_per_role_and_activations_count() -> None:
    metrics = Metrics()
    role = {"now": "standby"}
    metrics.track_role(lambda: role["now"])
    found = samples(metrics)
    assert found["callrouter_role", (("role", "active"),)] == 0
    assert found["callrouter_role", (("role", "standby"),)] == 1
    role["now"] = "active"
    metrics.activated()
    found = samples(metrics)
    assert found["callrouter_role", (("role", "active"),)] == 1
    assert found["callrouter_role", (("role", "standby"),)] == 0
    assert found["callrouter_activations_total", ()] == 1
