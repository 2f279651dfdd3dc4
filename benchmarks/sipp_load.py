"""Benchmark: calls per second through the router against Asterisk's own Dial(), with SIPp.

    .venv/bin/python -m benchmarks.sipp_load [--rates 50,100,150,...] [--seconds 8] [--quick]

Boots the sandbox Asterisk and the router as a subprocess (``callrouter serve`` on a
temporary SQLite directory, loaded with ``callrouter directory import``), so that
the router's CPU is its own process's.  SIPp (Debian's ``sip-tester``; installed
with apt when missing) plays three parts, all on 127.0.0.1:

* the caller (benchmarks/sipp/caller.xml, its own PJSIP endpoint without a
  contact): INVITE, wait for 200 OK, ACK, talk 1 s, BYE;
* two phones of one user, with static contacts where SIPp listens: one answers
  after 200 ms (answer.xml), the other rings until it is cancelled (ring.xml).

Two paths, the same scenario, only the dialled number differs:

* router: the user's extension -> [callrouter] -> Stasis() -> the router rings both
  phones through ARI and bridges the caller to the one that answers;
* native: ``**EXT`` -> [bench-native] -> Dial() of the same two phones.

For each rate (calls per second, ``--seconds`` long) both paths run, one after the
other (who goes first alternates), until both fall off; then an overload step of
twice the router's sustained rate for 10 s.  A rate is sustained when at least 99 %
of the calls complete and the caller's set-up time (INVITE -> 200 OK, SIPp's
response time 1) has p99 <= 500 ms.  CPU per call: utime + stime of the router's
process and of Asterisk's (/proc/PID/stat) over the step, divided by the calls
that completed.

Prints each step, then each figure beside its goal; exit status 0 (it is a report).
Every SIPp run is bounded (``-m``, ``-timeout``, ``-recv_timeout``); whatever the
benchmark started is stopped on any exit.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

import httpx

from benchmarks.common import (
    NATIVE_FAMILY,
    directory_yaml,
    native_dial_string,
    native_number,
    percentile,
)
from sandbox.asterisk import (
    AsteriskSandbox,
    Endpoint,
    SandboxError,
    SandboxUnavailable,
    ensure_rootfs,
    pick_free_port,
    port_is_free,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = Path(__file__).resolve().parent / "sipp"
CALLER_SCENARIO = SCENARIO_DIR / "caller.xml"
ANSWER_SCENARIO = SCENARIO_DIR / "answer.xml"
RING_SCENARIO = SCENARIO_DIR / "ring.xml"

# --- what "sustained" means, and the goals ---------------------------------------------

SUSTAIN_COMPLETION = 0.99  # completed / attempted
SUSTAIN_SETUP_P99 = 0.500  # s, caller INVITE -> 200 OK
RATIO_GOAL = 0.9  # sustained rate, router / native
ROUTER_CPU_GOAL = 0.001  # s of router CPU per answered call
ASTERISK_CPU_RATIO_GOAL = 1.2  # Asterisk CPU per call, routed / native
OVERLOAD_GOAL = 0.99  # completed share at twice the router's sustained rate
LATENCY_RATE = 50  # calls/s at which set-up latency is compared
P50_ADDED_GOAL = 0.001  # s, router p50 - native p50
P99_ADDED_GOAL = 0.005  # s, router p99 - native p99

# --- the run ------------------------------------------------------------------------------

DEFAULT_RATES = (25, 50, 75, 100, 125, 150, 175, 200, 250, 300, 400)
DEFAULT_SECONDS = 8.0
OVERLOAD_SECONDS = 10.0
QUICK_RATES = (5, 10)
QUICK_SECONDS = 4.0
QUICK_OVERLOAD_SECONDS = 4.0
QUICK_MAX_RATE = 20  # a smoke run stays gentle on a shared machine
WARMUP_CALLS = 3  # per path, at WARMUP_CALLS calls/s, not counted

EXTENSION = "5000"  # the user both phones belong to
CALLER_EXTENSION = "4999"
CALLER, ANSWERER, RINGER = "sipp-caller", "sipp-answer", "sipp-ring"
RING_TIMEOUT = 20  # s, rules.yaml's and [bench-native]'s
#: SIPp endpoints: no connected-line updates (re-INVITEs the scenarios do not expect).
SIPP_ENDPOINT_OPTIONS = {"send_connected_line": "no"}

CALLER_RECV_TIMEOUT = 30.0  # s: any message the caller waits for (> RING_TIMEOUT)
PHONE_RECV_TIMEOUT = 60.0  # s: the phones' waits (the ring phone waits for CANCEL)
STEP_GRACE = 45.0  # s a step may run past its last call (SIPp's -timeout)
DRAIN_TIMEOUT = 40.0  # s to wait for Asterisk's channels to go after a step
SETTLE = 0.5  # s of quiet before each step
IDLE_SECONDS = 3.0  # s with no calls, for the processes' idle CPU
MIN_RTP_PORTS = 10_000  # rtp.conf range: leaked channels would exhaust a narrow one

PathKind = Literal["router", "native"]
PATHS: tuple[PathKind, PathKind] = ("router", "native")


class BenchmarkError(RuntimeError):
    """The benchmark cannot run (no SIPp, no sandbox, the router did not start...)."""


# --- pure parts (tests/unit/test_sipp_load.py) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class StatCounts:
    """The last row of SIPp's -trace_stat file: cumulative call counts."""

    created: int
    successful: int
    failed: int
    #: Non-zero Failed*(C) columns other than FailedCall itself: reason -> count.
    failures: dict[str, int] = field(default_factory=dict)


def parse_stat_csv(text: str) -> StatCounts:
    """Counts from SIPp's statistics file (``-trace_stat``, ``;``-separated, one header
    line, one row per ``-fd`` period and a last one at the end; counts are cumulative
    in the ``(C)`` columns)."""
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=";") if row]
    if not rows:
        raise ValueError("empty SIPp statistics file")
    header = rows[0]
    if "TotalCallCreated" not in header:
        raise ValueError(f"not a SIPp statistics header: {';'.join(header[:5])}...")
    data = [row for row in rows[1:] if row != header]
    if not data:
        return StatCounts(0, 0, 0)
    last = dict(zip(header, data[-1], strict=False))

    def count(column: str) -> int:
        if column not in last:
            raise ValueError(f"SIPp statistics without column {column}")
        return int(last[column])

    failures = {
        name[len("Failed") : -len("(C)")]: int(value)
        for name, value in last.items()
        if name.startswith("Failed")
        and name.endswith("(C)")
        and name != "FailedCall(C)"
        and value.isdigit()
        and int(value) > 0
    }
    return StatCounts(
        count("TotalCallCreated"), count("SuccessfulCall(C)"), count("FailedCall(C)"), failures
    )


def parse_rtt_csv(text: str, rtd: int = 1) -> list[float]:
    """Response times (seconds) of response-time counter ``rtd`` from SIPp's
    ``-trace_rtt`` file (``Date_ms;response_time_ms;rtd_no``)."""
    values: list[float] = []
    for row in csv.reader(io.StringIO(text), delimiter=";"):
        if len(row) < 3 or row[0] == "Date_ms":
            continue
        if int(row[2]) == rtd:
            values.append(float(row[1]) / 1000)
    return values


UNEXPECTED = re.compile(r"while expecting '([^']*)' \(index \d+\), received '([^\r\n]*)")


def parse_unexpected(text: str) -> dict[str, int]:
    """What SIPp's errors log (``-trace_err``) says it got instead of what the
    scenario expected: ``"<got> instead of <expected>"`` -> count, where <got> is a
    request's method or a response's code."""
    counts: dict[str, int] = {}
    for expected, first_line in UNEXPECTED.findall(text):
        words = first_line.split() or ["?"]
        got = words[1] if words[0] == "SIP/2.0" and len(words) > 1 else words[0]
        key = f"{got} instead of {expected}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def most_common(counts: dict[str, int], limit: int = 3) -> str:
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    more = len(counts) - len(top)
    return ", ".join(f"{key}: {value}" for key, value in top) + (f", +{more} more" if more else "")


def proc_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks, every thread) from the text of /proc/PID/stat."""
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line


def udp_bound(port: int, table: str) -> bool:
    """Whether /proc/net/udp's text ``table`` has a socket bound to ``port`` (any
    address).  Looking there, not binding the port, cannot race SIPp's own bind."""
    suffix = f":{port:04X}"
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and fields[1].endswith(suffix):
            return True
    return False


def is_sustained(completed: int, attempted: int, setup_p99: float | None) -> bool:
    """≥ 99 % of the calls completed and the set-up time's p99 ≤ 500 ms."""
    return (
        attempted > 0
        and completed >= SUSTAIN_COMPLETION * attempted
        and setup_p99 is not None
        and setup_p99 <= SUSTAIN_SETUP_P99
    )


def cpu_per_call(cpu_seconds: float, calls: int) -> float | None:
    """CPU seconds per completed call; None without completed calls."""
    return cpu_seconds / calls if calls > 0 else None


@dataclass(slots=True)
class Step:
    """One path at one rate: what SIPp and /proc said."""

    path: PathKind
    rate: int
    seconds: float
    attempted: int  # calls the caller was to place (-m)
    counts: StatCounts
    setup: list[float]  # s, INVITE -> 200 OK of every answered call
    router_cpu: float  # s over the step (the router process)
    asterisk_cpu: float  # s over the step
    leftover: int = 0  # Asterisk channels still up after the drain time-out
    wall: float = 0.0  # s over which the CPU was measured
    #: Calls the SIPp phones counted as failed (their own view): phone -> count.
    phone_failures: dict[str, int] = field(default_factory=dict)
    #: Unexpected messages, caller's and phones': "answer: BYE instead of ACK" -> count.
    unexpected: dict[str, int] = field(default_factory=dict)
    overload: bool = False
    note: str = ""

    @property
    def completed(self) -> int:
        return self.counts.successful

    @property
    def p50(self) -> float | None:
        return percentile(self.setup, 50) if self.setup else None

    @property
    def p99(self) -> float | None:
        return percentile(self.setup, 99) if self.setup else None

    @property
    def sustained(self) -> bool:
        return is_sustained(self.completed, self.attempted, self.p99)

    @property
    def router_cpu_per_call(self) -> float | None:
        return cpu_per_call(self.router_cpu, self.completed)

    @property
    def asterisk_cpu_per_call(self) -> float | None:
        return cpu_per_call(self.asterisk_cpu, self.completed)


def sustained_rate(steps: Sequence[Step], path: PathKind) -> tuple[int | None, bool]:
    """The highest rate ``path`` sustained before it first fell off, and whether it
    fell off at all (False: it sustained every rate tried, the figure is a floor)."""
    best: int | None = None
    for step in sorted((s for s in steps if s.path == path and not s.overload), key=rate_of):
        if not step.sustained:
            return best, True
        best = step.rate
    return best, False


def rate_of(step: Step) -> int:
    return step.rate


def overload_rate(router_sustained: int | None, rates: Sequence[int], cap: int | None) -> int:
    """Twice the router's sustained rate (twice the lowest rate tried when it sustained
    none), at most ``cap``."""
    rate = 2 * (router_sustained if router_sustained is not None else min(rates))
    return min(rate, cap) if cap is not None else rate


def sustained_ratio(
    router: int | None, router_fell: bool, native: int | None, native_fell: bool
) -> tuple[str, bool | None]:
    """Router / native sustained rate as text, and whether it meets the goal (None:
    cannot tell).  A path that did not fall off has a floor for its rate, so the
    ratio is then a bound: it decides the goal only from the right side."""
    if not native:
        return "-", None
    ratio = (router or 0) / native
    if router_fell and native_fell:
        return f"{ratio:.2f}", ratio >= RATIO_GOAL
    if router_fell:  # native's real rate is higher: the real ratio is lower
        return f"≤ {ratio:.2f}", False if ratio < RATIO_GOAL else None
    if native_fell:  # the router's real rate is higher
        return f"≥ {ratio:.2f}", True if ratio >= RATIO_GOAL else None
    return f"{ratio:.2f} (both floors)", None


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def ms(seconds: float | None, digits: int = 1) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.{digits}f} ms"


# --- processes ----------------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts, each in its own session; all are stopped on
    exit (SIGTERM to the session, then SIGKILL)."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self, cmd: Sequence[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, grace: float = 3.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the process left in its session
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        if proc in self._running:
            self._running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._running)):
            self.stop(proc)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop everything


# --- SIPp ---------------------------------------------------------------------------------


def ensure_sipp() -> str:
    """The sipp binary; installs Debian's sip-tester with apt when it is missing."""
    found = shutil.which("sipp")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchmarkError(
            "sipp is not installed; as root: apt-get install sip-tester (or run this as root)"
        )
    if not shutil.which("apt-get"):
        raise BenchmarkError("sipp is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "sip-tester"]
    print("installing sip-tester (SIPp) with apt-get ...", file=sys.stderr)
    for attempt in range(2):
        if attempt:  # the package lists may be missing or old
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        found = shutil.which("sipp")
        if proc.returncode == 0 and found:
            return found
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
    raise BenchmarkError(f"apt-get install sip-tester failed (exit {proc.returncode}):\n{tail}")


def sipp_version(sipp: str) -> str:
    proc = subprocess.run([sipp, "-v"], capture_output=True, text=True, timeout=10, check=False)
    for line in (proc.stdout + proc.stderr).splitlines():
        if "SIPp v" in line:
            return line.strip()
    return "SIPp (version unknown)"


@dataclass(frozen=True, slots=True)
class Agent:
    """Where one SIPp instance listens: SIP and media (SIPp binds media and media + 2)."""

    name: str
    sip_port: int
    media_port: int


def pick_agent(name: str, taken: set[int]) -> Agent:
    sip = pick_free_port(udp=True, exclude=taken)
    taken.add(sip)
    for _ in range(200):
        media = pick_free_port(udp=True, exclude=taken | {sip - 2})
        if media + 2 not in taken and port_is_free(media + 2, udp=True):
            taken.update((media, media + 2))
            return Agent(name, sip, media)
    raise BenchmarkError("no free UDP ports for SIPp's media")


def sipp_command(sipp: str, agent: Agent, scenario: Path) -> list[str]:
    """What every SIPp run here has: loopback, its ports, stats, no stdin, and
    watchdogs that do not end a run on a busy machine (our own time-outs do)."""
    return [
        sipp,
        "-sf",
        str(scenario),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(agent.sip_port),
        "-mp",
        str(agent.media_port),
        "-nostdin",
        "-trace_err",
        "-trace_stat",
        "-stf",
        "stat.csv",
        "-fd",
        "1",
        # SIPp's timers (the answering phone's 200 ms, the response times) tick every
        # 10 ms by default: too coarse to compare set-up times within a millisecond.
        "-timer_resol",
        "1",
        "-watchdog_minor_maxtriggers",
        "1000000",
        "-watchdog_major_maxtriggers",
        "1000000",
    ]


# --- the benchmark ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return proc_cpu_ticks(handle.read()) / os.sysconf("SC_CLK_TCK")


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no {path})"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


def check_rtp_range(asterisk: AsteriskSandbox) -> None:
    values: dict[str, int] = {}
    for line in (asterisk.etc_dir / "rtp.conf").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("rtpstart", "rtpend"):
            values[key.strip()] = int(value.split(";")[0])
    width = values.get("rtpend", 0) - values.get("rtpstart", 0)
    if width < MIN_RTP_PORTS:
        raise BenchmarkError(
            f"rtp.conf's port range {values} is narrow ({width} ports): leaked channels "
            f"would exhaust it under load; widen it (asterisk-config/rtp.conf)"
        )


class Bench:
    """The sandbox, the router subprocess and the SIPp phones of one run."""

    def __init__(
        self,
        sipp: str,
        workdir: Path,
        processes: Processes,
        router_log_level: str,
        profile_dir: Path | None = None,
    ) -> None:
        self.sipp = sipp
        self.profile_dir = profile_dir
        self.workdir = workdir
        self.processes = processes
        self.router_log_level = router_log_level
        self.asterisk = AsteriskSandbox(ensure_rootfs())
        self.router: subprocess.Popen[bytes] | None = None
        self.router_log = workdir / "router.log"
        self.ari: httpx.Client | None = None
        taken: set[int] = set()
        self.caller = pick_agent(CALLER, taken)
        self.answerer = pick_agent(ANSWERER, taken)
        self.ringer = pick_agent(RINGER, taken)
        self.step_count = 0
        self.asterisk_version = ""
        self.last_step_dir = workdir

    # -- set-up --------------------------------------------------------------------------

    def start(self) -> None:
        self.asterisk.start()
        check_rtp_range(self.asterisk)
        version = self.asterisk.cli("core show version").strip().split(" built ")[0]
        self.asterisk_version = version or "Asterisk (version unknown)"
        self.ari = httpx.Client(
            base_url=self.asterisk.ari_url,
            auth=(self.asterisk.ari_user, self.asterisk.ari_password),
            timeout=5.0,
        )
        self.asterisk.add_endpoints(
            [
                Endpoint(CALLER, None, SIPP_ENDPOINT_OPTIONS),
                Endpoint(ANSWERER, self.answerer.sip_port, SIPP_ENDPOINT_OPTIONS),
                Endpoint(RINGER, self.ringer.sip_port, SIPP_ENDPOINT_OPTIONS),
            ]
        )
        self.asterisk.db_put(NATIVE_FAMILY, EXTENSION, native_dial_string([ANSWERER, RINGER]))
        self.start_router()

    def callrouter_command(self) -> list[str]:
        script = Path(sys.executable).parent / "callrouter"
        return [str(script)] if script.is_file() else [sys.executable, "-m", "callrouter"]

    def router_env(self, db_url: str, rules: Path) -> dict[str, str]:
        """``callrouter serve``'s settings (as sandbox/router.py's sandbox_settings)."""
        a = self.asterisk
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")}
        # The router runs this checkout's code, not whatever the venv's editable install
        # points at (a worktree measures its own changes).
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update(
            {
                "CALLROUTER_DB": db_url,
                "CALLROUTER_RULES": str(rules),
                "CALLROUTER_ARI_URL": a.http_url,
                "CALLROUTER_ARI_USER": a.ari_user,
                "CALLROUTER_ARI_PASSWORD": a.ari_password,
                "CALLROUTER_AMI_HOST": a.ami_host,
                "CALLROUTER_AMI_PORT": str(a.ami_port),
                "CALLROUTER_AMI_USER": a.ami_user,
                "CALLROUTER_AMI_SECRET": a.ami_secret,
                "CALLROUTER_AGI_PORT": "0",
                "CALLROUTER_API_PORT": "0",
                "CALLROUTER_SHUTDOWN_GRACE": "2",
                "CALLROUTER_LOG_LEVEL": self.router_log_level,
            }
        )
        return env

    def start_router(self) -> None:
        directory = self.workdir / "directory.yaml"
        rules = self.workdir / "rules.yaml"
        directory.write_text(
            directory_yaml(
                [
                    (EXTENSION, "Benchmark User", [ANSWERER, RINGER]),
                    (CALLER_EXTENSION, "Benchmark Caller", [CALLER]),
                ]
            ),
            encoding="utf-8",
        )
        rules.write_text(
            f"defaults: {{timeout: {RING_TIMEOUT}, call_waiting: true}}\n", encoding="utf-8"
        )
        db_url = f"sqlite:///{self.workdir / 'callrouter.db'}"
        env = self.router_env(db_url, rules)
        cli = self.callrouter_command()
        for args in (["db", "upgrade"], ["directory", "import", "--prune", str(directory)]):
            proc = subprocess.run(
                [*cli, *args], env=env, capture_output=True, text=True, timeout=120, check=False
            )
            if proc.returncode != 0:
                raise BenchmarkError(
                    f"callrouter {' '.join(args)} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout}{proc.stderr}"
                )
        self.router = self.processes.start(
            [*cli, "serve"], cwd=self.workdir, log=self.router_log, env=env
        )
        self.wait_router_ready(30.0)

    def wait_router_ready(self, timeout: float) -> None:
        """The ARI app is registered (websocket up) and the AstDB fallback is written
        (AMI up)."""
        assert self.router is not None and self.ari is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.router.poll() is not None:
                raise BenchmarkError(
                    f"callrouter serve exited with {self.router.returncode}\n"
                    f"{tail(self.router_log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                registered = self.ari.get("/applications/callrouter").status_code == 200
                if registered and self.asterisk.db_get("callrouter", EXTENSION) is not None:
                    return
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"the router was not connected {timeout:g} s after starting\n"
                    f"{tail(self.router_log)}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.router is not None:
            self.processes.stop(self.router, grace=10.0)
            self.router = None
        if self.ari is not None:
            self.ari.close()
            self.ari = None
        self.processes.stop_all()
        self.asterisk.stop()

    def idle_cpu(self, seconds: float) -> tuple[float, float]:
        """CPU seconds per second of the router and of Asterisk with no calls."""
        assert self.router is not None and self.asterisk.pid is not None
        self.drain()
        started = time.monotonic()
        router0, asterisk0 = cpu_seconds(self.router.pid), cpu_seconds(self.asterisk.pid)
        time.sleep(seconds)
        wall = time.monotonic() - started
        return (
            (cpu_seconds(self.router.pid) - router0) / wall,
            (cpu_seconds(self.asterisk.pid) - asterisk0) / wall,
        )

    # -- one step ------------------------------------------------------------------------

    def channels(self) -> int:
        assert self.ari is not None
        response = self.ari.get("/channels")
        response.raise_for_status()
        return len(response.json())

    def drain(self) -> int:
        """Wait until Asterisk has no channels; hang up what is left after the
        time-out and return how many that were."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        count = -1  # not known yet
        while True:
            with contextlib.suppress(httpx.HTTPError):  # a busy Asterisk: ask again
                count = self.channels()
            if count == 0:
                return 0
            if time.monotonic() > deadline:
                if count < 0:
                    raise BenchmarkError(f"Asterisk's ARI did not answer for {DRAIN_TIMEOUT:g} s")
                self.asterisk.cli("channel request hangup all")
                time.sleep(2.0)
                return count
            time.sleep(0.25)

    def start_profiler(self, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy sampling the router during a step (``--profile``): folded stacks in
        PROFILE_DIR/NAME.txt (flamegraph.pl's input; its own per-function view is
        ``benchmarks/profile_top.py``). The sampler costs CPU of its own, not the router's."""
        if self.profile_dir is None or self.router is None:
            return None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).is_file():
            raise BenchmarkError("--profile needs py-spy: .venv/bin/pip install -e '.[bench]'")
        out = self.profile_dir / f"{name}.txt"
        cmd = [py_spy, "record", "--pid", str(self.router.pid), "--rate", "250", "--format"]
        cmd += ["raw", "--nonblocking", "--output", str(out)]
        return self.processes.start(cmd, cwd=self.profile_dir, log=self.profile_dir / "py-spy.log")

    def stop_profiler(self, profiler: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(timeout=10)
        self.processes.stop(profiler)

    def start_phone(
        self, agent: Agent, scenario: Path, calls: int, limit: float, cwd: Path
    ) -> subprocess.Popen[bytes]:
        cmd = [
            *sipp_command(self.sipp, agent, scenario),
            "-m",
            str(calls),
            "-timeout",
            f"{limit:.0f}s",
            "-recv_timeout",
            f"{PHONE_RECV_TIMEOUT * 1000:.0f}",
        ]
        proc = self.processes.start(cmd, cwd=cwd, log=cwd / "screen.log")
        deadline = time.monotonic() + 5.0
        while not udp_bound(agent.sip_port, Path("/proc/net/udp").read_text(encoding="ascii")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkError(f"SIPp {agent.name} did not start\n{tail(cwd / 'screen.log')}")
            time.sleep(0.02)
        return proc

    def run_step(
        self, path: PathKind, rate: int, seconds: float, *, overload: bool = False
    ) -> Step:
        assert self.router is not None and self.asterisk.pid is not None
        self.step_count += 1
        step_dir = self.workdir / f"step{self.step_count:02d}-{path}-{rate}"
        self.last_step_dir = step_dir
        dirs = {name: step_dir / name for name in ("caller", "answer", "ring")}
        for d in dirs.values():
            d.mkdir(parents=True)
        calls = max(1, round(rate * seconds))
        limit = seconds + STEP_GRACE
        phones = [
            self.start_phone(self.answerer, ANSWER_SCENARIO, calls, limit + 5, dirs["answer"]),
            self.start_phone(self.ringer, RING_SCENARIO, calls, limit + 5, dirs["ring"]),
        ]
        time.sleep(SETTLE)
        number = EXTENSION if path == "router" else native_number(EXTENSION)
        cmd = [
            *sipp_command(self.sipp, self.caller, CALLER_SCENARIO),
            f"127.0.0.1:{self.asterisk.sip_port}",
            "-s",
            number,
            "-set",
            "caller",
            CALLER,
            "-r",
            str(rate),
            "-m",
            str(calls),
            "-l",
            str(calls),  # no cap on simultaneous calls: the rate is the rate
            "-timeout",
            f"{limit:.0f}s",
            "-recv_timeout",
            f"{CALLER_RECV_TIMEOUT * 1000:.0f}",
            "-trace_rtt",
            "-rtt_freq",
            "1",
        ]
        started = time.monotonic()
        router_cpu0 = cpu_seconds(self.router.pid)
        asterisk_cpu0 = cpu_seconds(self.asterisk.pid)
        profiler = self.start_profiler(step_dir.name) if path == "router" else None
        caller = self.processes.start(cmd, cwd=dirs["caller"], log=dirs["caller"] / "screen.log")
        note = ""
        try:
            caller.wait(timeout=limit + 15)
        except subprocess.TimeoutExpired:
            note = "caller killed after its time-out"
        self.processes.stop(caller)
        if profiler is not None:
            self.stop_profiler(profiler)
        leftover = self.drain()
        router_cpu = cpu_seconds(self.router.pid) - router_cpu0
        asterisk_cpu = cpu_seconds(self.asterisk.pid) - asterisk_cpu0
        wall = time.monotonic() - started
        for phone in phones:
            self.processes.stop(phone, grace=2.0)
        phone_failures: dict[str, int] = {}
        for name in ("answer", "ring"):
            with contextlib.suppress(OSError, ValueError):
                failed = parse_stat_csv((dirs[name] / "stat.csv").read_text(encoding="utf-8"))
                if failed.failed:
                    phone_failures[name] = failed.failed
        unexpected: dict[str, int] = {}
        for name, d in dirs.items():
            for log in glob.glob(str(d / "*_errors.log")):
                text = Path(log).read_text(encoding="utf-8", errors="replace")
                for key, value in parse_unexpected(text).items():
                    unexpected[f"{name}: {key}"] = value
        if self.router.poll() is not None:
            raise BenchmarkError(f"the router exited during a step\n{tail(self.router_log)}")
        stat_file = dirs["caller"] / "stat.csv"
        if not stat_file.is_file():
            raise BenchmarkError(
                f"SIPp (caller) wrote no statistics (exit {caller.returncode})\n"
                f"{tail(dirs['caller'] / 'screen.log')}"
            )
        counts = parse_stat_csv(stat_file.read_text(encoding="utf-8", errors="replace"))
        setup: list[float] = []
        for rtt in glob.glob(str(dirs["caller"] / "*_rtt.csv")):
            setup.extend(parse_rtt_csv(Path(rtt).read_text(encoding="utf-8", errors="replace")))
        return Step(
            path, rate, seconds, calls, counts, setup, router_cpu, asterisk_cpu, leftover,
            wall, phone_failures, unexpected, overload, note,
        )  # fmt: skip


# --- report -------------------------------------------------------------------------------


def describe(step: Step) -> str:
    share = step.completed / step.attempted if step.attempted else 0.0
    parts = [
        f"{step.path:<6} {step.rate:>4}/s",
        f"{step.completed:>5}/{step.attempted:<5} ({share:6.1%})",
        f"set-up p50 {ms(step.p50):>9} p99 {ms(step.p99):>9}",
        f"CPU/call router {ms(step.router_cpu_per_call, 2):>8} "
        f"Asterisk {ms(step.asterisk_cpu_per_call, 2):>8}",
        "sustained" if step.sustained else "NOT sustained",
    ]
    extra = []
    if step.counts.failures:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(step.counts.failures.items()))
        extra.append(f"failed: {reasons}")
    unfinished = step.attempted - step.counts.successful - step.counts.failed
    if unfinished > 0:
        extra.append(f"{unfinished} not finished")
    if step.phone_failures:
        failed = ", ".join(f"{k} {v}" for k, v in sorted(step.phone_failures.items()))
        extra.append(f"failed at the phones: {failed}")
    if step.unexpected:
        extra.append(f"unexpected: {most_common(step.unexpected)}")
    if step.leftover:
        extra.append(f"{step.leftover} channels left, hung up")
    if step.note:
        extra.append(step.note)
    return "  ".join(parts) + (f"  [{'; '.join(extra)}]" if extra else "")


def per_call_range(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    return f"{min(known) * 1000:.2f}-{max(known) * 1000:.2f} ms"


def net_cpu_per_call(cpu: float, wall: float, idle_rate: float, calls: int) -> float | None:
    """CPU per completed call less what the process burns with no calls at all."""
    return cpu_per_call(max(0.0, cpu - idle_rate * wall), calls)


def summary(steps: Sequence[Step], idle_router: float | None = None) -> list[str]:
    """The figures beside their goals (``idle_router``: the router's CPU seconds per
    second with no calls, for the figure net of it)."""
    out: list[str] = []
    ladder = [s for s in steps if not s.overload]

    def at(path: PathKind, rate: int) -> Step | None:
        return next((s for s in ladder if s.path == path and s.rate == rate), None)

    r_rate, r_fell = sustained_rate(steps, "router")
    n_rate, n_fell = sustained_rate(steps, "native")

    def rate_text(rate: int | None, fell: bool) -> str:
        if rate is None:
            return "none"
        return f"{rate}/s" if fell else f"≥ {rate}/s (did not fall off)"

    ratio_text, ratio_ok = sustained_ratio(r_rate, r_fell, n_rate, n_fell)
    out.append(
        f"sustained rate: router {rate_text(r_rate, r_fell)}, native {rate_text(n_rate, n_fell)}"
        f", ratio {ratio_text} (goal ≥ {RATIO_GOAL}) {verdict(ratio_ok)}"
    )

    router_sustained = [s for s in ladder if s.path == "router" and s.sustained]
    top = max(router_sustained, key=rate_of) if router_sustained else None
    cpu = top.router_cpu_per_call if top is not None else None
    net = ""
    if top is not None and idle_router is not None:
        net_cpu = net_cpu_per_call(top.router_cpu, top.wall, idle_router, top.completed)
        net = f"; at {top.rate}/s net of its idle CPU: {ms(net_cpu, 2)}"
    out.append(
        f"router CPU per answered call at {top.rate if top else '-'}/s: {ms(cpu, 2)} "
        f"(goal ≤ {ROUTER_CPU_GOAL * 1000:g} ms) "
        f"{verdict(None if cpu is None else cpu <= ROUTER_CPU_GOAL)}   "
        f"[sustained steps: {per_call_range([s.router_cpu_per_call for s in router_sustained])}"
        f"{net}]"
    )

    ratios: list[tuple[int, float]] = []
    for step in router_sustained:
        native = at("native", step.rate)
        if native is None or not native.sustained:
            continue
        routed_cpu, native_cpu = step.asterisk_cpu_per_call, native.asterisk_cpu_per_call
        if routed_cpu is not None and native_cpu:
            ratios.append((step.rate, routed_cpu / native_cpu))
    if ratios:
        rate, value = max(ratios)
        routed, native = at("router", rate), at("native", rate)
        assert routed is not None and native is not None
        spread = f"{min(v for _, v in ratios):.2f}-{max(v for _, v in ratios):.2f}"
        out.append(
            f"Asterisk CPU per call at {rate}/s: routed {ms(routed.asterisk_cpu_per_call, 2)}, "
            f"native {ms(native.asterisk_cpu_per_call, 2)}, ratio {value:.2f} "
            f"(goal ≤ {ASTERISK_CPU_RATIO_GOAL}) {verdict(value <= ASTERISK_CPU_RATIO_GOAL)}   "
            f"[rates both sustained: {spread}]"
        )
    else:
        out.append(
            f"Asterisk CPU per call, routed / native: no rate both sustained "
            f"(goal ≤ {ASTERISK_CPU_RATIO_GOAL}) {verdict(None)}"
        )

    overload = next((s for s in steps if s.overload and s.path == "router"), None)
    native_overload = next((s for s in steps if s.overload and s.path == "native"), None)
    if overload is not None:
        share = overload.completed / overload.attempted
        reference = (
            f"   [native: {native_overload.completed}/{native_overload.attempted}]"
            if native_overload is not None
            else ""
        )
        ok: bool | None = share >= OVERLOAD_GOAL
        floor = ""
        if not r_fell:  # twice a floor may be below twice the real sustained rate
            floor = " [the router's sustained rate is a floor: a pass proves nothing]"
            if ok:
                ok = None
        out.append(
            f"overload, {overload.rate}/s for {overload.seconds:g} s: router "
            f"{overload.completed}/{overload.attempted} completed ({share:.1%}) "
            f"(goal ≥ {OVERLOAD_GOAL:.0%}) {verdict(ok)}{reference}{floor}"
        )
    else:
        out.append(f"overload: not run (goal ≥ {OVERLOAD_GOAL:.0%}) {verdict(None)}")

    routed, native = at("router", LATENCY_RATE), at("native", LATENCY_RATE)
    if routed is not None and native is not None and routed.setup and native.setup:
        assert routed.p50 is not None and native.p50 is not None
        assert routed.p99 is not None and native.p99 is not None
        d50, d99 = routed.p50 - native.p50, routed.p99 - native.p99
        out.append(
            f"set-up at {LATENCY_RATE}/s, p50: router {ms(routed.p50)}, native {ms(native.p50)}, "
            f"added {ms(d50)} (goal ≤ {P50_ADDED_GOAL * 1000:g} ms) "
            f"{verdict(d50 <= P50_ADDED_GOAL)}"
        )
        out.append(
            f"set-up at {LATENCY_RATE}/s, p99: router {ms(routed.p99)}, native {ms(native.p99)}, "
            f"added {ms(d99)} (goal ≤ {P99_ADDED_GOAL * 1000:g} ms) "
            f"{verdict(d99 <= P99_ADDED_GOAL)}"
        )
    else:
        out.append(
            f"set-up at {LATENCY_RATE}/s (router p50 ≤ native + {P50_ADDED_GOAL * 1000:g} ms, "
            f"p99 ≤ native + {P99_ADDED_GOAL * 1000:g} ms): no {LATENCY_RATE}/s step "
            f"{verdict(None)}"
        )
    return out


# --- main ---------------------------------------------------------------------------------


def load() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="callrouter-sipp-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs and SIPp files kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> tuple[list[Step], float | None]:
    sipp = ensure_sipp()
    print(
        f"{sipp_version(sipp)}; {os.cpu_count()} CPUs, load average {load()} at the start",
        flush=True,
    )
    processes = Processes()
    steps: list[Step] = []
    idle_router: float | None = None
    with workdir(args.keep) as work:
        bench = Bench(sipp, work, processes, args.router_log_level, args.profile)
        try:
            bench.start()
            paths = args.paths
            for path in paths:  # imports, connections, caches: not counted
                warm = bench.run_step(path, WARMUP_CALLS, 1.0)
                print(f"warm-up {path}: {warm.completed}/{warm.attempted} calls", flush=True)
                if warm.completed == 0:
                    screen = bench.last_step_dir / "caller" / "screen.log"
                    raise BenchmarkError(
                        f"no {path} call completed while warming up\n{tail(screen)}\n"
                        f"{tail(bench.router_log)}\n{bench.asterisk.log_tail()}"
                    )
            idle_router, idle_asterisk = bench.idle_cpu(IDLE_SECONDS)
            print(
                f"{bench.asterisk_version}; with no calls: router {idle_router * 1000:.1f} ms "
                f"CPU per second, Asterisk {idle_asterisk * 1000:.1f} ms",
                flush=True,
            )
            print(
                f"steps of {args.seconds:g} s; sustained: ≥ {SUSTAIN_COMPLETION:.0%} of calls "
                f"completed and set-up (INVITE -> 200 OK) p99 ≤ {SUSTAIN_SETUP_P99 * 1000:g} ms",
                flush=True,
            )
            fell: set[PathKind] = set()
            for index, rate in enumerate(args.rates):
                order = paths if index % 2 == 0 else paths[::-1]
                for path in order:
                    if path in fell:
                        continue
                    step = bench.run_step(path, rate, args.seconds)
                    steps.append(step)
                    print(describe(step), flush=True)
                    if not step.sustained and not args.quick:
                        fell.add(path)
                if len(fell) == len(paths):
                    break
            if args.no_overload:
                return steps, idle_router
            r_rate, _ = sustained_rate(steps, "router")
            rate = overload_rate(r_rate, args.rates, QUICK_MAX_RATE if args.quick else None)
            seconds = QUICK_OVERLOAD_SECONDS if args.quick else OVERLOAD_SECONDS
            print(f"overload: {rate}/s for {seconds:g} s", flush=True)
            for path in paths:
                step = bench.run_step(path, rate, seconds, overload=True)
                steps.append(step)
                print(describe(step), flush=True)
        finally:
            with contextlib.suppress(Exception):
                bench.stop()
            processes.stop_all()
    return steps, idle_router


def parse_rates(text: str) -> list[int]:
    try:
        rates = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates: comma-separated integers, not {text!r}") from None
    if not rates or rates[0] < 1:
        raise argparse.ArgumentTypeError("rates must be ≥ 1 call per second")
    return rates


def parse_paths(text: str) -> tuple[PathKind, ...]:
    paths = tuple(part.strip() for part in text.split(",") if part.strip())
    if not paths or any(path not in PATHS for path in paths):
        raise argparse.ArgumentTypeError(f"paths: router, native or both, not {text!r}")
    return tuple(path for path in PATHS if path in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default=None,
        help=f"calls per second to step through (default {','.join(map(str, DEFAULT_RATES))})",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help=f"per rate (default {DEFAULT_SECONDS:g})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: rates {','.join(map(str, QUICK_RATES))}, {QUICK_SECONDS:g} s each, "
        f"overload at most {QUICK_MAX_RATE}/s",
    )
    parser.add_argument(
        "--paths",
        type=parse_paths,
        default=PATHS,
        help="the paths to run, e.g. 'router' for an A/B of the router's CPU (default both)",
    )
    parser.add_argument(
        "--no-overload", action="store_true", help="skip the overload step (A/B runs)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and SIPp's files")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the router with py-spy during each router step; folded stacks in DIR",
    )
    parser.add_argument(
        "--router-log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="callrouter serve's log level (default INFO, as in production)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rates = [r for r in (args.rates or QUICK_RATES) if r <= QUICK_MAX_RATE] or list(
            QUICK_RATES
        )
        args.seconds = min(args.seconds or QUICK_SECONDS, QUICK_SECONDS)
    else:
        args.rates = args.rates or list(DEFAULT_RATES)
        args.seconds = args.seconds or DEFAULT_SECONDS
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    try:
        steps, idle_router = run(args)
    except (BenchmarkError, SandboxUnavailable, SandboxError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\nload average at the end: {load()}")
    for line in summary(steps, idle_router):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
