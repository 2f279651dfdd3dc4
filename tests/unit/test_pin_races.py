"""Wrong PINs racing each other: no more PINs are checked than the lockout allows.

The lockout used to read the count, check the PIN (scrypt, in a thread) and count the
failure afterwards, so every request already in flight passed: 59 concurrent wrong
PINs over the API were all checked, and the right PIN sent last got a token.  Now a
try is counted before its PIN is checked, in one write transaction.

Each test runs on SQLite and, with ``CALLROUTER_TEST_POSTGRES``, on PostgreSQL (the
``live`` fixture's engine), with the lockout the daemon uses (``DatabaseLockout``).
PIN checks are counted where they happen (``verify_pin`` in the service).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api import TokenSigner, create_api
from callrouter.directory.database import create_engine
from callrouter.directory.importer import import_document
from callrouter.directory.snapshot import load_snapshot
from callrouter.logins import service as service_module
from callrouter.logins.feature_codes import FeatureCodes
from callrouter.logins.lockout import DatabaseLockout
from callrouter.logins.policy import Refusal
from callrouter.logins.service import LoginDenied, LoginService
from tests.unit.conftest import Live
from tests.unit.test_directory_store import document
from tests.unit.test_feature_codes import ScriptedSession, run

FROZEN = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The PINs verify_pin was asked about, in order."""
    pins: list[str] = []
    real = service_module.verify_pin

    def counting(pin: str, stored: str) -> bool:
        pins.append(pin)
        return real(pin, stored)

    monkeypatch.setattr(service_module, "verify_pin", counting)
    return pins


def login_service(live: Live, engine: AsyncEngine | None = None, **lockout: object) -> LoginService:
    database = engine or live.engine
    return LoginService(
        database,
        lambda: live.snapshot,
        on_change=live.refresh,
        lockout=DatabaseLockout(database, **lockout),  # type: ignore[arg-type]
    )


def api_client(service: LoginService, host: str = "127.0.0.1") -> httpx.AsyncClient:
    api = create_api(service, TokenSigner(b"k" * 32))
    transport = httpx.ASGITransport(app=api, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://router")


@pytest.fixture
async def client(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(login_service(live)) as client:
        yield client


async def post_pin(client: httpx.AsyncClient, pin: str, extension: str = "201") -> httpx.Response:
    return await client.post("/api/v1/session", json={"extension": extension, "pin": pin})


@pytest.mark.parametrize("concurrent", [60, 200])
async def test_concurrent_wrong_pins_over_the_api_check_five_at_most(
    client: httpx.AsyncClient, checked: list[str], concurrent: int
) -> None:
    replies = await asyncio.gather(*(post_pin(client, "0000") for _ in range(concurrent)))
    statuses = Counter(reply.status_code for reply in replies)
    assert statuses == {401: 5, 429: concurrent - 5}, statuses
    assert len(checked) == 5
    locked = [reply for reply in replies if reply.status_code == 429]
    assert all(reply.json()["reason"] == "locked" for reply in locked)
    assert all(890 <= int(reply.headers["Retry-After"]) <= 901 for reply in locked)

    right = await post_pin(client, "4711")
    assert right.status_code == 429, right.text
    assert len(checked) == 5  # the right PIN was not even looked at


async def test_the_right_pin_sent_last_in_a_burst_gets_no_token(
    client: httpx.AsyncClient, checked: list[str]
) -> None:
    """The review's case: 59 wrong PINs and the right one, all at once."""
    replies = await asyncio.gather(
        *(post_pin(client, "0000") for _ in range(59)), post_pin(client, "4711")
    )
    assert len(checked) <= 5
    assert sum(reply.status_code in (200, 401) for reply in replies) == len(checked)
    assert replies[-1].status_code == 429  # tries are counted in the order they come


async def test_two_routers_and_many_sources_still_check_five_at_most(
    live: Live, checked: list[str]
) -> None:
    """60 tries for one user from 60 places over two routers at once: the user's count
    is shared and atomic too (the clock stands still, so no delay runs out)."""
    other = create_engine(live.engine.url.render_as_string(hide_password=False))
    try:
        routers = (
            login_service(live, clock=lambda: FROZEN),
            login_service(live, other, clock=lambda: FROZEN),
        )
        results = await asyncio.gather(
            *(routers[n % 2].check_pin("201", "0000", source=f"api 10.0.{n}.1") for n in range(60)),
            return_exceptions=True,
        )
    finally:
        await other.dispose()
    reasons = Counter(
        result.reason if isinstance(result, LoginDenied) else repr(result) for result in results
    )
    assert reasons == {Refusal.BAD_CREDENTIALS: 5, Refusal.LOCKED: 55}, reasons
    assert len(checked) == 5
    delays = {result.retry_after for result in results if isinstance(result, LoginDenied)}
    assert delays == {None, 1.0}  # slowed down, not locked out: the next in a second


async def test_a_300_character_source_is_counted_and_locked(live: Live, checked: list[str]) -> None:
    """On PostgreSQL the key was VARCHAR(255) too short: every wrong PIN a 500, uncounted."""
    async with api_client(login_service(live), host="h" * 300) as client:
        for _ in range(5):
            assert (await post_pin(client, "0000")).status_code == 401
        replies = await asyncio.gather(*(post_pin(client, "0000") for _ in range(20)))
        assert {reply.status_code for reply in replies} == {429}
        assert (await post_pin(client, "4711")).status_code == 429
    assert len(checked) == 5


# --- over FastAGI: the feature code from desk phones -----------------------------------


def many_desks(count: int) -> list[dict[str, object]]:
    return [
        {"id": f"desk-{n}", "name": f"Desk {n}", "code": f"9{n:02}", "phones": [f"PJSIP/desk-{n}"]}
        for n in range(count)
    ]


@pytest.fixture
async def features(engine: AsyncEngine) -> FeatureCodes:
    workplaces = [w.model_dump() for w in document().workplaces] + many_desks(25)
    await import_document(
        engine, document(logins={}, workplaces=workplaces), prune=False, actor="test"
    )
    live = Live(engine)
    live.snapshot = await load_snapshot(engine)
    return FeatureCodes(login_service(live, clock=lambda: FROZEN))


@pytest.mark.parametrize("phones", ["one desk phone", "25 desk phones"])
async def test_25_concurrent_feature_code_calls_check_five_pins_at_most(
    features: FeatureCodes, checked: list[str], phones: str
) -> None:
    """24 wrong PINs and the right one at once, from one desk or from 25 desks."""

    def channel(n: int) -> str:
        desk = 0 if phones == "one desk phone" else n
        return f"PJSIP/desk-{desk}-{n:08x}"

    sessions = [ScriptedSession(channel(n), "*44201#0000") for n in range(24)]
    sessions.append(ScriptedSession(channel(24), "*44201#4711"))
    await asyncio.gather(*(run(features, session) for session in sessions))

    outcomes = list(features.outcomes)
    assert len(outcomes) == 25
    assert len(checked) <= 5
    refusals = Counter(outcome.refusal for outcome in outcomes)
    answered = refusals[Refusal.BAD_CREDENTIALS] + sum(outcome.ok for outcome in outcomes)
    assert answered == len(checked)
    assert refusals[Refusal.LOCKED] == 25 - len(checked)
    right = next(o for o in outcomes if o.channel == channel(24))
    assert not right.ok and right.refusal is Refusal.LOCKED
    assert features.service.snapshot.logins == {}
    locked = [s for s in sessions if "please-try-call-later" in s.played]
    assert len(locked) == 25 - len(checked)
