"""``callrouter status``: a router's readiness, from a fake router's answer (the e2e test
asks a real one): exit 0 ready, 1 not ready, 2 no router."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from callrouter.cli.main import main
from tests.fakes.fake_router_api import FakeRouterApi

READY_PATH = "/api/v1/health/ready"

READY: dict[str, Any] = {
    "ready": True,
    "reasons": [],
    "warnings": [],
    "snapshot_loaded": True,
    "directory_revision": 42,
    "ari_connected": True,
    "ami_connected": True,
    "database_reachable": True,
    "snapshot_checked_seconds_ago": 0.3,
    "calls_in_progress": 3,
}


@pytest.fixture
def router() -> Iterator[FakeRouterApi]:
    fake = FakeRouterApi({READY_PATH: (200, READY)})
    yield fake
    fake.close()


def status(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["status", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_ready_router(router: FakeRouterApi) -> None:
    code, out, _ = status("--router", router.url)
    assert code == 0, out
    assert out.splitlines()[0] == f"router at {router.url}: ready"
    assert "ARI        connected" in out and "AMI        connected" in out
    assert "revision 42" in out and "3 in progress" in out
    code, out, _ = status("--router", router.url, "--json")
    assert code == 0 and json.loads(out) == READY


def test_a_router_that_is_not_ready_says_why(router: FakeRouterApi) -> None:
    state = {
        **READY,
        "ready": False,
        "ari_connected": False,
        "reasons": ["ARI is not connected: calls cannot reach the router"],
    }
    router.answers[READY_PATH] = (503, state)
    code, out, _ = status("--router", router.url)
    assert code == 1
    assert "NOT READY" in out and "ARI        NOT connected" in out
    assert "not ready: ARI is not connected" in out


def test_no_router_is_exit_2_with_a_clear_message(router: FakeRouterApi) -> None:
    code, _, err = status("--router", "http://127.0.0.1:9")
    assert code == 2 and "error: no router at http://127.0.0.1:9" in err
    # Something answers, but not as a router does.
    router.answers[READY_PATH] = (200, b"<html>hello</html>")
    code, _, err = status("--router", router.url)
    assert code == 2 and "did not answer as a router does" in err
    code, _, err = status("--router", router.url + "/elsewhere")
    assert code == 2 and "did not answer as a router does" in err


def test_the_router_url_comes_from_the_environment_like_plan(
    router: FakeRouterApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLROUTER_ROUTER_URL", router.url)
    assert status()[0] == 0
