"""LoginService on a real directory database: PINs, lockout, the rules, audit, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import DatabaseError, create_engine
from callrouter.directory.revisions import read_revision
from callrouter.directory.snapshot import load_snapshot
from callrouter.logins import service as service_module
from callrouter.logins.lockout import (
    DatabaseLockout,
    Locked,
    Lockout,
    MemoryLockout,
    PinLockout,
    Reservation,
    source_key,
)
from callrouter.logins.policy import Refusal
from callrouter.logins.service import LoginDenied, LoginService
from callrouter.logins.store import set_login
from callrouter.rules.model import RingRules
from tests.unit.conftest import Live
from tests.unit.test_directory_store import audit_entries, rows


def service(live: Live, **kwargs: object) -> LoginService:
    return LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh, **kwargs)  # type: ignore[arg-type]


async def logins(database: AsyncEngine) -> dict[str, str]:
    return (await load_snapshot(database)).logins  # type: ignore[return-value]


async def test_right_pin_gives_the_user(live: Live) -> None:
    user = await service(live).check_pin("201", "4711", source="test")
    assert user.extension == "201"


@pytest.mark.parametrize(
    ("extension", "pin"),
    [
        ("201", "1234"),  # wrong PIN
        ("999", "4711"),  # unknown extension
        ("203", "4711"),  # a user without a PIN cannot log in
        ("201", "47*1"),  # not digits
        ("201", ""),
    ],
)
async def test_every_bad_credential_gets_the_same_answer(
    live: Live, extension: str, pin: str
) -> None:
    with pytest.raises(LoginDenied) as caught:
        await service(live).check_pin(extension, pin, source="test")
    assert caught.value.reason is Refusal.BAD_CREDENTIALS
    assert str(caught.value) == "wrong extension or PIN"


class Clock:
    """A datetime clock for DatabaseLockout, a float one for PinLockout."""

    def __init__(self) -> None:
        self.at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def seconds(self) -> float:
        return self.at.timestamp()

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def lockout_of(kind: str, live: Live, clock: Clock) -> Lockout:
    if kind == "database":
        return DatabaseLockout(live.engine, clock=clock.now)
    return MemoryLockout(PinLockout(clock=clock.seconds))


@pytest.mark.parametrize("kind", ["database", "memory"])
async def test_a_strangers_wrong_pins_do_not_keep_the_user_out(live: Live, kind: str) -> None:
    """Five wrong PINs for 201 from one place: 201 from another place waits a second,
    not 15 minutes (the old lockout's denial of service)."""
    clock = Clock()
    logins_service = service(live, lockout=lockout_of(kind, live, clock))
    for _ in range(5):
        with pytest.raises(LoginDenied) as caught:
            await logins_service.check_pin("201", "0000", source="api 10.6.6.6")
        assert caught.value.reason is Refusal.BAD_CREDENTIALS
    with pytest.raises(LoginDenied) as caught:
        await logins_service.check_pin("201", "4711", source="phone PJSIP/office1-desk")
    assert caught.value.reason is Refusal.LOCKED
    assert caught.value.retry_after == pytest.approx(1)  # the first delay; it is true:
    clock.advance(caught.value.retry_after)
    user = await logins_service.check_pin("201", "4711", source="phone PJSIP/office1-desk")
    assert user.extension == "201"
    # The stranger's place stays locked; the user's count is cleared.
    with pytest.raises(LoginDenied) as caught:
        await logins_service.check_pin("202", "0815", source="api 10.6.6.6")
    assert caught.value.reason is Refusal.LOCKED and caught.value.retry_after is not None
    assert 890 < caught.value.retry_after <= 900
    for attempt in range(4):
        with pytest.raises(LoginDenied):
            await logins_service.check_pin("201", "0000", source=f"api 10.7.0.{attempt}")
    assert (await logins_service.check_pin("201", "4711", source="api 10.7.1.1")).name


@pytest.mark.parametrize("kind", ["database", "memory"])
async def test_after_hours_of_guessing_the_user_waits_three_minutes_at_most(
    live: Live, kind: str
) -> None:
    clock = Clock()
    logins_service = service(live, lockout=lockout_of(kind, live, clock))
    start = clock.seconds()
    sources = (f"api 10.8.{n}" for n in range(10_000))  # a new place for every try

    async def guess() -> None:
        """One wrong PIN checked, waiting as long as the lockout says."""
        while True:
            try:
                await logins_service.check_pin("201", "0000", source=next(sources))
            except LoginDenied as denied:
                if denied.reason is Refusal.BAD_CREDENTIALS:
                    return
                assert denied.retry_after is not None and 0 < denied.retry_after <= 180
                clock.advance(denied.retry_after)

    for _ in range(40):
        await guess()
    # 5 at once, 8 more in 255 s (1 + 2 + ... + 128), then one per 180 s.
    assert clock.seconds() - start == pytest.approx(255 + (40 - 13) * 180)
    with pytest.raises(LoginDenied) as caught:  # right after the stranger's last try
        await logins_service.check_pin("201", "4711", source="phone PJSIP/office1-desk")
    assert caught.value.retry_after == pytest.approx(180)
    clock.advance(180)
    assert (await logins_service.check_pin("201", "4711", source="phone PJSIP/office1-desk")).name


async def test_unknown_extensions_lock_like_known_ones(live: Live) -> None:
    logins_service = service(live, lockout=DatabaseLockout(live.engine))
    for _ in range(5):
        with pytest.raises(LoginDenied):
            await logins_service.check_pin("999", "0000", source=f"src {_}")
    with pytest.raises(LoginDenied) as caught:
        await logins_service.check_pin("999", "0000", source="new")
    assert caught.value.reason is Refusal.LOCKED


async def test_one_source_guessing_many_users_is_locked(live: Live) -> None:
    logins_service = service(live)
    for extension in ("201", "202", "203", "204", "205"):
        with pytest.raises(LoginDenied):
            await logins_service.check_pin(extension, "0000", source="api 10.0.0.9")
    with pytest.raises(LoginDenied) as caught:
        await logins_service.check_pin("201", "4711", source="api 10.0.0.9")
    assert caught.value.reason is Refusal.LOCKED
    assert (await logins_service.check_pin("201", "4711", source="api 10.0.0.1")).name


async def test_login_moves_the_user_and_refreshes_at_once(live: Live) -> None:
    change = await service(live).login("201", "hotdesk-1", actor="201", source="test")
    assert (change.old_workplace, change.new_workplace) == ("office-1", "hotdesk-1")
    assert live.changes == 1 and live.snapshot.logins == {"201": "hotdesk-1"}
    # Again: nothing changes and nobody is told.
    await service(live).login("201", "hotdesk-1", actor="201", source="test")
    assert live.changes == 1


async def test_role_refusal_changes_nothing(live: Live, engine: AsyncEngine) -> None:
    before = (await read_revision(engine), await audit_entries(engine))
    with pytest.raises(LoginDenied) as caught:
        await service(live).login("202", "office-1", actor="admin", source="test")
    assert caught.value.reason is Refusal.NOT_ALLOWED
    assert (await read_revision(engine), await audit_entries(engine)) == before
    assert await logins(engine) == {"201": "office-1"}
    assert live.changes == 0


async def test_occupied_workplace_displace_or_refuse(live: Live, engine: AsyncEngine) -> None:
    with pytest.raises(LoginDenied) as caught:
        await service(live, policy="refuse").login("203", "office-1", actor="203", source="test")
    assert caught.value.reason is Refusal.OCCUPIED and caught.value.occupant == "201"
    assert await logins(engine) == {"201": "office-1"}

    change = await service(live).login("203", "office-1", actor="203", source="test")
    assert change.displaced == "201"
    assert await logins(engine) == {"203": "office-1"}
    assert (await audit_entries(engine))[-2:] == [
        ("displaced", "201", "office-1", None, "203", "test"),
        ("login", "203", None, "office-1", "203", "test"),
    ]


async def test_unknown_workplace_and_user(live: Live) -> None:
    with pytest.raises(LoginDenied) as caught:
        await service(live).login("201", "nowhere", actor="admin", source="test")
    assert caught.value.reason is Refusal.UNKNOWN_WORKPLACE
    with pytest.raises(LoginDenied) as caught:
        await service(live).login("999", "office-1", actor="admin", source="test")
    assert caught.value.reason is Refusal.UNKNOWN_USER


async def test_logout_of_a_workplace(live: Live, engine: AsyncEngine) -> None:
    change = await service(live).logout_workplace("office-1", actor="phone", source="p")
    assert change is not None and change.extension == "201"
    assert await logins(engine) == {}
    assert await service(live).logout_workplace("office-1", actor="phone", source="p") is None
    assert live.changes == 1


async def test_automatic_logout_ends_only_logins_from_before_the_cutoff(
    live: Live, engine: AsyncEngine
) -> None:
    await service(live).logout("201", actor="t", source="t")  # the import's login: now
    live.changes = 0
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    await set_login(
        engine, "201", "office-1", actor="t", source="t", now=now - timedelta(hours=1)
    )  # after today's 03:00
    await set_login(
        engine, "202", "hotdesk-1", actor="t", source="t", now=now - timedelta(days=2)
    )  # forgotten
    live.snapshot = await load_snapshot(engine)
    rules = RingRules.model_validate({"defaults": {"auto_logout": "03:00"}})
    changes = await service(live).expire(rules, UTC, now=now)
    assert [(c.extension, c.old_workplace) for c in changes] == [("202", "hotdesk-1")]
    assert await logins(engine) == {"201": "office-1"}
    audit = await rows(engine, s.audit, "action", "extension", "actor", "detail")
    assert (
        "logout",
        "202",
        "auto-logout",
        "automatic logout (login before 2026-11-28T03:00:00+00:00)",
    ) in audit
    # Sweeping again changes nothing.
    assert await service(live).expire(rules, UTC, now=now) == []
    assert live.changes == 1


async def test_routers_sharing_a_directory_share_the_lockout(live: Live) -> None:
    """Two routers (two engines on one database): tries at one count at the other."""
    other_engine = create_engine(live.engine.url.render_as_string(hide_password=False))
    try:
        here = service(live, lockout=DatabaseLockout(live.engine))
        there = LoginService(
            other_engine, lambda: live.snapshot, lockout=DatabaseLockout(other_engine)
        )
        for attempt in range(5):
            router = here if attempt % 2 else there
            with pytest.raises(LoginDenied):
                await router.check_pin(f"20{attempt}", "0000", source="api 10.0.0.7")
        for router in (here, there):
            with pytest.raises(LoginDenied) as caught:
                await router.check_pin("201", "4711", source="api 10.0.0.7")
            assert caught.value.reason is Refusal.LOCKED
            assert caught.value.retry_after is not None and caught.value.retry_after > 800
    finally:
        await other_engine.dispose()


async def test_database_lockout_window_and_clearing(live: Live) -> None:
    clock = Clock()
    lockout = DatabaseLockout(live.engine, clock=clock.now)
    for _ in range(4):
        await lockout.reserve("201", "x")  # wrong PINs: the reservations stay
        clock.advance(60)
    right = await lockout.reserve("201", "x")
    keys = await rows(live.engine, s.pin_failures, "key")
    assert keys == [(source_key("x"),)] * 5 + [("user:201",)] * 5
    await lockout.succeeded(right)  # its own rows and the user's count go
    assert await rows(live.engine, s.pin_failures, "key") == [(source_key("x"),)] * 4
    await lockout.reserve("202", "x")  # the source's fifth
    with pytest.raises(Locked) as caught:
        await lockout.reserve("203", "x")
    assert caught.value.source_locked
    assert caught.value.retry_after == pytest.approx(15 * 60 - 4 * 60)  # the first leaves then
    clock.advance(caught.value.retry_after + 1)
    await lockout.reserve("203", "x")
    # Rows that left every window (the longest: a user's hour) are deleted meanwhile.
    clock.advance(3600)
    await lockout.reserve("204", "y")
    assert sorted(await rows(live.engine, s.pin_failures, "key")) == sorted(
        [(source_key("y"),), ("user:204",)]
    )


async def test_keys_are_bounded_so_a_long_source_is_counted(live: Live) -> None:
    """A 300-character source, a 40-character extension: counted (on PostgreSQL the key
    column is VARCHAR(255); it was a 500 and no count), and the lock engages."""
    logins_service = service(live, lockout=DatabaseLockout(live.engine))
    source = "api " + "a" * 300
    for attempt in range(5):
        with pytest.raises(LoginDenied) as caught:
            await logins_service.check_pin("2" * 40 if attempt else "201", "0", source=source)
        assert caught.value.reason is Refusal.BAD_CREDENTIALS
    with pytest.raises(LoginDenied) as caught:
        await logins_service.check_pin("201", "4711", source=source)
    assert caught.value.reason is Refusal.LOCKED
    stored = await rows(live.engine, s.pin_failures, "key")
    assert len(stored) == 10 and all(len(key) <= 80 for (key,) in stored)


class BrokenLockout:
    async def reserve(self, extension: str, source: str) -> Reservation:
        raise DatabaseError("the directory database is locked by another process")

    async def succeeded(self, reservation: Reservation) -> None:
        raise AssertionError("nothing was reserved")


async def test_a_try_that_cannot_be_counted_is_refused_not_checked(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    monkeypatch.setattr(service_module, "verify_pin", lambda pin, stored: checked.append(pin))
    gone = create_engine(f"sqlite:///{tmp_path / 'missing' / 'directory.db'}")
    try:
        for lockout in (BrokenLockout(), DatabaseLockout(gone)):
            logins_service = service(live, lockout=lockout)
            with pytest.raises(LoginDenied) as caught:
                await logins_service.check_pin("201", "4711", source="api 10.0.0.1")
            assert caught.value.reason is Refusal.LOCKED
            assert str(caught.value) == "PIN tries cannot be counted right now; try again later"
    finally:
        await gone.dispose()
    assert checked == []


async def test_a_right_pin_whose_clearing_fails_still_logs_in(live: Live) -> None:
    class Unclearable(MemoryLockout):
        async def succeeded(self, reservation: Reservation) -> None:
            raise DatabaseError("gone")

    lockout = Unclearable()
    user = await service(live, lockout=lockout).check_pin("201", "4711", source="s")
    assert user.extension == "201"
    assert lockout.counts.retry_after("201", "s") is None  # counted as one wrong PIN
