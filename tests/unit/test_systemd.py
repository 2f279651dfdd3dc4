"""systemd integration: the notify protocol spoken to a test socket, the watchdog fed
from the event loop (and starved by a blocked one), and the unit file.

The unit file is checked by ``systemd-analyze verify`` where the machine has it, and
always by its keys read with a small parser (what a Debian admin expects of it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from callrouter.systemd import Notifier, keep_alive, watchdog_interval
from tests.fakes.fake_systemd import NotifySocket

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "callrouter.service"


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify" if request.param == "path" else None)
    yield sock
    sock.close()


async def until(condition: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_messages_reach_the_socket_of_notify_socket(
    listener: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    notifier = Notifier.from_environment()
    assert notifier.enabled
    assert notifier.status("loading the directory")
    assert notifier.reloaded("still loading")  # never ready yet: no READY=1 for it
    assert notifier.ready("routing")
    assert notifier.reloading()
    assert notifier.reloaded("routing again")
    assert notifier.stopping("stopping")
    await until(lambda: len(listener.received) == 6)
    fields = [n.fields for n in listener.received]
    assert fields[0] == {"STATUS": "loading the directory"}
    assert fields[1] == {"STATUS": "still loading"}
    assert fields[2] == {"READY": "1", "STATUS": "routing"}
    assert fields[3]["RELOADING"] == "1" and int(fields[3]["MONOTONIC_USEC"]) > 0
    assert fields[4] == {"READY": "1", "STATUS": "routing again"}
    assert fields[5] == {"STOPPING": "1", "STATUS": "stopping"}
    notifier.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier.from_environment().enabled
    assert not Notifier.from_environment().ready("x")
    # A supervisor that went away, or an address we cannot use: logged once, no error.
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert not gone.send("WATCHDOG=1")
    assert not gone.send("WATCHDOG=1")
    gone.close()
    assert caplog.text.count("cannot notify systemd") == 1
    assert not Notifier("vsock:2:1234").send("READY=1")


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert watchdog_interval() is None


async def test_watchdog_comes_at_its_interval_and_stops_while_the_loop_is_blocked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    listener = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: WATCHDOG=1 each 0.1 s
    interval = watchdog_interval()
    assert interval == pytest.approx(0.1)
    notifier = Notifier(listener.address)
    task = asyncio.create_task(keep_alive(notifier, interval))
    try:
        await asyncio.sleep(0.55)
        blocked_at = time.monotonic()
        # A callback that blocks the loop for five intervals (more than the 0.2 s
        # systemd would wait): no WATCHDOG=1 may come in that time.
        asyncio.get_running_loop().call_soon(time.sleep, 0.5)
        await asyncio.sleep(0.6)
    finally:
        task.cancel()
        notifier.close()
        listener.close()
    times = [n.at for n in listener.with_field("WATCHDOG", "1")]
    before = [t for t in times if t < blocked_at]
    assert len(before) >= 4
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert all(0.05 < gap < 0.2 for gap in gaps), gaps
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.45, gaps  # starved while the loop was blocked …
    assert times[-1] > blocked_at + 0.5  # … and fed again afterwards
    assert not [t for t in times if blocked_at + 0.05 < t < blocked_at + 0.45]


# --- the unit file ------------------------------------------------------------------


def unit_entries(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file's sections and keys (keys may repeat: every value kept)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number}: a key outside any section"
        key, equals, value = line.partition("=")
        assert equals, f"line {number}: not KEY=value: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_file_has_what_a_debian_admin_expects() -> None:
    unit = unit_entries(UNIT.read_text())
    service = unit["Service"]

    def one(key: str) -> str:
        assert len(service.get(key, [])) == 1, f"{key}: {service.get(key)}"
        return service[key][0]

    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert one("WatchdogSec") == "30s" and one("Restart") == "on-failure"
    assert one("User") == "callrouter"
    assert one("ExecStart").split()[1:] == ["serve", "--config", "/etc/callrouter/callrouter.yaml"]
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "StateDirectory": "callrouter",
        "ConfigurationDirectory": "callrouter",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
    }.items():
        assert one(key) == value, key
    assert "@system-service" in service["SystemCallFilter"]
    # The stop timeout leaves room for the default shutdown grace (20 s) and the hand-back.
    assert int(one("TimeoutStopSec").removesuffix("s")) > 20 + 2
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_unit_file_passes_systemd_analyze_verify_where_there_is_one(
    tmp_path: Path,
) -> None:
    """``systemd-analyze verify`` when the machine has it; where it has not, the test
    above (the keys, parsed) is the check, and this one says so by passing on less."""
    analyze = shutil.which("systemd-analyze")
    text = UNIT.read_text()
    unit_entries(text)  # parses, whatever else this machine has
    if analyze is None:
        return
    # verify also checks that ExecStart exists: point it at this checkout's command.
    here = Path(sys.executable).with_name("callrouter")
    assert here.exists(), here
    copy = tmp_path / "callrouter.service"
    copy.write_text(text.replace("/opt/callrouter/bin/callrouter", str(here)))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert problems == [], problems


@pytest.mark.parametrize("address", ["relative/socket", "tcp://127.0.0.1:1", "/nonexistent/x"])
def test_a_malformed_or_missing_notify_socket_is_logged_once_and_never_raises(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(address)
    assert notifier.send("READY=1") is False
    assert notifier.send("WATCHDOG=1") is False
    notifier.close()
    warnings = [r for r in caplog.records if r.name == "callrouter.systemd"]
    assert len(warnings) == 1 and address in warnings[0].getMessage()


@pytest.mark.parametrize("usec", ["", "abc", "-5", "0", "1e6"])
def test_a_malformed_watchdog_usec_means_no_watchdog(
    usec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None
