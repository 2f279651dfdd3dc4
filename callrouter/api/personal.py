"""The routes of the users' own forwardings and switches, and of their ring plan.

Thin: every decision is the PersonalService's.  Users act on themselves; the admin
token acts on the user named by the ``extension`` query parameter (as the login
route lets the admin name one in its body).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from callrouter.api.app import Auth, Principal, _answers
from callrouter.domain.forwarding import FORWARD_TARGET_LENGTH, ForwardKind
from callrouter.domain.identifiers import Extension
from callrouter.personal.service import KindView, PersonalRefused, PersonalService, Reason
from callrouter.routing.chain import plan_tree
from callrouter.routing.plan import CallContext, parse_local_time
from callrouter.routing.resolver import PresenceView, resolve_plan

_STATUS: dict[Reason, int] = {
    "unknown_user": 404,
    "unknown_kind": 404,
    "unknown_switch": 404,
    "bad_target": 422,
    "to_self": 422,
    "unknown_target": 422,
    "not_allowed": 403,
    "no_external_endpoint": 403,
}
SWITCH_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"  # rules.model.SwitchName
# Module level, so that FastAPI can resolve the annotation (postponed evaluation).
ForUser = Annotated[Extension | None, Query(description="The admin names the user; users omit it")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ForwardRequest(_Body):
    # Bounded here, explained by the service (an extension or +digits).
    to: str = Field(max_length=FORWARD_TARGET_LENGTH + 11, examples=["202", "+4917012345678"])


class SwitchRequest(_Body):
    on: bool


class AdminStep(BaseModel):
    """One step of the admin's forwarding of a kind (the first that applies is taken)."""

    to: str
    calls: Literal["internal", "external"] | None
    when: str | None
    unless: str | None


class ForwardKindView(BaseModel):
    kind: ForwardKind
    set_by: Literal["user", "admin"] | None  # whose forwarding is in force (None: nobody's)
    own: str | None  # the user's own target (None: none set)
    own_ignored: bool  # an own target the rules no longer allow (see user_forwarding)
    admin: list[AdminStep]  # the admin's rule of this kind


class ForwardingView(BaseModel):
    extension: str
    # Where the rules let this user forward to: nowhere, other extensions, or anywhere.
    user_forwarding: Literal["off", "extensions", "anywhere"]
    kinds: list[ForwardKindView]


class SwitchView(BaseModel):
    name: str
    on: bool
    rings: list[str]  # what the switch's FollowMe entries ring


def _kind_view(view: KindView) -> ForwardKindView:
    return ForwardKindView(
        kind=view.kind,  # one of FORWARD_KINDS
        set_by=view.in_force,
        own=view.own,
        own_ignored=view.own_ignored,
        admin=[AdminStep(to=s.to, calls=s.calls, when=s.when, unless=s.unless) for s in view.admin],
    )


def add_personal(
    api: FastAPI,
    service: PersonalService,
    *,
    presence: PresenceView | None = None,
    local_time: Callable[[], datetime],
    node: str | None = None,
) -> None:
    """Add the ``/api/v1/me/forwarding``, ``/me/switches`` and ``/me/plan`` routes.

    ``local_time``: the calls' own clock (in the router's zone), so the plan shows
    what a call now would do."""

    @api.exception_handler(PersonalRefused)
    async def _refused(request: Request, exc: PersonalRefused) -> JSONResponse:
        return JSONResponse(
            {"detail": f"{exc.field}: {exc}", "reason": exc.reason},
            status_code=_STATUS[exc.reason],
        )

    api.include_router(_routes(api, service, presence, local_time, node))


def _routes(
    api: FastAPI,
    service: PersonalService,
    presence: PresenceView | None,
    local_time: Callable[[], datetime],
    node: str | None,
) -> APIRouter:
    router = APIRouter()

    def source_of(request: Request) -> str:
        source: Callable[[Request], str] = api.state.source_of
        return source(request)

    def subject(who: Principal, extension: str | None) -> str:
        return who.acting_on(extension, "users may only change their own settings")

    def forwarding_of(extension: str) -> ForwardingView:
        return ForwardingView(
            extension=extension,
            user_forwarding=service.policy(extension),
            kinds=[_kind_view(v) for v in service.forwarding(extension)],
        )

    def switches_of(extension: str) -> list[SwitchView]:
        return [
            SwitchView(name=v.name, on=v.on, rings=list(v.rings))
            for v in service.switches(extension)
        ]

    @router.get("/api/v1/me/forwarding", responses=_answers(401, 403, 404, 422))
    async def forwarding(who: Auth, extension: ForUser = None) -> ForwardingView:
        """Each kind of forwarding: the user's own target, the admin's rule, and
        which is in force."""
        return forwarding_of(subject(who, extension))

    @router.put("/api/v1/me/forwarding/{kind}", responses=_answers(400, 401, 403, 404, 422))
    async def set_forwarding(
        kind: ForwardKind,
        body: ForwardRequest,
        who: Auth,
        request: Request,
        extension: ForUser = None,
    ) -> ForwardingView:
        """Forward calls of this kind to an extension or (where the rules allow) an
        external number; replaces the admin's forwarding of the kind."""
        user = subject(who, extension)
        await service.set_forward(user, kind, body.to, actor=who.actor, source=source_of(request))
        return forwarding_of(user)

    @router.delete("/api/v1/me/forwarding/{kind}", responses=_answers(401, 403, 404, 422))
    async def clear_forwarding(
        kind: ForwardKind, who: Auth, request: Request, extension: ForUser = None
    ) -> ForwardingView:
        """Clear the user's own forwarding of this kind (the admin's applies again)."""
        user = subject(who, extension)
        await service.clear_forward(user, kind, actor=who.actor, source=source_of(request))
        return forwarding_of(user)

    @router.get("/api/v1/me/switches", responses=_answers(401, 403, 404, 422))
    async def switches(who: Auth, extension: ForUser = None) -> list[SwitchView]:
        """The switches the admin gave the user (FollowMe order), each on or off."""
        return switches_of(subject(who, extension))

    @router.put("/api/v1/me/switches/{name}", responses=_answers(400, 401, 403, 404, 422))
    async def set_switch(
        name: Annotated[str, Field(pattern=SWITCH_NAME)],
        body: SwitchRequest,
        who: Auth,
        request: Request,
        extension: ForUser = None,
    ) -> list[SwitchView]:
        """Turn a switch on or off: off, its FollowMe entries ring no more."""
        user = subject(who, extension)
        await service.set_switch(user, name, body.on, actor=who.actor, source=source_of(request))
        return switches_of(user)

    @router.get("/api/v1/me/plan", responses=_answers(401, 403, 404, 422))
    async def plan(
        who: Auth,
        extension: ForUser = None,
        external: Annotated[bool, Query(description="As for an external call")] = False,
        at: Annotated[
            str | None,
            Query(
                max_length=16,
                description='As at this local time, "YYYY-MM-DD HH:MM" (default: now)',
                examples=["2026-12-02 19:00"],
            ),
        ] = None,
    ) -> dict[str, Any]:
        """How a call to the user would ring now (or ``at``): the ring plan, the
        forwardings that led to it (``forwarded``) and, under ``then``, the plan a
        busy or unanswered call goes on with."""
        user = subject(who, extension)
        snapshot = service.snapshot
        if user not in snapshot.users:
            raise HTTPException(404, f"no user has extension {user}")
        when = local_time()
        if at is not None:
            try:
                when = parse_local_time(at, when.tzinfo)
            except ValueError as exc:
                raise HTTPException(422, f"at: {exc}") from None
        context = CallContext(internal=not external, at=when)
        rules = service.rules
        result = resolve_plan(snapshot, rules, user, presence=presence, call=context, node=node)
        # With where the call goes on when it ends busy or unanswered ("then").
        return plan_tree(snapshot, rules, result, None, presence, context, node).to_json()

    return router
