"""Located errors for data from ``load_yaml``: pydantic's, and the cross-checks'.

``validate_yaml`` runs pydantic over a file's data and turns each pydantic error into
a located line (never echoing its input; an unknown key is answered with the keys
allowed there); ``locate_problems`` does the same for the cross-checks that need
more than one file (``Problem``: a path into the data and a message).
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from callrouter.yamlfile.errors import (
    FileName,
    Located,
    Path,
    PathKey,
    Positions,
    Problem,
    YamlFileError,
    format_path,
    sort_located,
)
from callrouter.yamlfile.load import read_yaml

M = TypeVar("M", bound=BaseModel)

# Fields whose values never appear in a message, not even as a quoting hint.
_SECRET_FIELDS = frozenset({"pin", "pin_hash", "password", "secret", "token"})


def validate_yaml(path: FileName, model_cls: type[M]) -> M:
    """Load ``path`` and validate it as ``model_cls``; raise YamlFileError with every error.

    Problems that do not stop loading (a duplicate key, an unsupported tag) are
    reported together with the validation errors of the rest.
    """
    loaded = read_yaml(path)
    try:
        model = model_cls.model_validate(loaded.data)
    except ValidationError as exc:
        located = locate_validation_error(path, exc, loaded.positions, model_cls)
        raise YamlFileError.from_located(path, [*loaded.errors, *located]) from None
    if loaded.errors:
        raise YamlFileError.from_located(path, loaded.errors)
    return model


def validate_data(path: FileName, data: Any, positions: Positions, model_cls: type[M]) -> M:
    """Validate data from ``load_yaml``; raise YamlFileError with every error located."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise YamlFileError.from_located(
            path, locate_validation_error(path, exc, positions, model_cls)
        ) from None


def locate_validation_error(
    path: FileName,
    exc: ValidationError,
    positions: Positions,
    model_cls: type[BaseModel] | None = None,
) -> list[Located]:
    """Each pydantic error as a located, readable error (never echoing its input).

    ``model_cls`` lets an unknown key be answered with the keys allowed there.  Errors
    in values that could not be read (``Positions.unreadable``) are left out: loading
    reported those already.
    """
    file = os.fspath(path)
    located: list[Located] = []
    errors = exc.errors()
    for error in errors:
        loc = error_path(error)
        if error["type"] == "too_short" and _has_inner_error(loc, errors):
            continue  # pydantic counts only the valid items: the items' own errors say it
        at_key = error["type"] == "extra_forbidden" or "[key]" in error["loc"]
        if not at_key and positions.in_unreadable(loc):
            continue  # the value's error was reported by loading; its key's is not
        found = positions.nearest(loc)
        shown = found
        if error["type"] == "missing" and len(found) < len(loc):
            shown = (*found, loc[-1])
        mark = positions.locate(found, at_key=at_key)
        message = _message(error, found, positions, model_cls)
        where = format_path(shown)
        located.append(
            Located(file, mark.line, mark.column, f"{where}: {message}" if where else message)
        )
    return sort_located(located)


def _has_inner_error(loc: Path, errors: Iterable[ErrorDetails]) -> bool:
    return any(len(e["loc"]) > len(loc) and tuple(e["loc"][: len(loc)]) == loc for e in errors)


def error_path(error: ErrorDetails) -> Path:
    """An error's location as a data path.

    A validator may point deeper than its own location by putting a relative
    ``path`` tuple into its error's context (``PydanticCustomError(..., {"path": ...})``).
    """
    loc: Path = tuple(error["loc"])
    extra = (error.get("ctx") or {}).get("path")
    if isinstance(extra, tuple) and all(isinstance(p, str | int) for p in extra):
        loc = (*loc, *extra)
    return loc


def locate_problems(
    path: FileName, problems: Iterable[Problem], positions: Positions | None = None
) -> list[str]:
    """``FILE:LINE:COLUMN: message`` lines for ``problems``, sorted by position.

    Without ``positions`` the file is read again to find them (``read_yaml``: its
    own YAML problems are not raised here).
    """
    return [str(error) for error in locate_problem_list(path, problems, positions)]


def locate_problem_list(
    path: FileName, problems: Iterable[Problem], positions: Positions | None = None
) -> list[Located]:
    """``locate_problems``, as data."""
    if positions is None:
        positions = read_yaml(path).positions
    file = os.fspath(path)
    located: list[Located] = []
    for problem in problems:
        mark = positions.locate(problem.path, at_key=problem.at_key)
        where = format_path(problem.path)
        message = f"{where}: {problem.message}" if where else problem.message
        located.append(Located(file, mark.line, mark.column, message))
    return sort_located(located)


def _message(
    error: ErrorDetails, found: Path, positions: Positions, model_cls: type[BaseModel] | None
) -> str:
    kind = error["type"]
    value = error["input"]
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"], model_cls)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_describe(value)}"
    if kind in ("float_type", "float_parsing", "int_type", "int_parsing"):
        return f"expected a number, got {_describe(value)}"
    if kind == "string_type":
        secret = any(isinstance(p, str) and p in _SECRET_FIELDS for p in found)
        raw = positions.scalars.get(found)
        if raw is not None and not secret and isinstance(value, int | float | bool):
            return (
                f"expected text, but YAML reads {raw} as a "
                f"{'true/false value' if isinstance(value, bool) else 'number'}: "
                f'write it in quotes, "{raw}"'
            )
        return f"expected text, got {_describe(value)}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _describe(value: object) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _unknown_key(loc: tuple[PathKey, ...], model_cls: type[BaseModel] | None) -> str:
    key = str(loc[-1]) if loc else ""
    allowed = _allowed_keys(model_cls, loc[:-1]) if model_cls is not None else None
    if not allowed:
        return "unknown key"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; allowed here: {', '.join(allowed)}"


def _allowed_keys(model_cls: type[BaseModel], loc: Sequence[PathKey]) -> list[str] | None:
    """The field names of the model found at ``loc`` inside ``model_cls``, if any."""
    current: Any = model_cls
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None
            current = info.annotation
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin in (tuple, list) and args:
            current = args[0]
        elif origin is dict and len(args) == 2:
            current = args[1]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to X."""
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
