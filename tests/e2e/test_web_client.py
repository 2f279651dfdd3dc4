"""The web client for the desks in a real headless Chromium (Debian's package, driven
by Playwright), against a router on the real sandbox Asterisk with simulated phones.

Every page of every test records each request it makes; anything not for the
router's own origin is aborted and fails the test at its end (nothing from outside).
Waits are Playwright's ``expect`` with a generous time-out, never a sleep: how fast
the page follows a ringing phone is measured by benchmarks/web_client_bench.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Request,
    Route,
    async_playwright,
    expect,
)

from callrouter.cli.main import main as cli
from callrouter.domain.presence import ClientStatus
from callrouter.web.sessions import COOKIE, CSRF_HEADER
from sandbox import router as in_process
from sandbox.asterisk import AsteriskSandbox
from sandbox.phones import CallFailed, SimulatedPhone
from sandbox.router import RunningRouter
from tests.e2e.conftest import MakePhones, until
from tests.e2e.test_routing import (  # noqa: F401 (fixtures)
    _quiet_logs,
    _sip_port,
    assert_nothing_left,
)
from tests.e2e.test_workplace_login import dial_code

DIRECTORY = """
roles:
  - {name: staff}
  - {name: intern, workplaces: [desk-b]}
users:
  - {extension: "401", name: Dora Lang, role: staff, pin: "4711", phones: [PJSIP/rt-web-dora]}
  - {extension: "402", name: Emil Roth, role: intern, pin: "0815", phones: [PJSIP/rt-web-emil]}
  - {extension: "499", name: Caller, phones: [PJSIP/rt-web-caller]}
workplaces:
  - {id: desk-a, name: Desk A, code: "841", phones: [PJSIP/rt-web-desk-a]}
  - {id: desk-b, name: Desk B, code: "842", phones: [PJSIP/rt-web-desk-b]}
"""
RULES = "defaults: {timeout: 20}\n"
HEARTBEAT_TIMEOUT = 4.0  # seconds; the page beats every third of it
WAIT_MS = 10_000  # generous: the page follows within a second (see the benchmark)


def chromium_path() -> str:
    """Debian's chromium (scripts/chromium.sh installs it); never a downloaded one."""
    path = os.environ.get("CALLROUTER_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("no chromium: run scripts/chromium.sh (as root it installs Debian's)")
    return path


@dataclass
class Desks:
    """A router with the web client, a browser, and the pages opened on it."""

    running: RunningRouter
    browser: Browser
    base: str
    db: str
    rules: Path
    phones: dict[str, SimulatedPhone]
    outside: list[str] = field(default_factory=list)  # requests for anywhere else
    elsewhere: set[str] = field(default_factory=set)  # origins a test serves itself
    contexts: list[BrowserContext] = field(default_factory=list)

    async def page(self, locale: str = "en-US", **options: object) -> Page:
        context = await self.browser.new_context(locale=locale, **options)  # type: ignore[arg-type]
        self.contexts.append(context)
        base = self.base

        def ours(url: str) -> bool:
            return any(url.startswith(origin + "/") for origin in (base, *self.elsewhere))

        def record(request: Request) -> None:
            if not ours(request.url):
                self.outside.append(request.url)

        async def refuse(route: Route) -> None:
            await route.abort()

        context.on("request", record)
        await context.route(lambda url: not ours(url), refuse)
        page = await context.new_page()
        await page.goto(base + "/")
        return page


@pytest.fixture
async def desks(
    asterisk: AsteriskSandbox,
    tmp_path: Path,
    make_phones: MakePhones,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Desks]:
    """A router (settings changed by the test's indirect parameter, if any) and a
    browser."""
    phones = await make_phones(
        "rt-web-dora", "rt-web-emil", "rt-web-caller", "rt-web-desk-a", "rt-web-desk-b"
    )
    for phone in phones:
        phone.ring()
    directory_file, rules_file = tmp_path / "directory.yaml", tmp_path / "rules.yaml"
    directory_file.write_text(textwrap.dedent(DIRECTORY))
    rules_file.write_text(RULES)
    url = f"sqlite:///{tmp_path}/callrouter.db"
    await in_process.load_directory(url, directory_file, actor="test")
    settings = in_process.sandbox_settings(asterisk, url, rules_file, poll_interval=0.2)
    changes = {"client_heartbeat_timeout": HEARTBEAT_TIMEOUT, **getattr(request, "param", {})}
    settings = settings.model_copy(update=changes)
    running = await in_process.start_router(settings, asterisk=asterisk)
    assert running.router.api_server is not None
    base = f"http://127.0.0.1:{running.router.api_server.port}"
    playwright: Playwright
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path())
        desks = Desks(running, browser, base, url, rules_file, {p.name: p for p in phones})
        try:
            yield desks
        finally:
            for context in desks.contexts:
                await context.close()
            await browser.close()
            await running.shut_down()
    await assert_nothing_left(asterisk)
    assert desks.outside == [], f"the page asked for other origins: {desks.outside}"


async def sign_in(page: Page, extension: str, pin: str) -> None:
    await page.get_by_label("Extension", exact=True).fill(extension)
    await page.get_by_label("PIN", exact=True).fill(pin)
    await page.get_by_role("button", name="Sign in", exact=True).click()


def workplace(page: Page, name: str) -> Locator:
    workplaces = page.get_by_role("list", name="Workplaces", exact=True)
    return workplaces.get_by_role("listitem").filter(has_text=name)


def colleague(page: Page, extension: str) -> Locator:
    colleagues = page.get_by_role("list", name="Colleagues", exact=True)
    return colleagues.get_by_role("listitem").filter(has_text=f", {extension},")


async def planned(desks: Desks, extension: str) -> str:
    """``callrouter plan EXTENSION``, the admin's command, on the router's database."""
    args = ["--db", desks.db, "--rules", str(desks.rules), "plan", extension, "--ignore-presence"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code == 0, result.output
    return result.output


async def test_sign_in_wrong_pin_lockout_and_sign_out(desks: Desks) -> None:
    page = await desks.page()
    alert = page.locator("#sign-in-error")
    # Unknown extension and wrong PIN: the same words as the API, never which.
    await sign_in(page, "401", "1111")
    await expect(alert).to_have_text("Wrong extension or PIN.", timeout=WAIT_MS)
    await sign_in(page, "777", "1111")
    await expect(alert).to_have_text("Wrong extension or PIN.", timeout=WAIT_MS)

    # Keyboard alone: on a fresh page the extension field has the focus; Tab, Enter.
    await page.reload()
    await expect(page.get_by_label("Extension", exact=True)).to_be_focused()
    await page.keyboard.type("401")
    await page.keyboard.press("Tab")
    await page.keyboard.type("4711")
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_have_text("Dora Lang, extension 401", timeout=WAIT_MS)
    cookie = next(c for c in await page.context.cookies() if c.get("name") == COOKIE)
    assert cookie.get("httpOnly") is True and cookie.get("sameSite") == "Strict"
    assert "4711" not in page.url and cookie.get("value", "") not in page.url

    await page.get_by_role("button", name="Sign out", exact=True).click()
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    # The session ended on the server: a copy of the cookie no longer works.
    copy = {COOKIE: cookie.get("value", "")}
    async with httpx.AsyncClient(base_url=desks.base, cookies=copy) as api:
        assert (await api.get("/api/v1/me/desk")).status_code == 401
    # A cross-site request with a live cookie is refused.
    await sign_in(page, "401", "4711")
    await expect(page.locator("#who")).to_contain_text("Dora Lang", timeout=WAIT_MS)
    live = next(c for c in await page.context.cookies() if c.get("name") == COOKIE)
    async with httpx.AsyncClient(
        base_url=desks.base, cookies={COOKIE: live.get("value", "")}
    ) as api:
        assert (await api.get("/api/v1/me/desk")).status_code == 200
        for headers in (
            {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
            {CSRF_HEADER: "web", "Sec-Fetch-Site": "cross-site"},
        ):
            reply = await api.post("/api/v1/login", json={"workplace": "desk-a"}, headers=headers)
            assert reply.status_code == 403
    assert "401" not in desks.running.router.live.snapshot.logins
    await page.get_by_role("button", name="Sign out", exact=True).click()

    # Lockout: the wrong PINs above (2) and three more from this address lock it,
    # with the time left; the right PIN is refused too while it lasts.
    for _ in range(3):
        await sign_in(page, "401", "2222")
        await expect(alert).to_have_text("Wrong extension or PIN.", timeout=WAIT_MS)
        await page.evaluate("document.getElementById('sign-in-error').textContent = ''")
    await sign_in(page, "401", "4711")
    # 15 minutes from the first wrong PIN, a little less by now.
    locked = re.compile(r"Too many wrong PINs; try again in 1[0-5] min\.")
    await expect(alert).to_have_text(locked, timeout=WAIT_MS)


async def test_sit_here_leave_plan_and_live_moves(desks: Desks) -> None:
    dora = await desks.page()
    await sign_in(dora, "401", "4711")
    desk_a, desk_b = workplace(dora, "Desk A"), workplace(dora, "Desk B")
    await expect(desk_a).to_contain_text("free", timeout=WAIT_MS)
    await expect(desk_a).to_contain_text("code 841")
    assert "rt-web-desk-a" not in await planned(desks, "401")

    # Keyboard: focus the button, Enter.
    await desk_a.get_by_role("button", name="Sit here", exact=True).focus()
    await dora.keyboard.press("Enter")
    await expect(desk_a.get_by_role("button", name="Leave", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(dora.locator("#workplace-now")).to_have_text("You sit at Desk A.")
    assert "PJSIP/rt-web-desk-a" in await planned(desks, "401")
    phones = dora.get_by_role("list", name="My phones", exact=True)
    await expect(phones.get_by_role("listitem").filter(has_text="rt-web-desk-a")).to_contain_text(
        "workplace"
    )

    await desk_a.get_by_role("button", name="Leave", exact=True).click()
    await expect(desk_a.get_by_role("button", name="Sit here", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    assert "rt-web-desk-a" not in await planned(desks, "401")

    # The admin moves Dora: her page follows without a reload.
    await desks.running.router.logins.login("401", "desk-b", actor="admin", source="test")
    await expect(desk_b.get_by_role("button", name="Leave", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(dora.locator("#workplace-now")).to_have_text("You sit at Desk B.")

    # Emil sits down at Desk B: Dora has to leave it (the router's setting: displace),
    # Emil's page says so, and Dora's page shows it at once.
    emil = await desks.page()
    await sign_in(emil, "402", "0815")
    emil_b = workplace(emil, "Desk B")
    await expect(emil_b).to_contain_text("Dora Lang (401) sits here", timeout=WAIT_MS)
    await expect(workplace(emil, "Desk A")).to_have_count(0)  # not for an intern
    await emil_b.get_by_role("button", name="Sit here", exact=True).click()
    await expect(emil.locator("#workplace-message")).to_have_text(
        "You sit at Desk B now; Dora Lang had to leave it.", timeout=WAIT_MS
    )
    await expect(dora.locator("#workplace-now")).to_have_text(
        "You sit at no workplace.", timeout=WAIT_MS
    )
    await expect(desk_b).to_contain_text("Emil Roth (402) sits here")
    await expect(colleague(dora, "402")).to_contain_text("at Desk B", timeout=WAIT_MS)


async def test_a_late_answer_never_overwrites_a_newer_event(desks: Desks) -> None:
    """After Leave, the page asks for its desk again; should that answer arrive after
    the stream told of a newer change (the admin moved me), the newer one stays."""
    dora = await desks.page()
    await sign_in(dora, "401", "4711")
    desk_a, desk_b = workplace(dora, "Desk A"), workplace(dora, "Desk B")
    await desk_a.get_by_role("button", name="Sit here", exact=True).click()
    await expect(dora.locator("#workplace-now")).to_have_text("You sit at Desk A.", timeout=WAIT_MS)
    held, answered = asyncio.Event(), asyncio.Event()

    async def hold(route: Route) -> None:
        answer = await route.fetch()  # the server answers now, before the move ...
        await held.wait()
        await route.fulfill(response=answer)  # ... the page gets it after
        answered.set()

    await dora.route("**/api/v1/me/desk", hold)
    await desk_a.get_by_role("button", name="Leave", exact=True).click()
    await expect(desk_a.get_by_role("button", name="Sit here", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )  # from the stream: the page's own GET is held
    await desks.running.router.logins.login("401", "desk-b", actor="admin", source="test")
    await expect(dora.locator("#workplace-now")).to_have_text("You sit at Desk B.", timeout=WAIT_MS)
    held.set()  # the answer from before the move arrives now
    await asyncio.wait_for(answered.wait(), WAIT_MS / 1000)
    await dora.wait_for_timeout(300)  # the page's handling of that answer
    await expect(dora.locator("#workplace-now")).to_have_text("You sit at Desk B.")
    await expect(desk_b.get_by_role("button", name="Leave", exact=True)).to_be_visible()


@pytest.mark.parametrize("desks", [{"occupied_workplace": "refuse"}], indirect=True)
async def test_an_occupied_workplace_is_refused_with_the_reason(desks: Desks) -> None:
    await desks.running.router.logins.login("401", "desk-b", actor="admin", source="test")
    emil = await desks.page()
    await sign_in(emil, "402", "0815")
    desk_b = workplace(emil, "Desk B")
    await expect(desk_b).to_contain_text("Dora Lang (401) sits here", timeout=WAIT_MS)
    await expect(emil.locator("#workplace-policy")).to_have_text(
        "An occupied workplace cannot be taken."
    )
    await desk_b.get_by_role("button", name="Sit here", exact=True).click()
    await expect(emil.locator("#workplace-message")).to_have_text(
        "Desk B is occupied; the router does not move people out.", timeout=WAIT_MS
    )
    assert desks.running.router.live.snapshot.logins == {"401": "desk-b"}


async def test_do_not_disturb_then_a_call_gets_dnd(
    desks: Desks, asterisk: AsteriskSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    page = await desks.page()
    await sign_in(page, "401", "4711")
    online = page.get_by_role("radio", name="Online", exact=True)
    await expect(online).to_be_checked(timeout=WAIT_MS)
    # Keyboard: the arrow keys move between the radio buttons.
    await online.focus()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("radio", name="Away", exact=True)).to_be_checked()
    await expect(page.locator("#status-shown")).to_have_text(
        "Colleagues see you as: Away", timeout=WAIT_MS
    )
    await page.get_by_role("radio", name="Do not disturb", exact=True).check()
    await expect(page.locator("#status-shown")).to_have_text(
        "Colleagues see you as: Do not disturb", timeout=WAIT_MS
    )
    tracker = desks.running.router.presence.tracker
    assert tracker.user("401").client is ClientStatus.DND  # type: ignore[union-attr]

    caller, dora_phone = desks.phones["rt-web-caller"], desks.phones["rt-web-dora"]
    call = await caller.call("401", asterisk.sip_port)
    with pytest.raises(CallFailed) as failed:
        await call.wait_answered(timeout=10)
    assert failed.value.status == 486  # [callrouter-result]'s default for DND
    assert dora_phone.matching("INVITE") == []
    await until(
        lambda: any("finished, DND" in r.getMessage() for r in caplog.records),
        "the router to report DND",
    )


async def test_colleague_rings_then_is_on_a_call_and_my_phone_rings(
    desks: Desks, asterisk: AsteriskSandbox
) -> None:
    page = await desks.page(viewport={"width": 390, "height": 844})  # a phone's screen
    await sign_in(page, "401", "4711")
    emil = colleague(page, "402")
    await expect(emil).to_contain_text("Emil Roth, 402, free", timeout=WAIT_MS)

    caller, emil_phone = desks.phones["rt-web-caller"], desks.phones["rt-web-emil"]
    call = await caller.call("402", asterisk.sip_port)
    await emil_phone.wait_for("INVITE", timeout=10)
    await expect(emil).to_contain_text("ringing", timeout=WAIT_MS)
    emil_phone.answer_now()
    await call.wait_answered(timeout=10)
    await expect(emil).to_contain_text("on a call", timeout=WAIT_MS)
    # Search by name and by extension.
    search = page.get_by_label("Search by name or extension", exact=True)
    await search.fill("emil")
    await expect(colleague(page, "499")).to_be_hidden()
    await expect(emil).to_be_visible()
    await search.fill("499")
    await expect(emil).to_be_hidden()
    await expect(colleague(page, "499")).to_be_visible()
    await search.fill("")
    screenshot = os.environ.get("CALLROUTER_WEB_SCREENSHOT")
    if screenshot:  # the README's picture: this page, as it is now
        await page.screenshot(path=screenshot, full_page=True)
    await call.hangup()
    await expect(emil).to_contain_text("Emil Roth, 402, free", timeout=WAIT_MS)

    # My own phone, live: ringing while a call rings it.
    mine = page.get_by_role("list", name="My phones", exact=True).get_by_role("listitem")
    await expect(mine.filter(has_text="rt-web-dora")).to_contain_text("reachable")
    call = await caller.call("401", asterisk.sip_port)
    await desks.phones["rt-web-dora"].wait_for("INVITE", timeout=10)
    await expect(mine.filter(has_text="rt-web-dora")).to_contain_text("ringing", timeout=WAIT_MS)
    await call.hangup()
    await expect(mine.filter(has_text="rt-web-dora")).to_contain_text("reachable", timeout=WAIT_MS)
    # Readable on the phone's screen: nothing wider than it.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width


async def test_two_pages_merge_and_a_closed_page_goes_offline(desks: Desks) -> None:
    tracker = desks.running.router.presence.tracker
    laptop = await desks.page()
    await sign_in(laptop, "401", "4711")
    phone = await desks.page()
    await sign_in(phone, "401", "4711")
    await phone.get_by_role("radio", name="Away", exact=True).check()
    await expect(laptop.get_by_role("radio", name="Online", exact=True)).to_be_checked()
    # Online beats away: both pages show what colleagues see.
    for page in (laptop, phone):
        await expect(page.locator("#status-shown")).to_have_text(
            "Colleagues see you as: Online", timeout=WAIT_MS
        )
    await phone.get_by_role("radio", name="Do not disturb", exact=True).check()
    for page in (laptop, phone):
        await expect(page.locator("#status-shown")).to_have_text(
            "Colleagues see you as: Do not disturb", timeout=WAIT_MS
        )
    assert len(tracker.client_statuses("401")) == 2

    # The heartbeats keep both alive past the time-out; closing one lets it lapse.
    await asyncio.sleep(HEARTBEAT_TIMEOUT * 1.5)  # time passing is the point here
    assert len(tracker.client_statuses("401")) == 2
    await phone.context.close()
    await expect(laptop.locator("#status-shown")).to_have_text(
        "Colleagues see you as: Online", timeout=WAIT_MS
    )
    await laptop.context.close()
    await until(
        lambda: tracker.user("401").client is ClientStatus.OFFLINE,  # type: ignore[union-attr]
        "Dora to be offline after the heartbeat time-out",
    )


async def test_the_page_in_german(desks: Desks) -> None:
    page = await desks.page(locale="de-DE")
    assert await page.evaluate("document.documentElement.lang") == "de"
    await page.get_by_label("Durchwahl", exact=True).fill("401")
    await page.get_by_label("PIN", exact=True).fill("1234")
    await page.get_by_role("button", name="Anmelden", exact=True).click()
    await expect(page.locator("#sign-in-error")).to_have_text(
        "Falsche Durchwahl oder PIN.", timeout=WAIT_MS
    )
    await page.get_by_label("PIN", exact=True).fill("4711")
    await page.get_by_role("button", name="Anmelden", exact=True).click()
    await expect(page.locator("#who")).to_have_text("Dora Lang, Durchwahl 401", timeout=WAIT_MS)
    places = page.get_by_role("list", name="Arbeitsplätze", exact=True)
    desk_a = places.get_by_role("listitem").filter(has_text="Desk A")
    await desk_a.get_by_role("button", name="Hier sitzen", exact=True).click()
    await expect(desk_a.get_by_role("button", name="Verlassen", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    await page.get_by_role("radio", name="Nicht stören", exact=True).check()
    await expect(page.locator("#status-shown")).to_have_text(
        "Kollegen sehen Sie als: Nicht stören", timeout=WAIT_MS
    )
    colleagues = page.get_by_role("list", name="Kollegen", exact=True)
    await expect(colleagues.get_by_role("listitem").filter(has_text="402")).to_contain_text(
        "frei", timeout=WAIT_MS
    )
    await expect(page.get_by_role("button", name="Abmelden", exact=True)).to_be_visible()


async def test_a_login_by_phone_shows_at_once(desks: Desks, asterisk: AsteriskSandbox) -> None:
    page = await desks.page()
    await sign_in(page, "401", "4711")
    desk_a = workplace(page, "Desk A")
    await expect(desk_a.get_by_role("button", name="Sit here", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    phone = desks.phones["rt-web-desk-a"]
    outcome = await dial_code(asterisk, desks.running, phone, "*44401", pin="4711")
    assert (outcome.ok, outcome.workplace) == (True, "desk-a")
    await expect(desk_a.get_by_role("button", name="Leave", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    mine = page.get_by_role("list", name="My phones", exact=True).get_by_role("listitem")
    await expect(mine.filter(has_text="rt-web-desk-a")).to_contain_text("reachable")
    outcome = await dial_code(asterisk, desks.running, phone, "*44")
    assert (outcome.ok, outcome.action) == (True, "logout")
    await expect(desk_a.get_by_role("button", name="Sit here", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(mine.filter(has_text="rt-web-desk-a")).to_have_count(0)


async def test_a_page_of_another_site_cannot_use_the_session(desks: Desks) -> None:
    """The signed-in browser opens another origin's page, which posts a form to the
    router and sends it requests by script: none of them changes anything.

    The attacker is the hardest case: another port on the same host, so the same
    *site* to the browser, which sends even a SameSite=Strict cookie along.  (A page
    of another host is stopped earlier: no cookie, and Chromium's local-network
    checks refuse its scripts' requests to loopback before they are sent.)  What
    stops it here is the router: the form and the no-cors request lack the page's
    header (403), and requests that set it need a CORS preflight never granted."""
    page = await desks.page()
    await sign_in(page, "401", "4711")
    await workplace(page, "Desk A").get_by_role("button", name="Sit here", exact=True).click()
    await expect(page.locator("#workplace-now")).to_have_text("You sit at Desk A.", timeout=WAIT_MS)
    base = desks.base
    attack = f"""<!doctype html><title>attack</title>
<form id="form" method="post" action="{base}/api/v1/logout" enctype="text/plain">
<input name='{{"extension":"401","x":"' value='"}}'></form>
<script>
const to = (path, options) => fetch("{base}" + path, {{credentials: "include", ...options}})
  .then((r) => r.status, () => "blocked");
Promise.all([
  to("/api/v1/login", {{method: "POST", mode: "no-cors", body: '{{"workplace":"desk-b"}}',
                        headers: {{"Content-Type": "text/plain"}}}}),
  to("/api/v1/login", {{method: "POST", body: '{{"workplace":"desk-b"}}',
                        headers: {{"Content-Type": "application/json",
                                   "X-Callrouter-Client": "web"}}}}),
  to("/api/v1/presence/client", {{method: "PUT",
      body: '{{"client_id":"evil","status":"dnd"}}',
      headers: {{"Content-Type": "application/json", "X-Callrouter-Client": "web"}}}}),
  to("/api/v1/me/desk", {{}}),
]).then((results) => {{
  console.log("results " + JSON.stringify(results));
  document.getElementById("form").submit();
}});
</script>"""

    async def serve_attack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = attack.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve_attack, "127.0.0.1", 0)
    attacker = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    desks.elsewhere.add(attacker)
    context = page.context
    evil = await context.new_page()
    said: list[str] = []
    evil.on(
        "console",
        lambda message: said.append(message.text) if message.text.startswith("results") else None,
    )
    async with evil.expect_navigation(url=f"{base}/api/v1/logout", timeout=WAIT_MS):
        await evil.goto(f"{attacker}/attack")
    server.close()
    # The form reached the router with the cookie, and was refused for the header.
    assert "X-Callrouter-Client" in await evil.content()
    # What the script got: an opaque answer (no-cors, the cookie withheld), and no
    # answer at all where it set the page's header or wanted to read (no CORS here).
    assert said == ['results [0,"blocked","blocked","blocked"]'], said
    snapshot = desks.running.router.live.snapshot
    assert snapshot.logins.get("401") == "desk-a"
    tracker = desks.running.router.presence.tracker
    assert "evil" not in tracker.client_statuses("401")
    # Dora's own page still works.
    await expect(page.locator("#workplace-now")).to_have_text("You sit at Desk A.")
    await workplace(page, "Desk A").get_by_role("button", name="Leave", exact=True).click()
    await expect(page.locator("#workplace-now")).to_have_text(
        "You sit at no workplace.", timeout=WAIT_MS
    )


PERSONAL_RULES = """
users:
  "401":
    followme:
      - {ring: [PJSIP/rt-web-dora]}
      - {ring: [PJSIP/rt-web-desk-b], switch: mobile}
"""


def forward_row(page: Page, kind: str) -> Locator:
    return page.get_by_role("list", name="Forwarding", exact=True).locator(
        f'li[data-kind="{kind}"]'
    )


async def test_forwarding_and_switches_set_by_keyboard_and_followed_live(desks: Desks) -> None:
    router = desks.running.router
    desks.rules.write_text(PERSONAL_RULES)
    await until(lambda: router.live.rules.users.get("401") is not None, "the new rules")
    page = await desks.page(viewport={"width": 390, "height": 844})  # a phone's screen
    await sign_in(page, "401", "4711")

    # My switches: the admin's name, on; Space turns it off (keyboard alone).
    mobile = page.get_by_role("switch", name="mobile", exact=True)
    await expect(mobile).to_be_checked(timeout=WAIT_MS)
    await expect(page.locator('li[data-switch="mobile"]')).to_contain_text("rt-web-desk-b")
    await mobile.focus()
    await page.keyboard.press("Space")
    await expect(page.locator("#switches-message")).to_have_text("mobile is off.", timeout=WAIT_MS)
    await expect(mobile).not_to_be_checked()
    await until(
        lambda: router.live.snapshot.switched_off == {"401": frozenset({"mobile"})}, "switch off"
    )
    assert "switched off by the user (mobile)" in await planned(desks, "401")

    # Forwarding: each kind off; type a target, Enter.
    busy = forward_row(page, "busy")
    await expect(busy).to_contain_text("When busy, off")
    await page.get_by_label("Forward When busy to", exact=True).fill("402")
    await page.keyboard.press("Enter")
    await expect(busy).to_contain_text("to 402 (yours)", timeout=WAIT_MS)
    await expect(page.locator("#forwarding-message")).to_have_text("When busy: forwarded to 402.")
    assert router.live.snapshot.forwards == {"401": {"busy": "402"}}

    # Refused: to oneself, and an external number (extensions only); nothing stored.
    for target, words in (("401", "oneself"), ("+4930123456", "extensions only")):
        await page.get_by_label("Forward Always to", exact=True).fill(target)
        await page.get_by_role("button", name="Set: Always", exact=True).click()
        await expect(page.locator("#forwarding-message")).to_contain_text(words, timeout=WAIT_MS)
    assert router.live.snapshot.forwards == {"401": {"busy": "402"}}

    # Changed elsewhere (here the admin's CLI would do the same): the page follows,
    # and what is being typed meanwhile stays in its field.
    always = page.get_by_label("Forward Always to", exact=True)
    await always.fill("40")
    await router.personal.service.set_forward("401", "dnd", "402", actor="admin", source="test")
    await expect(forward_row(page, "dnd")).to_contain_text("to 402 (yours)", timeout=WAIT_MS)
    await expect(always).to_have_value("40")

    await busy.get_by_role("button", name="Clear: When busy", exact=True).click()
    await expect(busy).to_contain_text("When busy, off", timeout=WAIT_MS)
    assert router.live.snapshot.forwards == {"401": {"dnd": "402"}}
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width

    german = await desks.page(locale="de-DE")
    await german.get_by_label("Durchwahl", exact=True).fill("401")
    await german.get_by_label("PIN", exact=True).fill("4711")
    await german.get_by_role("button", name="Anmelden", exact=True).click()
    await expect(german.get_by_role("heading", name="Umleitung", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(german.get_by_role("heading", name="Meine Schalter", exact=True)).to_be_visible()
    await expect(german.get_by_role("switch", name="mobile", exact=True)).not_to_be_checked()


# Dora's plan: her desk phone; an external-only entry; her mobile, which she may
# switch off and which must confirm; an office line in office hours only (alongside
# the desk phone, so that whether it rings now changes no other leg's times); and
# Emil when nobody answers.
PLAN_RULES = """
defaults: {timeout: 20, external_endpoint: "PJSIP/{number}@trunk"}
schedules:
  office-hours: {days: [mon-fri], hours: ["08:00-18:00"]}
users:
  "401":
    followme:
      - {ring: [PJSIP/rt-web-dora], timeout: 15}
      - {ring: ["+4930111222"], calls: external, delay: 5}
      - {ring: ["+4917012345678"], switch: mobile, delay: 10, confirm: true}
      - {ring: ["+4930999888"], when: office-hours, timeout: 15}
    forward: {no_answer: "402"}
"""


def legs_of(page: Page, who: str) -> Locator:
    return page.get_by_role("list", name=f"Phones that ring for {who}", exact=True).get_by_role(
        "listitem"
    )


async def test_how_my_calls_ring_internal_external_switched_off_and_then(desks: Desks) -> None:
    router = desks.running.router
    # "Now" is a Wednesday evening, after office hours, whenever the test runs.
    router.intake.local_time = lambda: datetime(2026, 12, 2, 19, 0).astimezone()
    desks.rules.write_text(PLAN_RULES)
    await until(lambda: router.live.rules.users.get("401") is not None, "the new rules")
    page = await desks.page(viewport={"width": 390, "height": 844})  # a phone's screen
    await sign_in(page, "401", "4711")
    await expect(page.get_by_role("heading", name="How my calls ring", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
    dora = legs_of(page, "Dora Lang (401)")
    mobile_leg = dora.filter(has_text="PJSIP/+4917012345678@trunk")
    external_leg = dora.filter(has_text="PJSIP/+4930111222@trunk")
    not_now = page.get_by_role("list", name="Not ringing now for Dora Lang (401)", exact=True)

    # An internal call (the default): the desk phone and the mobile (press 1); the
    # external-only entry does not apply, and says why.
    internal = page.get_by_role("radio", name="Internal call", exact=True)
    external = page.get_by_role("radio", name="External call", exact=True)
    await expect(internal).to_be_checked()
    await expect(dora.filter(has_text="PJSIP/rt-web-dora")).to_have_text(
        "PJSIP/rt-web-dora, 0\N{EN DASH}15 s, own phone", timeout=WAIT_MS
    )
    await expect(mobile_leg).to_have_text(
        "PJSIP/+4917012345678@trunk, 10\N{EN DASH}30 s, own phone, answer by pressing 1"
    )
    await expect(external_leg).to_have_count(0)
    await expect(not_now).to_contain_text("entry 2: external calls only")
    await expect(not_now).to_contain_text(
        "entry 4: when office-hours: not in the schedule (Wed 19:00)"
    )

    # An external call, by the keyboard: the external-only entry rings too.
    await internal.focus()
    await page.keyboard.press("ArrowRight")
    await expect(external).to_be_checked()
    await expect(external_leg).to_have_text(
        "PJSIP/+4930111222@trunk, 5\N{EN DASH}25 s, own phone", timeout=WAIT_MS
    )
    await expect(not_now).not_to_contain_text("external calls only")

    # When nobody answers: on to Emil, by his plan (his own phone).
    then = page.get_by_role("heading", name=re.compile("^When nobody answers"))
    await expect(then).to_have_text("When nobody answers: on to Emil Roth (402)")
    await expect(legs_of(page, "Emil Roth (402)")).to_have_text(
        ["PJSIP/rt-web-emil, 0\N{EN DASH}20 s, own phone"]
    )

    # The switch turned off on the page: the mobile's leg is gone and says why.
    await page.get_by_role("switch", name="mobile", exact=True).click()
    await expect(page.locator("#switches-message")).to_have_text("mobile is off.", timeout=WAIT_MS)
    await expect(mobile_leg).to_have_count(0, timeout=WAIT_MS)
    await expect(not_now).to_contain_text("entry 3: switched off by the user (mobile)")
    await expect(external_leg).to_be_visible()  # still the external call's plan

    # Another time: on a Sunday the office line does not ring, on a Wednesday
    # morning it does; "Now" goes back to the present.
    office_leg = dora.filter(has_text="PJSIP/+4930999888@trunk")
    at = page.get_by_label("At another time (optional)", exact=True)
    await at.fill("2026-12-06T12:00")
    await expect(not_now).to_contain_text(
        "entry 4: when office-hours: not in the schedule (Sun 12:00)", timeout=WAIT_MS
    )
    await expect(office_leg).to_have_count(0)
    await at.fill("2026-12-02T10:00")
    await expect(office_leg).to_have_text(
        "PJSIP/+4930999888@trunk, 0\N{EN DASH}15 s, own phone", timeout=WAIT_MS
    )
    await expect(not_now).not_to_contain_text("office-hours")
    await page.get_by_role("button", name="Show the plan for now", exact=True).click()
    await expect(at).to_have_value("")
    await expect(office_leg).to_have_count(0, timeout=WAIT_MS)  # back to Wednesday evening
    await expect(not_now).to_contain_text("(Wed 19:00)")

    # Changed elsewhere, for someone else: Emil sits down at Desk B, and Dora's page
    # shows his plan with the workplace's phone (told by the stream's directory event).
    await router.logins.login("402", "desk-b", actor="admin", source="test")
    await expect(legs_of(page, "Emil Roth (402)").filter(has_text="rt-web-desk-b")).to_contain_text(
        "workplace", timeout=WAIT_MS
    )

    # Forwarded always, on the page: the plan is Emil's, and says how it got there.
    await page.get_by_label("Forward Always to", exact=True).fill("402")
    await page.get_by_role("button", name="Set: Always", exact=True).click()
    forwarded = page.get_by_role("list", name="Forwarded to Emil Roth (402)", exact=True)
    await expect(forwarded).to_have_text("401 forwards always to 402 (yours)", timeout=WAIT_MS)
    await expect(dora).to_have_count(0)
    # Emil forwards back to Dora: the chain stops at him, and the page says why.
    personal = router.personal.service
    await personal.set_forward("402", "always", "401", actor="402", source="test")
    warnings = page.get_by_role("list", name="Warnings", exact=True)
    await expect(warnings).to_contain_text(
        "forwarding stopped, it would loop: 402 forwards always to 401", timeout=WAIT_MS
    )
    await expect(forwarded).to_have_text("401 forwards always to 402 (yours)")
    await personal.clear_forward("402", "always", actor="402", source="test")
    await expect(warnings).to_have_count(0, timeout=WAIT_MS)
    await page.get_by_role("button", name="Clear: Always", exact=True).click()
    await expect(forwarded).to_have_count(0, timeout=WAIT_MS)
    await expect(dora.filter(has_text="PJSIP/rt-web-dora")).to_be_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width

    german = await desks.page(locale="de-DE")
    await german.get_by_label("Durchwahl", exact=True).fill("401")
    await german.get_by_label("PIN", exact=True).fill("4711")
    await german.get_by_role("button", name="Anmelden", exact=True).click()
    await expect(
        german.get_by_role("heading", name="Wie meine Anrufe klingeln", exact=True)
    ).to_be_visible(timeout=WAIT_MS)
    await german.get_by_role("radio", name="Externer Anruf", exact=True).check()
    german_legs = german.get_by_role(
        "list", name="Telefone, die für Dora Lang (401) klingeln", exact=True
    )
    await expect(german_legs.get_by_role("listitem").filter(has_text="+4930111222")).to_have_text(
        "PJSIP/+4930111222@trunk, 5\N{EN DASH}25 s, eigenes Telefon", timeout=WAIT_MS
    )
    await expect(
        german.get_by_role("list", name="Klingelt jetzt nicht für Dora Lang (401)", exact=True)
    ).to_contain_text("Eintrag 3: vom Benutzer ausgeschaltet (mobile)")
    await expect(
        german.get_by_role("heading", name="Wenn niemand annimmt: weiter zu Emil Roth (402)")
    ).to_be_visible()
