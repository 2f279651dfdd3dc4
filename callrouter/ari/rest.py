"""ARI's REST half: :meth:`AriRest.request` and a typed method per operation we use.

:class:`~callrouter.ari.client.AriClient` inherits these methods, so the router has one
flat API (``ari.answer(channel_id)``); the client adds the websocket and the routing of
its events, and starts and closes the HTTP pool. Here a method call becomes a request:
the path (ids quoted as one segment), the query (``None`` left out, booleans as
``true``/``false``, lists joined by commas) and a JSON body, sent through
:class:`~callrouter.ari.http.HttpPool`. The answer becomes a :class:`Channel`, a
:class:`Bridge` or decoded JSON; an error status raises :class:`AriHttpError`, no answer
:class:`AriConnectionError`, a body that is not JSON :class:`AriProtocolError`.

Each method names the ARI operation it uses (``POST /channels/{id}/answer``);
``tests/e2e/test_ari_api_conformance.py`` holds every one of them to Asterisk's own API
description.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import quote, urlencode

import orjson

from callrouter.ari.errors import (
    AriClosedError,
    AriConnectionError,
    AriHttpError,
    AriProtocolError,
)
from callrouter.ari.events import Bridge, Channel
from callrouter.ari.http import BadResponse, HttpPool

__all__ = ["AriRest", "HangupReason", "ParamValue"]

log = logging.getLogger(__name__)

ParamValue = str | int | float | bool | Iterable[str] | None
# The values DELETE /channels/{id} accepts for ``reason`` (channels.json, Asterisk 22).
HangupReason = Literal[
    "normal",
    "busy",
    "congestion",
    "no_answer",
    "timeout",
    "rejected",
    "unallocated",
    "normal_unspecified",
    "number_incomplete",
    "codec_mismatch",
    "interworking",
    "failure",
    "answered_elsewhere",
]


class AriRest:
    """The REST methods of :class:`~callrouter.ari.client.AriClient` (its base class).

    ``http`` is the pool to Asterisk's HTTP server, ``rest_prefix`` the path of ARI on
    it (``/ari``, or below a proxy's prefix), ``app`` the Stasis app that channels made
    by :meth:`create_channel` start in.
    """

    def __init__(self, http: HttpPool, rest_prefix: str, app: str) -> None:
        self.app = app
        self._http = http
        self._rest_prefix = rest_prefix
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one REST request (``path`` below ``/ari``); return the decoded JSON body.

        Returns ``None`` for an empty body (204). Raises :class:`AriHttpError` for an
        error status, :class:`AriConnectionError` when there is no answer.
        """
        if self._closed:
            raise AriClosedError("the ARI client is closed")
        target = self._rest_prefix + path
        if params:
            query = _query(params)
            if query:
                target += "?" + urlencode(query, quote_via=quote, safe="/,:@")
        body = None if json is None else orjson.dumps(json)
        started = time.perf_counter()
        try:
            response = await self._http.request(method, target, body)
        except TimeoutError:
            raise AriConnectionError(method, path, "timed out") from None
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            BadResponse,
        ) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise AriConnectionError(method, path, reason) from exc
        status, reason_phrase, content = response
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %s -> %d in %.1f ms",
                method,
                path,
                _query(params),
                status,
                (time.perf_counter() - started) * 1000,
            )
        if status >= 300:
            raise AriHttpError(status, method, path, _error_message(reason_phrase, content))
        if status == 204 or not content:
            return None
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise AriProtocolError(f"{method} {path}: response body is not JSON", content) from None

    async def create_channel(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app_args: str | None = None,
        originator: str | None = None,
        variables: Mapping[str, str] | None = None,
        formats: str | None = None,
    ) -> Channel:
        """``POST /channels/create``: a channel in this app, not dialled yet (see :meth:`dial`)."""
        body = {"variables": dict(variables)} if variables else None
        data = await self.request(
            "POST",
            "/channels/create",
            params={
                "endpoint": endpoint,
                "app": self.app,
                "appArgs": app_args,
                "channelId": channel_id,
                "originator": originator,
                "formats": formats,
            },
            json=body,
        )
        return Channel.from_json(data)

    async def dial(
        self, channel_id: str, *, caller: str | None = None, timeout: int | None = None
    ) -> None:
        """``POST /channels/{id}/dial``: send the INVITE of a created channel."""
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/dial",
            params={"caller": caller, "timeout": timeout},
        )

    async def ring(self, channel_id: str) -> None:
        """``POST /channels/{id}/ring``: indicate ringing to the channel (the caller)."""
        await self.request("POST", f"/channels/{_seg(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        """``DELETE /channels/{id}/ring``."""
        await self.request("DELETE", f"/channels/{_seg(channel_id)}/ring")

    async def answer(self, channel_id: str) -> None:
        """``POST /channels/{id}/answer``."""
        await self.request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: HangupReason | None = None) -> bool:
        """``DELETE /channels/{id}``; False if the channel was already gone (404)."""
        try:
            await self.request("DELETE", f"/channels/{_seg(channel_id)}", params={"reason": reason})
        except AriHttpError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def play(
        self,
        channel_id: str,
        media: str | Iterable[str],
        *,
        playback_id: str | None = None,
        lang: str | None = None,
    ) -> None:
        """``POST /channels/{id}/play``: play media (``sound:NAME``; several in turn)."""
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/play",
            params={"media": media, "playbackId": playback_id, "lang": lang},
        )

    async def stop_playback(self, playback_id: str) -> bool:
        """``DELETE /playbacks/{id}``; False if it was over already (404)."""
        try:
            await self.request("DELETE", f"/playbacks/{_seg(playback_id)}")
        except AriHttpError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get_channel(self, channel_id: str) -> Channel | None:
        """``GET /channels/{id}``; None if there is no such channel."""
        try:
            data = await self.request("GET", f"/channels/{_seg(channel_id)}")
        except AriHttpError as exc:
            if exc.status == 404:
                return None
            raise
        return Channel.from_json(data)

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        """``POST /channels/{id}/variable``."""
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/variable",
            params={"variable": name, "value": value},
        )

    async def channel_var(self, channel_id: str, name: str) -> str:
        """``GET /channels/{id}/variable``: the variable's (or function's) value."""
        data = await self.request(
            "GET", f"/channels/{_seg(channel_id)}/variable", params={"variable": name}
        )
        if not isinstance(data, dict) or not isinstance(data.get("value", ""), str):
            raise AriProtocolError("variable response has no 'value' string", str(data))
        value: str = data.get("value", "")
        return value

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str,
        extension: str,
        priority: int = 1,
        *,
        label: str | None = None,
    ) -> None:
        """``POST /channels/{id}/continue``: leave the app, back to the dialplan.

        With ``label`` the channel continues at that priority label (``priority`` is
        then not sent: Asterisk would let the label win anyway).
        """
        await self.request(
            "POST",
            f"/channels/{_seg(channel_id)}/continue",
            params={
                "context": context,
                "extension": extension,
                "priority": priority if label is None else None,
                "label": label,
            },
        )

    async def originate(
        self,
        endpoint: str,
        *,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        app: str | None = None,
        app_args: str | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,
        variables: Mapping[str, str] | None = None,
        originator: str | None = None,
        formats: str | None = None,
    ) -> Channel:
        """``POST /channels``: originate a call (tests, benchmarks, the demo)."""
        body = {"variables": dict(variables)} if variables else None
        data = await self.request(
            "POST",
            "/channels",
            params={
                "endpoint": endpoint,
                "extension": extension,
                "context": context,
                "priority": priority,
                "label": label,
                "app": app,
                "appArgs": app_args,
                "callerId": caller_id,
                "timeout": timeout,
                "channelId": channel_id,
                "otherChannelId": other_channel_id,
                "originator": originator,
                "formats": formats,
            },
            json=body,
        )
        return Channel.from_json(data)

    async def create_bridge(
        self, bridge_id: str, type: str = "mixing", *, name: str | None = None
    ) -> Bridge:
        """``POST /bridges``: a bridge with the caller-chosen id."""
        data = await self.request(
            "POST", "/bridges", params={"type": type, "bridgeId": bridge_id, "name": name}
        )
        return Bridge.from_json(data)

    async def add_channel(self, bridge_id: str, channel_ids: str | Iterable[str]) -> None:
        """``POST /bridges/{id}/addChannel``."""
        await self.request(
            "POST",
            f"/bridges/{_seg(bridge_id)}/addChannel",
            params={"channel": _id_list(channel_ids)},
        )

    async def remove_channel(self, bridge_id: str, channel_ids: str | Iterable[str]) -> None:
        """``POST /bridges/{id}/removeChannel``."""
        await self.request(
            "POST",
            f"/bridges/{_seg(bridge_id)}/removeChannel",
            params={"channel": _id_list(channel_ids)},
        )

    async def destroy_bridge(self, bridge_id: str) -> bool:
        """``DELETE /bridges/{id}``; False if the bridge was already gone (404)."""
        try:
            await self.request("DELETE", f"/bridges/{_seg(bridge_id)}")
        except AriHttpError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list_channels(self) -> list[Channel]:
        """``GET /channels``: every channel Asterisk has (not only this app's)."""
        data = await self.request("GET", "/channels")
        return [Channel.from_json(item) for item in _list(data, "GET /channels")]

    async def list_bridges(self) -> list[Bridge]:
        """``GET /bridges``."""
        data = await self.request("GET", "/bridges")
        return [Bridge.from_json(item) for item in _list(data, "GET /bridges")]

    async def asterisk_info(self) -> dict[str, Any]:
        """``GET /asterisk/info``: build, system, config and status."""
        data = await self.request("GET", "/asterisk/info")
        if not isinstance(data, dict):
            raise AriProtocolError("GET /asterisk/info did not return an object", str(data))
        return data

    async def set_event_filter(self, allowed: Iterable[str]) -> None:
        """``PUT /applications/{app}/eventFilter``: Asterisk sends the app only these
        event types (an empty list would mean all of them)."""
        types = [{"type": event_type} for event_type in allowed]
        if not types:
            raise ValueError("an event filter needs at least one event type")
        await self.request(
            "PUT",
            f"/applications/{_seg(self.app)}/eventFilter",
            json={"allowed": types, "disallowed": []},
        )

    async def resync(self) -> tuple[list[Channel], list[Bridge]]:
        """Asterisk's current channels and bridges, fetched concurrently."""
        channels, bridges = await asyncio.gather(self.list_channels(), self.list_bridges())
        return channels, bridges


def _seg(ident: str) -> str:
    """One path segment: ids chosen by Asterisk or the router never need it, but be safe."""
    return quote(ident, safe="")


def _id_list(ids: str | Iterable[str]) -> str:
    return ids if isinstance(ids, str) else ",".join(ids)


def _query(params: Mapping[str, ParamValue] | None) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            query[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            query[key] = str(value)
        else:
            query[key] = ",".join(value)
    return query


def _error_message(reason_phrase: str, content: bytes) -> str:
    try:
        data = orjson.loads(content) if content else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        # Most ARI errors say {"message": ...}; some (e.g. a failed /channels/create)
        # say {"error": "Allocation failed"}.
        for key in ("message", "error"):
            if isinstance(data.get(key), str):
                message: str = data[key]
                return message
    text = content.decode("utf-8", errors="replace").strip()
    return text[:200] if text else reason_phrase


def _list(data: object, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise AriProtocolError(f"{what} did not return a list", str(data))
    return data
