"""benchmarks/sipp_load.py's pure parts: SIPp's output files, "sustained", CPU per call.

The sample files are what SIPp 3.6.1 (Debian's sip-tester) wrote for
benchmarks/sipp/caller.xml with ``-trace_stat -fd 1`` and ``-trace_rtt -rtt_freq 1``.
"""

from __future__ import annotations

import pytest

from benchmarks.sipp_load import (
    StatCounts,
    Step,
    cpu_per_call,
    is_sustained,
    net_cpu_per_call,
    overload_rate,
    parse_rtt_csv,
    parse_stat_csv,
    parse_unexpected,
    proc_cpu_ticks,
    summary,
    sustained_rate,
    sustained_ratio,
    udp_bound,
)

STAT_HEADER = (
    "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;CallRat"
    "e(P);CallRate(C);IncomingCall(P);IncomingCall(C);OutgoingCall(P);OutgoingCall(C);Tot"
    "alCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCa"
    "ll(C);FailedCannotSendMessage(P);FailedCannotSendMessage(C);FailedMaxUDPRetrans(P);F"
    "ailedMaxUDPRetrans(C);FailedTcpConnect(P);FailedTcpConnect(C);FailedTcpClosed(P);Fai"
    "ledTcpClosed(C);FailedUnexpectedMessage(P);FailedUnexpectedMessage(C);FailedCallReje"
    "cted(P);FailedCallRejected(C);FailedCmdNotSent(P);FailedCmdNotSent(C);FailedRegexpDo"
    "esntMatch(P);FailedRegexpDoesntMatch(C);FailedRegexpShouldntMatch(P);FailedRegexpSho"
    "uldntMatch(C);FailedRegexpHdrNotFound(P);FailedRegexpHdrNotFound(C);FailedOutboundCo"
    "ngestion(P);FailedOutboundCongestion(C);FailedTimeoutOnRecv(P);FailedTimeoutOnRecv(C"
    ");FailedTimeoutOnSend(P);FailedTimeoutOnSend(C);FailedTestDoesntMatch(P);FailedTestD"
    "oesntMatch(C);FailedTestShouldntMatch(P);FailedTestShouldntMatch(C);FailedStrcmpDoes"
    "ntMatch(P);FailedStrcmpDoesntMatch(C);FailedStrcmpShouldntMatch(P);FailedStrcmpShoul"
    "dntMatch(C);OutOfCallMsgs(P);OutOfCallMsgs(C);DeadCallMsgs(P);DeadCallMsgs(C);Retran"
    "smissions(P);Retransmissions(C);AutoAnswered(P);AutoAnswered(C);Warnings(P);Warnings"
    "(C);FatalErrors(P);FatalErrors(C);WatchdogMajor(P);WatchdogMajor(C);WatchdogMinor(P)"
    ";WatchdogMinor(C);ResponseTime1(P);ResponseTime1(C);ResponseTime1StDev(P);ResponseTi"
    "me1StDev(C);CallLength(P);CallLength(C);CallLengthStDev(P);CallLengthStDev(C);Respon"
    "seTimeRepartition1;ResponseTimeRepartition1_<50;ResponseTimeRepartition1_<100;Respon"
    "seTimeRepartition1_<200;ResponseTimeRepartition1_<250;ResponseTimeRepartition1_<300;"
    "ResponseTimeRepartition1_<400;ResponseTimeRepartition1_<500;ResponseTimeRepartition1"
    "_<1000;ResponseTimeRepartition1_<2000;ResponseTimeRepartition1_>=2000;"
)

# Two calls to the ringing phone with -recv_timeout 700: both fail (no 200 OK).
STAT_FAILED_FIRST_ROW = (
    "2026-12-01\t20:54:57.161143\t1796158497.161143;2026-12-01\t20:54:57.161143\t17961584"
    "97.161143;2026-12-01\t20:54:57.164476\t1796158497.164476;00:00:00;00:00:00;5;0;0;0;0"
    ";0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0"
    ";0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;00:00:00:000000;00:00:00:000000;00:00:00:000000;00:"
    "00:00:000000;00:00:00:000000;00:00:00:000000;00:00:00:000000;00:00:00:000000;;0;0;0;"
    "0;0;0;0;0;0;0;"
)
STAT_FAILED_LAST_ROW = (
    "2026-12-01\t20:54:57.161143\t1796158497.161143;2026-12-01\t20:54:58.270526\t17961584"
    "98.270526;2026-12-01\t20:54:58.270589\t1796158498.270589;00:00:00;00:00:01;5;0;1.803"
    "43;0;0;0;2;2;0;0;0;0;2;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;2;0;0;0;0;0;0;0"
    ";0;0;0;0;0;0;3;0;0;0;0;0;5;0;0;0;0;0;0;00:00:00:000000;00:00:00:000000;00:00:00:0000"
    "00;00:00:00:000000;00:00:00:000000;00:00:00:704000;00:00:00:000000;00:00:00:000000;;"
    "0;0;0;0;0;0;0;0;0;0;"
)
# Three calls to the answering phone, all successful.
STAT_OK_LAST_ROW = (
    "2026-12-01\t20:54:55.339062\t1796158495.339062;2026-12-01\t20:54:57.150840\t17961584"
    "97.150840;2026-12-01\t20:54:57.150886\t1796158497.150886;00:00:00;00:00:01;5;0;1.656"
    "54;0;0;0;3;3;0;0;3;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0"
    ";0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;00:00:00:000000;00:00:00:208000;00:00:00:0000"
    "00;00:00:00:006000;00:00:00:000000;00:00:01:212000;00:00:00:000000;00:00:00:006000;;"
    "0;0;0;3;0;0;0;0;0;0;"
)

RTT = """Date_ms;response_time_ms;rtd_no
420.001;216;1
624.001;204;1
808.001;204;1
"""


def stat_file(*rows: str) -> str:
    return "\n".join((STAT_HEADER, *rows)) + "\n"


def test_parse_stat_counts_of_the_last_row() -> None:
    counts = parse_stat_csv(stat_file(STAT_OK_LAST_ROW))
    assert counts == StatCounts(created=3, successful=3, failed=0, failures={})


def test_parse_stat_failures_and_their_reasons() -> None:
    counts = parse_stat_csv(stat_file(STAT_FAILED_FIRST_ROW, STAT_FAILED_LAST_ROW))
    assert (counts.created, counts.successful, counts.failed) == (2, 0, 2)
    assert counts.failures == {"TimeoutOnRecv": 2}


def test_parse_stat_before_the_first_period() -> None:
    assert parse_stat_csv(stat_file()) == StatCounts(0, 0, 0)


def test_parse_stat_rejects_other_files() -> None:
    with pytest.raises(ValueError):
        parse_stat_csv(RTT)
    with pytest.raises(ValueError):
        parse_stat_csv("")


def test_parse_rtt_in_seconds() -> None:
    assert parse_rtt_csv(RTT) == pytest.approx([0.216, 0.204, 0.204])
    assert parse_rtt_csv(RTT, rtd=2) == []
    # -rtt_freq dumps append; a repeated header or a blank line is skipped.
    assert parse_rtt_csv(RTT + "\n" + RTT) == pytest.approx([0.216, 0.204, 0.204] * 2)


# -trace_err of the caller, answered 503 (as SIPp 3.6.1 wrote it: lines end in CR LF;
# the third entry is the same shortened and edited to an unexpected request).
ERRORS_LOG = (
    "The following events occurred:\n"
    "2026-12-01\t21:38:15.847086\t1796161095.847086: Aborting call on unexpected message"
    " for Call-Id '1-7419@127.0.0.1': while expecting '100' (index 1), received 'SIP/2.0"
    " 503 Service Unavailable\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:17002;branch=z9hG4bK-7419-1-0\r\n"
    "From: <sip:x@127.0.0.1:17002>;tag=7419SIPpTag001\r\n"
    "To: <sip:5000@127.0.0.1:17001>;tag=7414x1\r\n"
    "Call-ID: 1-7419@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
    "'2026-12-01\t21:38:16.047061\t1796161096.047061: Aborting call on unexpected message"
    " for Call-Id '2-7419@127.0.0.1': while expecting '100' (index 1), received 'SIP/2.0"
    " 503 Service Unavailable\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:17002;branch=z9hG4bK-7419-2-0\r\n"
    "\r\n"
    "'2026-12-01\t21:38:16.247057\t1796161096.247057: Aborting call on unexpected message"
    " for Call-Id '3-7419@127.0.0.1': while expecting 'ACK' (index 4), received 'BYE"
    " sip:5000@127.0.0.1:17001 SIP/2.0\r\n"
    "\r\n'"
)


def test_parse_unexpected_messages() -> None:
    assert parse_unexpected(ERRORS_LOG) == {"503 instead of 100": 2, "BYE instead of ACK": 1}
    assert parse_unexpected("") == {}


def test_proc_stat_user_plus_system_ticks() -> None:
    # A command name with spaces and parentheses; utime 1234, stime 567.
    stat = (
        "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 3000 0 0 0 1234 567 0 0 20 0 9 0 "
        "100 200000000 5000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0"
    )
    assert proc_cpu_ticks(stat) == 1234 + 567


def test_udp_bound_reads_proc_net_udp() -> None:
    table = (
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        " 6461: 0100007F:430E 00000000:0000 07 00000000:00000000 00:00000000 00000000     0\n"
    )
    assert udp_bound(0x430E, table)
    assert not udp_bound(0x430F, table)
    assert not udp_bound(17166, table.splitlines()[0])


@pytest.mark.parametrize(
    ("completed", "attempted", "p99", "expected"),
    [
        (400, 400, 0.250, True),
        (396, 400, 0.500, True),  # exactly 99 % and exactly 500 ms
        (395, 400, 0.250, False),  # 98.75 %
        (400, 400, 0.501, False),
        (400, 400, None, False),  # no call answered: no set-up time
        (0, 0, None, False),
    ],
)
def test_sustained(completed: int, attempted: int, p99: float | None, expected: bool) -> None:
    assert is_sustained(completed, attempted, p99) is expected


def test_cpu_per_call() -> None:
    assert cpu_per_call(0.9, 300) == pytest.approx(0.003)
    assert cpu_per_call(0.9, 0) is None
    # 1.2 s over 10 s with 0.03 s/s idle: 0.9 s for the calls.
    assert net_cpu_per_call(1.2, 10.0, 0.03, 300) == pytest.approx(0.003)
    assert net_cpu_per_call(0.1, 10.0, 0.03, 300) == 0.0  # never negative


def step(
    path: str,
    rate: int,
    completed: int,
    *,
    p99: float = 0.25,
    router_cpu: float = 0.0,
    asterisk_cpu: float = 0.0,
    overload: bool = False,
) -> Step:
    attempted = rate * 8
    return Step(
        path,  # type: ignore[arg-type]
        rate,
        8.0,
        attempted,
        StatCounts(attempted, completed, attempted - completed),
        [0.2] * 98 + [p99] * 2 if completed else [],
        router_cpu,
        asterisk_cpu,
        overload=overload,
        wall=10.0,
    )


LADDER = [
    step("router", 50, 400, router_cpu=1.6, asterisk_cpu=4.0),
    step("native", 50, 400, router_cpu=0.1, asterisk_cpu=3.2),
    step("router", 100, 800, router_cpu=3.2, asterisk_cpu=8.8),
    step("native", 100, 800, router_cpu=0.2, asterisk_cpu=6.4),
    step("router", 150, 1200, p99=1.392, router_cpu=5.0, asterisk_cpu=14.0),
    step("native", 150, 1200, router_cpu=0.3, asterisk_cpu=9.6),
    step("native", 200, 1000, router_cpu=0.3, asterisk_cpu=9.6),
]


def test_sustained_rate_is_the_last_before_falling_off() -> None:
    assert sustained_rate(LADDER, "router") == (100, True)
    assert sustained_rate(LADDER, "native") == (150, True)
    assert sustained_rate(LADDER[:2], "native") == (50, False)  # a floor
    assert sustained_rate([step("router", 50, 10)], "router") == (None, True)


def test_sustained_ratio_decides_only_what_the_floors_allow() -> None:
    assert sustained_ratio(125, True, 175, True) == ("0.71", False)
    assert sustained_ratio(175, True, 175, True) == ("1.00", True)
    # Native did not fall off: its real rate is higher, the real ratio lower.
    assert sustained_ratio(100, True, 400, False) == ("≤ 0.25", False)
    assert sustained_ratio(400, True, 400, False) == ("≤ 1.00", None)
    # The router did not fall off: the real ratio is higher.
    assert sustained_ratio(400, False, 300, True) == ("≥ 1.33", True)
    assert sustained_ratio(100, False, 300, True) == ("≥ 0.33", None)
    assert sustained_ratio(10, False, 10, False) == ("1.00 (both floors)", None)
    assert sustained_ratio(None, True, 50, True) == ("0.00", False)
    assert sustained_ratio(50, True, None, True) == ("-", None)


def test_overload_rate() -> None:
    assert overload_rate(125, [25, 50], None) == 250
    assert overload_rate(None, [25, 50], None) == 50
    assert overload_rate(10, [5, 10], 20) == 20
    assert overload_rate(20, [5, 10], 20) == 20


def test_summary_marks_each_goal() -> None:
    lines = summary(
        [
            *LADDER,
            step("router", 200, 1600, overload=True),
            step("native", 200, 1500, overload=True),
        ],
        idle_router=0.002,
    )
    text = "\n".join(lines)
    assert "router 100/s, native 150/s, ratio 0.67 (goal ≥ 0.9) MISSED" in text
    # 3.2 s / 800 calls; net of 0.002 s/s over 10 s: 3.18 s / 800.
    assert "router CPU per answered call at 100/s: 4.00 ms (goal ≤ 1 ms) MISSED" in text
    assert "net of its idle CPU: 3.98 ms" in text
    # 8.8 / 800 = 11 ms against 6.4 / 800 = 8 ms: 1.38.
    assert "ratio 1.38 (goal ≤ 1.2) MISSED" in text
    assert "router 1600/1600 completed (100.0%) (goal ≥ 99%) met" in text
    assert "[native: 1500/1600]" in text
    assert "p50: router 200.0 ms, native 200.0 ms, added 0.0 ms (goal ≤ 1 ms) met" in text


def test_summary_without_the_steps_says_not_measured() -> None:
    lines = summary([step("router", 5, 40), step("native", 5, 40)])
    assert "ratio 1.00 (both floors) (goal ≥ 0.9) not measured" in lines[0]
    assert lines[-1].endswith("no 50/s step not measured")
    assert "overload: not run" in "\n".join(lines)


def test_summary_overload_after_a_floor() -> None:
    ladder = [step("router", 10, 80), step("native", 10, 80)]
    passed = summary([*ladder, step("router", 20, 160, overload=True)])
    assert "(goal ≥ 99%) not measured" in "\n".join(passed)
    failed = summary([*ladder, step("router", 20, 100, overload=True)])
    assert "(goal ≥ 99%) MISSED" in "\n".join(failed)
