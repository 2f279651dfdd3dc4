"""The AMI client's AstDB actions against the real Asterisk's own answers."""

from __future__ import annotations

from callrouter.ami.client import AmiClient
from sandbox.asterisk import AsteriskSandbox


async def test_deleting_a_missing_key_is_not_an_error(asterisk: AsteriskSandbox) -> None:
    client = AmiClient(
        asterisk.ami_host,
        asterisk.ami_port,
        asterisk.ami_user,
        asterisk.ami_secret,
        events=(),
    )
    await client.start()
    try:
        await client.db_put("callrouter-e2e", "901", "PJSIP/nobody")
        assert await client.db_del("callrouter-e2e", "901") is True
        # Asterisk 22 says "Database entry could not be deleted" here.
        assert await client.db_del("callrouter-e2e", "901") is False
        assert await client.db_deltree("callrouter-e2e") is False
    finally:
        await client.close()
