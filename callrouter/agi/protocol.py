"""FastAGI framing, pure: the environment and reply lines in, typed values out.

Nothing here does I/O, logs, or knows the time: the server (``callrouter.agi.server``)
reads lines from the socket and passes them through these functions.

Facts of the wire this module follows (Asterisk 22, ``res/res_agi.c``):

* on connect Asterisk writes ``agi_network: yes``, then ``agi_network_script: <path>``
  when the URL has a path (``agi://host:4573/login?x=1`` sends ``login?x=1``), then
  the channel environment (``agi_request``, ``agi_channel``, ``agi_uniqueid``, ...,
  ``agi_arg_1``..``agi_arg_N``), each ``key: value`` ended by LF, and an empty line;
* every command is one line; its reply is one line ``<code> <text>``
  (``200 result=1 (value) endpos=1234``, ``510 ...``, ``511 ...``), except the
  ``520-`` usage reply, which runs until a line ``520 End of proper usage.``;
* a line ``HANGUP`` may arrive at any time when the channel hangs up (a
  notification, not a reply);
* Asterisk splits a command on blanks, honours double quotes and backslash escapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "HANGUP_NOTIFICATION",
    "MAX_HEADER_LINES",
    "MAX_LINE_BYTES",
    "AgiCommandFailed",
    "AgiError",
    "AgiHangup",
    "AgiProtocolError",
    "AgiReply",
    "AgiRequest",
    "AgiTimeout",
    "EnvironmentParser",
    "format_command",
    "is_usage_end",
    "parse_reply",
    "parse_request",
]

# Limits on what a peer may send before it is a handler's business: refuse rather
# than buffer without end.  Asterisk 22 sends about 25 lines of well under 2 KiB.
MAX_HEADER_LINES: Final = 128
MAX_LINE_BYTES: Final = 2048
# Echo at most this much of a bad line in an error: enough to recognise it, never a
# whole line of someone else's data.
MAX_ECHO: Final = 60

HANGUP_NOTIFICATION: Final = "HANGUP"

# -- errors -----------------------------------------------------------------------


class AgiError(Exception):
    """Base class of every AGI error raised by callrouter."""


class AgiProtocolError(AgiError):
    """The peer does not speak AGI: a garbled environment or reply line."""


class AgiHangup(AgiError):
    """The channel is gone: a ``511`` reply, ``result=-1`` on a read, or end of stream."""


class AgiTimeout(AgiError, TimeoutError):
    """No reply within the read time-out; the session is out of step afterwards."""


class AgiCommandFailed(AgiError):
    """A command that Asterisk refused or that failed (``510``, ``520``, ``result=-1``)."""

    def __init__(self, message: str, *, command: str, reply: AgiReply) -> None:
        super().__init__(message)
        self.command = command
        self.reply = reply


# -- helpers ----------------------------------------------------------------------


def _shown(text: str) -> str:
    """``text`` cut to MAX_ECHO characters and quoted with repr (control characters
    escaped), for error messages."""
    if len(text) > MAX_ECHO:
        return repr(text[:MAX_ECHO]) + "..."
    return repr(text)


_SECRET_PARTS: Final = ("secret", "password", "passwd", "pin", "token", "auth")


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_PARTS)


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _strip_eol(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


# -- the environment --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The environment Asterisk sends when a FastAGI call connects.

    ``script`` is the path of the AGI URL without its leading ``/`` and query
    (``agi://127.0.0.1:4573/login?x=1`` -> ``login``); ``args`` are ``agi_arg_1``..N
    in order; ``env`` holds every raw header, ``agi_`` prefix included.
    """

    script: str
    args: tuple[str, ...]
    channel: str
    uniqueid: str = ""
    callerid: str = ""
    calleridname: str = ""
    context: str = ""
    extension: str = ""
    priority: int = 0
    language: str = ""
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


_KEY_RE: Final = re.compile(r"agi_[A-Za-z0-9_]+")
_ARG_RE: Final = re.compile(r"agi_arg_([1-9][0-9]*)")
_REQUIRED: Final = ("agi_network", "agi_channel")


def _script_of(env: Mapping[str, str]) -> str:
    """The script name: from ``agi_network_script`` when sent, else from the URL."""
    script = env.get("agi_network_script")
    if script is None:
        # Only reached when agi_request is there (checked by the caller).
        script = urlsplit(env["agi_request"]).path
    script = script.split("?", 1)[0].split("#", 1)[0]
    return script.lstrip("/")


class EnvironmentParser:
    """Takes the environment line by line, checking each one as it comes.

    The server feeds it lines as read from the socket, so the limits hold before
    anything is buffered; :func:`parse_request` feeds it a whole list.  ``feed``
    returns the request on the empty line that ends the environment, else None.
    """

    def __init__(self) -> None:
        self._env: dict[str, str] = {}
        self._count = 0
        self.done = False

    def feed(self, raw: bytes | str) -> AgiRequest | None:
        if self.done:
            raise AgiProtocolError("AGI environment: data after the empty line that ends it")
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        self._count += 1
        if len(data) > MAX_LINE_BYTES:
            raise AgiProtocolError(
                f"AGI environment line {self._count} longer than {MAX_LINE_BYTES} bytes"
            )
        data = _strip_eol(data)
        if not data:
            self.done = True
            return self._request()
        if self._count > MAX_HEADER_LINES:
            raise AgiProtocolError(f"AGI environment longer than {MAX_HEADER_LINES} lines")
        key, value = self._split(data)
        if key in self._env:
            raise AgiProtocolError(f"AGI environment line {self._count}: header {key!r} repeated")
        self._env[key] = value
        return None

    def _split(self, data: bytes) -> tuple[str, str]:
        n = self._count
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError:
            shown = _shown(data.decode("utf-8", errors="replace"))
            raise AgiProtocolError(f"AGI environment line {n} is not UTF-8: {shown}") from None
        key, sep, value = line.partition(": ")
        if not sep and line.endswith(":"):
            # An empty value whose trailing blank was lost on the way: still a header.
            key, sep, value = line[:-1], ": ", ""
        if not sep:
            raise AgiProtocolError(
                f"AGI environment line {n} is not 'agi_key: value': {_shown(line)}"
            )
        if not key.isascii() or not _KEY_RE.fullmatch(key):
            raise AgiProtocolError(f"AGI environment line {n}: bad header name {_shown(key)}")
        if _has_control(value):
            shown = "***" if _looks_secret(key) else _shown(value)
            raise AgiProtocolError(
                f"AGI environment line {n}: header {key!r} has control characters: {shown}"
            )
        return key, value

    def _request(self) -> AgiRequest:
        env = self._env
        for key in _REQUIRED:
            if key not in env:
                raise AgiProtocolError(f"AGI environment without the {key!r} header")
        if "agi_network_script" not in env and "agi_request" not in env:
            raise AgiProtocolError(
                "AGI environment without 'agi_request' or 'agi_network_script' header"
            )
        numbered: list[tuple[int, str]] = []
        for key, value in env.items():
            match = _ARG_RE.fullmatch(key)
            if match is not None:
                numbered.append((int(match.group(1)), value))
            elif key.startswith("agi_arg_"):
                raise AgiProtocolError(f"AGI environment: bad argument header {_shown(key)}")
        numbered.sort()
        if [i for i, _ in numbered] != list(range(1, len(numbered) + 1)):
            raise AgiProtocolError("AGI environment: agi_arg_N headers are not 1..N")
        priority_text = env.get("agi_priority", "0")
        try:
            priority = int(priority_text)
        except ValueError:
            raise AgiProtocolError(
                f"AGI environment: header 'agi_priority' is not a number: {_shown(priority_text)}"
            ) from None
        return AgiRequest(
            script=_script_of(env),
            args=tuple(value for _, value in numbered),
            channel=env["agi_channel"],
            uniqueid=env.get("agi_uniqueid", ""),
            callerid=env.get("agi_callerid", ""),
            calleridname=env.get("agi_calleridname", ""),
            context=env.get("agi_context", ""),
            extension=env.get("agi_extension", ""),
            priority=priority,
            language=env.get("agi_language", ""),
            env=MappingProxyType(dict(env)),
        )


def parse_request(lines: Iterable[bytes | str]) -> AgiRequest:
    """The request in ``lines``: the environment, up to and including its empty line.

    The final empty line may be left out; nothing may follow it.  Raises
    :class:`AgiProtocolError` naming the bad line or missing header, echoing at most
    ``MAX_ECHO`` characters.
    """
    parser = EnvironmentParser()
    request: AgiRequest | None = None
    for line in lines:
        # Fed even after the empty line, so that trailing data is refused.
        request = parser.feed(line)
    if request is None:
        request = parser.feed(b"")
    assert request is not None  # an empty line always ends the environment
    return request


# -- replies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiReply:
    """One command reply.

    ``result`` is the ``result=`` value (``""`` for ``200 result= (timeout)``; None
    for a reply without one, such as 510); ``data`` the text in parentheses;
    ``extras`` the other ``key=value`` pairs (``endpos``); ``text`` everything after
    the code.  ``multiline`` is True on the first line of a ``520-`` usage reply,
    whose remaining lines the session reads up to :func:`is_usage_end`.
    """

    code: int
    result: str | None = None
    data: str | None = None
    extras: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    text: str = ""
    multiline: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 200


_REPLY_RE: Final = re.compile(r"([1-9][0-9]{2})([ -])(.*)", re.DOTALL)
_RESULT_RE: Final = re.compile(r"result=(\S*)")
_PAIR_RE: Final = re.compile(r"\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)")
# Data is greedy up to the last ')' that only key=value pairs follow, so a value
# containing parentheses (``GET VARIABLE``) survives, and ``(timeout) endpos=5`` too.
_DATA_RE: Final = re.compile(r"\s*\((.*)\)((?:\s+[A-Za-z_][A-Za-z0-9_]*=\S*)*)\s*", re.DOTALL)


def parse_reply(line: bytes | str) -> AgiReply:
    """The reply in one line (its line end optional).

    Raises :class:`AgiProtocolError` for a line that is not ``<3 digits><sp|-><text>``,
    a ``200`` without ``result=``, or trailing words that are neither ``key=value``
    nor ``(data)``.  The ``HANGUP`` notification is not a reply: the session
    recognises it before calling this.
    """
    if isinstance(line, bytes):
        text = _strip_eol(line).decode("utf-8", errors="replace")
    else:
        text = _strip_eol(line.encode("utf-8")).decode("utf-8")
    match = _REPLY_RE.fullmatch(text)
    if match is None:
        raise AgiProtocolError(f"garbled AGI reply: {_shown(text)}")
    code = int(match.group(1))
    rest = match.group(3)
    if match.group(2) == "-":
        return AgiReply(code=code, text=rest, multiline=True)
    if code != 200:
        return AgiReply(code=code, text=rest)
    result = _RESULT_RE.match(rest)
    if result is None:
        raise AgiProtocolError(f"AGI reply 200 without 'result=': {_shown(text)}")
    extras: dict[str, str] = {}
    data: str | None = None
    pos = result.end()
    while pos < len(rest):
        pair = _PAIR_RE.match(rest, pos)
        if pair is not None:
            extras[pair.group(1)] = pair.group(2)
            pos = pair.end()
            continue
        if data is None:
            with_data = _DATA_RE.fullmatch(rest, pos)
            if with_data is not None:
                data = with_data.group(1)
                for key, value in _PAIR_RE.findall(with_data.group(2)):
                    extras[key] = value
                break
        if rest[pos:].strip() == "":
            break
        raise AgiProtocolError(f"garbled AGI reply: {_shown(text)}")
    return AgiReply(
        code=code,
        result=result.group(1),
        data=data,
        extras=MappingProxyType(extras),
        text=rest,
    )


def is_usage_end(line: str, code: int = 520) -> bool:
    """Whether ``line`` ends a multi-line reply: ``520 End of proper usage.``."""
    return line.startswith(f"{code} ")


# -- commands ---------------------------------------------------------------------

_FORBIDDEN: Final = ("\r", "\n", "\x00")
_NEEDS_QUOTES: Final = re.compile(r"[\s\"\\]")


def _quote(word: str) -> str:
    if word and not _NEEDS_QUOTES.search(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_command(*words: str) -> bytes:
    """One command line: the words joined by blanks, each quoted when it is empty or
    holds a blank, ``"`` or ``\\`` (which are backslash-escaped).

    Command names are separate words: ``format_command("GET", "DATA", "beep")``.
    Raises ValueError for CR, LF or NUL in a word (a command is one line) or for no
    words; TypeError for a word that is not a str.
    """
    if not words:
        raise ValueError("an AGI command needs at least one word")
    out = []
    for index, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(f"AGI command word {index} must be str, not {type(word).__name__}")
        if any(c in word for c in _FORBIDDEN):
            # Name the position, not the value: it may be a PIN or a token.
            raise ValueError(f"AGI command word {index} contains CR, LF or NUL")
        out.append(_quote(word))
    return (" ".join(out) + "\n").encode("utf-8")
