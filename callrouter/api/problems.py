"""The API's error bodies, and 422 answers that do not echo what was sent.

FastAPI's own 422 repeats each field's input (and the whole body when a field is
missing): a big body came back whole, and a PIN came back to whoever sent it, into
proxies' and clients' logs.  ``field_problems`` keeps where (``loc``), what
(``type``) and why (``msg``), with any value longer than ``SHORT`` replaced by its
length, and of ``ctx`` only short values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

SHORT = 32  # a value up to this long may be repeated; a longer one is cut
_MAX_MSG = 200
BAD_INPUT: Literal["bad_input"] = "bad_input"  # as the LoginService's BAD_INPUT refusal


class Problem(BaseModel):
    detail: str
    reason: str | None = None


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    ctx: dict[str, str | int | float | bool] | None = None


class ValidationProblem(BaseModel):
    detail: list[FieldProblem]
    reason: Literal["bad_input"] = BAD_INPUT


def _short(text: str) -> str:
    """``text`` if it is short, else only how long it is."""
    return text if len(text) <= SHORT else f"<{len(text)} characters>"


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", ""))
    value = error.get("input")
    if isinstance(value, str) and len(value) > SHORT:
        # Messages may name the value (``extension '…' must be 1 to 20 digits``).
        msg = msg.replace(repr(value), _short(value)).replace(value, _short(value))
    return msg if len(msg) <= _MAX_MSG else msg[: _MAX_MSG - 1] + "…"


def _context(error: Mapping[str, Any]) -> dict[str, str | int | float | bool] | None:
    ctx = error.get("ctx")
    if not isinstance(ctx, Mapping):
        return None
    kept: dict[str, str | int | float | bool] = {}
    for key, value in ctx.items():
        short = isinstance(value, str) and len(value) <= SHORT
        if short or isinstance(value, bool | int | float):
            kept[str(key)] = value
    return kept or None


def field_problems(errors: Iterable[Mapping[str, Any]]) -> ValidationProblem:
    """What a RequestValidationError's errors may say back: never an ``input``."""
    problems = []
    for error in errors:
        loc = [
            part if isinstance(part, int) else _short(str(part)) for part in error.get("loc", ())
        ]
        problems.append(
            FieldProblem(
                loc=loc,
                msg=_message(error),
                type=_short(str(error.get("type", ""))),
                ctx=_context(error),
            )
        )
    return ValidationProblem(detail=problems)
