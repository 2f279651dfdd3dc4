"""The ARI client held to Asterisk's own API description (``rest-api/*.json``, Asterisk 22).

Every convenience method of :class:`AriClient` is driven, with every optional argument
given, against the fake ARI; each request it makes must be an operation of the api-docs
(HTTP method + path template), with only parameters that operation declares (query and
body), its required parameters present and values of the declared type and range. The
websocket URL is checked against ``GET /events``, and the event and model fields the
parser reads against ``events.json`` and the resource models.

The JSON files come from the sandbox Asterisk's root filesystem (``sandbox.asterisk``).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest

from callrouter.ari import AriClient, HangupReason
from tests.fakes import FakeAri, RecordedRequest

pytestmark = pytest.mark.e2e

# Coroutine methods of AriClient that are not REST calls of their own.
NOT_REST = {"start", "close", "wait_connected", "request", "reconnect", "stop_listening"}


@dataclass(frozen=True)
class Operation:
    method: str
    template: str  # e.g. /channels/{channelId}/dial
    nickname: str
    params: dict[str, dict[str, Any]]  # name -> parameter description
    regex: re.Pattern[str]
    literal_segments: int

    def of_type(self, param_type: str) -> dict[str, dict[str, Any]]:
        return {n: p for n, p in self.params.items() if p["paramType"] == param_type}


@dataclass(frozen=True)
class ApiDocs:
    operations: list[Operation]
    models: dict[str, dict[str, Any]]  # model id -> model description

    def find(self, method: str, path: str) -> Operation | None:
        """The most specific operation for ``method path`` (/channels/create beats {id})."""
        matches = [op for op in self.operations if op.method == method and op.regex.match(path)]
        return max(matches, key=lambda op: op.literal_segments, default=None)


@pytest.fixture(scope="module")
def api_docs() -> ApiDocs:
    from sandbox.asterisk import SandboxUnavailable, ensure_rootfs
    from tests.e2e.conftest import e2e_required

    try:
        root = Path(ensure_rootfs())
    except SandboxUnavailable as exc:
        if e2e_required():
            pytest.fail(f"sandbox Asterisk unavailable (required here): {exc.reason}")
        pytest.skip(f"sandbox Asterisk unavailable: {exc.reason}")
    return load_api_docs(root / "usr/share/asterisk/rest-api")


def load_api_docs(directory: Path) -> ApiDocs:
    resources = json.loads((directory / "resources.json").read_text(encoding="utf-8"))
    operations: list[Operation] = []
    models: dict[str, dict[str, Any]] = {}
    for resource in resources["apis"]:
        # "/api-docs/channels.{format}" -> channels.json
        name = resource["path"].rsplit("/", 1)[1].replace(".{format}", ".json")
        doc = json.loads((directory / name).read_text(encoding="utf-8"))
        models.update(doc.get("models", {}))
        for api in doc["apis"]:
            template = api["path"]
            segments = template.strip("/").split("/")
            regex = re.compile(
                "^"
                + "".join("/[^/]+" if s.startswith("{") else "/" + re.escape(s) for s in segments)
                + "$"
            )
            literal = sum(not s.startswith("{") for s in segments)
            for op in api["operations"]:
                operations.append(
                    Operation(
                        method=op["httpMethod"],
                        template=template,
                        nickname=op["nickname"],
                        params={p["name"]: p for p in op.get("parameters", [])},
                        regex=regex,
                        literal_segments=literal,
                    )
                )
    assert len(operations) > 50, f"api-docs in {directory} look incomplete"
    return ApiDocs(operations, models)


# Operations whose body *is* their one body parameter (Asterisk's generated code reads
# ``args.filter = body``), with the keys their notes document.
WHOLE_BODY_KEYS = {"filter": {"allowed", "disallowed"}}


def problems_with(request: RecordedRequest, docs: ApiDocs) -> list[str]:
    """Everything about ``request`` that the api-docs do not allow."""
    where = f"{request.method} {request.path}"
    op = docs.find(request.method, request.path)
    if op is None:
        return [f"{where}: no such operation in the api-docs"]
    problems: list[str] = []
    declared_query = op.of_type("query")
    for name, values in request.query.items():
        spec = declared_query.get(name)
        if spec is None:
            problems.append(
                f"{where} ({op.nickname}): query parameter {name!r} is not declared "
                f"(declared: {sorted(declared_query)})"
            )
            continue
        for value in values:
            problems += [f"{where} ({op.nickname}): {p}" for p in value_problems(spec, value)]
    for name, spec in declared_query.items():
        if spec.get("required") and name not in request.query:
            problems.append(f"{where} ({op.nickname}): required query parameter {name!r} missing")
    declared_body = op.of_type("body")
    whole = WHOLE_BODY_KEYS.get(op.nickname)
    if whole is not None:  # the body is the one parameter itself, with these keys
        if not isinstance(request.body, dict) or not set(request.body) <= whole:
            problems.append(f"{where} ({op.nickname}): body must be an object of {sorted(whole)}")
    elif request.body is not None:
        if not isinstance(request.body, dict):
            problems.append(f"{where}: JSON body is not an object")
        else:
            for key in request.body:
                if key not in declared_body:
                    problems.append(
                        f"{where} ({op.nickname}): body field {key!r} is not declared "
                        f"(declared: {sorted(declared_body)})"
                    )
    for name, spec in declared_body.items():
        if spec.get("required") and (
            not isinstance(request.body, dict) or name not in request.body
        ):
            problems.append(f"{where} ({op.nickname}): required body field {name!r} missing")
    return problems


def value_problems(spec: dict[str, Any], value: str) -> list[str]:
    name, data_type = spec["name"], spec["dataType"]
    items = value.split(",") if spec.get("allowMultiple") else [value]
    problems: list[str] = []
    for item in items:
        if data_type in ("int", "long"):
            if not re.fullmatch(r"-?\d+", item):
                problems.append(f"{name}={item!r} is not an {data_type}")
                continue
        elif data_type == "boolean" and item not in ("true", "false"):
            problems.append(f"{name}={item!r} is not a boolean")
        allowed = spec.get("allowableValues")
        if allowed is None:
            continue
        if allowed["valueType"] == "LIST" and item not in allowed["values"]:
            problems.append(f"{name}={item!r} is not one of {allowed['values']}")
        if allowed["valueType"] == "RANGE":
            number = int(item)
            if "min" in allowed and number < allowed["min"]:
                problems.append(f"{name}={item!r} is below {allowed['min']}")
            if "max" in allowed and number > allowed["max"]:
                problems.append(f"{name}={item!r} is above {allowed['max']}")
    return problems


# Every REST convenience method, with every optional argument given, in an order the
# fake's channel/bridge model accepts (things exist before they are used).
DRIVERS: dict[str, Callable[[AriClient], Awaitable[object]]] = {
    "originate": lambda ari: ari.originate(
        "Local/201@callrouter",
        channel_id="caller-1",
        other_channel_id="caller-1-other",
        context="callrouter",
        extension="201",
        priority=1,
        label="start",
        app=None,  # app and context/extension are alternatives; the next call covers app
        app_args=None,
        caller_id='"Alice" <0301234567>',
        timeout=30,
        variables={"CALLERID(name)": "Alice"},
        originator="caller-0",
        formats="ulaw",
    ),
    "create_channel": lambda ari: ari.create_channel(
        "PJSIP/phone1",
        channel_id="leg-1",
        app_args="leg",
        originator="caller-1",
        variables={"CALLERID(name)": "Alice"},
        formats="ulaw,alaw",
    ),
    "dial": lambda ari: ari.dial("leg-1", caller="caller-1", timeout=20),
    "ring": lambda ari: ari.ring("caller-1"),
    "ring_stop": lambda ari: ari.ring_stop("caller-1"),
    "answer": lambda ari: ari.answer("caller-1"),
    "play": lambda ari: ari.play(
        "caller-1", ["sound:followme/options", "sound:silence/2"], playback_id="pb-1", lang="en"
    ),
    "stop_playback": lambda ari: ari.stop_playback("pb-1"),
    "set_variable": lambda ari: ari.set_variable("caller-1", "CALLROUTER_RESULT", "BUSY"),
    "channel_var": lambda ari: ari.channel_var("caller-1", "CALLROUTER_RESULT"),
    "get_channel": lambda ari: ari.get_channel("leg-1"),
    "create_bridge": lambda ari: ari.create_bridge("bridge-1", "mixing", name="call-1"),
    "add_channel": lambda ari: ari.add_channel("bridge-1", ["caller-1", "leg-1"]),
    "remove_channel": lambda ari: ari.remove_channel("bridge-1", ["leg-1"]),
    "list_channels": lambda ari: ari.list_channels(),
    "list_bridges": lambda ari: ari.list_bridges(),
    "resync": lambda ari: ari.resync(),
    "asterisk_info": lambda ari: ari.asterisk_info(),
    "set_event_filter": lambda ari: ari.set_event_filter(["StasisStart", "Dial"]),
    "continue_in_dialplan": lambda ari: ari.continue_in_dialplan(
        "caller-1", "callrouter-result", "s", 1
    ),
    "destroy_bridge": lambda ari: ari.destroy_bridge("bridge-1"),
    "hangup": lambda ari: ari.hangup("leg-1", reason="answered_elsewhere"),
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri() as server:
        yield server


async def test_every_rest_call_of_the_client_is_in_the_api_docs(
    api_docs: ApiDocs, fake: FakeAri
) -> None:
    public = {
        name
        for name, member in inspect.getmembers(AriClient, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert public - NOT_REST == set(DRIVERS), "drive every REST method in DRIVERS"

    problems: list[str] = []
    async with AriClient(fake.base_url, fake.user, fake.password, fake.app) as ari:
        # the originate variant that starts the channel in a Stasis app
        await ari.originate("Local/202@callrouter", channel_id="caller-2", app="x", app_args="a")
        await ari.continue_in_dialplan("caller-2", "callrouter", "202", label="fallback")
        for name, drive in DRIVERS.items():
            before = len(fake.requests)
            await drive(ari)
            made = fake.requests[before:]
            assert made, f"{name} made no request"
            for request in made:
                problems += [f"{name}: {p}" for p in problems_with(request, api_docs)]
        # a JSON body Asterisk knows goes with a query it knows
        assert fake.requests_to("POST", "/channels/create")[0].body == {
            "variables": {"CALLERID(name)": "Alice"}
        }
    assert not problems, "\n".join(problems)


async def test_the_events_websocket_url_is_in_the_api_docs(
    api_docs: ApiDocs, fake: FakeAri
) -> None:
    async with AriClient(fake.base_url, fake.user, fake.password, fake.app) as ari:
        await ari.wait_connected(5)
    (upgrade,) = fake.ws_requests
    assert upgrade.params["app"] == "callrouter"
    assert problems_with(upgrade, api_docs) == []


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "problem"),
    [
        ("POST", "/channels/x/bogus", {}, None, "no such operation"),
        (
            "POST",
            "/channels/create",
            {"endpoint": "PJSIP/a", "app": "a", "channel_id": "x"},
            None,
            "'channel_id' is not declared",
        ),
        ("POST", "/channels/create", {"endpoint": "PJSIP/a"}, None, "'app' missing"),
        ("POST", "/channels/x/dial", {"timeout": "soon"}, None, "is not an int"),
        ("POST", "/channels/x/dial", {"timeout": "-1"}, None, "is below 0"),
        ("DELETE", "/channels/x", {"reason": "bored"}, None, "is not one of"),
        ("POST", "/bridges", {}, {"vars": {}}, "body field 'vars' is not declared"),
        ("PUT", "/applications/a/eventFilter", {}, {"allow": []}, "body must be an object of"),
        ("GET", "/events", {"app": "a", "subscribeAll": "yes"}, None, "is not a boolean"),
    ],
)
def test_the_checker_catches_what_the_api_docs_forbid(
    api_docs: ApiDocs,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    problem: str,
) -> None:
    request = RecordedRequest(method, path, {k: (v,) for k, v in query.items()}, body, {})
    (found,) = problems_with(request, api_docs)
    assert problem in found


def test_hangup_reasons_are_exactly_the_api_docs_values(api_docs: ApiDocs) -> None:
    op = api_docs.find("DELETE", "/channels/x")
    assert op is not None
    assert set(get_args(HangupReason)) == set(op.params["reason"]["allowableValues"]["values"])


# The fields the event parser reads: (model, {field: api-docs type}).
PARSED_FIELDS: list[tuple[str, dict[str, str]]] = [
    ("Message", {"type": "string"}),
    ("Event", {"application": "string", "timestamp": "Date"}),
    ("StasisStart", {"args": "List[string]", "channel": "Channel"}),
    ("StasisEnd", {"channel": "Channel"}),
    ("ChannelStateChange", {"channel": "Channel"}),
    ("ChannelDestroyed", {"cause": "int", "cause_txt": "string", "channel": "Channel"}),
    (
        "Dial",
        {"caller": "Channel", "peer": "Channel", "dialstatus": "string", "dialstring": "string"},
    ),
    ("ChannelHangupRequest", {"cause": "int", "channel": "Channel"}),
    ("ChannelDtmfReceived", {"digit": "string", "channel": "Channel"}),
    ("ChannelEnteredBridge", {"bridge": "Bridge", "channel": "Channel"}),
    ("ChannelLeftBridge", {"bridge": "Bridge", "channel": "Channel"}),
    ("BridgeDestroyed", {"bridge": "Bridge"}),
    ("DeviceStateChanged", {"device_state": "DeviceState"}),
    ("EndpointStateChange", {"endpoint": "Endpoint"}),
    (
        "Channel",
        {
            "id": "string",
            "name": "string",
            "state": "string",
            "caller": "CallerID",
            "connected": "CallerID",
            "dialplan": "DialplanCEP",
        },
    ),
    ("CallerID", {"name": "string", "number": "string"}),
    (
        "DialplanCEP",
        {
            "context": "string",
            "exten": "string",
            "priority": "long",
            "app_name": "string",
            "app_data": "string",
        },
    ),
    (
        "Bridge",
        {
            "id": "string",
            "technology": "string",
            "bridge_type": "string",
            "bridge_class": "string",
            "creator": "string",
            "name": "string",
            "channels": "List[string]",
        },
    ),
    ("DeviceState", {"name": "string", "state": "string"}),
    (
        "Endpoint",
        {
            "technology": "string",
            "resource": "string",
            "state": "string",
            "channel_ids": "List[string]",
        },
    ),
]


@pytest.mark.parametrize(("model", "fields"), PARSED_FIELDS, ids=[m for m, _ in PARSED_FIELDS])
def test_fields_the_parser_reads_are_in_the_api_docs_models(
    api_docs: ApiDocs, model: str, fields: dict[str, str]
) -> None:
    assert model in api_docs.models, f"no model {model} in the api-docs"
    declared = {name: prop["type"] for name, prop in api_docs.models[model]["properties"].items()}
    for name, expected_type in fields.items():
        assert declared.get(name) == expected_type, (
            f"{model}.{name}: api-docs say {declared.get(name)!r}, parser assumes {expected_type!r}"
        )
