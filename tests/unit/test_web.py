"""The web client's server side as an attacker would try it: the session cookie, the
cross-site checks, the session's end (sign-out, PIN change, expiry), the page's
security headers; in process (httpx's ASGI transport) on a real directory database."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI

from callrouter.api import TokenSigner, create_api
from callrouter.api.desk import add_web_client
from callrouter.api.server import ApiServer
from callrouter.directory.importer import import_document
from callrouter.directory.revisions import read_revision
from callrouter.domain.forwarding import FORWARD_KINDS
from callrouter.logins.service import LoginService
from callrouter.presence.live import PresenceService
from callrouter.presence.tracker import PresenceTracker
from callrouter.routing.plan import LegSource, PlanStatus
from callrouter.web.build import WebClient
from callrouter.web.page import CONTENT_SECURITY_POLICY, load_files, page_routes
from callrouter.web.sessions import COOKIE, CSRF_HEADER, WebSessions
from tests.unit.conftest import Live
from tests.unit.test_directory_store import document

ANNA_PIN = "4711"  # from test_directory_store.document()
FROM_PAGE = {CSRF_HEADER: "web", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def api(live: Live) -> FastAPI:
    service = LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh)
    presence = PresenceService(PresenceTracker(live.snapshot), ami=None)
    api = create_api(service, TokenSigner(b"k" * 32), "admin-token-0123456789", presence=presence)
    web = WebClient(WebSessions(ttl=3600), page_routes(load_files()), secure_cookie=False)
    add_web_client(api, web, service=service, presence=presence)
    return api


@pytest.fixture
async def client(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield client


async def sign_in(client: httpx.AsyncClient, extension: str = "201", pin: str = ANNA_PIN) -> str:
    reply = await client.post(
        "/api/v1/web/session", json={"extension": extension, "pin": pin}, headers=FROM_PAGE
    )
    assert reply.status_code == 200, reply.text
    return reply.cookies[COOKIE]


async def test_sign_in_sets_an_httponly_strict_cookie_and_no_token_in_the_body(
    client: httpx.AsyncClient,
) -> None:
    reply = await client.post(
        "/api/v1/web/session", json={"extension": "201", "pin": ANNA_PIN}, headers=FROM_PAGE
    )
    assert reply.status_code == 200
    cookie = reply.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    session_id = reply.cookies[COOKIE]
    assert len(session_id) == 43
    assert session_id not in reply.text  # script on the page never sees it
    assert reply.json()["extension"] == "201" and "token" not in reply.json()
    desk = await client.get("/api/v1/me/desk")
    assert desk.status_code == 200
    assert desk.json()["workplace"] == "office-1"
    phones = {p["endpoint"]: p["source"] for p in desk.json()["phones"]}
    assert phones == {
        "PJSIP/anna-soft": "own",
        "PJSIP/anna-desk": "own",
        "PJSIP/office1-desk": "workplace",
        "PJSIP/office1-dect": "workplace",
    }


async def test_the_cookie_acts_only_with_the_pages_header(
    client: httpx.AsyncClient, live: Live
) -> None:
    await sign_in(client)
    revision = await read_revision(live.engine)
    # A form or script of another site: the cookie alone (were it sent) changes nothing.
    for headers in (
        {},
        {CSRF_HEADER: "yes"},
        {CSRF_HEADER: "web", "Sec-Fetch-Site": "cross-site"},
        {CSRF_HEADER: "web", "Sec-Fetch-Site": "same-site"},
    ):
        for method, path, body in (
            ("POST", "/api/v1/login", {"workplace": "hotdesk-1"}),
            ("POST", "/api/v1/logout", None),
            ("PUT", "/api/v1/presence/client", {"client_id": "x", "status": "dnd"}),
            ("DELETE", "/api/v1/web/session", None),
        ):
            reply = await client.request(method, path, json=body, headers=headers)
            assert reply.status_code == 403, (method, path, headers, reply.text)
    assert await read_revision(live.engine) == revision
    assert live.snapshot.logins == {"201": "office-1"}
    assert (await client.get("/api/v1/me/desk")).status_code == 200  # still signed in
    # From the page it works.
    reply = await client.post("/api/v1/login", json={"workplace": "hotdesk-1"}, headers=FROM_PAGE)
    assert reply.status_code == 200 and live.snapshot.logins == {"201": "hotdesk-1"}


async def test_no_site_can_sign_a_browser_in(client: httpx.AsyncClient) -> None:
    """Login CSRF: another site posting someone's extension and PIN gets no cookie."""
    for headers in ({}, {CSRF_HEADER: "web", "Sec-Fetch-Site": "cross-site"}):
        reply = await client.post(
            "/api/v1/web/session", json={"extension": "201", "pin": ANNA_PIN}, headers=headers
        )
        assert reply.status_code == 403
        assert COOKIE not in reply.cookies


@pytest.mark.parametrize(
    "forged",
    [
        "A" * 43,  # the right shape, no session
        "x",
        "A" * 10_000,  # oversized
        "cr1.201.9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # a token's shape
        "",
    ],
)
async def test_a_forged_cookie_gets_nothing(client: httpx.AsyncClient, forged: str) -> None:
    client.cookies.set(COOKIE, forged)
    assert (await client.get("/api/v1/me/desk")).status_code == 401
    assert (await client.get("/api/v1/presence")).status_code == 401
    reply = await client.post("/api/v1/logout", headers=FROM_PAGE)
    assert reply.status_code == 401


async def test_a_session_cookie_altered_by_one_character_is_refused(
    client: httpx.AsyncClient,
) -> None:
    session_id = await sign_in(client)
    altered = session_id[:-1] + ("A" if session_id[-1] != "A" else "B")
    client.cookies.clear()
    client.cookies.set(COOKIE, altered)
    assert (await client.get("/api/v1/me/desk")).status_code == 401


async def test_sign_out_ends_the_session_on_the_server(client: httpx.AsyncClient) -> None:
    session_id = await sign_in(client)
    reply = await client.delete("/api/v1/web/session", headers=FROM_PAGE)
    assert reply.status_code == 204
    cleared = reply.headers["set-cookie"].lower()
    assert cleared.startswith(f"{COOKIE}=") and "max-age=0" in cleared
    # A copy of the cookie (kept by an attacker, or a second tab) is worthless now.
    client.cookies.clear()
    client.cookies.set(COOKIE, session_id)
    assert (await client.get("/api/v1/me/desk")).status_code == 401


async def test_signing_in_again_replaces_the_session(client: httpx.AsyncClient) -> None:
    first = await sign_in(client)
    second = await sign_in(client)  # the browser sends the first cookie along
    assert first != second
    client.cookies.clear()
    client.cookies.set(COOKIE, first)
    assert (await client.get("/api/v1/me/desk")).status_code == 401
    client.cookies.clear()
    client.cookies.set(COOKIE, second)
    assert (await client.get("/api/v1/me/desk")).status_code == 200


@pytest.mark.parametrize("ending", ["sign-out", "pin-change"])
async def test_the_end_of_a_session_ends_its_open_streams(
    api: FastAPI, live: Live, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    for module in ("callrouter.api.app", "callrouter.api.desk"):
        monkeypatch.setattr(f"{module}.RECHECK_SECONDS", 0.05)
    server = ApiServer(api, "127.0.0.1", 0)
    await server.start()
    try:
        async with (
            asyncio.timeout(20),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
        ):
            await sign_in(http)
            async with (
                http.stream("GET", "/api/v1/me/events") as desk,
                http.stream("GET", "/api/v1/presence/events") as everyone,
            ):
                desk_lines, everyone_lines = desk.aiter_lines(), everyone.aiter_lines()
                assert await anext(desk_lines) == "event: desk"
                assert await anext(everyone_lines) == "event: snapshot"
                if ending == "sign-out":
                    reply = await http.delete("/api/v1/web/session", headers=FROM_PAGE)
                    assert reply.status_code == 204
                else:
                    users = [{"extension": "201", "name": "Anna Berger", "pin": "9999"}]
                    changed = document(users=users, logins={})
                    await import_document(live.engine, changed, prune=False, actor="test")
                    await live.refresh()
                # Both streams end by themselves: no more of anyone's presence.
                assert "event: ended" in [line async for line in desk_lines]
                assert [line async for line in everyone_lines if line.startswith("event")] == []
    finally:
        await server.close()


async def test_the_desk_stream_tells_of_every_directory_change(live: Live) -> None:
    """The page asks for its ring plan again on ``directory``: sent first, then after
    each change of the directory or the rules (anyone's may reach the plan)."""
    listeners: list[Callable[[frozenset[str] | None], None]] = []

    def subscribe(listener: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        listeners.append(listener)
        return lambda: None

    service = LoginService(live.engine, lambda: live.snapshot, on_change=live.refresh)
    presence = PresenceService(PresenceTracker(live.snapshot), ami=None)
    api = create_api(service, TokenSigner(b"k" * 32), "admin-token-0123456789", presence=presence)
    web = WebClient(WebSessions(ttl=3600), page_routes(load_files()), secure_cookie=False)
    add_web_client(api, web, service=service, presence=presence, directory_changes=subscribe)
    server = ApiServer(api, "127.0.0.1", 0)
    await server.start()

    async def next_directory(lines: AsyncIterator[str]) -> str:
        async for line in lines:
            if line == "event: directory":
                return await anext(lines)
        raise AssertionError("the stream ended")

    try:
        async with (
            asyncio.timeout(20),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
        ):
            await sign_in(http)
            async with http.stream("GET", "/api/v1/me/events") as desk:
                lines = desk.aiter_lines()
                assert await next_directory(lines) == 'data: {"changes": 0}'
                assert len(listeners) == 1
                listeners[0](frozenset({"202"}))  # someone else's change
                assert await next_directory(lines) == 'data: {"changes": 1}'
                listeners[0](None)  # new rules
                assert await next_directory(lines) == 'data: {"changes": 2}'
    finally:
        await server.close()


async def test_a_pin_change_ends_the_session(client: httpx.AsyncClient, live: Live) -> None:
    anna = await sign_in(client)
    other = await sign_in(client, "202", "0815")
    users = [
        {"extension": "201", "name": "Anna Berger", "role": "staff", "pin": "9999"},
        {"extension": "202", "name": "Boris Chen", "role": "intern", "pin": "0815"},
    ]
    await import_document(live.engine, document(users=users), prune=False, actor="test")
    await live.refresh()
    client.cookies.clear()
    client.cookies.set(COOKIE, anna)
    assert (await client.get("/api/v1/me/desk")).status_code == 401
    # Only Anna's: Boris's PIN is the same as before.
    client.cookies.clear()
    client.cookies.set(COOKIE, other)
    assert (await client.get("/api/v1/me/desk")).status_code == 200


async def test_the_admin_is_never_a_cookie(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/api/v1/web/session",
        json={"extension": "201", "pin": "admin-token-0123456789"},
        headers=FROM_PAGE,
    )
    assert reply.status_code == 401


async def test_wrong_pin_and_unknown_extension_look_the_same_then_lockout(
    client: httpx.AsyncClient,
) -> None:
    wrong = await client.post(
        "/api/v1/web/session", json={"extension": "201", "pin": "0000"}, headers=FROM_PAGE
    )
    unknown = await client.post(
        "/api/v1/web/session", json={"extension": "999", "pin": "0000"}, headers=FROM_PAGE
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "detail": "wrong extension or PIN",
            "reason": "bad_credentials",
        }
    )
    for _ in range(3):
        await client.post(
            "/api/v1/web/session", json={"extension": "201", "pin": "1"}, headers=FROM_PAGE
        )
    locked = await client.post(
        "/api/v1/web/session", json={"extension": "201", "pin": ANNA_PIN}, headers=FROM_PAGE
    )
    assert locked.status_code == 429 and locked.json()["reason"] == "locked"
    assert 0 < int(locked.headers["Retry-After"]) <= 901
    assert COOKIE not in locked.cookies


async def test_nothing_secret_in_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session_id = await sign_in(client)
    await client.post(
        "/api/v1/web/session", json={"extension": "201", "pin": "8642"}, headers=FROM_PAGE
    )
    await client.get("/api/v1/me/desk")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert session_id not in text and ANNA_PIN not in text and "8642" not in text


def test_sessions_expire_and_are_capped_per_user() -> None:
    now = [1000.0]
    sessions = WebSessions(ttl=60, clock=lambda: now[0], max_per_user=3)
    pins = {"201": "hash-a"}
    first, _ = sessions.open("201", "hash-a")
    assert sessions.user(first, pins.get) == "201"
    now[0] += 61
    assert sessions.user(first, pins.get) is None
    opened = [sessions.open("201", "hash-a")[0] for _ in range(5)]
    assert len(sessions) == 3  # a script signing in again and again holds no more
    assert [sessions.user(s, pins.get) for s in opened] == [None, None, "201", "201", "201"]
    pins["201"] = "hash-b"  # a new PIN
    assert sessions.user(opened[-1], pins.get) is None
    assert len(sessions) == 2
    assert sessions.user(opened[-2], {}.get) is None  # the user left the directory


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data.strip()


async def test_the_page_has_a_strict_csp_and_nothing_inline_or_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src is not None and script_src.group(1) == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    tags = _Tags()
    tags.feed(page.text)
    assert tags.script_text == ""  # no inline script
    for tag, attrs in tags.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs, tag
        for name in ("src", "href"):
            url = attrs.get(name)
            if url is not None:
                assert url.startswith("/web/"), url  # this router's, nothing else
                asset = await client.get(url)
                assert asset.status_code == 200, url
                assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    for name in ("app.js", "strings.js", "style.css"):
        text = (await client.get(f"/web/{name}")).text
        assert "http://" not in text and "https://" not in text, name


@pytest.mark.parametrize(
    "path", ["/web/nothing.js", "/web/..%2Fsessions.py", "/web/%2e%2e/page.py", "/web/"]
)
async def test_only_the_pages_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


async def test_the_docs_page_that_needs_a_cdn_is_gone(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/openapi.json")).status_code == 200


def _string_keys(language: str, text: str) -> set[str]:
    block = re.search(rf"\n  {language}: \{{\n(.*?)\n  \}},", text, re.DOTALL)
    assert block is not None, language
    return set(re.findall(r"^    (\w+): ", block.group(1), re.MULTILINE))


def test_every_string_is_in_both_languages_and_every_key_used_exists() -> None:
    files = {name: content.decode() for name, (content, _) in load_files().items()}
    english = _string_keys("en", files["strings.js"])
    german = _string_keys("de", files["strings.js"])
    assert english == german, english ^ german
    used = set(re.findall(r'data-(?:text|label)="(\w+)"', files["index.html"]))
    used |= set(re.findall(r'\bt\("(\w+[^_])"', files["app.js"]))  # not prefixes
    # Keys made up of a prefix and a value: every value the API can send.
    used |= {f"state_{s}" for s in ("free", "ringing", "on_call", "dnd", "away", "offline")}
    used |= {"reachable", "ringing", "on_call", "unreachable"}  # PhoneView.state
    used |= {"online", "away", "dnd", "offline"}  # ClientStatus
    used |= {
        f"planStatus_{s.value.replace('-', '_')}" for s in PlanStatus if s is not PlanStatus.OK
    }
    used |= {f"legSource_{s.value}" for s in LegSource if s is not LegSource.PICKUP}
    used |= {f"hopKind_{kind}" for kind in FORWARD_KINDS}
    used |= {"then_busy", "then_no_answer"}  # PlanTree.then, RingPlan.forward_on
    assert used <= english, used - english
