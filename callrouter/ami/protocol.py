"""AMI framing, pure: bytes in, typed messages out, and actions back to bytes.

The Asterisk Manager Interface speaks lines of ``Key: Value`` ended by CR LF.  A
message ends with an empty line.  The server opens with one banner line
(``Asterisk Call Manager/11.0.0``).  Nothing here does I/O, logs, or knows the
time: the client (``callrouter.ami.client``) pumps bytes through these functions.

Facts of the wire this module follows (Asterisk 22):

* keys are case-insensitive; the same key may repeat (``Variable:`` on actions,
  ``Output:`` on Command responses, one per CLI line);
* Asterisk writes ``Key: Value`` and strips leading blanks from values it reads, so
  a value that starts with spaces cannot be sent.  We strip exactly one space after
  the colon when reading, which keeps the indentation of CLI output intact;
* actions that answer with a list (DBGet, Status, PJSIPShowContacts, ...) respond
  ``EventList: start``, then send events carrying the same ActionID, and end with an
  event named ``...Complete`` carrying ``EventList: Complete``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

BANNER_PREFIX: Final = "Asterisk Call Manager/"
MASK: Final = "***"

# A line longer than this is not AMI: refuse it rather than buffer without end.
DEFAULT_MAX_LINE: Final = 1 << 20


class AmiError(Exception):
    """Base class of every AMI error raised by callrouter."""


class AmiProtocolError(AmiError):
    """The peer does not speak AMI (no banner, a line without end, ...)."""


class AmiEncodeError(AmiError, ValueError):
    """An action that must not be sent: a CR, LF or NUL would inject lines.

    ``field`` names the offending key (never its value: it may be a secret).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MessageKind(StrEnum):
    RESPONSE = "response"  # answers an action: starts with ``Response:``
    EVENT = "event"  # starts with ``Event:``
    ACTION = "action"  # client to server (seen by the fake server in tests)
    UNKNOWN = "unknown"  # none of the above; the client ignores these


_KIND_BY_KEY: Final = {
    "response": MessageKind.RESPONSE,
    "event": MessageKind.EVENT,
    "action": MessageKind.ACTION,
}


def _kind_of(items: Sequence[tuple[str, str]]) -> MessageKind:
    # The first line decides: ``Event: OriginateResponse`` carries a ``Response:``
    # header too, and is still an event.
    if items:
        kind = _KIND_BY_KEY.get(items[0][0].lower())
        if kind is not None:
            return kind
    for key, _ in items:
        kind = _KIND_BY_KEY.get(key.lower())
        if kind is not None:
            return kind
    return MessageKind.UNKNOWN


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One AMI message: its kind and its ``(key, value)`` lines, in wire order.

    Look-ups by key are case-insensitive; ``get`` returns the first value,
    ``get_all`` every value of a repeated key.
    """

    kind: MessageKind
    items: tuple[tuple[str, str], ...]

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, str]]) -> AmiMessage:
        frozen = tuple((str(k), str(v)) for k, v in items)
        return cls(_kind_of(frozen), frozen)

    def get(self, key: str, default: str | None = None) -> str | None:
        wanted = key.lower()
        for k, v in self.items:
            if k.lower() == wanted:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        wanted = key.lower()
        return [v for k, v in self.items if k.lower() == wanted]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        wanted = key.lower()
        return any(k.lower() == wanted for k, _ in self.items)

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def event(self) -> str | None:
        """The event name, for an event; None for anything else."""
        return self.get("Event") if self.kind is MessageKind.EVENT else None

    @property
    def response(self) -> str | None:
        """``Success``, ``Error``, ``Goodbye``, ... for a response; None otherwise."""
        return self.get("Response") if self.kind is MessageKind.RESPONSE else None

    @property
    def action(self) -> str | None:
        """The action name, for an action (client to server); None otherwise."""
        return self.get("Action") if self.kind is MessageKind.ACTION else None

    @property
    def message(self) -> str | None:
        """The human-readable ``Message:`` header, if any."""
        return self.get("Message")

    @property
    def is_error(self) -> bool:
        return self.kind is MessageKind.RESPONSE and (self.response or "").lower() == "error"

    @property
    def event_list(self) -> str | None:
        """The ``EventList:`` header, lower-cased (``start``, ``complete``), if any."""
        value = self.get("EventList")
        return value.lower() if value is not None else None

    @property
    def output(self) -> str:
        """The ``Output:`` lines of a Command response, joined with newlines."""
        return "\n".join(self.get_all("Output"))

    def masked_items(self) -> tuple[tuple[str, str], ...]:
        """The items with secret-looking values replaced by ``***`` (for logs)."""
        action = self.action if self.kind is MessageKind.ACTION else _RECEIVED
        return tuple((k, MASK if is_secret_field(k, action=action) else v) for k, v in self.items)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}: {v}" for k, v in self.masked_items())
        return f"AmiMessage({self.kind.value}: {shown})"


# Pseudo action name for received messages: they never carry the Login ``Key``,
# while DB events carry ``Key`` as the AstDB key, which is worth seeing in logs.
_RECEIVED: Final = "DB(received)"


class AmiParser:
    """Incremental AMI parser: feed it bytes as they come, get whole messages.

    The first line must be the banner unless ``expect_banner`` is False (the fake
    server parses actions with it).  CR LF and bare LF line ends are both accepted.
    Blank lines between messages are skipped.  A line without a colon is kept with
    the empty key ``""``.  Undecodable bytes become U+FFFD.
    """

    def __init__(self, *, expect_banner: bool = True, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.banner: str | None = None
        self._expect_banner = expect_banner
        self._max_line = max_line
        self._buffer = bytearray()
        self._items: list[tuple[str, str]] = []

    @property
    def version(self) -> str | None:
        """The AMI version from the banner (``11.0.0``), once it was seen."""
        if self.banner is None:
            return None
        return self.banner[len(BANNER_PREFIX) :].strip()

    def feed(self, data: bytes) -> list[AmiMessage]:
        self._buffer += data
        if b"\n" not in data:
            self._check_length()
            return []
        *lines, tail = self._buffer.split(b"\n")
        self._buffer = bytearray(tail)
        self._check_length()
        out: list[AmiMessage] = []
        for raw in lines:
            if len(raw) > self._max_line:
                raise AmiProtocolError(f"AMI line longer than {self._max_line} bytes")
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            line = raw.decode("utf-8", errors="replace")
            if self._expect_banner:
                self._take_banner(line)
                continue
            if not line:
                if self._items:
                    out.append(AmiMessage.from_items(self._items))
                    self._items = []
                continue
            key, colon, value = line.partition(":")
            if not colon:
                self._items.append(("", line))
                continue
            if value.startswith(" "):
                value = value[1:]
            self._items.append((key.strip(), value))
        return out

    def _take_banner(self, line: str) -> None:
        if not line:
            return
        if not line.startswith(BANNER_PREFIX):
            shown = line[:80]
            raise AmiProtocolError(
                f"expected the AMI banner {BANNER_PREFIX!r}..., got {shown!r}: not an AMI port?"
            )
        self.banner = line
        self._expect_banner = False

    def _check_length(self) -> None:
        if len(self._buffer) > self._max_line:
            raise AmiProtocolError(f"AMI line longer than {self._max_line} bytes")


FieldValue = str | Sequence[str]
Fields = Mapping[str, FieldValue]

_FORBIDDEN_CHARS: Final = ("\r", "\n", "\x00")
_RESERVED_KEYS: Final = frozenset({"action", "actionid"})


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"AMI field names must be str, not {type(key).__name__}")
    if not key or key != key.strip():
        raise AmiEncodeError(
            f"AMI field name {key!r} is empty or has surrounding white space", field=key
        )
    if ":" in key or any(c in key for c in _FORBIDDEN_CHARS):
        raise AmiEncodeError(
            f"AMI field name {key!r} contains ':', CR, LF or NUL (header injection)", field=key
        )
    return key


def _check_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"AMI field {key!r} must be str, not {type(value).__name__}")
    if any(c in value for c in _FORBIDDEN_CHARS):
        # Name the field, never the value: it may be a secret.
        raise AmiEncodeError(
            f"AMI field {key!r} contains CR, LF or NUL; refusing to send it (header injection)",
            field=key,
        )
    return value


def _values(key: str, value: FieldValue) -> list[str]:
    if isinstance(value, str):
        return [_check_value(key, value)]
    if isinstance(value, bytes | bytearray) or not isinstance(value, Sequence):
        raise TypeError(f"AMI field {key!r} must be str, not {type(value).__name__}")
    return [_check_value(key, v) for v in value]


def encode_message(items: Iterable[tuple[str, str]]) -> bytes:
    """Frame ``(key, value)`` lines as one AMI message, refusing CR/LF/NUL anywhere."""
    lines = []
    for key, value in items:
        _check_key(key)
        lines.append(f"{key}: {_check_value(key, value)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def encode_action(name: str, action_id: str | None, fields: Fields) -> bytes:
    """The bytes of ``Action: name`` with its ActionID and fields.

    A sequence value repeats the key (``Variable: A=1``, ``Variable: B=2``).  Raises
    :class:`AmiEncodeError` for CR, LF or NUL in the name, the ActionID, a key or a
    value, for ``:`` in a key, and for ``Action``/``ActionID`` among the fields.
    """
    if not isinstance(name, str) or not name or any(c in name for c in (*_FORBIDDEN_CHARS, ":")):
        raise AmiEncodeError(f"invalid AMI action name {name!r}", field="Action")
    items: list[tuple[str, str]] = [("Action", name)]
    if action_id is not None:
        items.append(("ActionID", _check_value("ActionID", action_id)))
    for key, value in fields.items():
        _check_key(key)
        if key.lower() in _RESERVED_KEYS:
            raise AmiEncodeError(
                f"AMI field {key!r} is set by the client, not by the caller", field=key
            )
        items.extend((key, v) for v in _values(key, value))
    return encode_message(items)


_SECRET_NAMES: Final = frozenset(
    {"secret", "password", "passwd", "pass", "pin", "token", "authorization", "md5secret"}
)
_SECRET_PARTS: Final = ("secret", "password", "passwd", "token")


def is_secret_field(key: str, *, action: str | None = None) -> bool:
    """Whether a field of that name holds a secret and must not be logged.

    ``Key`` is the MD5 answer of a challenge Login, but the AstDB key of the DB*
    actions: it is masked unless ``action`` is one of those.
    """
    lowered = key.lower()
    if lowered in _SECRET_NAMES or any(part in lowered for part in _SECRET_PARTS):
        return True
    if lowered == "key":
        return action is None or not action.lower().startswith("db")
    return False


def mask_secrets(fields: Fields, *, action: str | None = None) -> dict[str, str | list[str]]:
    """A copy of ``fields`` for logs: secret values (Secret, Password, Key, ...) -> ``***``."""
    masked: dict[str, str | list[str]] = {}
    for key, value in fields.items():
        secret = is_secret_field(key, action=action)
        if isinstance(value, str):
            masked[key] = MASK if secret else value
        else:
            masked[key] = [MASK if secret else v for v in value]
    return masked


def is_list_complete(message: AmiMessage) -> bool:
    """Whether an event ends an event list (``EventList: Complete``, or the name
    ends with ``Complete`` where an old action leaves the header out)."""
    if message.kind is not MessageKind.EVENT:
        return False
    marker = message.event_list
    if marker is not None:
        return marker in ("complete", "cancelled")
    return (message.event or "").endswith("Complete")


@dataclass(frozen=True, slots=True)
class AmiEventList:
    """The answer to a list action: its response, its item events, its end event."""

    response: AmiMessage
    events: tuple[AmiMessage, ...]
    complete: AmiMessage | None


@dataclass(slots=True)
class EventListCollector:
    """Collects the answer to one list action, message by message.

    Feed it every message; it keeps those with its ActionID: the response, then the
    events up to the ``*Complete`` event.  A response that is an error, or that does
    not say ``EventList: start``, ends the list at once (no events follow).
    """

    action_id: str
    response: AmiMessage | None = None
    events: list[AmiMessage] = field(default_factory=list)
    complete: AmiMessage | None = None
    done: bool = False

    def feed(self, message: AmiMessage) -> bool:
        """Take ``message`` if it belongs to this list; True when it was taken."""
        if self.done or message.action_id != self.action_id:
            return False
        if message.kind is MessageKind.RESPONSE:
            if self.response is not None:
                return False
            self.response = message
            if message.is_error or message.event_list != "start":
                self.done = True
            return True
        if message.kind is MessageKind.EVENT:
            if is_list_complete(message):
                self.complete = message
                self.done = True
            else:
                self.events.append(message)
            return True
        return False

    def result(self) -> AmiEventList:
        if not self.done or self.response is None:
            raise RuntimeError(f"event list {self.action_id!r} is not complete yet")
        return AmiEventList(self.response, tuple(self.events), self.complete)
