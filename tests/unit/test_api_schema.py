"""schemathesis against the API's own OpenAPI document, in process (no network).

Every operation gets generated requests (valid and invalid), once as sent and once
with the admin token; every answer must be no 5xx, a status code the document lists,
and a body that fits the document's schema for it.  Bounded (MAX_EXAMPLES per
operation, a fixed seed) so it runs in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import Receive, Scope, Send

from callrouter.api import TokenSigner, create_api
from callrouter.api.desk import add_web_client
from callrouter.api.personal import add_personal
from callrouter.directory.database import create_engine, upgrade
from callrouter.directory.importer import import_document
from callrouter.directory.snapshot import load_snapshot
from callrouter.domain.directory import DirectorySnapshot
from callrouter.logins.service import LoginService
from callrouter.personal.service import PersonalService
from callrouter.presence.live import PresenceService
from callrouter.presence.tracker import PresenceTracker
from callrouter.rules.model import RingRules
from callrouter.web.build import WebClient
from callrouter.web.page import load_files, page_routes
from callrouter.web.sessions import WebSessions
from tests.unit.test_directory_store import document

ADMIN_TOKEN = "admin-token-0123456789"
PERSONAL_RULES: dict[str, Any] = {
    "users": {"201": {"followme": [{"ring": ["PJSIP/anna-soft"], "switch": "softphone"}]}}
}
MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]


def with_web_client(api: FastAPI, service: LoginService, presence: PresenceService) -> FastAPI:
    """The API as the daemon serves it: the web client's and personal routes too."""
    web = WebClient(WebSessions(), page_routes(load_files()), secure_cookie=False)
    add_web_client(api, web, service=service, presence=presence)
    rules = RingRules.model_validate(PERSONAL_RULES)
    personal = PersonalService(
        service.engine, lambda: service.snapshot, lambda: rules, on_change=service._on_change
    )
    add_personal(api, personal, presence=presence.tracker, local_time=lambda: datetime.now(UTC))
    return api


class Router:
    """The API on a directory of its own, made in the event loop that serves it.

    schemathesis calls the app from its own loop (a thread of its own); the
    database engine must live there, so it is made at the ASGI lifespan's start."""

    def __init__(self, database: Path) -> None:
        self.url = f"sqlite:///{database}"
        self.api: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        await upgrade(self.url)
        engine = create_engine(self.url)
        await import_document(engine, document(), prune=False, actor="test")
        snapshot: list[DirectorySnapshot] = [await load_snapshot(engine)]

        async def refresh() -> None:
            snapshot[0] = await load_snapshot(engine)

        service = LoginService(engine, lambda: snapshot[0], on_change=refresh)
        presence = PresenceService(PresenceTracker(snapshot[0]), ami=None)
        api = create_api(service, TokenSigner(b"k" * 32), ADMIN_TOKEN, presence=presence)
        self.api = with_web_client(api, service, presence)
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await engine.dispose()
        await send({"type": "lifespan.shutdown.complete"})


def _document() -> dict[str, Any]:
    """The OpenAPI document; it does not depend on the directory."""
    service = LoginService(create_engine("sqlite://"), DirectorySnapshot)
    presence = PresenceService(PresenceTracker(DirectorySnapshot()), ami=None)
    api = create_api(service, TokenSigner(b"k" * 32), ADMIN_TOKEN, presence=presence)
    return with_web_client(api, service, presence).openapi()


# Explicit, so that no schemathesis.toml found on the way changes the run.  An event
# stream never ends: it is read up to its first event (the snapshot).
CONFIG = schemathesis.Config.from_dict(
    {"seed": 20261201, "max-stream-events": 1, "request-timeout": 5}
)
schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    router = Router(tmp_path_factory.mktemp("schema") / "directory.db")
    with asgi.get_client(router):  # starts the lifespan (the directory) in its loop
        yield router
    asgi.shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_documented(case: schemathesis.Case, router: Router) -> None:
    case.call_and_validate(app=router, checks=CHECKS)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    case.call_and_validate(app=router, headers=admin, checks=CHECKS)
