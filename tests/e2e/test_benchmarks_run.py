"""The call benchmarks still run against the sandbox (a smoke run: a few calls, no
figures judged): a benchmark that no longer fits the code fails here, not the day
someone measures with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sandbox.asterisk import AsteriskSandbox

REPO = Path(__file__).resolve().parents[2]


def test_call_setup_bench_places_routed_and_native_calls(asterisk: AsteriskSandbox) -> None:
    # (The fixture only makes sure a sandbox can be had; the benchmark starts its own.)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.call_setup_bench", "--calls", "3", "--warmup", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "calls: 3 routed, 3 native" in done.stdout, done.stdout
    assert "calls with other than one POST /channels per phone: 0 of 3" in done.stdout
