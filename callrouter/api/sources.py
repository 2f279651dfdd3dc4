"""Where an API request comes from, for the PIN lockout, the audit table and the log.

The source is the TCP peer.  ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239) count
only when that peer is one of the trusted proxies (``api_trusted_proxies``, none by
default): then the client is the right-most address of the chain that is not itself
a trusted proxy, since everything left of what our proxy appended is the client's
own word.  Whatever cannot be read as an IP address, a chain longer than
``MAX_HOPS``, and two headers that name different clients all fall back to the peer:
a forged header may at worst make a request count as the proxy's, never as someone
else's.  The answer is always short and printable (``api 192.0.2.7``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

MAX_HOPS = 16  # proxies in a chain that are looked at, from the right
MAX_HEADER_CHARS = 4096  # a longer forwarding header is not read at all
_MAX_ENTRY_CHARS = 64  # "[ffff:…:ffff]:65535" fits easily
MAX_LABEL_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9.:_\[\]-]")


def parse_address(text: str) -> Address | None:
    """An IP address as proxies write one: bare, ``[v6]``, ``[v6]:port``, ``v4:port``,
    possibly quoted (Forwarded); IPv4-mapped IPv6 as IPv4.  None if it is none."""
    text = text.strip()
    if len(text) > _MAX_ENTRY_CHARS:
        return None
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
    else:
        host = text
    if "%" in host:  # an IPv6 zone names an interface of the proxy, not a client
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` of each element of a Forwarded header ("" where one has none)."""
    entries = []
    for element in value.split(","):
        found = ""
        for pair in element.split(";"):
            key, equals, item = pair.partition("=")
            if equals and key.strip().lower() == "for":
                found = item
        entries.append(found)
    return entries


def _client_of_chain(entries: Sequence[str], proxies: Sequence[Network]) -> Address | None:
    """The right-most entry that is not a trusted proxy; None if an entry on the way
    is not an address or the chain is too long."""
    last: Address | None = None
    for hops, entry in enumerate(reversed(entries)):
        if hops >= MAX_HOPS:
            return None
        address = parse_address(entry)
        if address is None:
            return None
        if not _trusted(address, proxies):
            return address
        last = address
    return last  # every hop a trusted proxy: the first of them sent it


def client_address(
    peer: str | None,
    forwarded_for: Sequence[str],
    forwarded: Sequence[str],
    proxies: Sequence[Network],
) -> str:
    """The client's address: ``peer`` (the TCP peer, unless it is a trusted proxy),
    else what the proxy's headers say (all values of ``X-Forwarded-For`` and of
    ``Forwarded``).  Always printable and at most MAX_LABEL_CHARS long."""
    address = parse_address(peer) if peer is not None else None
    if address is None:
        return safe_label(peer or "unknown")
    if not proxies or not _trusted(address, proxies):
        return str(address)
    answers: list[Address | None] = []
    for values, split in (
        (forwarded_for, lambda value: value.split(",")),
        (forwarded, _forwarded_for),
    ):
        joined = ",".join(v for v in values if v.strip())
        if not joined:
            continue
        if len(joined) > MAX_HEADER_CHARS:
            answers.append(None)
            continue
        answers.append(_client_of_chain([e for e in split(joined) if e.strip()], proxies))
    if not answers or None in answers or len(set(answers)) != 1:
        return str(address)
    client = answers[0]
    assert client is not None
    return str(client)


def safe_label(text: str) -> str:
    """``text`` fit for a log line and an audit row: printable ASCII of a host name or
    address (anything else as ``?``), at most MAX_LABEL_CHARS long."""
    text = _UNSAFE.sub("?", text)
    if len(text) > MAX_LABEL_CHARS:
        text = text[: MAX_LABEL_CHARS - 3] + "..."
    return text or "unknown"
