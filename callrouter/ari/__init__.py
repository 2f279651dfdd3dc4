"""ARI transport: typed events, an asyncio REST + websocket client, its errors."""

from callrouter.ari.client import (
    AriClient,
    ConnectedHandler,
    EventHandler,
    EventSink,
    HangupReason,
    new_id,
)
from callrouter.ari.errors import (
    AriClosedError,
    AriConnectionError,
    AriError,
    AriHttpError,
    AriProtocolError,
)
from callrouter.ari.events import (
    AriEvent,
    Bridge,
    Channel,
    DeviceState,
    Endpoint,
    channel_ids,
    parse_event,
    routing_ids,
)

__all__ = [
    "AriClient",
    "AriClosedError",
    "AriConnectionError",
    "AriError",
    "AriEvent",
    "AriHttpError",
    "AriProtocolError",
    "Bridge",
    "Channel",
    "ConnectedHandler",
    "DeviceState",
    "Endpoint",
    "EventHandler",
    "EventSink",
    "HangupReason",
    "channel_ids",
    "new_id",
    "parse_event",
    "routing_ids",
]
