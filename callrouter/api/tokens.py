"""Users' API tokens: signed, not stored.

A token names the extension and its expiry and carries an HMAC over both and the
user's current PIN hash.  Any router holding the same key accepts it (no shared
session table), and changing a user's PIN ends all of their tokens at once.

A token has one spelling only: the one ``issue`` writes.  ``verify`` re-encodes what
it parsed and refuses anything that differs (an expiry with leading zeros, say), so
that no client can hold two strings that are the same token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from callrouter.domain.identifiers import EXTENSION_PATTERN

_PREFIX = "cr1"
_TOKEN = re.compile(
    rf"{_PREFIX}\.({EXTENSION_PATTERN.pattern})\.(0|[1-9][0-9]{{0,11}})\.([A-Za-z0-9_-]{{43}})"
)


class TokenSigner:
    def __init__(
        self,
        key: bytes | None = None,
        *,
        ttl: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self.ttl = ttl
        self._clock = clock

    def issue(self, extension: str, pin_hash: str) -> tuple[str, int]:
        """A token for ``extension`` and its expiry (Unix time)."""
        expires = int(self._clock() + self.ttl)
        return _spelled(extension, expires, self._mac(extension, expires, pin_hash)), expires

    def verify(self, token: str, pin_hash_of: Callable[[str], str | None]) -> str | None:
        """The extension the token was issued to, if it is genuine, unexpired and the
        user's PIN has not changed since; else None."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        extension, expires, mac = match.group(1), int(match.group(2)), match.group(3)
        if _spelled(extension, expires, mac) != token:  # one spelling per token
            return None
        if expires < self._clock():
            return None
        pin_hash = pin_hash_of(extension)
        if pin_hash is None:
            return None
        return (
            extension if hmac.compare_digest(mac, self._mac(extension, expires, pin_hash)) else None
        )

    def _mac(self, extension: str, expires: int, pin_hash: str) -> str:
        message = f"{extension}.{expires}.{pin_hash}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _spelled(extension: str, expires: int, mac: str) -> str:
    return f"{_PREFIX}.{extension}.{expires}.{mac}"
