"""FastAGI: a pure protocol layer and a small asyncio server."""

from callrouter.agi.protocol import (
    MAX_HEADER_LINES,
    MAX_LINE_BYTES,
    AgiCommandFailed,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    AgiTimeout,
    EnvironmentParser,
    format_command,
    parse_reply,
    parse_request,
)
from callrouter.agi.server import AgiServer, AgiSession, Handler

__all__ = [
    "MAX_HEADER_LINES",
    "MAX_LINE_BYTES",
    "AgiCommandFailed",
    "AgiError",
    "AgiHangup",
    "AgiProtocolError",
    "AgiReply",
    "AgiRequest",
    "AgiServer",
    "AgiSession",
    "AgiTimeout",
    "EnvironmentParser",
    "Handler",
    "format_command",
    "parse_reply",
    "parse_request",
]
