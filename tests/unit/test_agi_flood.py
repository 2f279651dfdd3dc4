"""The security review's flood, on the real AgiServer on loopback: 300 connections,
each reopened as soon as it is closed, from the address Asterisk uses too, while 16
real feature-code sessions (their channels pass the check) come in; every real one is
served and the log stays a few lines long.

The flood and the real sessions run in processes of their own, as a local attacker
and Asterisk do: in the server's own event loop they would be served by its turns,
and the real sessions would not send their environment the moment they connect, as
Asterisk does.  Before the channel check, the caps and the accepting-only-as-fast-as-
checks-are-done, the idle flood alone served 0 of 16 and wrote 11,478 lines in 8 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import pytest

from callrouter.agi import AgiServer, AgiSession

REAL_SESSIONS = 16
FLOOD = 300

# The attacker: FLOOD connections, each reopened as soon as it closes, until killed.
#   idle      connect and send nothing
#   forged    a forged environment naming a workplace phone, then silence
#   answering a forged environment, and "200 result=0" to every command at once
FLOODER = r"""
import asyncio, sys
port, n, variant = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ENV = ("agi_network: yes\nagi_network_script: workplace-login\n"
       "agi_request: agi://127.0.0.1/workplace-login\n"
       "agi_channel: PJSIP/office2-desk-0000001a\nagi_uniqueid: 1700000000.{k}\n"
       "agi_arg_1: *44\n\n")
async def one(i):
    k = 0
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.001)
            continue
        k += 1
        try:
            if variant != "idle":
                writer.write(ENV.format(k=i * 1_000_000 + k).encode())
            if variant == "answering":
                while await reader.readline():
                    writer.write(b"200 result=0\n")
            else:
                await reader.read()
        except OSError:
            pass
        writer.close()
async def main():
    await asyncio.gather(*(one(i) for i in range(n)))
asyncio.run(main())
"""

# Asterisk: REAL_SESSIONS FastAGI sessions, GAP s apart, each from its own thread:
# connect, send the whole environment at once, answer every command with "200
# result=0" until the server closes; prints what each one got, as JSON.
ASTERISK = r"""
import json, socket, sys, threading, time
port, n, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ENV = ("agi_network: yes\nagi_network_script: workplace-login\n"
       "agi_request: agi://127.0.0.1/workplace-login\n"
       "agi_channel: PJSIP/desk{i}-0000002{i:x}\nagi_uniqueid: 1732800000.{i}\n"
       "agi_arg_1: *44\n\n")
results = {}
def call(i):
    started = time.monotonic()
    commands = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(ENV.format(i=i).encode())
            stream = sock.makefile("rb")
            while line := stream.readline():
                commands.append(line.decode().strip())
                sock.sendall(b"200 result=0\n")
    except OSError as exc:
        commands.append(repr(exc))
    results[i] = {"commands": commands, "ms": round((time.monotonic() - started) * 1000)}
threads = []
for i in range(n):
    threads.append(threading.Thread(target=call, args=(i,)))
    threads[-1].start()
    time.sleep(gap)
for thread in threads:
    thread.join()
print(json.dumps(results))
"""

DIALOGUE = ["ANSWER", 'STREAM FILE agent-loggedoff ""', 'STREAM FILE goodbye ""', "HANGUP"]


@pytest.mark.parametrize("variant", ["idle", "forged", "answering"])
async def test_a_flood_from_asterisks_address_does_not_starve_real_calls_nor_fill_the_log(
    variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter.agi")
    served: list[str] = []

    async def check(channel: str, uniqueid: str) -> bool:
        await asyncio.sleep(0.002)  # about what GET /channels/{id} takes on loopback
        return uniqueid.startswith("1732800000.")

    async def feature_code(session: AgiSession) -> None:  # a logout, as FeatureCodes says it
        assert session.channel_verified
        await session.answer()
        await session.stream_file("agent-loggedoff")
        await session.stream_file("goodbye")
        await session.hangup()
        served.append(session.request.uniqueid)

    async def refused(session: AgiSession) -> None:
        await session.answer()
        await session.stream_file("feature-not-avail-line")
        await session.stream_file("goodbye")
        await session.hangup()

    server = AgiServer(
        {"workplace-login": feature_code}, port=0, channel_check=check, on_refused=refused
    )
    await server.start()
    flood = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOODER, str(server.port), str(FLOOD), variant
    )
    try:
        async with asyncio.timeout(20):  # the flood is on: every connection came in once
            while server.stats["connections"] < FLOOD:
                await asyncio.sleep(0.05)
        started = time.monotonic()
        asterisk = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ASTERISK,
            str(server.port),
            str(REAL_SESSIONS),
            "0.2",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(asterisk.communicate(), 60)
        seconds = time.monotonic() - started
    finally:
        flood.kill()
        await flood.wait()
        await server.close(grace=0)
    results = json.loads(out)
    records = [r for r in caplog.records if r.name.startswith("callrouter.agi")]

    failed = {i: r for i, r in results.items() if r["commands"] != DIALOGUE}
    assert not failed, f"real sessions not served ({dict(server.stats)}): {failed}"
    assert sorted(served) == sorted(f"1732800000.{i}" for i in range(REAL_SESSIONS))
    # The flood was one: each of its connections closed and reopened, several times.
    assert server.stats["connections"] > 3 * FLOOD
    # A few lines per reason (5) and 10 s, and one line with the count of the rest.
    assert len(records) <= 40, [r.getMessage() for r in records]
    print(
        f"{variant}: {REAL_SESSIONS}/{REAL_SESSIONS} real sessions served in {seconds:.1f} s "
        f"(slowest {max(r['ms'] for r in results.values())} ms) among "
        f"{server.stats['connections']:,} connections; {len(records)} log lines; "
        f"{dict(server.stats)}"
    )
