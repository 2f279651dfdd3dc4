"""The sandbox works: ARI and AMI answer, phones ring, answer, get CANCEL and BYE,
and callrouter.conf's fallback (no router running) rings the phones from AstDB."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from sandbox.asterisk import AsteriskSandbox, Endpoint
from sandbox.phones import CallFailed

from .conftest import MakePhones


def ari(asterisk: AsteriskSandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=asterisk.ari_url, timeout=5.0, auth=(asterisk.ari_user, asterisk.ari_password)
    )


async def test_ari_answers(asterisk: AsteriskSandbox) -> None:
    async with ari(asterisk) as client:
        response = await client.get("/asterisk/info")
    assert response.status_code == 200, response.text
    assert set(response.json()) >= {"build", "system", "config", "status"}


async def test_ari_rejects_a_wrong_password(asterisk: AsteriskSandbox) -> None:
    async with httpx.AsyncClient(auth=(asterisk.ari_user, "change-me")) as client:
        response = await client.get(f"{asterisk.ari_url}/asterisk/info")
    assert response.status_code == 401


async def ami_exchange(asterisk: AsteriskSandbox, secret: str) -> dict[str, str]:
    """Log in with a raw socket; return the login response's fields."""
    reader, writer = await asyncio.open_connection(asterisk.ami_host, asterisk.ami_port)
    try:
        async with asyncio.timeout(5):
            banner = await reader.readline()
            assert banner.startswith(b"Asterisk Call Manager/"), banner
            writer.write(
                f"Action: Login\r\nActionID: login-1\r\nUsername: {asterisk.ami_user}"
                f"\r\nSecret: {secret}\r\nEvents: off\r\n\r\n".encode()
            )
            await writer.drain()
            fields: dict[str, str] = {}
            while line := (await reader.readline()).decode().strip():
                key, _, value = line.partition(": ")
                fields[key] = value
            if fields.get("Response") == "Success":
                writer.write(b"Action: Logoff\r\nActionID: logoff-1\r\n\r\n")
                await writer.drain()
            return fields
    finally:
        writer.close()
        await writer.wait_closed()


async def test_ami_login(asterisk: AsteriskSandbox) -> None:
    good = await ami_exchange(asterisk, asterisk.ami_secret)
    assert good["Response"] == "Success", good
    assert good["ActionID"] == "login-1"
    bad = await ami_exchange(asterisk, "change-me")
    assert bad["Response"] == "Error", bad


async def test_ari_originate_into_native_dial_rings_both_phones(
    asterisk: AsteriskSandbox, make_phones: MakePhones
) -> None:
    ringing, answering = await make_phones("smoke-ring1", "smoke-answer1")
    ringing.ring()
    answering.answer(after=0.3)
    asterisk.db_put("native", "701", "PJSIP/smoke-ring1&PJSIP/smoke-answer1")
    async with ari(asterisk) as client:
        response = await client.post(
            "/channels",
            params={
                "endpoint": "Local/701@bench-native",
                "context": "sandbox-hold",
                "extension": "s",
                "priority": "1",
                "timeout": "30",
            },
        )
        assert response.status_code == 200, response.text
        channel = response.json()["id"]
        invite_a = await ringing.wait_for("INVITE")
        invite_b = await answering.wait_for("INVITE")
        assert abs(invite_a.time - invite_b.time) < 0.5  # both ring together
        await answering.wait_for("ACK")  # the 200 OK was taken
        cancel = await ringing.wait_for("CANCEL")
        await ringing.wait_for("487", direction="out")
        assert cancel.call_id == invite_a.call_id
        assert answering.last_call is not None and answering.last_call.state == "confirmed"
        response = await client.delete(f"/channels/{channel}")
        assert response.status_code == 204, response.text
    bye = await answering.wait_for("BYE")
    assert bye.call_id == invite_b.call_id
    assert ringing.matching("BYE") == []


async def test_phone_call_without_router_uses_the_astdb_fallback(
    asterisk: AsteriskSandbox, make_phones: MakePhones
) -> None:
    caller, first, second = await make_phones("smoke-caller2", "smoke-a2", "smoke-b2")
    first.answer(after=0.2)
    second.ring()
    asterisk.db_put("callrouter", "702", "PJSIP/smoke-a2&PJSIP/smoke-b2")
    call = await caller.call("702", asterisk.sip_port)
    await call.wait_answered()
    await second.wait_for("CANCEL")
    invite = await first.wait_for("INVITE")
    assert "smoke-caller2" in invite.message.require("From")  # identified as the endpoint
    await call.send_dtmf("12#")
    assert len(caller.matching("200", method="INFO")) == 3
    await call.hangup()
    await first.wait_for("BYE")
    await call.wait_ended()


@pytest.mark.parametrize(
    ("extension", "dial", "behaviour", "status"),
    [
        ("703", "PJSIP/smoke-p3", "ring", 480),  # NOANSWER: prompt, then 480
        ("704", "", "ring", 480),  # NOPHONES: no AstDB entry
        ("705", "PJSIP/smoke-p3", "busy", 486),  # BUSY: Busy()
    ],
)
async def test_fallback_results(
    asterisk: AsteriskSandbox,
    make_phones: MakePhones,
    extension: str,
    dial: str,
    behaviour: str,
    status: int,
) -> None:
    caller, phone = await make_phones(f"smoke-caller{extension}", "smoke-p3")
    phone.busy() if behaviour == "busy" else phone.ring()
    asterisk.db_del("callrouter", extension)
    if dial:
        asterisk.db_put("callrouter", extension, dial)
        asterisk.db_put("callrouter-timeout", extension, "1")
    call = await caller.call(extension, asterisk.sip_port)
    with pytest.raises(CallFailed) as failed:
        await call.wait_answered(timeout=20)
    assert failed.value.status == status
    if dial and behaviour == "ring":
        await phone.wait_for("CANCEL")


async def test_second_sandbox_runs_beside_the_first_and_restarts(asterisk: AsteriskSandbox) -> None:
    second = AsteriskSandbox(asterisk.root, verbose=0)
    assert {second.http_port, second.ami_port, second.sip_port}.isdisjoint(
        {asterisk.http_port, asterisk.ami_port, asterisk.sip_port}
    )
    async with second:
        second.add_phones({"restart-phone": 19999})
        second.db_put("native", "800", "PJSIP/restart-phone")
        await second.restart_async()
        assert "restart-phone" in await second.cli_async("pjsip show endpoints")
        assert second.db_get("native", "800") == "PJSIP/restart-phone"
        pid_dir = second.run_dir
    assert not pid_dir.exists()
    assert not second.running
    async with ari(asterisk) as client:  # the first one did not notice
        assert (await client.get("/asterisk/info")).status_code == 200


async def test_two_stars_reach_native_dial_and_the_callee_hangs_up(
    asterisk: AsteriskSandbox, make_phones: MakePhones
) -> None:
    caller, callee = await make_phones("smoke-caller6", "smoke-callee6")
    callee.answer()
    asterisk.db_put("native", "706", "PJSIP/smoke-callee6")
    call = await caller.call("**706", asterisk.sip_port)
    await call.wait_answered()
    incoming = await callee.wait_for_call()
    await callee.wait_for("ACK")
    await incoming.hangup()
    assert callee.matching("200", method="BYE")  # Asterisk took the BYE
    await caller.wait_for("BYE")
    await call.wait_ended()
    assert call.ended_by == "remote"


async def test_admin_override_of_callrouter_result(
    asterisk: AsteriskSandbox, make_phones: MakePhones
) -> None:
    """What callrouter.conf documents: extensions added to [callrouter-result] with
    ``(+)`` win over the included defaults."""
    (caller,) = await make_phones("smoke-caller7")
    asterisk.db_del("callrouter", "707")  # NOPHONES, by default 480
    asterisk.set_dialplan(
        "[callrouter-result](+)\n"
        "exten => 707,1,NoOp(override ${CALLROUTER_RESULT})\n"
        " same => n,Busy(5)\n"
    )
    try:
        call = await caller.call("707", asterisk.sip_port)
        with pytest.raises(CallFailed) as failed:
            await call.wait_answered()
        assert failed.value.status == 486
    finally:
        asterisk.set_dialplan("")


def test_endpoints_for_other_user_agents(asterisk: AsteriskSandbox) -> None:
    """add_endpoints (the SIPp benchmark's): with or without a contact, extra options."""
    asterisk.add_endpoints(
        [
            Endpoint("smoke-uac", None, {"send_connected_line": "no"}),
            Endpoint("smoke-uas", 15999),
        ]
    )
    try:
        uac = asterisk.cli("pjsip show endpoint smoke-uac")
        assert re.search(r"send_connected_line\s*:\s*no", uac), uac
        assert "sip:smoke-uac@" not in asterisk.cli("pjsip show aor smoke-uac")
        uas = asterisk.cli("pjsip show endpoint smoke-uas")
        assert re.search(r"send_connected_line\s*:\s*yes", uas), uas
        assert "sip:smoke-uas@127.0.0.1:15999" in asterisk.cli("pjsip show aor smoke-uas")
        assert set(asterisk.endpoints) >= {"smoke-uac", "smoke-uas"}
        with pytest.raises(ValueError):
            asterisk.add_endpoints([Endpoint("smoke-bad", None, {"context": "x\n[evil]"})])
    finally:
        asterisk.remove_endpoints(["smoke-uac", "smoke-uas"])
    assert "Unable to find object" in asterisk.cli("pjsip show endpoint smoke-uac")
    assert asterisk.pid is not None and asterisk.pid > 0
