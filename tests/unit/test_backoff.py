"""The reconnect back-off the ARI and AMI clients share."""

from __future__ import annotations

import pytest

from callrouter.backoff import backoff_delay


def test_backoff_delay_doubles_from_base_to_cap_with_equal_jitter() -> None:
    ceilings = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    for attempt, ceiling in enumerate(ceilings):
        assert backoff_delay(attempt, base=0.2, cap=10, rand=0.0) == pytest.approx(ceiling / 2)
        assert backoff_delay(attempt, base=0.2, cap=10, rand=0.999) == pytest.approx(
            ceiling * 0.9995
        )
    assert backoff_delay(10_000, base=0.2, cap=10, rand=0.5) == pytest.approx(7.5)
