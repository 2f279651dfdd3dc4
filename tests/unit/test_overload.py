"""The overload decision: a pure function of the signals, and its hysteresis on a fake clock."""

from __future__ import annotations

import logging

import pytest

from callrouter.calls.overload import (
    OVERLOAD_REASONS,
    LatencyAverage,
    LoadSignals,
    OverloadLimits,
    OverloadState,
    calm,
    overload_reason,
)
from callrouter.metrics import OVERLOAD_REASONS as METRIC_REASONS

LIMITS = OverloadLimits(max_pending=10, max_loop_lag=0.2, max_ari_latency=0.4, recover=1.0)
QUIET = LoadSignals(pending=0, loop_lag=0.001, ari_latency=0.002)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def signals(pending: int = 0, loop_lag: float = 0.001, ari_latency: float = 0.002) -> LoadSignals:
    return LoadSignals(pending, loop_lag, ari_latency)


def test_the_metric_labels_are_the_reasons() -> None:
    assert METRIC_REASONS == OVERLOAD_REASONS


def test_the_defaults_leave_normal_operation_alone() -> None:
    defaults = OverloadLimits()
    assert (defaults.max_pending, defaults.max_loop_lag, defaults.max_ari_latency) == (
        128,
        0.25,
        0.5,
    )
    assert defaults.recover == 1.0
    # What 100 calls at once did on the sandbox (tests/e2e, 2 shared cores), each signal
    # at its highest in three bursts: all routed, all answered; still no overload.
    assert overload_reason(signals(81, 0.082, 0.25), defaults) is None


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (signals(), None),
        (signals(pending=9, loop_lag=0.199, ari_latency=0.399), None),  # all just below
        (signals(pending=10), "pending"),  # a limit reached is overload
        (signals(loop_lag=0.2), "loop_lag"),
        (signals(ari_latency=0.4), "ari_latency"),
        (signals(pending=500), "pending"),
        (signals(pending=10, loop_lag=0.5), "loop_lag"),  # the one furthest past its limit
        (signals(pending=30, loop_lag=0.5, ari_latency=0.8), "pending"),
        (signals(pending=10, loop_lag=0.2, ari_latency=0.4), "pending"),  # a tie: the first
        (signals(loop_lag=0.4, ari_latency=0.8), "loop_lag"),
    ],
)
def test_the_reason_is_the_signal_past_its_limit(given: LoadSignals, reason: str | None) -> None:
    assert overload_reason(given, LIMITS) == reason


def test_calm_is_every_signal_below_half_its_limit() -> None:
    assert calm(signals(pending=4, loop_lag=0.099, ari_latency=0.199), LIMITS)
    assert not calm(signals(pending=5), LIMITS)
    assert not calm(signals(loop_lag=0.1), LIMITS)
    assert not calm(signals(ari_latency=0.2), LIMITS)
    # With room for one waiting call, only none is calm.
    one = OverloadLimits(max_pending=1)
    assert calm(signals(pending=0), one) and not calm(signals(pending=1), one)


@pytest.mark.parametrize("field", ["max_pending", "max_loop_lag", "max_ari_latency", "recover"])
@pytest.mark.parametrize("value", [0, -1])
def test_limits_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"overload {field} must be > 0"):
        OverloadLimits(**{field: value})  # type: ignore[arg-type]


def test_enters_at_once_and_leaves_only_after_calm_for_the_recover_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter.calls.overload")
    clock = FakeClock()
    state = OverloadState(LIMITS, clock)
    assert state.update(QUIET) is None and not state.overloaded
    assert state.update(signals(pending=10)) == "pending"  # the first crossing: at once
    assert state.overloaded and state.since == 100.0
    (entered,) = caplog.records
    assert entered.levelno == logging.WARNING
    assert entered.getMessage() == (
        "overload (pending): new calls go straight to the dialplan fallback; "
        "pending 10 (limit 10), loop lag 0.001 s (limit 0.2), ARI latency 0.002 s (limit 0.4)"
    )
    state.count_hand_back()
    # Below the limit but not below half: overloaded for as long as that lasts.
    for _ in range(10):
        clock.now += 5
        assert state.update(signals(pending=5)) == "pending"
    # Calm: the recover time starts now (not at the last crossing, long ago).
    assert state.update(QUIET) == "pending"
    clock.now += 0.99
    assert state.update(QUIET) == "pending"
    clock.now += 0.01
    assert state.update(QUIET) is None and not state.overloaded
    left = caplog.records[-1]
    assert left.levelno == logging.INFO
    assert left.getMessage() == (
        "overload over after 51.0 s, 1 call(s) handed back; routing again; "
        "pending 0 (limit 10), loop lag 0.001 s (limit 0.2), ARI latency 0.002 s (limit 0.4)"
    )
    assert len(caplog.records) == 2  # one line in, one line out
    assert state.update(QUIET) is None


def test_a_signal_back_up_during_the_recover_time_starts_it_again() -> None:
    clock = FakeClock()
    state = OverloadState(LIMITS, clock)
    state.update(signals(loop_lag=0.3))
    state.update(QUIET)
    clock.now += 0.8
    assert state.update(signals(ari_latency=0.25)) == "loop_lag"  # above half: not calm
    clock.now += 0.5
    assert state.update(QUIET) == "loop_lag"  # calm again since now
    clock.now += 0.9
    assert state.update(QUIET) == "loop_lag"
    clock.now += 0.1
    assert state.update(QUIET) is None


def test_the_reason_follows_the_signal_past_its_limit_while_overloaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter.calls.overload")
    clock = FakeClock()
    state = OverloadState(LIMITS, clock)
    assert state.update(signals(loop_lag=0.3)) == "loop_lag"
    assert state.update(signals(ari_latency=1.0)) == "ari_latency"
    assert state.update(signals(pending=6)) == "ari_latency"  # nothing past a limit now
    assert len(caplog.records) == 1  # still the same overload: entered once
    assert state.since == 100.0


def test_the_state_reads_the_injected_clock_only() -> None:
    clock = FakeClock()
    state = OverloadState(OverloadLimits(recover=30.0), clock)
    state.update(signals(pending=128))
    state.update(QUIET)
    for _ in range(100):  # however often it is asked: no time passes
        assert state.update(QUIET) == "pending"
    clock.now += 30
    assert state.update(QUIET) is None


def test_the_latency_average_is_weighted_by_time() -> None:
    average = LatencyAverage(half_life=1.0)
    assert average.value == 0.0
    average.add(0.002, now=0.0)
    assert average.value == 0.002  # the first round trip is the estimate
    for i in range(100):  # a burst of slow answers within 10 ms: 10 ms of weight
        average.add(1.0, now=0.0001 * (i + 1))
    assert 0.002 < average.value < 0.01
    average.add(1.0, now=1.01)  # a second later: halfway there
    assert average.value == pytest.approx(0.5, abs=0.01)
    average.add(0.002, now=61.0)  # after a quiet minute the next answer is the estimate
    assert average.value == pytest.approx(0.002, abs=1e-6)


def test_the_settings_come_from_the_environment_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from callrouter.config import Settings

    def limits(settings: Settings) -> tuple[float, ...]:
        return (
            settings.overload_max_pending,
            settings.overload_max_loop_lag,
            settings.overload_max_ari_latency,
            settings.overload_recover,
        )

    assert limits(Settings()) == (128, 0.25, 0.5, 1.0)
    monkeypatch.setenv("CALLROUTER_OVERLOAD_MAX_PENDING", "8")
    monkeypatch.setenv("CALLROUTER_OVERLOAD_MAX_LOOP_LAG", "0.1")
    monkeypatch.setenv("CALLROUTER_OVERLOAD_MAX_ARI_LATENCY", "0.2")
    monkeypatch.setenv("CALLROUTER_OVERLOAD_RECOVER", "5")
    assert limits(Settings()) == (8, 0.1, 0.2, 5.0)
    monkeypatch.setenv("CALLROUTER_OVERLOAD_RECOVER", "0")
    with pytest.raises(ValidationError) as refused:
        Settings()
    (error,) = refused.value.errors()
    assert error["loc"] == ("overload_recover",)
    assert error["msg"] == "Input should be greater than 0"


async def test_the_loop_lag_probe_hands_each_sample_on() -> None:
    import asyncio

    from callrouter.metrics import Metrics, watch_loop_lag

    seen: list[float] = []
    task = asyncio.create_task(watch_loop_lag(Metrics(), interval=0.01, on_lag=seen.append))
    async with asyncio.timeout(5):
        while len(seen) < 3:
            await asyncio.sleep(0.01)
    task.cancel()
    assert all(lag >= 0 for lag in seen)
