"""Routes of the HTTP API.  Thin: every decision is the LoginService's.

Authentication is a bearer token: a user's (from ``POST /api/v1/session`` with
extension and PIN) or the admin token from the settings.  Users act on themselves;
the admin acts on anyone by naming the extension.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from callrouter.api.limits import MAX_BODY_BYTES, BodyLimit
from callrouter.api.problems import Problem, ValidationProblem, field_problems
from callrouter.api.sources import Network, client_address
from callrouter.api.tokens import TokenSigner
from callrouter.directory.database import DatabaseError
from callrouter.domain.directory import DirectorySnapshot
from callrouter.domain.identifiers import CLIENT_ID_PATTERN, Extension, WorkplaceId
from callrouter.domain.presence import ClientStatus, UserPresence
from callrouter.logins.policy import Refusal
from callrouter.logins.service import LoginDenied, LoginService
from callrouter.logins.store import LoginChange
from callrouter.presence.live import PresenceService
from callrouter.web.sessions import COOKIE, WebSessions, cross_site_refusal

ADMIN = "admin"

_STATUS = {
    Refusal.BAD_CREDENTIALS: 401,
    Refusal.LOCKED: 429,
    Refusal.NOT_ALLOWED: 403,
    Refusal.OCCUPIED: 409,
    Refusal.UNKNOWN_WORKPLACE: 404,
    Refusal.UNKNOWN_USER: 404,
    Refusal.NOT_A_WORKPLACE_PHONE: 400,
    Refusal.BAD_INPUT: 422,
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionRequest(_Body):
    extension: Extension
    # Bounded, not pattern-checked: a malformed PIN is a wrong PIN (401), like any other.
    pin: str = Field(max_length=32, json_schema_extra={"format": "password"})


class SessionResponse(BaseModel):
    token: str
    extension: str
    name: str
    expires_at: datetime


class Occupant(BaseModel):
    extension: str
    name: str


class WorkplaceView(BaseModel):
    id: str
    name: str
    code: str
    occupant: Occupant | None
    allowed: bool  # whether the asking user's role allows it (always true for the admin)


class LoginRequest(_Body):
    workplace: WorkplaceId
    extension: Extension | None = None  # the admin names the user; users omit it


class LogoutRequest(_Body):
    extension: Extension | None = None


class LoginState(BaseModel):
    extension: str
    workplace: str | None
    previous_workplace: str | None = None
    displaced: str | None = None  # who had to leave the workplace, if anyone


class Me(BaseModel):
    extension: str
    name: str
    workplace: str | None


class PhoneStatusView(BaseModel):
    available: bool  # a phone of the user's (own, or at their workplace) is reachable
    on_call: bool
    ringing: bool


class PresenceView(BaseModel):
    extension: str
    name: str
    phone: PhoneStatusView
    client: ClientStatus  # merged over the user's clients
    device_state: str  # what BLF keys show for the person (Custom:user-EXT)


class ClientStatusRequest(_Body):
    """A client's status; send it again within the heartbeat time-out (90 s by
    default) or the client counts as offline."""

    client_id: str = Field(pattern=f"^{CLIENT_ID_PATTERN.pattern}$", examples=["anna-laptop"])
    status: ClientStatus
    extension: Extension | None = None  # the admin names the user; users omit it


def workplace_views(snapshot: DirectorySnapshot, extension: str | None) -> list[WorkplaceView]:
    """The workplaces ``extension``'s role allows (None, the admin: all), by id."""
    occupants = snapshot.occupants
    user = None if extension is None else snapshot.users.get(extension)
    role = None if user is None or user.role is None else snapshot.roles.get(user.role)
    views = []
    for workplace in sorted(snapshot.workplaces.values(), key=lambda w: w.id):
        allowed = role is None or role.allows(workplace.id)
        if extension is not None and not allowed:
            continue
        occupant_ext = occupants.get(workplace.id)
        occupant_user = None if occupant_ext is None else snapshot.users.get(occupant_ext)
        views.append(
            WorkplaceView(
                id=workplace.id,
                name=workplace.name,
                code=workplace.code,
                allowed=allowed,
                occupant=None
                if occupant_user is None
                else Occupant(extension=occupant_user.extension, name=occupant_user.name),
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class Principal:
    extension: str | None  # None: the admin

    @property
    def actor(self) -> str:
        return self.extension or ADMIN

    def acting_on(self, extension: str | None, forbidden: str) -> str:
        """Whom a request acts on: users themselves (``forbidden``, 403, for anyone
        else); the admin whoever they name."""
        if self.extension is None:
            if extension is None:
                raise HTTPException(422, "the admin must name the extension")
            return extension
        if extension is not None and extension != self.extension:
            raise HTTPException(403, forbidden)
        return self.extension


_bearer = HTTPBearer(auto_error=False)


def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    service: LoginService = request.app.state.logins

    def pin_hash_of(extension: str) -> str | None:
        user = service.snapshot.users.get(extension)
        return None if user is None else user.pin_hash

    if credentials is None:
        # The web client's session cookie (callrouter.web): never the admin's, and
        # for anything but a read only with the proof that this site sent it.
        sessions: WebSessions | None = request.app.state.web_sessions
        cookie = request.cookies.get(COOKIE)
        if sessions is not None and cookie is not None:
            refusal = cross_site_refusal(request.method, request.headers)
            if refusal is not None:
                raise HTTPException(403, refusal)
            user = sessions.user(cookie, pin_hash_of)
            if user is None:
                raise HTTPException(401, "the session has ended; sign in again")
            return Principal(user)
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    token = credentials.credentials
    admin_token: str | None = request.app.state.admin_token
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(None)
    signer: TokenSigner = request.app.state.signer

    extension = signer.verify(token, pin_hash_of)
    if extension is None:
        raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
    return Principal(extension)


# Module level, so that FastAPI can resolve the annotation (postponed evaluation).
Auth = Annotated[Principal, Depends(_principal)]

# An event stream checks its request's credentials again at least this often (s), so
# that a session signed out, or a PIN changed, ends the streams opened with it too.
RECHECK_SECONDS = 5.0


def still_authorized(request: Request) -> bool:
    """Whether the request's token or session cookie would still be accepted."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    credentials = None
    if scheme.lower() == "bearer" and value.strip():
        credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=value.strip())
    try:
        _principal(request, credentials)
    except HTTPException:
        return False
    return True


# The answers the routes give besides 200, for the OpenAPI document (``responses=``).
_ANSWERS: dict[int, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not UTF-8 JSON"},
    401: {"model": Problem, "description": "No valid token (a session: wrong extension or PIN)"},
    403: {"model": Problem, "description": "Not allowed (the role, or another user's)"},
    404: {"model": Problem, "description": "No such user or workplace"},
    408: {"model": Problem, "description": "The request body did not arrive in time"},
    409: {"model": Problem, "description": "The workplace is occupied"},
    413: {"model": Problem, "description": f"Request body over {MAX_BODY_BYTES} bytes"},
    422: {
        "model": ValidationProblem | Problem,
        "description": "Malformed request: which fields and why (never their values)",
    },
    429: {"model": Problem, "description": "Too many wrong PINs: locked (see Retry-After)"},
    503: {
        "model": Problem,
        "description": "The directory database or presence is not available (JSON); or the "
        "listener has too many connections (text/plain)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


# One Server-Sent Event of /api/v1/presence/events (keepalive comments are no events).
_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["snapshot", "presence"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "snapshot: a JSON array of PresenceView; presence: one PresenceView",
        },
    },
}


def _answers(*codes: int, bad_request: str | None = None) -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {code: _ANSWERS[code] for code in codes}
    if bad_request is not None:
        answers[400] = {"model": Problem, "description": bad_request}
    return answers


KEEPALIVE_SECONDS = 15.0
STREAM_QUEUE = 10_000


async def _event_stream(
    live: PresenceService, view: Callable[[UserPresence], BaseModel], request: Request
) -> AsyncIterator[str]:
    queue: asyncio.Queue[UserPresence] = asyncio.Queue(STREAM_QUEUE)
    cut_off = False

    def listener(state: UserPresence) -> None:
        nonlocal cut_off
        try:
            queue.put_nowait(state)
        except asyncio.QueueFull:  # a reader that does not keep up is cut off
            cut_off = True
            unsubscribe()

    unsubscribe = live.subscribe(listener)
    try:
        everyone = [view(s).model_dump(mode="json") for s in live.tracker.users().values()]
        yield f"event: snapshot\ndata: {json.dumps(everyone)}\n\n"
        checked = sent = time.monotonic()
        while not await request.is_disconnected():
            if cut_off and queue.empty():
                return  # the client reconnects and starts from a new snapshot
            if time.monotonic() - checked >= RECHECK_SECONDS:
                if not still_authorized(request):
                    return  # signed out, or the PIN changed: the reconnect gets a 401
                checked = time.monotonic()
            try:
                state = await asyncio.wait_for(queue.get(), min(KEEPALIVE_SECONDS, RECHECK_SECONDS))
            except TimeoutError:
                if time.monotonic() - sent >= KEEPALIVE_SECONDS:
                    sent = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            sent = time.monotonic()
            yield f"event: presence\ndata: {view(state).model_dump_json()}\n\n"
    finally:
        unsubscribe()


def create_api(
    service: LoginService,
    signer: TokenSigner,
    admin_token: str | None = None,
    presence: PresenceService | None = None,
    trusted_proxies: Sequence[Network] = (),
    role: Callable[[], tuple[str, float]] | None = None,
) -> FastAPI:
    api = FastAPI(
        title="callrouter",
        summary="Workplace logins (hot desking) for client apps and admins.",
        version="1",
        # Swagger UI and ReDoc load their scripts from a CDN: no such pages here (the
        # router works without internet access); /openapi.json describes the API.
        docs_url=None,
        redoc_url=None,
        # Every request passes the body limit, and the listener's connection cap.
        responses=_answers(408, 413, 503),
    )
    api.add_middleware(BodyLimit)
    api.state.logins = service
    api.state.signer = signer
    api.state.admin_token = admin_token
    api.state.web_sessions = None  # callrouter.api.desk.add_web_client sets it

    def source_of(request: Request) -> str:
        """The TCP peer, or behind a trusted proxy the client it names (sources.py)."""
        address = client_address(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            request.headers.getlist("forwarded"),
            trusted_proxies,
        )
        return f"api {address}"

    api.state.source_of = source_of  # for the web client's sign-in (api/desk.py)

    def subject(who: Principal, extension: str | None) -> str:
        return who.acting_on(extension, "users may only log themselves in and out")

    @api.exception_handler(LoginDenied)
    async def _denied(request: Request, exc: LoginDenied) -> JSONResponse:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(int(exc.retry_after) + 1)
        return JSONResponse(
            {"detail": str(exc), "reason": exc.reason.value},
            status_code=_STATUS.get(exc.reason, 400),
            headers=headers,
        )

    @api.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(field_problems(exc.errors()).model_dump(exclude_none=True), 422)

    @api.exception_handler(DatabaseError)
    async def _database(request: Request, exc: DatabaseError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "reason": "database"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @api.get("/api/v1/health")
    async def health() -> dict[str, object]:
        """The directory revision in force, and this router's role (active: it runs
        the Stasis app; standby: it waits for the lease) with since when (UTC)."""
        name, since = role() if role is not None else ("active", None)
        return {
            "status": "ok",
            "directory_revision": service.snapshot.revision,
            "role": name,
            "since": None if since is None else datetime.fromtimestamp(since, UTC).isoformat(),
        }

    @api.post("/api/v1/session", responses=_answers(400, 401, 422, 429))
    async def open_session(body: SessionRequest, request: Request) -> SessionResponse:
        """Trade extension and PIN for a token (lockout after 5 wrong PINs in 15 minutes)."""
        user = await service.check_pin(body.extension, body.pin, source=source_of(request))
        assert user.pin_hash is not None  # check_pin only accepts users with a PIN
        token, expires = signer.issue(user.extension, user.pin_hash)
        return SessionResponse(
            token=token,
            extension=user.extension,
            name=user.name,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    @api.get("/api/v1/me", responses=_answers(401, bad_request="The admin token is no user's"))
    async def me(who: Auth) -> Me:
        if who.extension is None:
            raise HTTPException(400, "the admin token belongs to no user")
        snapshot = service.snapshot
        user = snapshot.users.get(who.extension)
        if user is None:
            raise HTTPException(401, "invalid or expired token")
        return Me(
            extension=user.extension, name=user.name, workplace=snapshot.logins.get(user.extension)
        )

    @api.get("/api/v1/workplaces", responses=_answers(401))
    async def workplaces(who: Auth) -> list[WorkplaceView]:
        """The workplaces the user may log in to (the admin: all), with who is where."""
        return workplace_views(service.snapshot, who.extension)

    def state(change: LoginChange) -> LoginState:
        return LoginState(
            extension=change.extension,
            workplace=change.new_workplace,
            previous_workplace=change.old_workplace,
            displaced=change.displaced,
        )

    @api.post(
        "/api/v1/login",
        responses=_answers(400, 401, 403, 404, 409, 422),
    )
    async def login(body: LoginRequest, who: Auth, request: Request) -> LoginState:
        """Log in at a workplace (leaving the previous one)."""
        extension = subject(who, body.extension)
        return state(
            await service.login(
                extension, body.workplace, actor=who.actor, source=source_of(request)
            )
        )

    def need_presence() -> PresenceService:
        if presence is None:
            raise HTTPException(503, "presence is not available on this router")
        return presence

    def view(state: UserPresence) -> PresenceView:
        user = service.snapshot.users.get(state.extension)
        return PresenceView(
            extension=state.extension,
            name=user.name if user else "",
            phone=PhoneStatusView(
                available=state.phone.available,
                on_call=state.phone.on_call,
                ringing=state.phone.ringing,
            ),
            client=state.client,
            device_state=state.device_state.value,
        )

    @api.get("/api/v1/presence", responses=_answers(401))
    async def everyone(who: Auth) -> list[PresenceView]:
        """Everyone's merged presence, by extension."""
        tracker = need_presence().tracker
        return [view(tracker.users()[ext]) for ext in sorted(tracker.users())]

    @api.get(
        "/api/v1/presence/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "The event stream",
                "content": {"text/event-stream": {"schema": _EVENT}},
            },
            **_answers(401),
        },
    )
    async def presence_events(who: Auth, request: Request) -> StreamingResponse:
        """Server-Sent Events: ``snapshot`` (everyone, once), then one ``presence``
        event per change; a comment line every 15 s keeps proxies from timing out."""
        live = need_presence()
        return StreamingResponse(
            _event_stream(live, view, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @api.get("/api/v1/presence/{extension}", responses=_answers(401, 404, 422))
    async def one(extension: str, who: Auth) -> PresenceView:
        state = need_presence().tracker.user(extension)
        if state is None:
            raise HTTPException(404, f"no user with extension {extension}")
        return view(state)

    @api.put("/api/v1/presence/client", responses=_answers(400, 401, 403, 404, 422))
    async def client_status(body: ClientStatusRequest, who: Auth) -> PresenceView:
        """Set one client's status (and count as its heartbeat)."""
        extension = subject(who, body.extension)
        live = need_presence()
        if live.tracker.user(extension) is None:
            raise HTTPException(404, f"no user with extension {extension}")
        # Shared with every router through the directory database (presence/shared.py).
        state = await live.report_client(extension, body.client_id, body.status)
        assert state is not None
        return view(state)

    @api.get("/api/v1/devices", responses=_answers(401, 403))
    async def devices(who: Auth) -> dict[str, str]:
        """Admin: every device state the router knows (what routing sees)."""
        if who.extension is not None:
            raise HTTPException(403, "for the admin only")
        return {
            endpoint: state.value
            for endpoint, state in sorted(need_presence().tracker.devices().items())
        }

    @api.post("/api/v1/logout", responses=_answers(400, 401, 403, 404, 422))
    async def logout(who: Auth, request: Request, body: LogoutRequest | None = None) -> LoginState:
        """Log out of the current workplace (nothing happens if not logged in)."""
        extension = subject(who, None if body is None else body.extension)
        return state(await service.logout(extension, actor=who.actor, source=source_of(request)))

    return api
