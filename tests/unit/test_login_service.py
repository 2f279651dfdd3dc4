"""LoginService on a real directory database: PINs, lockout, the rules, audit, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.database import create_engine
from callrouter.directory.revisions import read_revision
from callrouter.directory.snapshot import load_snapshot
from callrouter.logins.lockout import DatabaseLockout
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


async def test_five_wrong_pins_lock_even_the_right_pin_out(live: Live) -> None:
    logins_service = service(live)
    for _ in range(5):
        with pytest.raises(LoginDenied):
            await logins_service.check_pin("201", "0000", source=f"phone {_}")
    with pytest.raises(LoginDenied) as caught:
        await logins_service.check_pin("201", "4711", source="elsewhere")
    assert caught.value.reason is Refusal.LOCKED
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 900
    # Another user from another place is not affected.
    assert (await logins_service.check_pin("202", "0815", source="elsewhere")).extension == "202"


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
                await router.check_pin("201", "0000", source=f"api 10.0.0.{attempt}")
        for router in (here, there):
            with pytest.raises(LoginDenied) as caught:
                await router.check_pin("201", "4711", source="api 10.0.0.99")
            assert caught.value.reason is Refusal.LOCKED
    finally:
        await other_engine.dispose()


async def test_database_lockout_window_and_clearing(live: Live) -> None:
    now = [datetime(2026, 11, 28, 12, 0, tzinfo=UTC)]
    lockout = DatabaseLockout(live.engine, clock=lambda: now[0])
    for _ in range(5):
        await lockout.failed("user:201", "source:x")
        now[0] += timedelta(minutes=1)
    wait = await lockout.retry_after("user:201")
    assert wait == pytest.approx(15 * 60 - 5 * 60)  # the first try leaves the window then
    assert await lockout.retry_after("user:202") is None
    await lockout.succeeded("user:201")
    assert await lockout.retry_after("user:201") is None
    assert await lockout.retry_after("source:x") is not None  # the source still counts
    now[0] += timedelta(minutes=11)
    assert await lockout.retry_after("source:x") is None
    await lockout.failed("user:203")  # rows that left the window are deleted meanwhile
    assert await rows(live.engine, s.pin_failures, "key") == [("source:x",)] * 3 + [("user:203",)]
