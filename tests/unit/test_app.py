"""Daemon wiring that needs no Asterisk: caller endpoints, live reloading, settings."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from callrouter.config import load_settings
from callrouter.directory.database import create_engine, upgrade
from callrouter.directory.importer import import_document
from callrouter.directory.live import LiveDirectory
from callrouter.directory.loader import load_document
from callrouter.domain.endpoint import caller_endpoint
from callrouter.logins.store import set_login
from callrouter.logs import mask, register_secret

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("PJSIP/anna-desk-0000001a", "PJSIP/anna-desk"),
        ("PJSIP/desk-12-000000ff", "PJSIP/desk-12"),
        ("Local/201@callrouter-00000001;2", None),
        ("PJSIP/weird", None),
    ],
)
def test_caller_endpoint_from_channel_name(name: str, endpoint: str | None) -> None:
    assert caller_endpoint(name) == endpoint


async def test_live_directory_follows_changes_and_refuses_bad_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/d.db"
    await upgrade(url)
    engine = create_engine(url)
    rules = tmp_path / "rules.yaml"
    rules.write_text((EXAMPLES / "rules.yaml").read_text())
    try:
        await import_document(
            engine, load_document(EXAMPLES / "directory.yaml"), prune=False, actor="test"
        )
        live = LiveDirectory(engine, rules)
        await live.load()
        calls: list[frozenset[str] | None] = []
        live.subscribe(calls.append)
        assert not await live.refresh()

        # A login made elsewhere (CLI, another router) arrives with the next refresh;
        # only the logins are read again, and the listeners learn whom it concerns.
        users_before = live.snapshot.users
        extension = next(e for e in live.snapshot.users if e not in live.snapshot.logins)
        free = next(w for w in live.snapshot.workplaces if w not in live.snapshot.logins.values())
        await set_login(engine, extension, free, actor="test", source="test")
        assert await live.refresh()
        assert live.snapshot.logins[extension] == free
        assert live.snapshot.users is users_before  # not reloaded
        assert calls == [frozenset({extension})]

        # Moving someone out concerns both.
        other = next(
            e
            for e in live.snapshot.users
            if e not in live.snapshot.logins
            and e != extension
            and live.snapshot.users[e].role != "intern"
        )
        await set_login(engine, other, free, actor="test", source="test")
        await live.refresh()
        assert calls[-1] == frozenset({extension, other})

        # An import changes the content: a full reload, concerning everyone.
        document = load_document(EXAMPLES / "directory.yaml")
        changed = document.model_copy(
            update={
                "users": [
                    u.model_copy(update={"name": "Renamed"}) if u.extension == "210" else u
                    for u in document.users
                ]
            }
        )
        await import_document(engine, changed, prune=False, actor="test")
        assert await live.refresh()
        assert live.snapshot.users["210"].name == "Renamed"
        assert calls[-1] is None

        # A broken rules file is refused; the previous rules keep serving.
        before = live.rules
        rules.write_text("defaults:\n  timeout: -1\n")
        os.utime(rules, (1, 1))
        with caplog.at_level(logging.ERROR):
            await live.refresh()
        assert live.rules is before
        assert f"{rules}:2:" in caplog.text
    finally:
        await engine.dispose()


def test_settings_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "callrouter.yaml"
    config.write_text("ari_user: from-file\nami_port: 1234\n")
    secret_file = tmp_path / "ari.secret"
    secret_file.write_text("s3cret-from-file\n")
    monkeypatch.setenv("CALLROUTER_AMI_PORT", "4321")
    monkeypatch.setenv("CALLROUTER_ARI_PASSWORD_FILE", str(secret_file))
    settings = load_settings(config)
    assert settings.ari_user == "from-file"
    assert settings.ami_port == 4321
    assert settings.ari_password is not None
    assert settings.ari_password.get_secret_value() == "s3cret-from-file"
    assert "s3cret" not in repr(settings)
    with pytest.raises(ValueError, match="CALLROUTER_AMI_SECRET"):
        settings.require_secrets()


def test_registered_secrets_are_masked() -> None:
    register_secret("hunter2-xyz")
    assert mask("login with hunter2-xyz failed") == "login with *** failed"


def test_the_example_settings_file_is_valid() -> None:
    settings = load_settings(EXAMPLES / "callrouter.yaml")
    assert settings.api_host == settings.agi_host == "127.0.0.1"  # loopback by default
    assert settings.login_prefix == "*44"


async def test_one_presence_resync_and_one_fallback_resync_per_ami_connect(
    tmp_path: Path,
) -> None:
    """The features as app.py wires them, on the fake AMI: a login (which Asterisk
    follows with FullyBooted) costs one DeviceStateList and one PJSIPShowEndpoints."""
    from callrouter.ami.client import AmiClient
    from callrouter.fallback.build import build as build_fallback
    from callrouter.presence.build import build as build_presence
    from callrouter.presence.live import AMI_EVENTS
    from tests.fakes.fake_ami import FakeAmi, event_list

    url = f"sqlite:///{tmp_path}/d.db"
    await upgrade(url)
    engine = create_engine(url)
    rules = tmp_path / "rules.yaml"
    rules.write_text((EXAMPLES / "rules.yaml").read_text())
    fake = FakeAmi()
    fake.set_handler(
        "DeviceStateList",
        lambda a: event_list(a, "DeviceStateChange", [], "DeviceStateListComplete"),
    )
    fake.set_handler(
        "PJSIPShowEndpoints", lambda a: event_list(a, "EndpointList", [], "EndpointListComplete")
    )
    await fake.start()
    ami = AmiClient(
        fake.host, fake.port, fake.username, fake.secret, events=AMI_EVENTS, ping_interval=None
    )
    try:
        await import_document(
            engine, load_document(EXAMPLES / "directory.yaml"), prune=False, actor="test"
        )
        live = LiveDirectory(engine, rules)
        await live.load()
        presence = build_presence(ami, live, heartbeat_timeout=90, poll_interval=0.5)
        build_fallback(ami, live)
        presence.start()
        await ami.start()
        extensions = sorted(live.snapshot.users)
        # Everyone's custom device state is published after the resync, and the
        # fallback writes every user's AstDB entry after reading AstDB back.
        for extension in extensions:
            await fake.wait_for(
                lambda e=extension: fake.globals.get(f"DEVICE_STATE(Custom:user-{e})") is not None,
                f"Custom:user-{extension}",
            )
        await fake.wait_for_action("DBGetTree", 2)
        assert len(fake.actions("DeviceStateList")) == 1
        assert len(fake.actions("PJSIPShowEndpoints")) == 1
        assert len(fake.actions("DBGetTree")) == 2  # the dial strings and the timeouts
        await presence.close()
    finally:
        await ami.close()
        await fake.close()
        await engine.dispose()


async def test_a_large_rules_file_is_reloaded_without_stalling_the_event_loop(
    tmp_path: Path,
) -> None:
    """The rules are parsed in a thread: while a file that takes a while to parse is
    reloaded, the loop that sets up calls keeps running (a ratio, not a time)."""
    import asyncio
    import gc
    import time

    from callrouter.rules.loader import load_rules

    url = f"sqlite:///{tmp_path}/d.db"
    await upgrade(url)
    engine = create_engine(url)
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {timeout: 20}\n")
    big = "users:\n" + "".join(
        f'  "{9000000 + i}":\n    followme:\n      - {{ring: [PJSIP/p{i}], timeout: 5}}\n'
        f"      - {{ring: [PJSIP/q{i}], delay: 5, timeout: 10}}\n"
        for i in range(1500)
    )
    bigfile = tmp_path / "big.yaml"
    bigfile.write_text(big)
    started = time.perf_counter()  # the same parse on this thread, for scale
    assert len(load_rules(bigfile).users) == 1500
    parse_time = time.perf_counter() - started
    try:
        live = LiveDirectory(engine, rules)
        await live.load()
        rules.write_text(big)
        gaps: list[float] = []
        done, ticking_now = asyncio.Event(), asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            ticking_now.set()
            while not done.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticking = asyncio.ensure_future(ticker())
        await ticking_now.wait()
        assert await live.refresh(force=True)
        done.set()
        await ticking
        assert len(live.rules.users) == 1500
        # Parsed on the loop's thread, the parse would be one gap as long as itself; in
        # a thread the loop keeps ticking (a busy machine may still add a hiccup).
        stalled = sum(gap for gap in gaps if gap > 0.05)
        assert stalled < parse_time / 2, (stalled, parse_time, max(gaps))
        # Nor does the garbage collector's next full pass walk the new rules (or the
        # snapshot) with the GIL held, whichever thread's allocations start it.
        collected = {id(o) for o in gc.get_objects()}
        assert id(live.rules) not in collected and id(live.rules.users) not in collected
        assert id(live.snapshot) not in collected
    finally:
        await engine.dispose()
