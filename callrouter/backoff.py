"""Reconnect back-off, shared by the ARI and AMI clients."""

from __future__ import annotations

_MAX_EXPONENT = 64


def backoff_delay(attempt: int, *, base: float, cap: float, rand: float) -> float:
    """Delay before reconnect attempt ``attempt`` (0 for the first after a loss).

    Exponential back-off with "equal jitter": the ceiling doubles from ``base`` up to
    ``cap`` and the delay is drawn from ``[ceiling / 2, ceiling]`` with ``rand`` in
    ``[0, 1)``, so clients that lost Asterisk together do not return in step.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return ceiling / 2 + ceiling / 2 * rand
