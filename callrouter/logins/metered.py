"""Login attempts counted for the metrics, by outcome from a closed set.

A login attempt counts once, by how far it got: a PIN check that fails (``wrong_pin``,
``locked``) ends it; otherwise the login itself says ``ok`` or why not.  A PIN check
that succeeds is not counted by itself (an API session is no login yet; the phone's
``*44`` goes on to the login, which counts).  The service's logic is untouched: this
subclass only watches its answers.
"""

from __future__ import annotations

from typing import Any

from callrouter.domain.directory import User
from callrouter.logins import store
from callrouter.logins.policy import Refusal
from callrouter.logins.service import LoginDenied, LoginService
from callrouter.metrics import Metrics

# Every Refusal, as the metrics' label (tests/unit/test_metrics.py: none left out).
OUTCOMES: dict[Refusal, str] = {
    Refusal.BAD_CREDENTIALS: "wrong_pin",  # or an unknown extension: never say which
    Refusal.LOCKED: "locked",
    Refusal.NOT_ALLOWED: "refused_role",
    Refusal.OCCUPIED: "occupied",
    Refusal.UNKNOWN_WORKPLACE: "unknown_workplace",
    Refusal.UNKNOWN_USER: "unknown_user",
    Refusal.NOT_A_WORKPLACE_PHONE: "not_a_workplace_phone",
    Refusal.BAD_INPUT: "bad_input",
}
OK = "ok"


class MeteredLoginService(LoginService):
    def __init__(self, metrics: Metrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def check_pin(self, extension: str, pin: str, *, source: str) -> User:
        try:
            return await super().check_pin(extension, pin, source=source)
        except LoginDenied as exc:
            self.metrics.login(OUTCOMES[exc.reason])
            raise

    async def login(
        self, extension: str, workplace_id: str, *, actor: str, source: str
    ) -> store.LoginChange:
        try:
            change = await super().login(extension, workplace_id, actor=actor, source=source)
        except LoginDenied as exc:
            self.metrics.login(OUTCOMES[exc.reason])
            raise
        self.metrics.login(OK)
        return change
