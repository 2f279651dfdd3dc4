"""Builds the web client: its session store and the routes of its files."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from callrouter.config import Settings
from callrouter.web.page import load_files, page_routes
from callrouter.web.sessions import WebSessions


@dataclass(frozen=True, slots=True)
class WebClient:
    sessions: WebSessions
    routes: APIRouter
    secure_cookie: bool  # behind a TLS proxy: the cookie is sent over HTTPS only


def build(settings: Settings) -> WebClient:
    return WebClient(
        sessions=WebSessions(ttl=settings.api_token_ttl),
        routes=page_routes(load_files()),
        secure_cookie=settings.api_cookie_secure,
    )
