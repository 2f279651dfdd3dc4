"""The routes the web client needs beyond the API's: sign-in with the session cookie,
and the desk (my workplace, my phones, my status) as one view and as a live stream.

The page (callrouter.web) signs in here and then uses the ordinary API routes, the
cookie standing in for the bearer token (callrouter.api.app._principal).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from callrouter.ami.protocol import AmiMessage
from callrouter.api.app import (
    KEEPALIVE_SECONDS,
    RECHECK_SECONDS,
    Auth,
    SessionRequest,
    WorkplaceView,
    _answers,
    still_authorized,
    workplace_views,
)
from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.presence import ClientStatus, DeviceState
from callrouter.logins.service import LoginService
from callrouter.presence.live import PresenceService
from callrouter.web.build import WebClient
from callrouter.web.sessions import COOKIE, cross_site_refusal

# How the router tells about directory changes (LiveDirectory.subscribe).
DirectoryChanges = Callable[[Callable[[frozenset[str] | None], None]], Callable[[], None]]
PhoneState = Literal["reachable", "ringing", "on_call", "unreachable"]


class WebSession(BaseModel):
    extension: str
    name: str
    expires_at: datetime


class PhoneView(BaseModel):
    endpoint: str
    source: Literal["own", "workplace"]  # directly mine, or the workplace's I sit at
    state: PhoneState


class DeskView(BaseModel):
    extension: str
    name: str
    workplace: str | None  # the id of the workplace I sit at
    phones: list[PhoneView]
    client: ClientStatus  # merged over all my clients: what colleagues see
    heartbeat_seconds: float  # send my client status again well within this
    occupied_workplace: Literal["displace", "refuse"]  # the router's setting
    workplaces: list[WorkplaceView]  # the ones my role allows


def phone_state(state: DeviceState) -> PhoneState:
    if not state.reachable:
        return "unreachable"
    if state.in_use:
        return "on_call"
    if state.ringing:
        return "ringing"
    return "reachable"


class _Wakers:
    """Streams waiting for changes by key (an extension, an endpoint)."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def watch(self, keys: Iterable[str], event: asyncio.Event) -> None:
        for key in keys:
            self._waiting.setdefault(key, set()).add(event)

    def unwatch(self, keys: Iterable[str], event: asyncio.Event) -> None:
        for key in keys:
            events = self._waiting.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[key]

    def wake(self, key: str) -> None:
        for event in self._waiting.get(key, ()):
            event.set()

    def __contains__(self, key: str) -> bool:
        return key in self._waiting


def _on_device(event: AmiMessage, by_phone: _Wakers) -> None:
    if event.event == "DeviceStateChange":
        device = event.get("Device") or ""
    elif event.event == "ContactStatus":
        device = f"PJSIP/{event.get('EndpointName') or ''}"
    else:
        return
    if device in by_phone:
        # Presence's own subscriber may run after this one: look once it has.
        asyncio.get_running_loop().call_soon(by_phone.wake, device)


def _refuse_cross_site(request: Request) -> None:
    refusal = cross_site_refusal(request.method, request.headers)
    if refusal is not None:
        raise HTTPException(403, refusal)


def _user_of(who: Auth) -> str:
    if who.extension is None:
        raise HTTPException(400, "the admin token belongs to no user")
    return who.extension


# Module level, so that FastAPI can resolve the annotation (postponed evaluation).
User = Annotated[str, Depends(_user_of)]


def add_web_client(
    api: FastAPI,
    web: WebClient,
    *,
    service: LoginService,
    presence: PresenceService,
    directory_changes: DirectoryChanges | None = None,
) -> None:
    """Serve the web client's page and its routes from ``api``."""
    api.state.web_sessions = web.sessions  # _principal accepts the cookie from now on
    api.include_router(web.routes)
    api.include_router(_desk_routes(web, service, presence, directory_changes))


def _desk_routes(
    web: WebClient,
    service: LoginService,
    presence: PresenceService,
    directory_changes: DirectoryChanges | None,
) -> APIRouter:
    routes = APIRouter()
    sessions = web.sessions

    @routes.post(
        "/api/v1/web/session",
        responses=_answers(400, 401, 403, 422, 429),
        dependencies=[Depends(_refuse_cross_site)],
    )
    async def sign_in(body: SessionRequest, request: Request) -> JSONResponse:
        """The web client's sign-in: extension and PIN for a session cookie (HttpOnly,
        SameSite=Strict; the same lockout and answers as ``POST /api/v1/session``).
        Needs the header ``X-Callrouter-Client: web``, so that no other site can sign
        a browser in to an account of its choosing."""
        user = await service.check_pin(
            body.extension, body.pin, source=request.app.state.source_of(request)
        )
        assert user.pin_hash is not None  # check_pin only accepts users with a PIN
        previous = request.cookies.get(COOKIE)
        if previous is not None:
            sessions.close(previous)  # signing in again replaces the session, never adds
        session_id, expires = sessions.open(user.extension, user.pin_hash)
        answer = WebSession(
            extension=user.extension,
            name=user.name,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )
        reply = JSONResponse(answer.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
        reply.set_cookie(
            COOKIE,
            session_id,
            max_age=int(sessions.ttl),
            path="/",
            secure=web.secure_cookie,
            httponly=True,
            samesite="strict",
        )
        return reply

    @routes.delete(
        "/api/v1/web/session",
        status_code=204,
        responses=_answers(403),
        dependencies=[Depends(_refuse_cross_site)],
    )
    async def sign_out(request: Request) -> Response:
        """Sign out: the session ends on the server (a copy of the cookie is worthless)."""
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            sessions.close(cookie)
        reply = Response(status_code=204)
        reply.delete_cookie(
            COOKIE, path="/", secure=web.secure_cookie, httponly=True, samesite="strict"
        )
        return reply

    def desk_of(snapshot: DirectorySnapshot, extension: str) -> DeskView | None:
        user = snapshot.users.get(extension)
        if user is None:
            return None
        workplace = snapshot.workplace_of(extension)
        tracker = presence.tracker

        def phone(endpoint: str, source: Literal["own", "workplace"]) -> PhoneView:
            state = phone_state(tracker.device_state(endpoint))
            return PhoneView(endpoint=endpoint, source=source, state=state)

        phones = [phone(e, "own") for e in user.phones]
        if workplace is not None:
            phones += [phone(e, "workplace") for e in workplace.phones if e not in user.phones]
        state = tracker.user(extension)
        return DeskView(
            extension=extension,
            name=user.name,
            workplace=None if workplace is None else workplace.id,
            phones=phones,
            client=ClientStatus.OFFLINE if state is None else state.client,
            heartbeat_seconds=tracker.heartbeat_timeout,
            occupied_workplace=service.policy,
            workplaces=workplace_views(snapshot, extension),
        )

    @routes.get("/api/v1/me/desk", responses=_answers(401, bad_request="The admin's is no desk"))
    async def desk(extension: User) -> DeskView:
        """My workplace, my phones with their states, my merged status, and the
        workplaces my role allows with who sits where."""
        view = desk_of(service.snapshot, extension)
        if view is None:
            raise HTTPException(401, "invalid or expired token")
        return view

    def seats(snapshot: DirectorySnapshot) -> dict[str, str]:
        """Who sits where, by extension: the workplace's name."""
        return {
            extension: snapshot.workplaces[workplace].name
            for extension, workplace in sorted(snapshot.logins.items())
            if workplace in snapshot.workplaces
        }

    # One subscriber each for all the streams, which wait by extension and by phone:
    # a device event costs a lookup, not a call per open page.
    by_user = _Wakers()
    by_phone = _Wakers()
    everyone = _Wakers()  # directory changes: rare, and may concern anyone's seat
    presence.subscribe(lambda state: by_user.wake(state.extension))
    if presence.ami is not None:
        presence.ami.subscribe(lambda event: _on_device(event, by_phone))
    # Directory and rules changes so far: a page asks for its ring plan again when
    # this grows, as anyone's change may reach the plan (a forwarding target's phones).
    changes = 0

    def directory_changed(_concerned: frozenset[str] | None) -> None:
        nonlocal changes
        changes += 1
        everyone.wake("")

    if directory_changes is not None:
        directory_changes(directory_changed)

    def personal_of(snapshot: DirectorySnapshot, extension: str) -> dict[str, object]:
        # My own forwardings and switched-off switches: the page fetches the views
        # (/api/v1/me/forwarding, /me/switches) again when these change.
        return {
            "forwards": dict(snapshot.forwards.get(extension, {})),
            "switched_off": sorted(snapshot.switched_off.get(extension, ())),
        }

    async def stream(extension: str, request: Request) -> AsyncIterator[str]:
        wake = asyncio.Event()
        wake.set()  # the first round sends everything
        phones: frozenset[str] = frozenset()
        by_user.watch((extension,), wake)
        everyone.watch(("",), wake)
        sent: dict[str, str] = {}
        checked = keptalive = time.monotonic()
        try:
            while not await request.is_disconnected():
                if time.monotonic() - checked >= RECHECK_SECONDS:
                    if not still_authorized(request):
                        yield "event: ended\ndata: {}\n\n"
                        return
                    checked = time.monotonic()
                try:
                    await asyncio.wait_for(wake.wait(), min(KEEPALIVE_SECONDS, RECHECK_SECONDS))
                except TimeoutError:
                    if time.monotonic() - keptalive >= KEEPALIVE_SECONDS:
                        keptalive = time.monotonic()
                        yield ": keepalive\n\n"
                    continue
                wake.clear()
                snapshot = service.snapshot
                view = desk_of(snapshot, extension)
                if view is None:
                    yield "event: ended\ndata: {}\n\n"
                    return
                now_phones = frozenset(p.endpoint for p in view.phones)
                if now_phones != phones:
                    by_phone.unwatch(phones, wake)
                    by_phone.watch(now_phones, wake)
                    phones = now_phones
                for name, data in (
                    ("desk", view.model_dump_json()),
                    ("seats", json.dumps(seats(snapshot))),
                    ("personal", json.dumps(personal_of(snapshot, extension))),
                    ("directory", json.dumps({"changes": changes})),
                ):
                    if sent.get(name) != data:
                        sent[name] = data
                        keptalive = time.monotonic()
                        yield f"event: {name}\ndata: {data}\n\n"
        finally:
            by_user.unwatch((extension,), wake)
            everyone.unwatch(("",), wake)
            by_phone.unwatch(phones, wake)

    @routes.get(
        "/api/v1/me/events",
        response_class=StreamingResponse,
        responses={
            200: {"description": "The event stream", "content": {"text/event-stream": {}}},
            **_answers(401, bad_request="The admin's is no desk"),
        },
    )
    async def desk_events(extension: User, request: Request) -> StreamingResponse:
        """Server-Sent Events: ``desk`` (a DeskView) whenever mine changes (a login by
        phone, API or admin, a phone's state, my status), ``seats`` (who sits where,
        by extension) whenever that does, ``personal`` (my own forwardings and
        switched-off switches) whenever they do, ``directory`` (a count of directory
        and rules changes) whenever anything there changed; a comment line every 15 s."""
        return StreamingResponse(
            stream(extension, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return routes
