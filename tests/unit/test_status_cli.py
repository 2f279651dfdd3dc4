"""``callrouter status``: a router's readiness, from a fake router's answer (the e2e test
asks a real one): exit 0 ready, 1 not ready, 2 no router."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from callrouter.cli.main import main

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


class FakeRouter:
    def __init__(self) -> None:
        self.answer: tuple[int, bytes] = (200, json.dumps(READY).encode())
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = outer.answer
                if self.path != "/api/v1/health/ready":
                    status, body = 404, b'{"detail": "Not Found"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def router() -> Iterator[FakeRouter]:
    fake = FakeRouter()
    yield fake
    fake.close()


def status(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["status", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_ready_router(router: FakeRouter) -> None:
    code, out, _ = status("--router", router.url)
    assert code == 0, out
    assert out.splitlines()[0] == f"router at {router.url}: ready"
    assert "ARI        connected" in out and "AMI        connected" in out
    assert "revision 42" in out and "3 in progress" in out
    code, out, _ = status("--router", router.url, "--json")
    assert code == 0 and json.loads(out) == READY


def test_a_router_that_is_not_ready_says_why(router: FakeRouter) -> None:
    state = {
        **READY,
        "ready": False,
        "ari_connected": False,
        "reasons": ["ARI is not connected: calls cannot reach the router"],
    }
    router.answer = (503, json.dumps(state).encode())
    code, out, _ = status("--router", router.url)
    assert code == 1
    assert "NOT READY" in out and "ARI        NOT connected" in out
    assert "not ready: ARI is not connected" in out


def test_no_router_is_exit_2_with_a_clear_message(router: FakeRouter) -> None:
    code, _, err = status("--router", "http://127.0.0.1:9")
    assert code == 2 and "error: no router at http://127.0.0.1:9" in err
    # Something answers, but not as a router does.
    router.answer = (200, b"<html>hello</html>")
    code, _, err = status("--router", router.url)
    assert code == 2 and "did not answer as a router does" in err
    code, _, err = status("--router", router.url + "/elsewhere")
    assert code == 2 and "did not answer as a router does" in err


def test_the_router_url_comes_from_the_environment_like_plan(
    router: FakeRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLROUTER_ROUTER_URL", router.url)
    assert status()[0] == 0
