"""The router, run in-process against a sandbox Asterisk.

Shared by the end-to-end tests, the demo and the benchmarks: load a directory file
into a fresh database, start ``run_router`` with settings that point at the sandbox,
and wait until both ARI and AMI are connected; or run ``callrouter serve`` as a
process of its own (``ServeProcess``: active and standby routers, killed with SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from callrouter.app import Router, run_router
from callrouter.config import Settings
from callrouter.directory.database import create_engine, upgrade
from callrouter.directory.importer import import_document
from callrouter.directory.loader import load_document
from sandbox.asterisk import AsteriskSandbox, pick_free_port


@dataclass(slots=True)
class RunningRouter:
    router: Router
    stop: asyncio.Event
    task: asyncio.Task[int]

    async def shut_down(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def load_directory(url: str, directory_file: Path, *, actor: str) -> None:
    """Create or upgrade the database at ``url`` and import ``directory_file``."""
    await upgrade(url)
    engine = create_engine(url)
    try:
        await import_document(engine, load_document(directory_file), prune=True, actor=actor)
    finally:
        await engine.dispose()


async def wipe_postgres(url: str) -> None:
    """Empty the PostgreSQL database at ``url`` (every table, the schema version too)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


def sandbox_settings(
    asterisk: AsteriskSandbox, db: str, rules: Path, *, poll_interval: float = 0.5
) -> Settings:
    return Settings(
        db=db,
        rules=rules,
        ari_url=asterisk.http_url,
        ari_user=asterisk.ari_user,
        ari_password=asterisk.ari_password,
        ami_host=asterisk.ami_host,
        ami_port=asterisk.ami_port,
        ami_user=asterisk.ami_user,
        ami_secret=asterisk.ami_secret,
        directory_poll_interval=poll_interval,
        shutdown_grace=2,
        # Free ports, so that several routers (tests, demo) never collide.
        agi_port=0,
        api_port=0,
    )


async def start_router(
    settings: Settings, *, asterisk: AsteriskSandbox | None = None, timeout: float = 20
) -> RunningRouter:
    """Start ``run_router`` as a task; return once ARI and AMI are connected.

    With ``asterisk``, its dialplan's feature codes are pointed at this router's
    FastAGI port (the global CALLROUTER_AGI).
    """
    stop, reload = asyncio.Event(), asyncio.Event()
    started: asyncio.Future[Router] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(run_router(settings, stop, reload, on_started=started.set_result))
    try:
        waiting: set[asyncio.Future[object]] = {task, started}  # type: ignore[arg-type]
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            if task.done():
                task.result()  # raises what stopped it
            raise RuntimeError(f"the router did not start within {timeout:g} s")
        router = started.result()
        await router.ari.wait_connected(10)
        await router.ami.wait_connected(10)
        if asterisk is not None and router.agi_server is not None:
            await asterisk.cli_async(
                f"dialplan set global CALLROUTER_AGI agi://127.0.0.1:{router.agi_server.port}"
            )
    except BaseException:
        stop.set()
        started.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        raise
    return RunningRouter(router, stop, task)


@contextlib.asynccontextmanager
async def running_router(
    asterisk: AsteriskSandbox,
    workdir: Path,
    directory_file: Path,
    rules_file: Path,
    *,
    actor: str,
    poll_interval: float = 0.5,
) -> AsyncIterator[RunningRouter]:
    """A router on a fresh SQLite directory in ``workdir``, stopped on exit."""
    url = f"sqlite:///{workdir}/callrouter.db"
    await load_directory(url, directory_file, actor=actor)
    running = await start_router(
        sandbox_settings(asterisk, url, rules_file, poll_interval=poll_interval), asterisk=asterisk
    )
    try:
        yield running
    finally:
        await running.shut_down()


def serve_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the CALLROUTER_* variables ``callrouter serve`` reads."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        if name.endswith("_file") or value == [] or value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"CALLROUTER_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


class ServeProcess:
    """``callrouter serve`` as a process of its own (to be killed with SIGKILL), its
    output in ``workdir/NAME.log``; the HTTP API on a port picked here."""

    def __init__(self, settings: Settings, workdir: Path, name: str) -> None:
        self.api_port = pick_free_port()
        self.settings = settings.model_copy(update={"api_port": self.api_port})
        self.log_path = workdir / f"{name}.log"
        self.name = name
        self.process: asyncio.subprocess.Process | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def start(self) -> ServeProcess:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CALLROUTER_")},
            **serve_environment(self.settings),
        }
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callrouter", "serve", env=env, stdout=log, stderr=log
            )
        return self

    async def health(self) -> dict[str, Any] | None:
        """``GET /api/v1/health``, or None while it does not answer."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                reply = await client.get(f"{self.api_url}/api/v1/health")
        except httpx.TransportError:
            return None
        return reply.json() if reply.status_code == 200 else None

    async def wait_role(self, role: str, timeout: float = 20) -> dict[str, Any]:
        """Wait until the router answers with ``role`` (active/standby)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.process.returncode}:\n{self.output()}"
                )
            health = await self.health()
            if health is not None and health.get("role") == role:
                return health
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} did not become {role} in {timeout:g} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to PostgreSQL or Asterisk."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 30 s; the exit status."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
        return await process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.asynccontextmanager
async def throwaway_postgres() -> AsyncIterator[str]:
    """The SQLAlchemy URL of an empty PostgreSQL database: ``CALLROUTER_TEST_POSTGRES``
    when set, else a server of its own (scripts/postgres.sh) in the repository's
    .cache/ (the ``postgres`` user must reach it: temporary directories are root's
    alone), removed on exit."""
    url = os.environ.get("CALLROUTER_TEST_POSTGRES")
    if url:
        yield url
        return
    repo = Path(__file__).resolve().parents[1]
    script = repo / "scripts" / "postgres.sh"
    (repo / ".cache").mkdir(exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="postgres.", dir=repo / ".cache"))
    started = await asyncio.to_thread(
        subprocess.run,
        [str(script), "start", str(data), str(os.getpid())],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield started.stdout.strip()
    finally:
        await asyncio.to_thread(
            subprocess.run, [str(script), "stop", str(data)], check=False, capture_output=True
        )
