"""AMI (Asterisk Manager Interface): a pure protocol layer and a small asyncio client."""

from callrouter.ami.client import (
    AmiActionError,
    AmiClient,
    AmiConnectionError,
    AmiConnectionLost,
    AmiLoginError,
    AmiTimeout,
)
from callrouter.ami.protocol import (
    AmiEncodeError,
    AmiError,
    AmiEventList,
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    EventListCollector,
    MessageKind,
    encode_action,
    encode_message,
    mask_secrets,
)

__all__ = [
    "AmiActionError",
    "AmiClient",
    "AmiConnectionError",
    "AmiConnectionLost",
    "AmiEncodeError",
    "AmiError",
    "AmiEventList",
    "AmiLoginError",
    "AmiMessage",
    "AmiParser",
    "AmiProtocolError",
    "AmiTimeout",
    "EventListCollector",
    "MessageKind",
    "encode_action",
    "encode_message",
    "mask_secrets",
]
