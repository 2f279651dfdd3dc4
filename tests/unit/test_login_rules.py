"""The pure parts of workplace logins: policy, PIN lockout, automatic logout, codes."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callrouter.domain.directory import Role
from callrouter.logins.autologout import latest_cutoff, logout_cutoffs
from callrouter.logins.feature_codes import LoginCode, parse_login_code
from callrouter.logins.lockout import PinLockout, source_key, user_key
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


def test_five_wrong_pins_lock_the_user_for_the_rest_of_the_window() -> None:
    clock = Clock()
    lockout = PinLockout(clock=clock)
    for _ in range(4):
        lockout.failed(user_key("201"), source_key("a"))
        clock.now += 60
    assert lockout.retry_after(user_key("201")) is None
    lockout.failed(user_key("201"), source_key("b"))
    wait = lockout.retry_after(user_key("201"), source_key("c"))
    # The first failure was 240 s ago: it leaves the 15-minute window in 660 s.
    assert wait == pytest.approx(900 - 240)
    clock.now += wait - 1
    assert lockout.retry_after(user_key("201")) is not None
    clock.now += 2
    assert lockout.retry_after(user_key("201")) is None


def test_a_source_trying_many_users_is_locked_too() -> None:
    clock = Clock()
    lockout = PinLockout(clock=clock)
    for extension in ("201", "202", "203", "204", "205"):
        lockout.failed(user_key(extension), source_key("PJSIP/desk"))
    assert lockout.retry_after(user_key("206"), source_key("PJSIP/desk")) is not None
    assert lockout.retry_after(user_key("206"), source_key("PJSIP/other")) is None


def test_a_right_pin_clears_the_users_count_but_not_the_sources() -> None:
    lockout = PinLockout(clock=Clock())
    for _ in range(4):
        lockout.failed(user_key("201"), source_key("x"))
    lockout.succeeded(user_key("201"))
    lockout.failed(user_key("201"), source_key("x"))
    assert lockout.retry_after(user_key("201")) is None
    assert lockout.retry_after(source_key("x")) is not None


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    lockout = PinLockout(clock=clock)
    for _ in range(5):
        lockout.failed(user_key("201"))
    clock.now += 901
    assert lockout.retry_after(user_key("201")) is None
    lockout.failed(user_key("201"))
    assert lockout.retry_after(user_key("201")) is None


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
