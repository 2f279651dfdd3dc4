"""The errors of the AMI client (connecting, logging in, actions).

Apart from :mod:`callrouter.ami.client` so that the connection
(:mod:`callrouter.ami.connection`) can raise them too. The protocol's own errors
(:class:`~callrouter.ami.protocol.AmiError`, the base of these, and the parse and encode
errors) are in :mod:`callrouter.ami.protocol`.
"""

from __future__ import annotations

from callrouter.ami.protocol import AmiError, AmiMessage

__all__ = [
    "AmiActionError",
    "AmiConnectionError",
    "AmiConnectionLost",
    "AmiLoginError",
    "AmiTimeout",
]


class AmiConnectionError(AmiError):
    """Could not connect to AMI, or there is no connection right now."""


class AmiConnectionLost(AmiConnectionError):
    """The connection ended while an action waited for its answer."""


class AmiLoginError(AmiError):
    """Asterisk refused the login (wrong user or secret, or not permitted)."""


class AmiActionError(AmiError):
    """Asterisk answered an action with ``Response: Error``; ``response`` is the answer."""

    def __init__(self, action: str, response: AmiMessage) -> None:
        self.action = action
        self.response = response
        super().__init__(f"AMI action {action} failed: {response.message or 'no message'}")

    @property
    def message(self) -> str | None:
        return self.response.message


class AmiTimeout(AmiError, TimeoutError):
    """No answer to an action within its time-out."""

    def __init__(self, action: str, action_id: str, timeout: float) -> None:
        self.action = action
        self.action_id = action_id
        self.timeout = timeout
        super().__init__(
            f"no answer to AMI action {action} (ActionID {action_id}) within {timeout:g} s"
        )
