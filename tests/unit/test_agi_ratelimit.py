"""RateLimitedLog: a few lines per reason and interval, then one line with the count."""

from __future__ import annotations

import asyncio
import logging

import pytest

from callrouter.agi import RateLimitedLog

log = logging.getLogger("tests.ratelimit")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_a_burst_per_reason_then_a_count_when_the_interval_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limited = RateLimitedLog(log, prefix="FastAGI", interval=10, burst=3, clock=clock)
    for n in range(2_348):
        limited.warning("refused", "refused %d", n)
    limited.warning("other", "another reason has its own budget")
    assert lines(caplog) == [
        "refused 0",
        "refused 1",
        "refused 2",
        "another reason has its own budget",
    ]
    assert limited.suppressed("refused") == 2_345

    clock.now += 10  # the next line of the reason ends its interval and says the count
    limited.warning("refused", "refused again")
    assert lines(caplog)[4:] == [
        "FastAGI: 2,345 more 'refused' in the last 10 s (not logged one by one)",
        "refused again",
    ]
    assert limited.suppressed("refused") == 0


def test_flush_says_every_count_and_the_summary_keeps_the_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    clock = Clock()
    limited = RateLimitedLog(log, prefix="FastAGI", interval=10, burst=1, clock=clock)
    limited.info("slow", "one")
    limited.info("slow", "two")
    limited.info("quiet", "only once")  # nothing left out: no summary
    clock.now += 2.5
    limited.flush()
    assert lines(caplog) == [
        "one",
        "only once",
        "FastAGI: 1 more 'slow' in the last 2.5 s (not logged one by one)",
    ]
    assert caplog.records[-1].levelno == logging.INFO


async def test_the_count_comes_on_time_without_another_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limited = RateLimitedLog(log, prefix="FastAGI", interval=0.05, burst=1)
    for _ in range(5):
        limited.warning("flood", "a line")
    await asyncio.sleep(0.15)
    assert lines(caplog) == [
        "a line",
        "FastAGI: 4 more 'flood' in the last 0.05 s (not logged one by one)",
    ]


def test_a_disabled_level_costs_nothing_and_counts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limited = RateLimitedLog(log, prefix="FastAGI", burst=1)
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert not limited.info("chatter", "not shown")
    assert limited.suppressed("chatter") == 0 and lines(caplog) == []
