"""The presence resync on the fake AMI: a device state that changes while the lists
are read is not lost (with several Asterisks, remote states arrive at any time)."""

from __future__ import annotations

import asyncio

from callrouter.ami.client import AmiClient
from callrouter.ami.protocol import AmiMessage
from callrouter.domain.directory import DirectorySnapshot, User
from callrouter.domain.presence import DeviceState
from callrouter.presence.live import AMI_EVENTS, PresenceService
from callrouter.presence.tracker import PresenceTracker
from tests.fakes.fake_ami import FakeAmi, Reply, event_list

SNAPSHOT = DirectorySnapshot(
    users={"601": User("601", "Nina", phones=("PJSIP/desk-a", "PJSIP/desk-b"))}
)


async def test_a_state_that_arrives_during_the_resync_outlives_it() -> None:
    fake = FakeAmi()
    fake.set_handler(
        "DeviceStateList",
        lambda a: event_list(
            a,
            "DeviceStateChange",
            [{"Device": "PJSIP/desk-b", "State": "INUSE"}],
            "DeviceStateListComplete",
        ),
    )

    async def endpoints(action: AmiMessage) -> Reply:
        # Between the two lists, node B's phone is hung up (a newer state than the
        # first list's) and node A's comes up: the events come before the answer.
        await fake.push_event("DeviceStateChange", Device="PJSIP/desk-b", State="NOT_INUSE")
        await fake.push_event("DeviceStateChange", Device="PJSIP/desk-x", State="NOT_INUSE")
        return event_list(
            action,
            "EndpointList",
            [{"ObjectName": "desk-a", "DeviceState": "Not in use"}],
            "EndpointListComplete",
        )

    fake.set_handler("PJSIPShowEndpoints", endpoints)
    await fake.start()
    ami = AmiClient(
        fake.host, fake.port, fake.username, fake.secret, events=AMI_EVENTS, ping_interval=None
    )
    tracker = PresenceTracker(SNAPSHOT)
    service = PresenceService(tracker, ami, publish=False)
    try:
        service.start()
        await ami.start()
        await service.resync()
        assert tracker.device_state("PJSIP/desk-a") is DeviceState.NOT_INUSE
        assert tracker.device_state("PJSIP/desk-b") is DeviceState.NOT_INUSE  # not INUSE
        assert tracker.device_state("PJSIP/desk-x") is DeviceState.NOT_INUSE
        nina = tracker.user("601")
        assert nina is not None and not nina.phone.on_call
        # After the resync, events apply as before and nothing is recorded any more.
        await fake.push_event("DeviceStateChange", Device="PJSIP/desk-b", State="INUSE")
        for _ in range(100):
            if tracker.device_state("PJSIP/desk-b") is DeviceState.INUSE:
                break
            await asyncio.sleep(0.01)
        assert tracker.user("601").phone.on_call  # type: ignore[union-attr]
    finally:
        await service.close()
        await ami.close()
        await fake.close()
