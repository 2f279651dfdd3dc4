"""What the call benchmarks share: percentiles, the directory file, the native Dial().

Both call benchmarks (call_setup_bench, sipp_load) compare the router with Asterisk's
own ``Dial()`` of the same phones: the router path is the user's extension into
``[callrouter]``; the native path is ``**EXT`` -> ``[bench-native]`` (the sandbox's
extensions.conf), which dials the AstDB entry ``native/EXT``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

#: The AstDB family [bench-native] reads its Dial() strings from.
NATIVE_FAMILY = "native"


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (0..100) of ``values`` (not empty)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def native_number(extension: str) -> str:
    """What a phone dials to reach ``extension`` through the native Dial()."""
    return f"**{extension}"


def native_dial_string(phones: Iterable[str]) -> str:
    """The [bench-native] Dial() string (AstDB ``native/EXT``) for PJSIP endpoints."""
    return "&".join(f"PJSIP/{name}" for name in phones)


def directory_yaml(users: Iterable[tuple[str, str, Sequence[str]]]) -> str:
    """A directory document: (extension, name, PJSIP endpoint names) per user."""
    lines = [
        f'- {{extension: "{extension}", name: {name}, '
        f"phones: [{', '.join(f'PJSIP/{phone}' for phone in phones)}]}}"
        for extension, name, phones in users
    ]
    return "users:\n" + textwrap.indent("\n".join(lines), "  ") + "\n"
