"""A running router's HTTP API as the CLI sees it: fixed JSON answers by path, served
from a thread on a free loopback port (``callrouter plan --router``, ``status``)."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class FakeRouterApi:
    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers  # path -> (status, JSON body); others are 404
        self.seen_tokens: list[str | None] = []  # each request's Authorization header
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen_tokens.append(self.headers.get("Authorization"))
                status, answer = outer.answers.get(self.path, (404, {"detail": "Not Found"}))
                body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
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
