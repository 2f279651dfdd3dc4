"""The dialplan admins copy, dialplan/extensions.conf.example, run as it is.

A second sandbox Asterisk (of this module) takes the example as its extensions.conf
instead of the sandbox's own: a workplace phone logs its user in by ``*44`` +
extension + PIN, and the next call to the user rings that phone, both through the
example's ``[phones]`` context alone.  Without its ``include => callrouter-features``
the ``*44`` call finds no extension and the test fails.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callrouter.directory.snapshot import load_snapshot
from sandbox.asterisk import EXAMPLE_EXTENSIONS_CONF, AsteriskSandbox, SandboxError
from sandbox.phones import PhoneBank, SimulatedPhone
from sandbox.router import RunningRouter, running_router
from tests.e2e.conftest import started_sandbox
from tests.e2e.test_workplace_login import dial_code, rung, until

DIRECTORY = """
users:
  - {extension: "601", name: Hanna, pin: "4711"}
  - {extension: "699", name: Caller, phones: [PJSIP/ex-caller]}
workplaces:
  - {id: ex-desk, name: Example desk, code: "861", phones: [PJSIP/ex-desk]}
"""


@pytest.fixture(scope="module")
def example_asterisk() -> Iterator[AsteriskSandbox]:
    """A sandbox Asterisk whose extensions.conf is the example, not one word changed."""
    sandbox = started_sandbox(extensions_conf=EXAMPLE_EXTENSIONS_CONF)
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
async def example_setup(
    example_asterisk: AsteriskSandbox, phones: PhoneBank, tmp_path: Path
) -> AsyncIterator[tuple[RunningRouter, dict[str, SimulatedPhone]]]:
    created = [await phones.add(name) for name in ("ex-desk", "ex-caller")]
    for phone in created:
        phone.ring()
    await example_asterisk.add_phones_async({p.name: p.port for p in created})
    directory_file = tmp_path / "directory.yaml"
    rules_file = tmp_path / "rules.yaml"
    directory_file.write_text(textwrap.dedent(DIRECTORY))
    rules_file.write_text("defaults: {timeout: 20}\n")
    try:
        async with running_router(
            example_asterisk, tmp_path, directory_file, rules_file, actor="test", poll_interval=0.2
        ) as running:
            yield running, {p.name: p for p in created}
    finally:
        await phones.close()
        example_asterisk.remove_phones([p.name for p in created])


def test_the_example_runs_as_the_sandbox_dialplan(example_asterisk: AsteriskSandbox) -> None:
    extensions = (example_asterisk.etc_dir / "extensions.conf").read_text(encoding="utf-8")
    assert extensions == EXAMPLE_EXTENSIONS_CONF.read_text(encoding="utf-8")
    included = example_asterisk.cli("dialplan show phones")
    assert "'callrouter-features'" in included and "'callrouter'" in included
    # *8 + extension (pickup) reaches the Stasis app through the features' include,
    # as a pickup, not as a call ([callrouter]'s _X. does not match a '*').
    pickup = example_asterisk.cli("dialplan show *8601@phones")
    assert "Stasis(callrouter,${FILTER(0-9,${EXTEN:2})},pickup)" in pickup, pickup
    assert (
        "'callrouter-pickup'" in pickup
        and "Stasis(callrouter,${FILTER(0-9,${EXTEN})})" not in pickup
    )
    with pytest.raises(SandboxError, match=r"does not include extensions_sandbox\.conf"):
        example_asterisk.set_dialplan("")  # it would be written and never read


async def test_login_by_feature_code_through_the_example_dialplan(
    example_asterisk: AsteriskSandbox,
    example_setup: tuple[RunningRouter, dict[str, SimulatedPhone]],
) -> None:
    running, phones = example_setup
    desk, caller = phones["ex-desk"], phones["ex-caller"]
    tracker = running.router.presence.tracker
    assert not tracker.user("601").phone.available  # type: ignore[union-attr]

    outcome = await dial_code(example_asterisk, running, desk, "*44601", pin="4711")
    assert (outcome.ok, outcome.action, outcome.extension, outcome.workplace) == (
        True,
        "login",
        "601",
        "ex-desk",
    )
    assert outcome.prompts == ("agent-pass", "agent-loginok", "goodbye")
    # In the directory (the database, and the router's snapshot of it) and presence.
    assert (await load_snapshot(running.router.live.engine)).logins == {"601": "ex-desk"}
    assert running.router.live.snapshot.logins == {"601": "ex-desk"}
    await until(
        lambda: tracker.user("601").phone.available,  # type: ignore[union-attr]
        "Hanna reachable at her workplace",
    )
    # The example's include => callrouter: her next call rings the workplace's phone.
    await rung(caller, example_asterisk, "601", [desk], [])
