"""The pure FastAGI parsers as tables: environments, reply lines, command quoting."""

from __future__ import annotations

from typing import Any

import pytest

from callrouter.agi import (
    MAX_HEADER_LINES,
    MAX_LINE_BYTES,
    AgiProtocolError,
    AgiReply,
    EnvironmentParser,
    format_command,
    parse_reply,
    parse_request,
)

# What Asterisk 22 sends for AGI(agi://127.0.0.1:4573/login,4711,de) (order as on the wire).
ASTERISK_ENV = [
    b"agi_network: yes\n",
    b"agi_network_script: login\n",
    b"agi_request: agi://127.0.0.1:4573/login\n",
    b"agi_channel: PJSIP/alice-00000001\n",
    b"agi_language: de\n",
    b"agi_type: PJSIP\n",
    b"agi_uniqueid: 1732800000.17\n",
    b"agi_version: 22.1.0\n",
    b"agi_callerid: 201\n",
    b"agi_calleridname: J\xc3\xbcrgen M\xc3\xbcller\n",
    b"agi_callingpres: 0\n",
    b"agi_callingani2: 0\n",
    b"agi_callington: 0\n",
    b"agi_callingtns: 0\n",
    b"agi_dnid: *100\n",
    b"agi_rdnis: unknown\n",
    b"agi_context: internal\n",
    b"agi_extension: *100\n",
    b"agi_priority: 2\n",
    b"agi_enhanced: 0.0\n",
    b"agi_accountcode: \n",
    b"agi_threadid: 140231234567\n",
    b"agi_arg_1: 4711\n",
    b"agi_arg_2: de\n",
    b"\n",
]


def env(*lines: str, base: bool = True) -> list[str]:
    """A minimal valid environment plus ``lines``."""
    head = ["agi_network: yes", "agi_channel: PJSIP/a-1"] if base else []
    return [*head, *lines, ""]


# -- environments -----------------------------------------------------------------


def test_the_environment_asterisk_sends_becomes_a_typed_request() -> None:
    request = parse_request(ASTERISK_ENV)
    assert request.script == "login"
    assert request.args == ("4711", "de")
    assert request.channel == "PJSIP/alice-00000001"
    assert request.uniqueid == "1732800000.17"
    assert request.callerid == "201"
    assert request.calleridname == "Jürgen Müller"
    assert request.context == "internal"
    assert request.extension == "*100"
    assert request.priority == 2
    assert request.language == "de"
    assert request.env["agi_accountcode"] == ""
    assert request.env["agi_type"] == "PJSIP"
    assert len(request.env) == len(ASTERISK_ENV) - 1


def test_request_is_frozen_and_env_read_only() -> None:
    request = parse_request(env("agi_network_script: x"))
    with pytest.raises(AttributeError):
        request.script = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.env["agi_channel"] = "z"  # type: ignore[index]


@pytest.mark.parametrize(
    ("lines", "script"),
    [
        (env("agi_network_script: login"), "login"),
        (env("agi_network_script: /login"), "login"),
        (env("agi_network_script: login?ext=100&x=1"), "login"),
        (env("agi_network_script: ?extension=100"), ""),
        (env("agi_network_script: ivr/menu"), "ivr/menu"),
        (env("agi_request: agi://127.0.0.1:4573/login"), "login"),
        (env("agi_request: agi://127.0.0.1/login?ext=100"), "login"),
        (env("agi_request: hagi://agi.example.com/pin/check"), "pin/check"),
        (env("agi_request: agi://127.0.0.1:4573"), ""),
        # agi_network_script wins over the URL when both are there.
        (env("agi_network_script: a", "agi_request: agi://h/b"), "a"),
    ],
)
def test_script_is_the_url_path(lines: list[str], script: str) -> None:
    assert parse_request(lines).script == script


@pytest.mark.parametrize(
    ("lines", "args"),
    [
        (env("agi_network_script: s"), ()),
        (env("agi_network_script: s", "agi_arg_1: a"), ("a",)),
        (env("agi_network_script: s", "agi_arg_2: b", "agi_arg_1: a"), ("a", "b")),
        (
            env("agi_network_script: s", *(f"agi_arg_{n}: v{n}" for n in range(1, 12))),
            tuple(f"v{n}" for n in range(1, 12)),  # 10 sorts after 9, not after 1
        ),
        (env("agi_network_script: s", "agi_arg_1: ", "agi_arg_2: two words"), ("", "two words")),
    ],
)
def test_args_in_order(lines: list[str], args: tuple[str, ...]) -> None:
    assert parse_request(lines).args == args


def test_crlf_line_ends_and_a_missing_final_empty_line_are_accepted() -> None:
    lines = [b"agi_network: yes\r\n", b"agi_channel: PJSIP/a\r\n", b"agi_request: agi://h/x\r\n"]
    request = parse_request(lines)
    assert (request.script, request.channel) == ("x", "PJSIP/a")


def test_an_empty_value_without_its_blank_is_still_a_header() -> None:
    assert (
        parse_request(env("agi_network_script: s", "agi_accountcode:")).env["agi_accountcode"] == ""
    )


def test_optional_fields_default_when_absent() -> None:
    request = parse_request(env("agi_network_script: s"))
    assert (request.uniqueid, request.callerid, request.context, request.priority) == (
        "",
        "",
        "",
        0,
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (env("agi_channel: PJSIP/a", "agi_request: agi://h/x", base=False), "'agi_network'"),
        (env("agi_network: yes", "agi_request: agi://h/x", base=False), "'agi_channel'"),
        (env(), "'agi_request' or 'agi_network_script'"),
        (env("agi_network_script x"), r"line 3 is not 'agi_key: value': 'agi_network_script x'"),
        (env("agi_network_script:x"), "line 3 is not 'agi_key: value'"),
        (env("GET / HTTP/1.1"), "line 3 is not 'agi_key: value'"),
        (env("channel: PJSIP/a"), "line 3: bad header name 'channel'"),
        (env("AGI_X: 1"), "bad header name 'AGI_X'"),
        (env("agi_: 1"), "bad header name 'agi_'"),
        (env("agi x: 1"), "bad header name 'agi x'"),
        (env("agi_ünicode: 1"), "bad header name"),
        (env("agi_network_script: a\tb"), r"header 'agi_network_script' has control characters"),
        (env("agi_network_script: a\x1bb"), r"control characters: 'a\\x1bb'"),
        (env("agi_network_script: s", "agi_channel: again"), "header 'agi_channel' repeated"),
        (env("agi_network_script: s", "agi_arg_2: b"), "agi_arg_N headers are not 1..N"),
        (env("agi_network_script: s", "agi_arg_0: b"), "bad argument header 'agi_arg_0'"),
        (env("agi_network_script: s", "agi_arg_x: b"), "bad argument header 'agi_arg_x'"),
        (env("agi_network_script: s", "agi_priority: one"), "'agi_priority' is not a number"),
        ([b"agi_network: yes\n", b"agi_channel: \xff\xfe\n"], "line 2 is not UTF-8"),
        ([*env("agi_network_script: s"), "agi_late: x"], "data after the empty line"),
    ],
)
def test_bad_environments_name_the_line_or_header(lines: list[Any], message: str) -> None:
    with pytest.raises(AgiProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_request(lines)


def test_bad_lines_are_echoed_60_characters_at_most() -> None:
    junk = "x" * 500
    with pytest.raises(AgiProtocolError) as info:
        parse_request(env(junk))
    assert "x" * 60 in str(info.value)
    assert "x" * 61 not in str(info.value)


def test_secret_looking_values_are_not_echoed() -> None:
    with pytest.raises(AgiProtocolError) as info:
        parse_request(env("agi_network_script: s", "agi_pin: 4711\x07"))
    assert "4711" not in str(info.value)
    assert "'agi_pin'" in str(info.value)


def test_line_and_header_count_limits() -> None:
    long_value = "v" * (MAX_LINE_BYTES - len("agi_x: \n"))
    parse_request(env("agi_network_script: s", f"agi_x: {long_value}"))  # exactly at the limit
    with pytest.raises(AgiProtocolError, match=f"line 4 longer than {MAX_LINE_BYTES} bytes"):
        parse_request(
            [f"{line}\n" for line in env("agi_network_script: s", f"agi_x: {long_value}v")]
        )

    many = [f"agi_h{n}: v" for n in range(MAX_HEADER_LINES - 3)]
    parse_request(env("agi_network_script: s", *many))  # 128 header lines
    with pytest.raises(AgiProtocolError, match=f"longer than {MAX_HEADER_LINES} lines"):
        parse_request(env("agi_network_script: s", *many, "agi_one_more: v"))


def test_the_incremental_parser_refuses_as_soon_as_a_line_is_bad() -> None:
    parser = EnvironmentParser()
    assert parser.feed(b"agi_network: yes\n") is None
    with pytest.raises(AgiProtocolError):
        parser.feed(b"hello\n")


# -- replies ----------------------------------------------------------------------


def reply(
    code: int, result: str | None = None, data: str | None = None, **extras: str
) -> dict[str, Any]:
    return {"code": code, "result": result, "data": data, "extras": extras}


def fields(r: AgiReply) -> dict[str, Any]:
    return {"code": r.code, "result": r.result, "data": r.data, "extras": dict(r.extras)}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=1", reply(200, "1")),
        ("200 result=0\n", reply(200, "0")),
        ("200 result=-1", reply(200, "-1")),
        ("200 result=1234 (timeout)", reply(200, "1234", "timeout")),
        ("200 result= (timeout)", reply(200, "", "timeout")),
        ("200 result=", reply(200, "")),
        ("200 result=0 endpos=12345", reply(200, "0", endpos="12345")),
        ("200 result=49 endpos=8000\r\n", reply(200, "49", endpos="8000")),
        ("200 result=0 (timeout) endpos=16000", reply(200, "0", "timeout", endpos="16000")),
        ("200 result=1 (value)", reply(200, "1", "value")),
        ("200 result=1 (two words)", reply(200, "1", "two words")),
        ("200 result=1 (f(x) = (y))", reply(200, "1", "f(x) = (y)")),
        ("200 result=1 ()", reply(200, "1", "")),
        ("200 result=1 (Jürgen)", reply(200, "1", "Jürgen")),
        ("200 result=1 (a) endpos=5 x=y", reply(200, "1", "a", endpos="5", x="y")),
        ("200 result=1  ", reply(200, "1")),
        ("510 Invalid or unknown command", reply(510)),
        ("511 Command Not Permitted on a dead channel or intercept routine", reply(511)),
        ("520 Invalid command syntax.  Proper usage not available.", reply(520)),
    ],
)
def test_reply_lines(line: str, expected: dict[str, Any]) -> None:
    parsed = parse_reply(line)
    assert fields(parsed) == expected
    assert not parsed.multiline
    assert parsed.ok == (expected["code"] == 200)


def test_reply_text_is_kept_for_messages() -> None:
    assert parse_reply("510 Invalid or unknown command").text == "Invalid or unknown command"
    assert parse_reply(b"200 result=1 (x)\n").text == "result=1 (x)"


def test_usage_reply_starts_a_multiline_reply() -> None:
    first = parse_reply("520-Invalid command syntax.  Proper usage follows:")
    assert (first.code, first.multiline, first.result) == (520, True, None)
    assert first.text == "Invalid command syntax.  Proper usage follows:"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "HANGUP",
        "hello",
        "200",
        "20 result=1",
        "2000 result=1",
        "abc result=1",
        "200result=1",
        "200 ok",
        "200 Result=1",
        "200 result=1 garbage",
        "200 result=1 (unclosed",
        "200 result=1 (a) trailing words",
        "200 result=1 (a) (b) c",
        "\x00\x01",
    ],
)
def test_garbled_replies(line: str) -> None:
    with pytest.raises(AgiProtocolError, match="AGI reply"):
        parse_reply(line)


def test_garbled_reply_is_echoed_60_characters_at_most() -> None:
    with pytest.raises(AgiProtocolError) as info:
        parse_reply("y" * 300)
    assert "y" * 60 in str(info.value) and "y" * 61 not in str(info.value)


# -- commands ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (("ANSWER",), b"ANSWER\n"),
        (("STREAM", "FILE", "beep", ""), b'STREAM FILE beep ""\n'),
        (("STREAM", "FILE", "beep", "#*"), b"STREAM FILE beep #*\n"),
        (("GET", "DATA", "custom/enter-pin", "5000", "4"), b"GET DATA custom/enter-pin 5000 4\n"),
        (("VERBOSE", "two words", "1"), b'VERBOSE "two words" 1\n'),
        (("VERBOSE", "tab\there", "1"), b'VERBOSE "tab\there" 1\n'),
        (("SET", "VARIABLE", "X", 'say "hi"'), b'SET VARIABLE X "say \\"hi\\""\n'),
        (("SET", "VARIABLE", "X", "a\\b"), b'SET VARIABLE X "a\\\\b"\n'),
        (("SET", "VARIABLE", "X", '"'), b'SET VARIABLE X "\\""\n'),
        (("SET", "VARIABLE", "NAME", "Jürgen"), "SET VARIABLE NAME Jürgen\n".encode()),
    ],
)
def test_format_command_quotes_what_asterisk_would_split(
    words: tuple[str, ...], line: bytes
) -> None:
    assert format_command(*words) == line


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b", "\r\n", "PIN\nHANGUP"])
def test_format_command_refuses_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(ValueError, match="word 3 contains CR, LF or NUL") as info:
        format_command("SET", "VARIABLE", "X", bad)
    assert bad not in str(info.value)


def test_format_command_needs_str_words() -> None:
    with pytest.raises(ValueError, match="at least one word"):
        format_command()
    with pytest.raises(TypeError, match="word 1 must be str, not int"):
        format_command("VERBOSE", 1)  # type: ignore[arg-type]
