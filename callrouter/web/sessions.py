"""Browser sessions: a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie.

Not the API's signed tokens: a signed token cannot be ended on the server before it
expires, and signing out must end the session, not just forget the cookie.  So the
server keeps each session (extension, PIN hash, expiry) under the SHA-256 digest of
its id; the id itself is stored nowhere.  A session ends when it expires, when it is
signed out, and as soon as the user's PIN changes or the user leaves the directory
(the PIN hash it was opened with no longer matches), like an API token.

Sessions live in this router's memory: a restart signs everyone out of the page (it
asks for the PIN again), and a second router sharing the directory does not know
them (the page is served by one router and talks to that one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

COOKIE = "callrouter_session"
# State-changing requests with the cookie must carry this header.  A page of another
# site cannot set it: a cross-site request with a custom header needs a CORS
# preflight, which this server never grants.
CSRF_HEADER = "X-Callrouter-Client"
CSRF_VALUE = "web"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A user's sessions beyond this (a script signing in over and over) end oldest first.
MAX_SESSIONS_PER_USER = 20
_ID_BYTES = 32
_ID_LENGTH = 43  # secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class _Session:
    extension: str
    pin_hash: str
    expires: float


class WebSessions:
    def __init__(
        self,
        *,
        ttl: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
        max_per_user: int = MAX_SESSIONS_PER_USER,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._max_per_user = max_per_user
        self._sessions: dict[bytes, _Session] = {}  # digest of the id -> session
        self._by_user: dict[str, list[bytes]] = {}  # extension -> digests, oldest first

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, extension: str, pin_hash: str) -> tuple[str, float]:
        """A new session for a user whose PIN was just checked: its id and expiry."""
        session_id = secrets.token_urlsafe(_ID_BYTES)
        expires = self._clock() + self.ttl
        digest = _digest(session_id)
        self._sessions[digest] = _Session(extension, pin_hash, expires)
        mine = self._by_user.setdefault(extension, [])
        mine.append(digest)
        self._prune(extension)
        return session_id, expires

    def user(self, session_id: str, pin_hash_of: Callable[[str], str | None]) -> str | None:
        """The extension whose session this is, if it is open, unexpired and the
        user's PIN is the one it was opened with; else None (and it is ended)."""
        if len(session_id) != _ID_LENGTH:
            return None  # no digest of oversized input, no lookup of what cannot be ours
        digest = _digest(session_id)
        session = self._sessions.get(digest)
        if session is None:
            return None
        current = pin_hash_of(session.extension)
        if (
            session.expires <= self._clock()
            or current is None
            or not hmac.compare_digest(current.encode(), session.pin_hash.encode())
        ):
            self._end(digest)
            return None
        return session.extension

    def close(self, session_id: str) -> None:
        """Sign out: the session ends here, whoever holds a copy of the cookie."""
        if len(session_id) == _ID_LENGTH:
            self._end(_digest(session_id))

    def _end(self, digest: bytes) -> None:
        session = self._sessions.pop(digest, None)
        if session is None:
            return
        mine = self._by_user.get(session.extension, [])
        if digest in mine:
            mine.remove(digest)
        if not mine:
            self._by_user.pop(session.extension, None)

    def _prune(self, extension: str) -> None:
        """End the user's expired sessions, then the oldest beyond the cap."""
        now = self._clock()
        mine = self._by_user.get(extension, [])
        for digest in [d for d in mine if self._sessions[d].expires <= now]:
            self._end(digest)
        mine = self._by_user.get(extension, [])
        while len(mine) > self._max_per_user:
            self._end(mine[0])


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def cross_site_refusal(method: str, headers: Mapping[str, str]) -> str | None:
    """Why a cookie-authenticated request may not change anything, or None.

    Two checks: the custom header (no other site can send it without a CORS
    preflight, which is never granted), and, where the browser says so, that the
    request comes from this site (``Sec-Fetch-Site``).  ``SameSite=Strict`` keeps the
    cookie off cross-site requests besides; each of the three alone would stop a
    forged form or script.  Reads (GET) change nothing and pass.
    """
    if method.upper() in SAFE_METHODS:
        return None
    if headers.get(CSRF_HEADER.lower()) != CSRF_VALUE:
        return f"a request with the session cookie needs the header {CSRF_HEADER}: {CSRF_VALUE}"
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return "a cross-site request may not use the session cookie"
    return None
