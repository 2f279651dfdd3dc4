"""AMI framing: the parser, the encoder, masking and event-list collection (no I/O)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrouter.ami.protocol import (
    AmiEncodeError,
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    EventListCollector,
    MessageKind,
    encode_action,
    encode_message,
    is_list_complete,
    mask_secrets,
)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"

# What Asterisk 22 sends, as recorded in its manager.c / db.c formats.
LOGIN_OK = b"Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n"
FULLY_BOOTED = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 12\r\nLastReload: 12\r\n"
    b"Status: Fully Booted\r\n\r\n"
)
COMMAND_OUTPUT = (
    b"Response: Success\r\nActionID: 7\r\nMessage: Command output follows\r\n"
    b"Output: Channel              Location             State   Application(Data)\r\n"
    b"Output:   indented: with: colons\r\n"
    b"Output: \r\n"
    b"Output: 0 active channels\r\n\r\n"
)
DBGET_LIST = (
    b"Response: Success\r\nActionID: 9\r\nEventList: start\r\nMessage: Result will follow\r\n\r\n"
    b"Event: DBGetResponse\r\nFamily: callrouter\r\nKey: 201\r\n"
    b"Val: PJSIP/anna-desk&PJSIP/anna-soft\r\nActionID: 9\r\n\r\n"
    b"Event: DBGetComplete\r\nActionID: 9\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
)
ORIGINATE_RESPONSE = (
    b"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: 3\r\n"
    b"Response: Success\r\nChannel: PJSIP/anna-desk-00000001\r\n\r\n"
)
STREAM = BANNER + LOGIN_OK + FULLY_BOOTED + COMMAND_OUTPUT + DBGET_LIST + ORIGINATE_RESPONSE


def parse(data: bytes, *, expect_banner: bool = False) -> list[AmiMessage]:
    return AmiParser(expect_banner=expect_banner).feed(data)


# -- parser -----------------------------------------------------------------------


def test_banner_then_messages() -> None:
    parser = AmiParser()
    messages = parser.feed(BANNER + LOGIN_OK + FULLY_BOOTED)
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert parser.version == "11.0.0"
    assert [m.kind for m in messages] == [MessageKind.RESPONSE, MessageKind.EVENT]
    assert messages[0].response == "Success"
    assert messages[0].action_id == "1"
    assert messages[1].event == "FullyBooted"
    assert messages[1].get("status") == "Fully Booted"


def test_a_first_line_that_is_no_banner_is_refused() -> None:
    with pytest.raises(AmiProtocolError, match="banner"):
        AmiParser().feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        pytest.param(
            b"Response: Success\r\nActionID: a\r\nMessage: ok\r\n\r\n",
            [("Response", "Success"), ("ActionID", "a"), ("Message", "ok")],
            id="plain",
        ),
        pytest.param(
            b"Event: VarSet\r\nValue: sip:201@10.0.0.1:5060;transport=udp\r\n\r\n",
            [("Event", "VarSet"), ("Value", "sip:201@10.0.0.1:5060;transport=udp")],
            id="colons-in-value",
        ),
        pytest.param(
            b"Event: X\nKey: v\n\n",
            [("Event", "X"), ("Key", "v")],
            id="bare-lf",
        ),
        pytest.param(
            b"Event: X\r\nEmpty:\r\nSpace: \r\n\r\n",
            [("Event", "X"), ("Empty", ""), ("Space", "")],
            id="empty-values",
        ),
        pytest.param(
            b"Event: X\r\nValue:   three spaces\r\nTight:x\r\n\r\n",
            [("Event", "X"), ("Value", "  three spaces"), ("Tight", "x")],
            id="only-one-space-stripped",
        ),
        pytest.param(
            b"Response: Follows\r\nPrivilege: Command\r\nsome raw line\r\n\r\n",
            [("Response", "Follows"), ("Privilege", "Command"), ("", "some raw line")],
            id="line-without-colon",
        ),
        pytest.param(
            "Event: Newchannel\r\nCallerIDName: Jürgen\r\n\r\n".encode(),
            [("Event", "Newchannel"), ("CallerIDName", "Jürgen")],
            id="utf-8",
        ),
        pytest.param(
            b"Event: Newchannel\r\nCallerIDName: J\xfcrgen\r\n\r\n",
            [("Event", "Newchannel"), ("CallerIDName", "J\ufffdrgen")],
            id="latin-1-replaced",
        ),
    ],
)
def test_message_table(wire: bytes, expected: list[tuple[str, str]]) -> None:
    (message,) = parse(wire)
    assert list(message.items) == expected


def test_blank_lines_between_messages_are_skipped() -> None:
    messages = parse(b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\nEvent: B\r\n\r\n")
    assert [m.event for m in messages] == ["A", "B"]


def test_incomplete_message_waits_for_its_empty_line() -> None:
    parser = AmiParser(expect_banner=False)
    assert parser.feed(b"Event: A\r\nX: 1\r\n") == []
    assert parser.feed(b"\r") == []
    (message,) = parser.feed(b"\n")
    assert message.get("x") == "1"


def test_keys_are_case_insensitive_and_repeated_keys_kept_in_order() -> None:
    (message,) = parse(
        b"Action: Originate\r\nVariable: A=1\r\nvariable: B=2\r\nVARIABLE: C=3\r\n\r\n"
    )
    assert message.kind is MessageKind.ACTION
    assert message.action == "Originate"
    assert message.get("VARIABLE") == "A=1"
    assert message.get_all("Variable") == ["A=1", "B=2", "C=3"]
    assert message.get_all("missing") == []
    assert message.get("missing") is None
    assert message.get("missing", "d") == "d"
    assert "variable" in message
    assert "nope" not in message


def test_command_output_lines_keep_their_indentation() -> None:
    (message,) = parse(COMMAND_OUTPUT)
    assert message.get_all("Output") == [
        "Channel              Location             State   Application(Data)",
        "  indented: with: colons",
        "",
        "0 active channels",
    ]
    assert message.output.endswith("\n\n0 active channels")


def test_an_event_with_a_response_header_is_still_an_event() -> None:
    (message,) = parse(ORIGINATE_RESPONSE)
    assert message.kind is MessageKind.EVENT
    assert message.event == "OriginateResponse"
    assert message.response is None  # Response: is the event's payload here
    assert message.get("Response") == "Success"
    assert not message.is_error


def test_kind_comes_from_a_later_key_when_the_first_is_unusual() -> None:
    (message,) = parse(b"ActionID: 5\r\nResponse: Error\r\nMessage: no\r\n\r\n")
    assert message.kind is MessageKind.RESPONSE
    assert message.is_error
    (unknown,) = parse(b"Foo: bar\r\n\r\n")
    assert unknown.kind is MessageKind.UNKNOWN


def test_an_endless_line_is_refused() -> None:
    parser = AmiParser(expect_banner=False, max_line=64)
    with pytest.raises(AmiProtocolError, match="longer than 64"):
        parser.feed(b"Event: " + b"x" * 100)


def test_the_stream_split_at_every_byte_boundary_parses_the_same() -> None:
    whole = AmiParser().feed(STREAM)
    assert len(whole) == 7
    for cut in range(len(STREAM) + 1):
        parser = AmiParser()
        assert parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:]) == whole, cut


def test_the_stream_fed_byte_by_byte_parses_the_same() -> None:
    parser = AmiParser()
    messages = [m for i in range(len(STREAM)) for m in parser.feed(STREAM[i : i + 1])]
    assert messages == AmiParser().feed(STREAM)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_the_stream_split_anywhere_parses_the_same(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    parser = AmiParser()
    messages = [m for a, b in itertools.pairwise(bounds) for m in parser.feed(STREAM[a:b])]
    assert messages == AmiParser().feed(STREAM)


_keys = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]),
    max_size=40,
)
_messages = st.lists(st.tuples(_keys, _values), min_size=1, max_size=8)


@given(st.lists(_messages, min_size=1, max_size=5), st.data())
def test_encoded_messages_parse_back_exactly(
    messages: list[list[tuple[str, str]]], data: st.DataObject
) -> None:
    wire = b"".join(encode_message(m) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    bounds = [0, *sorted(cuts), len(wire)]
    parser = AmiParser(expect_banner=False)
    parsed = [m for a, b in itertools.pairwise(bounds) for m in parser.feed(wire[a:b])]
    assert [list(m.items) for m in parsed] == messages


# -- encoder ----------------------------------------------------------------------


def test_encode_action_exact_bytes_with_repeated_keys() -> None:
    data = encode_action(
        "Originate",
        "cr-1",
        {"Channel": "PJSIP/anna-desk", "Variable": ["A=1", "B=2"], "Async": "true"},
    )
    assert data == (
        b"Action: Originate\r\nActionID: cr-1\r\nChannel: PJSIP/anna-desk\r\n"
        b"Variable: A=1\r\nVariable: B=2\r\nAsync: true\r\n\r\n"
    )
    (message,) = parse(data)
    assert message.action == "Originate"
    assert message.get_all("variable") == ["A=1", "B=2"]


def test_encode_action_without_action_id() -> None:
    assert encode_action("Ping", None, {}) == b"Action: Ping\r\n\r\n"


@pytest.mark.parametrize(
    ("name", "action_id", "fields", "field"),
    [
        pytest.param("DBPut", "1", {"Val": "x\r\nAction: Command"}, "Val", id="crlf-in-value"),
        pytest.param("DBPut", "1", {"Val": "x\nAction: Command"}, "Val", id="lf-in-value"),
        pytest.param("DBPut", "1", {"Val": "x\rAction: Command"}, "Val", id="cr-in-value"),
        pytest.param("DBPut", "1", {"Val": "x\x00y"}, "Val", id="nul-in-value"),
        pytest.param("DBPut", "1", {"Variable": ["ok", "b\nad"]}, "Variable", id="in-list"),
        pytest.param("DBPut", "1", {"Ke\ny": "v"}, "Ke\ny", id="lf-in-key"),
        pytest.param("DBPut", "1", {"Variable: x": "v"}, "Variable: x", id="colon-in-key"),
        pytest.param("DBPut", "1", {"": "v"}, "", id="empty-key"),
        pytest.param("DBPut", "1", {" Key": "v"}, " Key", id="space-around-key"),
        pytest.param("DBPut", "1", {"ActionID": "2"}, "ActionID", id="actionid-field"),
        pytest.param("DBPut", "1", {"action": "Command"}, "action", id="action-field"),
        pytest.param("DBPut", "1\r\nX: y", {}, "ActionID", id="crlf-in-action-id"),
        pytest.param("DB\r\nPut", "1", {}, "Action", id="crlf-in-name"),
        pytest.param("", "1", {}, "Action", id="empty-name"),
    ],
)
def test_injection_is_refused(
    name: str, action_id: str, fields: dict[str, str | list[str]], field: str
) -> None:
    with pytest.raises(AmiEncodeError) as info:
        encode_action(name, action_id, fields)
    assert info.value.field == field


def test_refusal_names_the_field_but_not_the_value() -> None:
    with pytest.raises(AmiEncodeError) as info:
        encode_action("Login", "1", {"Username": "u", "Secret": "hunter2\r\nEvents: on"})
    assert "Secret" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_non_string_values_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="Timeout"):
        encode_action("Originate", "1", {"Timeout": 30000})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="Val"):
        encode_action("DBPut", "1", {"Val": b"bytes"})  # type: ignore[dict-item]


# -- masking ----------------------------------------------------------------------


def test_mask_secrets() -> None:
    fields: dict[str, str | list[str]] = {
        "Username": "callrouter",
        "Secret": "hunter2",
        "password": "p",
        "AuthToken": "t",
        "Key": "md5answer",
        "Variable": ["A=1"],
        "PINs": ["1", "2"],
    }
    masked = mask_secrets(fields, action="Login")
    assert masked == {
        "Username": "callrouter",
        "Secret": "***",
        "password": "***",
        "AuthToken": "***",
        "Key": "***",
        "Variable": ["A=1"],
        "PINs": ["1", "2"],
    }
    assert fields["Secret"] == "hunter2"  # a copy, the input is untouched


def test_key_is_the_astdb_key_for_db_actions() -> None:
    fields = {"Family": "callrouter", "Key": "201", "Val": "PJSIP/a"}
    assert mask_secrets(fields, action="DBPut") == fields
    assert mask_secrets(fields)["Key"] == "***"  # no action: be safe


def test_message_repr_masks_secrets() -> None:
    (login,) = parse(encode_action("Login", "1", {"Username": "u", "Secret": "hunter2"}))
    assert "hunter2" not in repr(login)
    assert "Secret: ***" in repr(login)
    db = parse(DBGET_LIST)[1]
    assert "Key: 201" in repr(db)


# -- event lists ------------------------------------------------------------------


def test_collector_takes_the_list_and_ignores_other_traffic() -> None:
    other = parse(b"Event: Newchannel\r\nChannel: PJSIP/x\r\n\r\n")[0]
    foreign = parse(b"Event: DBGetResponse\r\nActionID: 8\r\nVal: no\r\n\r\n")[0]
    response, item, complete = parse(DBGET_LIST)
    collector = EventListCollector("9")
    taken = [collector.feed(m) for m in (response, other, item, foreign, complete)]
    assert taken == [True, False, True, False, True]
    assert collector.done
    result = collector.result()
    assert result.response is response
    assert [e.get("Val") for e in result.events] == ["PJSIP/anna-desk&PJSIP/anna-soft"]
    assert result.complete is complete
    assert not collector.feed(complete)  # nothing after the end


def test_collector_ends_at_an_error_or_a_response_without_a_list() -> None:
    (error,) = parse(b"Response: Error\r\nActionID: 9\r\nMessage: Database entry not found\r\n\r\n")
    collector = EventListCollector("9")
    assert collector.feed(error)
    assert collector.done
    assert collector.result().events == ()
    (plain,) = parse(b"Response: Success\r\nActionID: 4\r\n\r\n")
    collector = EventListCollector("4")
    assert collector.feed(plain) and collector.done


def test_collector_result_before_the_end_is_an_error() -> None:
    collector = EventListCollector("9")
    collector.feed(parse(DBGET_LIST)[0])
    with pytest.raises(RuntimeError):
        collector.result()


@pytest.mark.parametrize(
    ("wire", "complete"),
    [
        (b"Event: DBGetComplete\r\nEventList: Complete\r\n\r\n", True),
        (b"Event: StatusComplete\r\n\r\n", True),  # old actions leave the header out
        (b"Event: DBGetResponse\r\n\r\n", False),
        (b"Event: SomethingComplete\r\nEventList: start\r\n\r\n", False),
        (b"Response: Success\r\nEventList: Complete\r\n\r\n", False),
    ],
)
def test_list_complete_detection(wire: bytes, complete: bool) -> None:
    (message,) = parse(wire)
    assert is_list_complete(message) is complete
