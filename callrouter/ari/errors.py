"""Errors of the ARI client. Each carries its data; none ever carries a credential."""

from __future__ import annotations


class AriError(Exception):
    """Base class of everything the ARI client raises."""


class AriProtocolError(AriError):
    """Asterisk sent something that is not an ARI message (garbled JSON, wrong shape)."""

    def __init__(self, reason: str, payload: str | bytes = "") -> None:
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", errors="replace")
        self.reason = reason
        self.excerpt = payload[:200]  # enough to recognise the frame in a log line
        super().__init__(f"{reason}: {self.excerpt!r}" if self.excerpt else reason)


class AriHttpError(AriError):
    """Asterisk answered a REST request with an error status.

    ``message`` is Asterisk's own explanation (the ``message`` of its JSON error body),
    e.g. ``"Channel not found"`` or ``"Channel not in Stasis application"``.
    """

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        super().__init__(f"{method} {path}: HTTP {status}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404


class AriConnectionError(AriError):
    """A REST request did not get an answer: connection refused, reset or timed out."""

    def __init__(self, method: str, path: str, reason: str) -> None:
        self.method = method
        self.path = path
        self.reason = reason
        super().__init__(f"{method} {path}: {reason}")


class AriClosedError(AriError):
    """The client was used after :meth:`AriClient.close`."""
