"""Fixtures for the end-to-end tests: a real Asterisk (sandbox) and simulated phones.

The sandbox needs root and a Debian sid chroot (built once, cached in .cache/). Where it
cannot be had, these tests are skipped with the reason, except in CI or with
CALLROUTER_REQUIRE_E2E=1, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.asterisk import AsteriskSandbox, SandboxUnavailable, ensure_rootfs, link_nodes
from sandbox.phones import Behaviour, PhoneBank, SimulatedPhone

E2E_DIR = Path(__file__).resolve().parent

MakePhones = Callable[..., Awaitable[list[SimulatedPhone]]]


async def until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e is an e2e test (``-m "not e2e"`` leaves them out)."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


def e2e_required() -> bool:
    """True in CI or with CALLROUTER_REQUIRE_E2E=1: a missing sandbox is a failure."""
    ci = os.environ.get("CI", "")
    return (
        ci.lower() not in ("", "0", "false", "no")
        or os.environ.get("CALLROUTER_REQUIRE_E2E") == "1"
    )


def _unavailable(exc: SandboxUnavailable) -> None:
    if e2e_required():
        pytest.fail(f"sandbox Asterisk unavailable (required here): {exc.reason}")
    pytest.skip(f"sandbox Asterisk unavailable: {exc.reason}")


def started_sandbox(**options: Any) -> AsteriskSandbox:
    """A started sandbox Asterisk (``AsteriskSandbox`` options, loopback ports picked at
    random); skips the test where there is none, or fails where that is required."""
    try:
        sandbox = AsteriskSandbox(ensure_rootfs(), **options)
        sandbox.start()
    except SandboxUnavailable as exc:
        _unavailable(exc)
    return sandbox


@pytest.fixture(scope="session")
def asterisk() -> Iterator[AsteriskSandbox]:
    """One sandbox Asterisk for the whole session."""
    sandbox = started_sandbox()
    try:
        yield sandbox
    finally:
        sandbox.stop()


#: The node names of ``asterisk_nodes`` (as the directory's ``nodes`` names them too).
NODE_A, NODE_B = "node-a", "node-b"


@pytest.fixture(scope="session")
def asterisk_nodes() -> Iterator[tuple[AsteriskSandbox, AsteriskSandbox]]:
    """Two more sandbox Asterisks for the whole session, nodes NODE_A and NODE_B, each
    with its own configuration, ports and entity id, sharing their PJSIP device states
    (``link_nodes``: asterisk-config/pjsip_nodes.conf.example)."""
    started: list[AsteriskSandbox] = []
    try:
        root = ensure_rootfs()
        first, second = AsteriskSandbox(root), AsteriskSandbox(root)
        link_nodes(first, NODE_A, second, NODE_B)
        for sandbox in (first, second):
            sandbox.start()
            started.append(sandbox)
    except BaseException as exc:
        for sandbox in started:
            sandbox.stop()
        if isinstance(exc, SandboxUnavailable):
            _unavailable(exc)
        raise
    try:
        yield first, second
    finally:
        for sandbox in started:
            sandbox.stop()


@pytest.fixture
async def phones() -> AsyncIterator[PhoneBank]:
    """Simulated phones for one test; calls still going are hung up at the end."""
    async with PhoneBank() as bank:
        yield bank


@pytest.fixture
async def make_phones(asterisk: AsteriskSandbox, phones: PhoneBank) -> AsyncIterator[MakePhones]:
    """``await make_phones("alice", "bob", behaviour=Ring())``: simulated phones that
    are also PJSIP endpoints of the sandbox (removed again after the test)."""
    added: list[str] = []

    async def make(
        *names: str, behaviour: Behaviour | None = None, qualify: bool = False
    ) -> list[SimulatedPhone]:
        created = [await phones.add(name, behaviour=behaviour) for name in names]
        await asterisk.add_phones_async({p.name: p.port for p in created}, qualify=qualify)
        added.extend(names)
        return created

    yield make
    await phones.close()
    if added and asterisk.running:
        asterisk.remove_phones(added)
