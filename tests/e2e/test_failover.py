"""Active and standby routers for one Asterisk, on a real PostgreSQL directory.

Two ``callrouter serve`` processes with the same settings: one runs the Stasis app,
the other waits. ``kill -9`` of the active one while a call rings: the standby takes
the lease, connects ARI, and takes the waiting caller over: the phones ring again
under its control and the call is answered and bridged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from sandbox import router as in_process
from sandbox.asterisk import AsteriskSandbox
from sandbox.router import ServeProcess
from tests.conftest import POSTGRES_ENV, postgres_required
from tests.e2e.conftest import MakePhones, until
from tests.e2e.test_routing import directory

ADMIN_TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if postgres_required():
            pytest.fail(f"{POSTGRES_ENV} is required here (CI): active/standby needs it")
        pytest.skip(f"{POSTGRES_ENV} not set")
    return url


async def fresh_directory(url: str, directory_yaml: str, workdir: Path) -> None:
    await in_process.wipe_postgres(url)
    path = workdir / "directory.yaml"
    path.write_text(textwrap.dedent(directory_yaml))
    await in_process.load_directory(url, path, actor="test")


async def start_active_and_standby(active: ServeProcess, standby: ServeProcess) -> dict[str, Any]:
    """Start ``active``, then ``standby`` once the first one is active; the standby's
    health."""
    await active.start()
    await active.wait_role("active")
    await standby.start()
    return await standby.wait_role("standby")


@pytest.fixture
async def pair(
    asterisk: AsteriskSandbox, postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[ServeProcess, ServeProcess]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {timeout: 30}\n")
    settings = in_process.sandbox_settings(asterisk, postgres_url, rules, poll_interval=0.2)
    settings = settings.model_copy(
        update={"log_level": "DEBUG", "api_admin_token": SecretStr(ADMIN_TOKEN)}
    )
    routers = (ServeProcess(settings, tmp_path, "a"), ServeProcess(settings, tmp_path, "b"))
    yield routers
    for router in routers:
        await router.stop()


async def test_kill_9_of_the_active_router_while_a_call_rings_the_standby_takes_it_over(
    asterisk: AsteriskSandbox,
    postgres_url: str,
    tmp_path: Path,
    pair: tuple[ServeProcess, ServeProcess],
    make_phones: MakePhones,
) -> None:
    caller, desk, mobile = await make_phones("ha-caller", "ha-desk", "ha-mobile")
    desk.ring()
    mobile.ring()
    await fresh_directory(
        postgres_url,
        directory("""
        - {extension: "811", name: Hanna, phones: [PJSIP/ha-desk, PJSIP/ha-mobile]}
    """),
        tmp_path,
    )
    a, b = pair
    standby = await start_active_and_standby(a, b)
    assert standby["since"] is not None
    assert (await a.health() or {}).get("role") == "active"

    call = await caller.call("811", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=10)
    await mobile.wait_for("INVITE", timeout=10)
    a.kill()
    active = await b.wait_role("active", timeout=10)
    assert active["since"] > standby["since"]
    # The standby hung up A's legs and rang the phones again, under its control.
    await desk.wait_for("INVITE", n=2, timeout=10)
    await mobile.wait_for("INVITE", n=2, timeout=10)
    desk.answer_now()
    await call.wait_answered(timeout=10)
    await mobile.wait_for("CANCEL", n=2, timeout=10)  # the loser of B's round
    await call.hangup()
    await desk.wait_for("BYE", timeout=10)
    log = b.output()
    assert "active: lease callrouter@" in log and "routing after" in log, log[-3000:]
    assert "resync: taking over waiting call" in log, log[-3000:]

    # A call placed while nobody is active yet rings too: through the dialplan's
    # fallback, or routed by the new active router; never lost.
    await a.start()  # back, as a standby now
    await a.wait_role("standby")
    desk.clear_events()
    b.kill()
    second = await caller.call("811", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=15)
    await a.wait_role("active", timeout=10)
    desk.answer_now()
    await second.wait_answered(timeout=10)
    await second.hangup()
    await until(lambda: not caller.active_calls(), "the second call to end")


async def test_a_conversation_connected_by_a_killed_router_ends_when_one_side_hangs_up(
    asterisk: AsteriskSandbox,
    postgres_url: str,
    tmp_path: Path,
    pair: tuple[ServeProcess, ServeProcess],
    make_phones: MakePhones,
) -> None:
    """The call goes on in Asterisk without its router; the new active one watches it,
    so that the phone is not left in a silent bridge when the caller hangs up."""
    caller, desk = await make_phones("cv-caller", "cv-desk")
    desk.answer(after=0.1)
    await fresh_directory(
        postgres_url,
        directory("""
        - {extension: "881", name: Carla, phones: [PJSIP/cv-desk]}
    """),
        tmp_path,
    )
    a, b = pair
    await start_active_and_standby(a, b)
    call = await caller.call("881", asterisk.sip_port)
    await call.wait_answered(timeout=10)
    # The caller hears 200 OK when A answers it, a moment before A bridges the two.
    async with httpx.AsyncClient(auth=(asterisk.ari_user, asterisk.ari_password)) as ari:

        async def bridged() -> bool:
            bridges = (await ari.get(f"{asterisk.ari_url}/bridges")).json()
            return any(len(bridge["channels"]) == 2 for bridge in bridges)

        async with asyncio.timeout(10):
            while not await bridged():
                await asyncio.sleep(0.05)
    a.kill()
    await b.wait_role("active", timeout=10)
    await until(lambda: "resync: watching conversation" in b.output(), "the adoption")
    assert desk.matching("BYE") == []  # the conversation went on
    await call.hangup()
    await desk.wait_for("BYE", timeout=10)  # ended by the new active router


async def test_sigterm_of_the_active_router_hands_its_calls_to_the_standby_at_once(
    asterisk: AsteriskSandbox,
    postgres_url: str,
    tmp_path: Path,
    pair: tuple[ServeProcess, ServeProcess],
    make_phones: MakePhones,
) -> None:
    """A standby waits: the stopping router does not make the ringing caller wait out
    its shutdown grace (20 s here), nor send it to the fallback: the standby takes over."""
    caller, desk = await make_phones("st-caller", "st-desk")
    desk.ring()
    await fresh_directory(
        postgres_url,
        directory("""
        - {extension: "871", name: Stella, phones: [PJSIP/st-desk]}
    """),
        tmp_path,
    )
    a, b = pair
    for router in pair:
        router.settings = router.settings.model_copy(update={"shutdown_grace": 20.0})
    await start_active_and_standby(a, b)
    call = await caller.call("871", asterisk.sip_port)
    await desk.wait_for("INVITE", timeout=10)
    assert a.process is not None
    a.process.terminate()
    await b.wait_role("active", timeout=10)
    await desk.wait_for("INVITE", n=2, timeout=10)  # the standby rings it again
    assert await asyncio.wait_for(a.process.wait(), 15) == 0, a.output()
    assert "stopping: the standby takes the calls over" in a.output()
    desk.answer_now()
    await call.wait_answered(timeout=10)
    await call.hangup()
    await desk.wait_for("BYE", timeout=10)


async def test_a_frozen_active_router_is_replaced_and_steps_down_when_it_wakes(
    asterisk: AsteriskSandbox,
    postgres_url: str,
    tmp_path: Path,
    pair: tuple[ServeProcess, ServeProcess],
    make_phones: MakePhones,
) -> None:
    """SIGSTOP: what a vanished host looks like to the others (its connections stay
    open, nothing comes from it). The standby takes over; when the old one wakes, it
    finds the app taken and the lease gone, and becomes a standby: never two active."""
    caller, desk = await make_phones("fz-caller", "fz-desk")
    desk.answer(after=0.2)
    await fresh_directory(
        postgres_url,
        directory("""
        - {extension: "841", name: Frida, phones: [PJSIP/fz-desk]}
    """),
        tmp_path,
    )
    a, b = pair
    await start_active_and_standby(a, b)
    assert a.process is not None
    a.process.send_signal(signal.SIGSTOP)
    try:
        await b.wait_role("active", timeout=15)
        call = await caller.call("841", asterisk.sip_port)
        await call.wait_answered(timeout=10)
        await call.hangup()
    finally:
        a.process.send_signal(signal.SIGCONT)
    await a.wait_role("standby", timeout=15)
    assert (await b.health() or {}).get("role") == "active"
    log = a.output()
    assert "standby: " in log, log[-3000:]
    assert "its session was ended" in b.output(), b.output()[-3000:]


async def test_a_login_through_the_standby_rings_the_workplace_on_the_active_router(
    asterisk: AsteriskSandbox,
    postgres_url: str,
    tmp_path: Path,
    pair: tuple[ServeProcess, ServeProcess],
    make_phones: MakePhones,
) -> None:
    caller, mobile, hot = await make_phones("sb-caller", "sb-mobile", "sb-hot")
    mobile.ring()
    hot.answer(after=0.2)
    await fresh_directory(
        postgres_url,
        directory(
            """
        - {extension: "831", name: Sven, phones: [PJSIP/sb-mobile]}
    """,
            workplaces="""
        - {id: hot-2, name: Hot desk 2, code: "852", phones: [PJSIP/sb-hot]}
    """,
        ),
        tmp_path,
    )
    active, standby = pair
    await start_active_and_standby(active, standby)
    async with httpx.AsyncClient(
        base_url=standby.api_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as api:
        reply = await api.post("/api/v1/login", json={"extension": "831", "workplace": "hot-2"})
        assert reply.status_code == 200, reply.text
    revision = (await standby.health() or {}).get("directory_revision")
    assert isinstance(revision, int)

    async def caught_up() -> bool:
        health = await active.health()
        return health is not None and health["directory_revision"] >= revision

    async with asyncio.timeout(10):
        while not await caught_up():
            await asyncio.sleep(0.05)
    call = await caller.call("831", asterisk.sip_port)
    await hot.wait_for("INVITE", timeout=10)  # the workplace, by the active router
    await call.wait_answered(timeout=10)
    await call.hangup()


async def test_on_sqlite_a_second_router_for_the_same_database_refuses_to_start(
    asterisk: AsteriskSandbox, tmp_path: Path
) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(directory('- {extension: "861", name: Solo}\n'))
    url = f"sqlite:///{tmp_path}/callrouter.db"
    await in_process.load_directory(url, path, actor="test")
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {timeout: 20}\n")
    settings = in_process.sandbox_settings(asterisk, url, rules)
    first, second = (
        ServeProcess(settings, tmp_path, "first"),
        ServeProcess(settings, tmp_path, "second"),
    )
    try:
        await first.start()
        await first.wait_role("active")
        await second.start()
        assert second.process is not None
        code = await asyncio.wait_for(second.process.wait(), 30)
        assert code == 1, second.output()
        assert "cannot start: another callrouter serve (pid " in second.output()
        assert "SQLite takes one router per database" in second.output()
        assert (await first.health() or {}).get("role") == "active"  # untouched
    finally:
        await second.stop()
        await first.stop()


class TcpProxy:
    """A loopback TCP proxy to ``target``, whose link can be cut and restored: what
    the router sees when the database's host or network goes away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.cut = False
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._links |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links -= {writer, up_writer}

    def sever(self) -> None:
        """Every connection dropped, new ones refused."""
        self.cut = True
        for link in list(self._links):
            link.transport.abort()
        self._links.clear()

    def restore(self) -> None:
        self.cut = False

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_the_database_gone_while_routing_calls_go_on_logins_fail_cleanly(
    asterisk: AsteriskSandbox, postgres_url: str, tmp_path: Path, make_phones: MakePhones
) -> None:
    caller, desk, hot = await make_phones("db-caller", "db-desk", "db-hot")
    desk.answer(after=0.2)
    hot.ring()
    await fresh_directory(
        postgres_url,
        directory(
            """
        - {extension: "821", name: Dora, phones: [PJSIP/db-desk]}
    """,
            workplaces="""
        - {id: hot-1, name: Hot desk, code: "851", phones: [PJSIP/db-hot]}
    """,
        ),
        tmp_path,
    )
    target = make_url(postgres_url)
    proxy = await TcpProxy((target.host or "127.0.0.1", target.port or 5432)).start()
    through_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {timeout: 20}\n")
    settings = in_process.sandbox_settings(asterisk, through_proxy, rules, poll_interval=0.2)
    settings = settings.model_copy(
        update={"api_admin_token": SecretStr("admin-token-0123456789abcdef")}
    )
    running = await in_process.start_router(settings, asterisk=asterisk)
    router = running.router
    assert router.api_server is not None
    admin = {"Authorization": "Bearer admin-token-0123456789abcdef"}
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{router.api_server.port}", headers=admin
        ) as api:
            proxy.sever()
            await until(lambda: router.live.check_error is not None, "the poll to fail")
            await until(
                lambda: router.election is not None and router.election.unconfirmed is not None,
                "the lease to be unconfirmed",
            )
            assert router.role.value == "active"  # routing on, from the snapshot
            call = await caller.call("821", asterisk.sip_port)
            await call.wait_answered(timeout=10)
            await call.hangup()
            # A login needs the database: a clear 503, and nothing of it written.
            refused = await api.post(
                "/api/v1/login", json={"extension": "821", "workplace": "hot-1"}
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["reason"] == "database"
            assert "821" not in router.live.snapshot.logins

            proxy.restore()
            await until(lambda: router.live.check_error is None, "the poll to succeed again")
            assert "821" not in router.live.snapshot.logins  # read back: nothing half-written
            await until(
                lambda: router.election is not None and router.election.unconfirmed is None,
                "the lease to be confirmed again",
            )
            accepted = await api.post(
                "/api/v1/login", json={"extension": "821", "workplace": "hot-1"}
            )
            assert accepted.status_code == 200, accepted.text
            # The next call rings the workplace too: routing follows the database again.
            second = await caller.call("821", asterisk.sip_port)
            await hot.wait_for("INVITE", timeout=10)
            await second.wait_answered(timeout=10)
            await second.hangup()
    finally:
        await running.shut_down()
        await proxy.close()
