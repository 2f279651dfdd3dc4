"""The pure parts of workplace logins: policy, PIN lockout, automatic logout, codes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callrouter.domain.directory import Role
from callrouter.logins.autologout import latest_cutoff, logout_cutoffs
from callrouter.logins.feature_codes import LoginCode, parse_login_code
from callrouter.logins.lockout import Locked, LockoutPolicy, PinLockout, source_key, user_key
from callrouter.logins.policy import Refusal, login_refusal
from callrouter.rules.loader import load_rules
from callrouter.rules.model import RingRules
from callrouter.yamlfile import YamlFileError

# --- policy ---------------------------------------------------------------------------

INTERN = Role("intern", frozenset({"hotdesk-1"}))


@pytest.mark.parametrize(
    ("role", "workplace", "occupant", "policy", "expected"),
    [
        (None, "office-1", None, "displace", None),  # no role: anywhere
        (Role("staff"), "office-1", None, "displace", None),  # unrestricted role
        (INTERN, "hotdesk-1", None, "displace", None),
        (INTERN, "office-1", None, "displace", Refusal.NOT_ALLOWED),
        (Role("visitor", frozenset()), "hotdesk-1", None, "displace", Refusal.NOT_ALLOWED),
        (None, "office-1", "202", "displace", None),  # the occupant is moved out
        (None, "office-1", "202", "refuse", Refusal.OCCUPIED),
        (None, "office-1", "201", "refuse", None),  # already there: fine
        (INTERN, "office-1", "202", "refuse", Refusal.NOT_ALLOWED),  # the role is checked first
    ],
)
def test_login_refusal(
    role: Role | None, workplace: str, occupant: str | None, policy: str, expected: Refusal | None
) -> None:
    assert login_refusal("201", role, workplace, occupant, policy) is expected  # type: ignore[arg-type]


# --- lockout --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wrong(lockout: PinLockout, extension: str, source: str) -> None:
    """One wrong PIN: a reservation left as it is."""
    lockout.reserve(extension, source)


def locked(lockout: PinLockout, extension: str, source: str) -> Locked:
    with pytest.raises(Locked) as caught:
        lockout.reserve(extension, source)
    return caught.value


def test_five_wrong_pins_from_one_source_lock_it_for_the_rest_of_the_window() -> None:
    clock = Clock()
    lockout = PinLockout(clock=clock)
    for extension in ("201", "202", "203", "204"):
        wrong(lockout, extension, "PJSIP/desk")
        clock.now += 60
    assert lockout.retry_after("205", "PJSIP/desk") is None
    wrong(lockout, "205", "PJSIP/desk")
    refusal = locked(lockout, "206", "PJSIP/desk")
    # The first failure was 240 s ago: it leaves the 15-minute window in 660 s.
    assert refusal.source_locked and refusal.retry_after == pytest.approx(900 - 240)
    assert lockout.retry_after("206", "PJSIP/other") is None  # another place is not locked
    clock.now += refusal.retry_after - 1
    assert locked(lockout, "206", "PJSIP/desk").source_locked
    clock.now += 2
    lockout.reserve("206", "PJSIP/desk")  # the oldest failure left the window


def test_a_try_is_counted_before_its_pin_is_checked() -> None:
    """Reservations still in flight count: the sixth concurrent try is refused."""
    lockout = PinLockout(clock=Clock())
    for _ in range(5):
        lockout.reserve("201", "PJSIP/desk")  # none resolved yet
    assert locked(lockout, "201", "PJSIP/desk").source_locked
    # From other places the user's checks are slowed down, at once.
    refusal = locked(lockout, "201", "PJSIP/elsewhere")
    assert not refusal.source_locked and refusal.retry_after == 1


def test_a_right_pin_clears_the_users_count_and_its_own_try_but_not_the_sources() -> None:
    lockout = PinLockout(clock=Clock())
    for _ in range(4):
        wrong(lockout, "201", "x")
    lockout.succeeded(lockout.reserve("201", "x"))  # the right PIN: not a failure
    wrong(lockout, "202", "x")  # the source's fifth failure
    assert locked(lockout, "203", "x").source_locked
    for source in ("a", "b", "c", "d"):  # the user's count started again
        wrong(lockout, "201", source)
    assert lockout.retry_after("201", "e") is None


def test_wrong_pins_for_a_user_slow_checks_down_they_do_not_lock_the_user_out() -> None:
    clock = Clock()
    lockout = PinLockout(clock=clock)
    waits = []
    for attempt in range(16):
        source = f"api 10.0.0.{attempt}"  # a new place each time: only the user counts
        refusal = None
        try:
            lockout.reserve("201", source)
        except Locked as caught:
            refusal = caught
        if refusal is not None:
            assert not refusal.source_locked
            waits.append(refusal.retry_after)
            clock.now += refusal.retry_after  # Retry-After is true: then it works
            lockout.reserve("201", source)
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 180, 180, 180]


def test_a_users_wrong_pins_are_forgotten_after_an_hour() -> None:
    clock = Clock()
    lockout = PinLockout(clock=clock)
    for attempt in range(5):
        wrong(lockout, "201", f"src {attempt}")
    clock.now += 3599
    assert lockout.retry_after("201", "new") is None  # the 1 s delay is long past
    wrong(lockout, "201", "new")
    assert lockout.retry_after("201", "newer") == 2  # but they still count: 6 now
    clock.now += 3600
    for attempt in range(4):
        wrong(lockout, "201", f"later {attempt}")
    assert lockout.retry_after("201", "new") is None


def test_rotating_sources_cannot_check_a_users_pins_faster_than_before() -> None:
    """An attacker with a new address for every try, trying whenever allowed, for a
    day: 20 checks per hour in the long run, as the old 5-in-15-minutes lockout."""
    clock = Clock()
    start = clock.now
    lockout = PinLockout(clock=clock)
    checks: list[float] = []
    while clock.now < start + 24 * 3600:
        wait = lockout.retry_after("201", f"api 10.1.{len(checks)}")
        if wait is not None:
            clock.now += wait
            continue
        lockout.reserve("201", f"api 10.1.{len(checks)}")
        checks.append(clock.now - start)
    per_hour = [sum(hour * 3600 <= t < (hour + 1) * 3600 for t in checks) for hour in range(24)]
    assert per_hour[0] <= 31  # 5 at once, then 1, 2, 4 ... 128 s apart, then 180 s
    assert max(per_hour[1:]) <= 20
    assert len(checks) <= 31 + 23 * 20
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert min(gaps[12:]) == pytest.approx(180)


def test_keys_have_a_bounded_size_whatever_the_input() -> None:
    assert user_key("201") == "user:201"
    for hostile in ("x" * 10_000, "20 1", "\ud800", "", "🙂" * 300):
        assert len(user_key(hostile)) <= 80 and user_key(hostile) != user_key("201")
        assert len(source_key(hostile)) == len(source_key("api 127.0.0.1")) <= 80
    assert source_key("api 10.0.0.1") != source_key("api 10.0.0.2")
    assert user_key("x" * 300) == user_key("x" * 300)


def test_the_policy_in_numbers() -> None:
    policy = LockoutPolicy()
    assert [policy.user_delay(n) for n in range(4, 15)] == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        180,
        180,
    ]
    assert policy.user_delay(10**6) == 180
    assert policy.source_wait([0, 1, 2, 3], 10) is None
    assert policy.source_wait([0, 1, 2, 3, 4], 10) == 890
    # A clock behind another router's: future tries count as now, not longer.
    assert policy.source_wait([100] * 5, 10) == 900
    assert policy.user_wait([100] * 13, 10) == 180


# --- automatic logout -------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 03:00 Berlin is 01:00 UTC in winter (CET, +1).
        (datetime(2026, 11, 28, 1, 30, tzinfo=UTC), datetime(2026, 11, 27, 2, 0, tzinfo=UTC)),
        (datetime(2026, 11, 28, 2, 30, tzinfo=UTC), datetime(2026, 11, 28, 2, 0, tzinfo=UTC)),
        (datetime(2026, 11, 28, 2, 0, tzinfo=UTC), datetime(2026, 11, 28, 2, 0, tzinfo=UTC)),
        # Summer (CEST, +2): 03:00 Berlin is 01:00 UTC.
        (datetime(2026, 7, 1, 12, 0, tzinfo=UTC), datetime(2026, 7, 1, 1, 0, tzinfo=UTC)),
    ],
)
def test_latest_cutoff_is_the_last_time_the_local_clock_showed_the_time(
    now: datetime, expected: datetime
) -> None:
    assert latest_cutoff(now, time(3, 0), BERLIN) == expected


def test_latest_cutoff_across_the_spring_dst_change() -> None:
    # 2026-03-29 02:00 CET jumps to 03:00 CEST; 03:00 that day is 01:00 UTC.
    now = datetime(2026, 3, 29, 10, 0, tzinfo=UTC)
    assert latest_cutoff(now, time(3, 0), BERLIN) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_logout_cutoffs_per_workplace_with_the_default() -> None:
    rules = RingRules.model_validate(
        {
            "defaults": {"auto_logout": "03:00"},
            "workplaces": {"office-1": {"auto_logout": "20:00"}},
        }
    )
    now = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    cutoffs = logout_cutoffs(rules, ["office-1", "hotdesk-1"], now, UTC)
    assert cutoffs == {
        "office-1": datetime(2026, 11, 28, 20, 0, tzinfo=UTC),
        "hotdesk-1": datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
    }
    assert logout_cutoffs(RingRules(), ["office-1"], now, UTC) == {}


def test_auto_logout_in_rules_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text('workplaces:\n  office-1:\n    auto_logout: "03:00"\n')
    assert load_rules(good).workplaces["office-1"].auto_logout == time(3, 0)

    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text("defaults:\n  auto_logout: 03:00\n")  # not read as base 60
    assert load_rules(unquoted).defaults.auto_logout == time(3, 0)

    number = tmp_path / "number.yaml"
    number.write_text("defaults:\n  auto_logout: 3\n")
    with pytest.raises(YamlFileError) as caught:
        load_rules(number)
    assert f"{number}:2:" in str(caught.value)
    assert "not a time of day" in str(caught.value)

    bad = tmp_path / "bad.yaml"
    bad.write_text('workplaces:\n  office-1:\n    auto_logout: "25:00"\n')
    with pytest.raises(YamlFileError) as caught:
        load_rules(bad)
    assert f"{bad}:3:" in str(caught.value)
    assert "not a time of day" in str(caught.value)


# --- feature codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialed", "expected"),
    [
        ("*44", LoginCode(None)),
        ("*44#", LoginCode(None)),
        ("*44201", LoginCode("201")),
        ("*44201#", LoginCode("201")),
        ("*44201#4711", LoginCode("201", "4711")),
        ("*44201#123456789012", LoginCode("201", "123456789012")),
        ("*44201#1234567890123", None),  # PIN too long
        ("*44" + "1" * 21, None),  # extension too long
        ("*44abc", None),
        ("*44201#47a1", None),
        ("*44 201", None),
        ("*44201##4711", None),
        ("*45201", None),  # another prefix
        ("*44" + "9" * 70, None),
        ("", None),
    ],
)
def test_parse_login_code(dialed: str, expected: LoginCode | None) -> None:
    assert parse_login_code(dialed, "*44") == expected


def test_parse_login_code_with_another_prefix() -> None:
    assert parse_login_code("#7201#1", "#7") == LoginCode("201", "1")
