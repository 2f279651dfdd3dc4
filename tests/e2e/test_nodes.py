"""Several Asterisks on one directory, on two real sandbox Asterisks.

Each Asterisk (node) has its own router; the Asterisks share their PJSIP device
states with res_pjsip_publish_asterisk (asterisk-config/pjsip_nodes.conf.example),
so each router sees the phones of the other node on its own AMI.  Each router dials
only the phones of its node.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from callrouter.domain.presence import DeviceState
from sandbox import router as in_process
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import Behaviour, PhoneBank, SimulatedPhone
from sandbox.router import RunningRouter
from tests.e2e.conftest import NODE_A, NODE_B, until
from tests.e2e.test_presence import until_published
from tests.e2e.test_routing import assert_nothing_left
from tests.unit.test_metrics import samples

# Nina has a desk phone on each node; each node has a phone to call her from.
DIRECTORY = f"""
users:
  - {{extension: "601", name: Nina, phones: [PJSIP/nd-desk-a, PJSIP/nd-desk-b]}}
  - {{extension: "691", name: Caller A, phones: [PJSIP/nd-caller-a]}}
  - {{extension: "692", name: Caller B, phones: [PJSIP/nd-caller-b]}}
nodes:
  {NODE_A}: [PJSIP/nd-desk-a, PJSIP/nd-caller-a]
  {NODE_B}: [PJSIP/nd-desk-b, PJSIP/nd-caller-b]
"""

StartNodeRouter = Callable[[AsteriskSandbox, str], Awaitable[RunningRouter]]
MakeNodePhones = Callable[..., Awaitable[list[SimulatedPhone]]]


@pytest.fixture
async def start_node_router(
    asterisk_nodes: tuple[AsteriskSandbox, AsteriskSandbox], tmp_path: Path
) -> AsyncIterator[StartNodeRouter]:
    """``await start_node_router(sandbox, node)``: a router for that node's Asterisk.

    Each router has its own SQLite file with the same directory: what is shared here
    is the device states, through the Asterisks; a shared PostgreSQL directory (and
    its change notifications) is the directory tests' business.
    """
    directory_file, rules_file = tmp_path / "directory.yaml", tmp_path / "rules.yaml"
    directory_file.write_text(textwrap.dedent(DIRECTORY))
    rules_file.write_text("defaults: {timeout: 20}\n")
    running: list[RunningRouter] = []

    async def start(sandbox: AsteriskSandbox, node: str) -> RunningRouter:
        url = f"sqlite:///{tmp_path}/{node}.db"
        await in_process.load_directory(url, directory_file, actor="test")
        settings = in_process.sandbox_settings(sandbox, url, rules_file, poll_interval=0.2)
        handle = await in_process.start_router(
            settings.model_copy(update={"node": node}), asterisk=sandbox
        )
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            await handle.shut_down()
    for sandbox in asterisk_nodes:
        await assert_nothing_left(sandbox)


@pytest.fixture
async def make_node_phones(
    asterisk_nodes: tuple[AsteriskSandbox, AsteriskSandbox], phones: PhoneBank
) -> AsyncIterator[MakeNodePhones]:
    """``await make_node_phones(sandbox, "name", ...)``: simulated phones that are
    PJSIP endpoints of that sandbox only (removed again after the test)."""
    added: dict[AsteriskSandbox, list[str]] = {}

    async def make(
        sandbox: AsteriskSandbox, *names: str, behaviour: Behaviour | None = None
    ) -> list[SimulatedPhone]:
        created = [await phones.add(name, behaviour=behaviour) for name in names]
        await sandbox.add_phones_async({p.name: p.port for p in created})
        added.setdefault(sandbox, []).extend(names)
        return created

    yield make
    await phones.close()
    for sandbox, names in added.items():
        if sandbox.running:
            sandbox.remove_phones(names)


def legs_started(running: RunningRouter) -> float:
    return samples(running.router.metrics)["callrouter_legs_total", (("outcome", "started"),)]


def on_call(running: RunningRouter, extension: str) -> bool:
    presence = running.router.presence.tracker.user(extension)
    return presence is not None and presence.phone.on_call


def free(running: RunningRouter, extension: str) -> bool:
    presence = running.router.presence.tracker.user(extension)
    return presence is not None and presence.phone.available and not presence.phone.on_call


async def test_a_user_with_phones_on_two_nodes_is_busy_on_both_when_either_is_in_use(
    asterisk_nodes: tuple[AsteriskSandbox, AsteriskSandbox],
    start_node_router: StartNodeRouter,
    make_node_phones: MakeNodePhones,
) -> None:
    node_a, node_b = asterisk_nodes
    caller_a, desk_a = await make_node_phones(node_a, "nd-caller-a", "nd-desk-a")
    caller_b, desk_b = await make_node_phones(node_b, "nd-caller-b", "nd-desk-b")
    desk_a.answer(after=0.2)
    desk_b.answer(after=0.2)
    router_a = await start_node_router(node_a, NODE_A)
    router_b = await start_node_router(node_b, NODE_B)
    routers = (router_a, router_b)
    for running in routers:
        await until(lambda r=running: free(r, "601"), "Nina to be free on both routers")
    # Node A's Asterisk knows node B's phone from B's publications.
    tracker_a = router_a.router.presence.tracker
    await until(
        lambda: tracker_a.device_state("PJSIP/nd-desk-b") is DeviceState.NOT_INUSE,
        "router A to learn the state of node B's phone",
    )

    for caller, sandbox, desk, other in (
        (caller_b, node_b, desk_b, desk_a),
        (caller_a, node_a, desk_a, desk_b),
    ):
        rung, rung_elsewhere = len(desk.matching("INVITE")), len(other.matching("INVITE"))
        legs = [legs_started(running) for running in routers]
        call = await caller.call("601", sandbox.sip_port)
        await call.wait_answered(timeout=10)
        assert len(desk.matching("INVITE")) == rung + 1
        # The call's router started one leg, to its own node's desk: the other desk
        # is not even tried on an Asterisk that does not have it.
        started = [legs_started(r) - before for r, before in zip(routers, legs, strict=True)]
        assert started == ([0, 1] if sandbox is node_b else [1, 0])
        for running in routers:
            await until(lambda r=running: on_call(r, "601"), f"Nina on a call ({desk.name})")
            # ... and each router shows it on its own Asterisk's BLF state.
            await until_published(running, "601", "INUSE")
        # Each router dials only its node's phones: the other desk never rang.
        assert len(other.matching("INVITE")) == rung_elsewhere
        await call.hangup()
        for running in routers:
            await until(lambda r=running: free(r, "601"), f"Nina free again ({desk.name})")
            await until_published(running, "601", "NOT_INUSE")


async def test_a_router_that_starts_during_a_call_on_the_other_node_sees_it(
    asterisk_nodes: tuple[AsteriskSandbox, AsteriskSandbox],
    start_node_router: StartNodeRouter,
    make_node_phones: MakeNodePhones,
) -> None:
    node_a, node_b = asterisk_nodes
    (desk_a,) = await make_node_phones(node_a, "nd-desk-a")
    caller_b, desk_b = await make_node_phones(node_b, "nd-caller-b", "nd-desk-b")
    desk_b.answer(after=0.2)
    router_b = await start_node_router(node_b, NODE_B)
    call = await caller_b.call("601", node_b.sip_port)
    await call.wait_answered(timeout=10)
    await until(lambda: on_call(router_b, "601"), "Nina on a call on node B")
    # Router A's first resync (DeviceStateList) holds node B's states too.
    router_a = await start_node_router(node_a, NODE_A)
    await until(lambda: on_call(router_a, "601"), "router A to see Nina's call on node B")
    assert desk_a.matching("INVITE") == []
    await call.hangup()
    await until(lambda: free(router_a, "601"), "router A to see Nina free again")
