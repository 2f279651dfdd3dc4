"""The users' own forwardings and switches: store, service, reload and HTTP API.

On a real directory database (SQLite; PostgreSQL too when
``CALLROUTER_TEST_POSTGRES`` names an empty database), the API in process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api import TokenSigner, create_api
from callrouter.api.personal import add_personal
from callrouter.directory import schema as s
from callrouter.directory.export import export_document
from callrouter.directory.live import LiveDirectory
from callrouter.directory.revisions import read_revisions
from callrouter.directory.snapshot import load_personal
from callrouter.logins.service import LoginService
from callrouter.personal import store
from callrouter.personal.service import PersonalRefused, PersonalService
from callrouter.rules.model import RingRules
from tests.unit.conftest import Live
from tests.unit.test_api import bearer, session

ADMIN_TOKEN = "admin-token-0123456789"

RULES: dict[str, Any] = {
    "users": {
        "201": {
            "followme": [
                {"ring": ["PJSIP/anna-desk"]},
                {"ring": ["PJSIP/anna-soft"], "switch": "softphone"},
                {"ring": ["+4917012345678"], "delay": 10, "switch": "mobile"},
            ],
            "forward": {"no_answer": "203"},
        },
    },
    "defaults": {"external_endpoint": "PJSIP/{number}@trunk"},
}


def make_rules(**defaults: Any) -> RingRules:
    data = {**RULES, "defaults": {**RULES["defaults"], **defaults}}
    return RingRules.model_validate(data)


class Rules:
    def __init__(self) -> None:
        self.rules = make_rules()


@pytest.fixture
def rules() -> Rules:
    return Rules()


@pytest.fixture
def service(live: Live, rules: Rules) -> PersonalService:
    return PersonalService(
        live.engine, lambda: live.snapshot, lambda: rules.rules, on_change=live.refresh
    )


async def own_audit(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    a = s.audit
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(a.c.action, a.c.extension, a.c.detail, a.c.actor, a.c.source)
            .where(a.c.action.in_(["forward", "unforward", "switch_on", "switch_off"]))
            .order_by(a.c.id)
        )
        return [tuple(row) for row in rows]


# --- store and service ------------------------------------------------------------


async def test_a_forwarding_is_stored_audited_and_personal(
    service: PersonalService, live: Live
) -> None:
    before = await read_revisions(live.engine)
    change = await service.set_forward("201", "busy", "202", actor="201", source="api x")
    assert change.changed and change.old is None and change.new == "202"
    after = await read_revisions(live.engine)
    # Personal like a login: the revision moves, the content revision does not.
    assert after == (before[0] + 1, before[1])
    assert live.snapshot.forwards == {"201": {"busy": "202"}}
    await service.set_forward("201", "busy", "203", actor="admin", source="cli")
    assert live.snapshot.forwards == {"201": {"busy": "203"}}
    assert await own_audit(live.engine) == [
        ("forward", "201", "busy: not forwarded -> 202", "201", "api x"),
        ("forward", "201", "busy: 202 -> 203", "admin", "cli"),
    ]


async def test_setting_the_same_again_changes_nothing(service: PersonalService, live: Live) -> None:
    await service.set_forward("201", "always", "202", actor="201", source="api")
    revisions = await read_revisions(live.engine)
    change = await service.set_forward("201", "always", "202", actor="201", source="api")
    assert not change.changed
    assert await read_revisions(live.engine) == revisions
    assert len(await own_audit(live.engine)) == 1


async def test_clearing_one_kind_and_all(service: PersonalService, live: Live) -> None:
    for kind, target in (("always", "202"), ("busy", "203"), ("dnd", "202")):
        await service.set_forward("201", kind, target, actor="201", source="api")
    cleared = await service.clear_forward("201", "busy", actor="201", source="api")
    assert [c.kind for c in cleared] == ["busy"]
    assert live.snapshot.forwards == {"201": {"always": "202", "dnd": "202"}}
    assert await service.clear_forward("201", "busy", actor="201", source="api") == []
    cleared = await service.clear_forward("201", None, actor="201", source="api")
    assert sorted(c.kind for c in cleared) == ["always", "dnd"]
    assert live.snapshot.forwards == {}
    assert [row[2] for row in (await own_audit(live.engine))[-2:]] == [
        "always: 202 -> not forwarded",
        "dnd: 202 -> not forwarded",
    ]


@pytest.mark.parametrize(
    ("extension", "kind", "target", "reason", "field", "words"),
    [
        ("201", "sometimes", "202", "unknown_kind", "kind", "no kind of forwarding"),
        ("201", "busy", "20a", "bad_target", "to", "neither an extension"),
        ("201", "busy", "", "bad_target", "to", "neither an extension"),
        ("201", "busy", "2" * 21, "bad_target", "to", "neither an extension"),
        ("201", "busy", "201", "to_self", "to", "oneself"),
        ("201", "busy", "299", "unknown_target", "to", "no user has extension 299"),
        ("201", "busy", "+4930123456", "not_allowed", "to", "extensions only"),
        ("999", "busy", "202", "unknown_user", "extension", "no user has extension 999"),
    ],
)
async def test_refused_forwardings_name_the_field_and_write_nothing(
    service: PersonalService,
    live: Live,
    extension: str,
    kind: str,
    target: str,
    reason: str,
    field: str,
    words: str,
) -> None:
    revisions = await read_revisions(live.engine)
    with pytest.raises(PersonalRefused) as refused:
        await service.set_forward(extension, kind, target, actor="201", source="api")
    assert refused.value.reason == reason and refused.value.field == field
    assert words in str(refused.value)
    assert await read_revisions(live.engine) == revisions
    assert await own_audit(live.engine) == []


async def test_user_forwarding_off_and_anywhere(
    service: PersonalService, rules: Rules, live: Live
) -> None:
    rules.rules = make_rules(user_forwarding="off")
    with pytest.raises(PersonalRefused, match="do not let 201 forward") as refused:
        await service.set_forward("201", "busy", "202", actor="201", source="api")
    assert refused.value.reason == "not_allowed"
    rules.rules = make_rules(user_forwarding="anywhere")
    await service.set_forward("201", "busy", "+4930123456", actor="201", source="api")
    assert live.snapshot.forwards == {"201": {"busy": "+4930123456"}}
    data = {"defaults": {"user_forwarding": "anywhere"}}
    rules.rules = RingRules.model_validate(data)  # no external_endpoint
    with pytest.raises(PersonalRefused, match="external_endpoint") as refused:
        await service.set_forward("201", "always", "+4930123456", actor="201", source="api")
    assert refused.value.reason == "no_external_endpoint"


async def test_the_view_says_whose_forwarding_is_in_force(
    service: PersonalService, rules: Rules
) -> None:
    views = {v.kind: v for v in service.forwarding("201")}
    assert views["no_answer"].in_force == "admin" and views["no_answer"].admin[0].to == "203"
    assert views["busy"].in_force is None
    await service.set_forward("201", "no_answer", "202", actor="201", source="api")
    views = {v.kind: v for v in service.forwarding("201")}
    assert views["no_answer"].in_force == "user" and views["no_answer"].own == "202"
    # The admin takes the right away: the own target stays, but is ignored.
    rules.rules = make_rules(user_forwarding="off")
    views = {v.kind: v for v in service.forwarding("201")}
    assert views["no_answer"].own_ignored and views["no_answer"].in_force == "admin"


async def test_switches_off_on_and_toggle(service: PersonalService, live: Live) -> None:
    assert [(v.name, v.on, v.rings) for v in service.switches("201")] == [
        ("softphone", True, ("PJSIP/anna-soft",)),
        ("mobile", True, ("+4917012345678",)),
    ]
    before = await read_revisions(live.engine)
    change = await service.set_switch("201", "mobile", False, actor="201", source="api")
    assert change.changed and not change.on
    assert live.snapshot.switched_off == {"201": frozenset({"mobile"})}
    assert (await read_revisions(live.engine))[1] == before[1]  # personal
    again = await service.set_switch("201", "mobile", False, actor="201", source="api")
    assert not again.changed
    toggled = await service.set_switch("201", "mobile", None, actor="201", source="phone x")
    assert toggled.on and live.snapshot.switched_off == {}
    assert await own_audit(live.engine) == [
        ("switch_off", "201", "switch mobile: off", "201", "api"),
        ("switch_on", "201", "switch mobile: on", "201", "phone x"),
    ]


async def test_only_the_switches_the_admin_gave(service: PersonalService, live: Live) -> None:
    for extension, name in (("201", "desk"), ("202", "mobile"), ("201", "x" * 200)):
        with pytest.raises(PersonalRefused, match="is not one of the switches") as refused:
            await service.set_switch(extension, name, False, actor="a", source="api")
        assert refused.value.reason == "unknown_switch" and refused.value.field == "name"
    assert await own_audit(live.engine) == []


async def test_a_target_removed_meanwhile_is_refused_by_the_store(live: Live) -> None:
    with pytest.raises(store.UnknownTarget):
        await store.set_forward(live.engine, "201", "busy", "299", actor="a", source="b")
    assert (await load_personal(live.engine)).forwards == {}


async def test_deleting_a_user_deletes_their_settings(service: PersonalService, live: Live) -> None:
    await service.set_forward("201", "busy", "202", actor="201", source="api")
    await service.set_switch("201", "mobile", False, actor="201", source="api")
    async with live.engine.begin() as conn:
        await conn.execute(delete(s.users).where(s.users.c.extension == "201"))
    state = await load_personal(live.engine)
    assert state.forwards == {} and state.switched_off == {}


async def test_personal_settings_stay_out_of_the_directory_file(
    service: PersonalService, live: Live
) -> None:
    await service.set_forward("201", "busy", "202", actor="201", source="api")
    text = (await export_document(live.engine)).model_dump_json()
    assert "busy" not in text


async def test_concurrent_changes_for_one_user_all_land(
    service: PersonalService, live: Live
) -> None:
    """Writes at once for one user are serialised: each kind ends with one target,
    the revision moved once per change, and the audit log tells each one."""
    before, _ = await read_revisions(live.engine)
    jobs = [
        service.set_forward("201", kind, target, actor="201", source=f"api {i}")
        for i, (kind, target) in enumerate(
            (k, t) for k in ("always", "busy", "no_answer", "dnd") for t in ("202", "203")
        )
    ] + [service.set_switch("201", "mobile", None, actor="201", source="api") for _ in range(5)]
    changes = await asyncio.gather(*jobs)
    after, _ = await read_revisions(live.engine)
    assert after - before == sum(1 for c in changes if c.changed)
    state = await load_personal(live.engine)
    assert set(state.forwards["201"]) == {"always", "busy", "no_answer", "dnd"}
    assert state.switched_off == {"201": frozenset({"mobile"})}  # toggled 5 times
    assert len(await own_audit(live.engine)) == after - before


# --- the router's reload ------------------------------------------------------------


async def test_a_router_reloads_personal_settings_without_a_full_reload(
    live: Live, tmp_path: Path
) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text("users: {}\n")
    directory = LiveDirectory(live.engine, rules_path)
    await directory.load()
    users = directory.snapshot.users
    concerned: list[frozenset[str] | None] = []
    directory.subscribe(concerned.append)
    await store.set_forward(live.engine, "201", "busy", "202", actor="a", source="b")
    await store.set_switch(live.engine, "202", "mobile", False, actor="a", source="b")
    assert await directory.refresh()
    assert directory.snapshot.forwards == {"201": {"busy": "202"}}
    assert directory.snapshot.switched_off == {"202": frozenset({"mobile"})}
    assert directory.snapshot.users is users  # not reloaded: only the personal part
    assert concerned == [frozenset({"201", "202"})]


# --- HTTP API -----------------------------------------------------------------------


@pytest.fixture
async def client(live: Live, service: PersonalService) -> AsyncIterator[httpx.AsyncClient]:
    logins = LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh)
    api = create_api(logins, TokenSigner(b"k" * 32), ADMIN_TOKEN)
    add_personal(api, service, local_time=lambda: datetime.now(ZoneInfo("Europe/Berlin")))
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield client


async def test_api_forwarding_set_show_clear(client: httpx.AsyncClient, live: Live) -> None:
    anna = await session(client, "201", "4711")
    reply = await client.get("/api/v1/me/forwarding", headers=anna)
    assert reply.status_code == 200
    body = reply.json()
    assert body["user_forwarding"] == "extensions"
    kinds = {k["kind"]: k for k in body["kinds"]}
    assert list(kinds) == ["always", "busy", "no_answer", "unreachable", "dnd"]
    assert kinds["no_answer"]["set_by"] == "admin"
    assert kinds["no_answer"]["admin"] == [
        {"to": "203", "calls": None, "when": None, "unless": None}
    ]

    reply = await client.put("/api/v1/me/forwarding/no_answer", json={"to": "202"}, headers=anna)
    assert reply.status_code == 200, reply.text
    kinds = {k["kind"]: k for k in reply.json()["kinds"]}
    assert kinds["no_answer"]["set_by"] == "user" and kinds["no_answer"]["own"] == "202"
    assert live.snapshot.forwards == {"201": {"no_answer": "202"}}
    assert (await own_audit(live.engine))[-1][3:] == ("201", "api 127.0.0.1")

    reply = await client.delete("/api/v1/me/forwarding/no_answer", headers=anna)
    assert reply.status_code == 200
    assert live.snapshot.forwards == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("put", "/api/v1/me/forwarding/busy", {"to": "201"}, 422, "to: a forwarding to oneself"),
        ("put", "/api/v1/me/forwarding/busy", {"to": "+4930123456"}, 403, "to: the rules"),
        ("put", "/api/v1/me/forwarding/busy", {"to": "299"}, 422, "to: no user"),
        ("put", "/api/v1/me/forwarding/busy", {"to": "x"}, 422, "to: 'x' is neither"),
        ("put", "/api/v1/me/forwarding/sometimes", {"to": "202"}, 422, None),
        ("put", "/api/v1/me/forwarding/busy", {"to": "2" * 400}, 422, None),
        ("put", "/api/v1/me/forwarding/busy", {"to": "202", "x": 1}, 422, None),
        ("put", "/api/v1/me/switches/desk", {"on": False}, 404, "name: 'desk' is not one"),
        ("put", "/api/v1/me/switches/Bad%20Name", {"on": False}, 422, None),
        ("put", "/api/v1/me/switches/mobile", {"on": "maybe"}, 422, None),
        ("get", "/api/v1/me/plan?at=tomorrow", None, 422, 'at: not a local time: "YYYY'),
    ],
)
async def test_api_refusals_are_problems_and_write_nothing(
    client: httpx.AsyncClient,
    live: Live,
    method: str,
    path: str,
    body: Any,
    status: int,
    words: str | None,
) -> None:
    anna = await session(client, "201", "4711")
    revisions = await read_revisions(live.engine)
    reply = await client.request(method, path, json=body, headers=anna)
    assert reply.status_code == status, reply.text
    if words is not None:
        assert reply.json()["detail"].startswith(words), reply.json()
    assert await read_revisions(live.engine) == revisions


async def test_api_switches_and_the_plan_leaves_a_switched_off_entry_out(
    client: httpx.AsyncClient, live: Live
) -> None:
    anna = await session(client, "201", "4711")
    reply = await client.get("/api/v1/me/switches", headers=anna)
    assert reply.json() == [
        {"name": "softphone", "on": True, "rings": ["PJSIP/anna-soft"]},
        {"name": "mobile", "on": True, "rings": ["+4917012345678"]},
    ]
    plan = (await client.get("/api/v1/me/plan", headers=anna)).json()
    assert "PJSIP/anna-soft" in [leg["endpoint"] for leg in plan["legs"]]

    reply = await client.put("/api/v1/me/switches/softphone", json={"on": False}, headers=anna)
    assert reply.status_code == 200
    assert reply.json()[0] == {"name": "softphone", "on": False, "rings": ["PJSIP/anna-soft"]}
    plan = (await client.get("/api/v1/me/plan?at=2026-12-02 19:00", headers=anna)).json()
    assert plan["extension"] == "201"
    assert "PJSIP/anna-soft" not in [leg["endpoint"] for leg in plan["legs"]]
    assert any("switched off by the user (softphone)" in why for why in plan["skipped"])


async def test_api_admin_names_the_user_users_only_themselves(
    client: httpx.AsyncClient, live: Live
) -> None:
    admin = bearer(ADMIN_TOKEN)
    reply = await client.put(
        "/api/v1/me/forwarding/busy?extension=201", json={"to": "202"}, headers=admin
    )
    assert reply.status_code == 200
    assert (await own_audit(live.engine))[-1][3] == "admin"
    reply = await client.get("/api/v1/me/forwarding", headers=admin)
    assert reply.status_code == 422 and "admin must name" in reply.json()["detail"]
    reply = await client.get("/api/v1/me/switches?extension=299", headers=admin)
    assert reply.status_code == 404

    boris = await session(client, "202", "0815")
    reply = await client.put(
        "/api/v1/me/forwarding/busy?extension=201", json={"to": "203"}, headers=boris
    )
    assert reply.status_code == 403
    assert live.snapshot.forwards == {"201": {"busy": "202"}}
    reply = await client.get("/api/v1/me/forwarding")
    assert reply.status_code == 401


async def test_api_plan_shows_the_users_own_forwarding_and_where_the_call_goes_on(
    client: httpx.AsyncClient, live: Live
) -> None:
    anna = await session(client, "201", "4711")
    reply = await client.put("/api/v1/me/forwarding/no_answer", json={"to": "202"}, headers=anna)
    assert reply.status_code == 200, reply.text
    plan = (await client.get("/api/v1/me/plan", headers=anna)).json()
    assert plan["extension"] == "201" and plan["forwarded"] == []
    hop = {"from": "201", "kind": "no_answer", "to": "202", "set_by": "user"}
    assert plan["forward_on"] == {"no_answer": hop}
    then = plan["then"]["no_answer"]
    assert then["extension"] == "202" and then["forwarded"] == [hop]
    reply = await client.put("/api/v1/me/forwarding/always", json={"to": "202"}, headers=anna)
    assert reply.status_code == 200, reply.text
    plan = (await client.get("/api/v1/me/plan", headers=anna)).json()
    assert plan["extension"] == "202"
    assert plan["forwarded"] == [{**hop, "kind": "always"}]
