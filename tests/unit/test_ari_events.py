"""ARI event parsing: real-looking Asterisk 22 frames in, typed values out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrouter.ari import (
    AriEvent,
    AriProtocolError,
    Bridge,
    Channel,
    DeviceState,
    Endpoint,
    channel_ids,
    parse_event,
    routing_ids,
)

CALLER = """{
  "id": "1764331200.41", "name": "Local/201@callrouter-00000007;2", "state": "Ring",
  "protocol_id": "",
  "caller": {"name": "Alice Caller", "number": "0301234567"},
  "connected": {"name": "", "number": ""},
  "accountcode": "",
  "dialplan": {"context": "callrouter", "exten": "201", "priority": 2,
               "app_name": "Stasis", "app_data": "callrouter,201"},
  "creationtime": "2025-11-28T12:00:00.101+0000", "language": "en",
  "caller_rdnis": ""
}"""

LEG = """{
  "id": "cr-0f3a9c1d2b4e5f60", "name": "PJSIP/phone1-00000003", "state": "%s",
  "protocol_id": "a84d1c2e-5b7f-4e0a-9d3c-2f1e6b8a7c90",
  "caller": {"name": "", "number": ""},
  "connected": {"name": "Alice Caller", "number": "0301234567"},
  "accountcode": "",
  "dialplan": {"context": "default", "exten": "s", "priority": 1,
               "app_name": "AppDial2", "app_data": "(Outgoing Line)"},
  "creationtime": "2025-11-28T12:00:00.158+0000", "language": "en"
}"""

HEAD = '"asterisk_id": "52:54:00:12:34:56", "application": "callrouter"'
TS = '"timestamp": "2025-11-28T12:00:00.160+0000"'

BRIDGE = """{
  "id": "cr-b-77aa01c2d3e4f506", "technology": "simple_bridge", "bridge_type": "mixing",
  "bridge_class": "stasis", "creator": "Stasis", "name": "",
  "channels": ["1764331200.41", "cr-0f3a9c1d2b4e5f60"],
  "creationtime": "2025-11-28T12:00:01.020+0000", "video_mode": "none"
}"""


def frame(event_type: str, body: str) -> str:
    return f'{{"type": "{event_type}", {TS}, {body}, {HEAD}}}'


CALLER_CHANNEL = Channel(
    id="1764331200.41",
    name="Local/201@callrouter-00000007;2",
    state="Ring",
    caller_name="Alice Caller",
    caller_number="0301234567",
    context="callrouter",
    exten="201",
    priority=2,
    app_name="Stasis",
    app_data="callrouter,201",
)


def leg(state: str) -> Channel:
    return Channel(
        id="cr-0f3a9c1d2b4e5f60",
        name="PJSIP/phone1-00000003",
        state=state,
        connected_name="Alice Caller",
        connected_number="0301234567",
        context="default",
        exten="s",
        priority=1,
        app_name="AppDial2",
        app_data="(Outgoing Line)",
    )


# (frame, expected fields other than type/application/timestamp, expected channel_ids)
CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    (
        "StasisStart",
        f'"args": ["201"], "channel": {CALLER}',
        {"channel": CALLER_CHANNEL, "args": ("201",)},
        ("1764331200.41",),
    ),
    (
        "StasisStart",  # a channel the router created: no args
        f'"args": [], "channel": {LEG % "Down"}',
        {"channel": leg("Down"), "args": ()},
        ("cr-0f3a9c1d2b4e5f60",),
    ),
    (
        "StasisEnd",
        f'"channel": {CALLER}',
        {"channel": CALLER_CHANNEL},
        ("1764331200.41",),
    ),
    (
        "ChannelStateChange",
        f'"channel": {LEG % "Ringing"}',
        {"channel": leg("Ringing")},
        ("cr-0f3a9c1d2b4e5f60",),
    ),
    (
        "ChannelStateChange",
        f'"channel": {LEG % "Up"}',
        {"channel": leg("Up")},
        ("cr-0f3a9c1d2b4e5f60",),
    ),
    (
        "ChannelDestroyed",
        f'"cause": 17, "cause_txt": "User busy", "tech_cause": 486, "channel": {LEG % "Busy"}',
        {"channel": leg("Busy"), "cause": 17, "cause_txt": "User busy"},
        ("cr-0f3a9c1d2b4e5f60",),
    ),
    (
        "ChannelDestroyed",  # timeout: Asterisk may report cause 0
        f'"cause": 0, "cause_txt": "Unknown", "channel": {LEG % "Down"}',
        {"channel": leg("Down"), "cause": 0, "cause_txt": "Unknown"},
        ("cr-0f3a9c1d2b4e5f60",),
    ),
    (
        "Dial",
        f'"caller": {CALLER}, "peer": {LEG % "Ringing"}, "dialstring": "phone1", '
        '"dialstatus": "RINGING"',
        {
            "channel": CALLER_CHANNEL,
            "peer": leg("Ringing"),
            "dialstatus": "RINGING",
            "dialstring": "phone1",
        },
        ("1764331200.41", "cr-0f3a9c1d2b4e5f60"),
    ),
    (
        "Dial",  # dial without a caller: only the peer
        f'"peer": {LEG % "Down"}, "dialstring": "phone1", "dialstatus": ""',
        {"peer": leg("Down"), "dialstatus": "", "dialstring": "phone1"},
        ("cr-0f3a9c1d2b4e5f60",),
    ),
    (
        "ChannelHangupRequest",
        f'"cause": 16, "soft": false, "channel": {CALLER}',
        {"channel": CALLER_CHANNEL, "cause": 16},
        ("1764331200.41",),
    ),
    (
        "ChannelHangupRequest",  # without a cause (soft hangup)
        f'"soft": true, "channel": {CALLER}',
        {"channel": CALLER_CHANNEL},
        ("1764331200.41",),
    ),
    (
        "ChannelDtmfReceived",
        f'"digit": "#", "duration_ms": 120, "channel": {CALLER}',
        {"channel": CALLER_CHANNEL, "digit": "#"},
        ("1764331200.41",),
    ),
    (
        "ChannelEnteredBridge",
        f'"bridge": {BRIDGE}, "channel": {LEG % "Up"}',
        {"channel": leg("Up"), "bridge_id": "cr-b-77aa01c2d3e4f506"},
        ("cr-0f3a9c1d2b4e5f60",),
    ),
    (
        "BridgeDestroyed",
        f'"bridge": {BRIDGE}',
        {"bridge_id": "cr-b-77aa01c2d3e4f506"},
        (),
    ),
    (
        "DeviceStateChanged",
        '"device_state": {"name": "PJSIP/phone1", "state": "RINGING"}',
        {"device": DeviceState(name="PJSIP/phone1", state="RINGING")},
        (),
    ),
    (
        "EndpointStateChange",
        '"endpoint": {"technology": "PJSIP", "resource": "phone2", "state": "offline", '
        '"channel_ids": []}',
        {"endpoint": Endpoint(technology="PJSIP", resource="phone2", state="offline")},
        (),
    ),
]


@pytest.mark.parametrize(
    ("event_type", "body", "expected", "ids"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_parse_event_table(
    event_type: str, body: str, expected: dict[str, Any], ids: tuple[str, ...]
) -> None:
    text = frame(event_type, body)
    event = parse_event(text)
    assert event == AriEvent(
        type=event_type,
        application="callrouter",
        timestamp="2025-11-28T12:00:00.160+0000",
        **expected,
    )
    assert channel_ids(event) == ids
    assert event.raw == json.loads(text)
    assert parse_event(text.encode()) == event  # bytes frames parse the same


def test_routing_ids_add_the_bridge_after_the_channels() -> None:
    event = parse_event(frame("ChannelEnteredBridge", f'"bridge": {BRIDGE}, "channel": {CALLER}'))
    assert routing_ids(event) == ("1764331200.41", "cr-b-77aa01c2d3e4f506")
    bridge_only = parse_event(frame("BridgeDestroyed", f'"bridge": {BRIDGE}'))
    assert routing_ids(bridge_only) == ("cr-b-77aa01c2d3e4f506",)


def test_event_raw_is_read_only_and_the_event_is_hashable() -> None:
    event = parse_event(frame("StasisEnd", f'"channel": {CALLER}'))
    with pytest.raises(TypeError):
        event.raw["type"] = "changed"  # type: ignore[index]
    assert hash(event) == hash(parse_event(frame("StasisEnd", f'"channel": {CALLER}')))


def test_message_without_application_parses() -> None:
    # MissingParams is a Message, not an Event: no application, no timestamp
    event = parse_event('{"type": "MissingParams", "params": ["app"]}')
    assert event == AriEvent(type="MissingParams")


def test_resource_models_from_json() -> None:
    assert Bridge.from_json(json.loads(BRIDGE)) == Bridge(
        id="cr-b-77aa01c2d3e4f506",
        technology="simple_bridge",
        bridge_type="mixing",
        bridge_class="stasis",
        creator="Stasis",
        channels=("1764331200.41", "cr-0f3a9c1d2b4e5f60"),
    )
    assert Channel.from_json({"id": "x"}) == Channel(id="x")


BAD_FRAMES = [
    ('{"type": "StasisStart", "channel": ', "not JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    ("", "not JSON"),
    ('["StasisStart"]', "JSON list, not an object"),
    ('{"application": "callrouter"}', "no 'type' string"),
    ('{"type": 7}', "no 'type' string"),
    ('{"type": "StasisStart", "channel": "1764331200.41"}', "channel is a JSON str"),
    ('{"type": "StasisStart", "channel": {"name": "PJSIP/x"}}', "channel has no 'id'"),
    ('{"type": "StasisStart", "args": "201", "channel": {"id": "a"}}', "'args' is not a list"),
    ('{"type": "ChannelDestroyed", "cause": "16", "channel": {"id": "a"}}', "not an integer"),
    ('{"type": "ChannelDestroyed", "cause": true, "channel": {"id": "a"}}', "not an integer"),
    ('{"type": "BridgeDestroyed", "bridge": {}}', "bridge has no 'id'"),
    ('{"type": "Dial", "peer": [], "dialstatus": ""}', "channel is a JSON list"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_FRAMES)
def test_garbled_frames_raise_a_clear_protocol_error(text: str | bytes, reason: str) -> None:
    with pytest.raises(AriProtocolError) as info:
        parse_event(text)
    assert reason in str(info.value)
    assert (
        info.value.excerpt
        == (text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text)[:200]
    )


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_event_raises_only_protocol_errors(text: str | bytes) -> None:
    try:
        event = parse_event(text)
    except AriProtocolError:
        return
    assert event.type


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["type", "channel", "peer", "caller", "bridge", "id", "args", "cause", "x"]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_shape_parses_or_raises_a_protocol_error(value: object) -> None:
    try:
        event = parse_event(json.dumps(value))
    except AriProtocolError:
        return
    assert isinstance(value, dict)
    assert event.type == value["type"]
