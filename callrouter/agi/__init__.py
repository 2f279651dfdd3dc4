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
from callrouter.agi.ratelimit import RateLimitedLog
from callrouter.agi.server import AgiServer, AgiSession, ChannelCheck, Handler

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
    "ChannelCheck",
    "EnvironmentParser",
    "Handler",
    "RateLimitedLog",
    "format_command",
    "parse_reply",
    "parse_request",
]
