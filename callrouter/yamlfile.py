"""Admin-edited YAML files as validated models, every error as ``FILE:LINE:COLUMN: message``.

``load_yaml`` composes PyYAML's node tree itself and turns it into plain data (only
YAML's standard scalars go through PyYAML's SafeConstructor; a ``!!python/...`` or
any other tag is an error), recording where each value and each mapping key stands
in the file.  Mapping keys are kept as their raw text, so
``201:`` is ``"201"`` and ``0201:`` stays ``"0201"`` (no YAML 1.1 octal), and a key
written twice is an error instead of PyYAML's silent "last one wins".

``validate_yaml`` runs pydantic over that data and turns each pydantic error into a
located line; ``locate_problems`` does the same for the cross-checks that need more
than one file (``Problem``: a path into the data and a message).  A path is a tuple
of mapping keys (str) and list indexes (int), e.g. ``("users", "201", "followme", 0)``,
shown to admins as ``users."201".followme[0]``.

A file that cannot be read raises ``OSError`` as usual; everything wrong *inside* a
file raises ``YamlFileError`` carrying every located error at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

PathKey = str | int
Path = tuple[PathKey, ...]
FileName = str | os.PathLike[str]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
# Keys shown to admins without quotes in a dotted path; anything else is JSON-quoted.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Fields whose values never appear in a message, not even as a quoting hint.
_SECRET_FIELDS = frozenset({"pin", "pin_hash", "password", "secret", "token"})
# Aliases may repeat parts of a document, but not blow it up ("billion laughs").
_ALIAS_EXPANSION_FACTOR = 10
_ALIAS_EXPANSION_SLACK = 10_000


@dataclass(frozen=True, slots=True, order=True)
class Mark:
    """A position in a file: line and column, both counted from 1."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong at ``path`` in a file's data, found after shape validation."""

    path: Path
    message: str
    # Point at the mapping key rather than at its value (e.g. an unknown extension).
    at_key: bool = False


@dataclass(frozen=True, slots=True)
class Located:
    """One error with its place in a file; ``str()`` gives ``FILE:LINE:COLUMN: message``."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class YamlFileError(Exception):
    """Everything wrong inside one file; ``str()`` is one ``FILE:LINE:COLUMN: message`` a line."""

    def __init__(
        self, path: FileName, errors: Sequence[str], located: Sequence[Located] = ()
    ) -> None:
        self.path = os.fspath(path)
        self.errors = list(errors)
        self.located = tuple(located)  # the same errors as data, where they were made so
        super().__init__("\n".join(self.errors))

    @classmethod
    def from_located(cls, path: FileName, located: Iterable[Located]) -> YamlFileError:
        ordered = sort_located(located)
        return cls(path, [str(error) for error in ordered], ordered)


@dataclass(slots=True)
class Positions:
    """Where each path of a file's data was written."""

    values: dict[Path, Mark] = field(default_factory=dict)  # the value's node
    keys: dict[Path, Mark] = field(default_factory=dict)  # the mapping key's node
    scalars: dict[Path, str] = field(default_factory=dict)  # raw text of scalar values

    def nearest(self, path: Iterable[PathKey]) -> Path:
        """The deepest recorded path along ``path``; unrecorded steps are skipped.

        A step is unrecorded when it names something the file does not have (a
        missing key) or a pydantic-internal location part (``[key]``, union members).
        """
        found: Path = ()
        for part in path:
            candidate = (*found, part)
            if candidate in self.values:
                found = candidate
        return found

    def locate(self, path: Iterable[PathKey], *, at_key: bool = False) -> Mark:
        """Where to point for ``path``: a scalar value itself, a collection by its key."""
        found = self.nearest(path)
        if at_key or found not in self.scalars:
            key = self.keys.get(found)
            if key is not None:
                return key
        return self.values.get(found, Mark(1, 1))


def format_path(path: Iterable[PathKey]) -> str:
    """``("users", "201", "followme", 1)`` -> ``users."201".followme[1]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if _PLAIN_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            text += f".{shown}" if text else shown
    return text


def sort_located(located: Iterable[Located]) -> list[Located]:
    """By line, then column; exact duplicates dropped."""
    unique = dict.fromkeys(located)
    return sorted(unique, key=lambda error: (error.line, error.column))


# --- loading ---------------------------------------------------------------------------


def load_yaml(path: FileName) -> tuple[Any, Positions]:
    """Read ``path`` into plain data and the positions of its parts.

    Raises OSError when the file cannot be read and YamlFileError for anything
    wrong inside it (syntax, duplicate keys, unsupported tags).  An empty file is
    an empty mapping.
    """
    return parse_yaml(FsPath(path).read_bytes(), os.fspath(path))


def parse_yaml(source: str | bytes, file: str = "<string>") -> tuple[Any, Positions]:
    """``load_yaml`` for text already in memory; ``file`` only names it in errors."""
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line, column = _line_column(source, exc.start)
            message = f"not UTF-8 text (byte 0x{source[exc.start]:02X}): save the file as UTF-8"
            raise YamlFileError.from_located(file, [Located(file, line, column, message)]) from None
    else:
        text = source
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(file, text, exc) from None
    try:
        root = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        raise _reader_error(file, text, exc) from None
    except yaml.MarkedYAMLError as exc:
        raise YamlFileError.from_located(file, [_syntax_error(file, exc)]) from None
    finally:
        loader.dispose()

    builder = _Builder(file)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG and not root.value):
        builder.positions.values[()] = Mark(1, 1)
        return {}, builder.positions
    data = builder.build(root)
    if builder.errors:
        raise YamlFileError.from_located(file, builder.errors)
    return data, builder.positions


def _line_column(source: bytes | str, offset: int) -> tuple[int, int]:
    newline: Any = b"\n" if isinstance(source, bytes) else "\n"
    line = source.count(newline, 0, offset) + 1
    column = offset - (source.rfind(newline, 0, offset) + 1) + 1
    return line, column


def _reader_error(file: str, text: str, exc: yaml.reader.ReaderError) -> YamlFileError:
    line, column = _line_column(text, exc.position)
    message = f"character U+{exc.character:04X} is not allowed in a YAML file"
    return YamlFileError.from_located(file, [Located(file, line, column, message)])


def _syntax_error(file: str, exc: yaml.MarkedYAMLError) -> Located:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or "not valid YAML"
    if "'\\t'" in problem:
        return Located(file, line, column, "YAML syntax error: a tab; indent with spaces only")
    context = exc.context or ""
    cm = exc.context_mark
    if context and cm is not None and (cm.line + 1, cm.column + 1) != (line, column):
        context += f" at line {cm.line + 1}, column {cm.column + 1}"
    if not context:
        message = problem
    elif context.startswith("while "):  # "while parsing a block mapping": background
        message = f"{problem} ({context})"
    else:  # "expected a single document ...", "but found another document"
        message = f"{context}, {problem}"
    return Located(file, line, column, f"YAML syntax error: {message}")


class _Builder:
    """Turns a composed node tree into plain data, recording positions on the way."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions = Positions()
        self.errors: list[Located] = []
        self._constructor = SafeConstructor()
        self._open: set[int] = set()  # collections being built: an alias to one is a cycle
        self._distinct: set[int] = set()
        self._visits = 0

    def error(self, mark: Mark, path: Path, message: str) -> None:
        where = format_path(path)
        self.errors.append(
            Located(self.file, mark.line, mark.column, f"{where}: {message}" if where else message)
        )

    def build(self, node: Node, path: Path = ()) -> Any:
        mark = _mark(node)
        self.positions.values[path] = mark
        self._visits += 1
        self._distinct.add(id(node))
        if self._visits > _ALIAS_EXPANSION_FACTOR * len(self._distinct) + _ALIAS_EXPANSION_SLACK:
            raise YamlFileError.from_located(
                self.file,
                [
                    *self.errors,
                    Located(
                        self.file,
                        mark.line,
                        mark.column,
                        "aliases (*name) expand to too much data; write the values out",
                    ),
                ],
            )
        if isinstance(node, ScalarNode):
            self.positions.scalars[path] = node.value
            try:
                return self._constructor.construct_object(node, deep=True)
            except ConstructorError as exc:
                self.error(mark, path, f"cannot read this value: {exc.problem}")
                return None
            except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-13-45
                self.error(mark, path, f"cannot read this value: {exc}")
                return None
        if id(node) in self._open:
            self.error(mark, path, "an alias (*name) refers to a value that contains itself")
            return None
        self._open.add(id(node))
        try:
            if node.tag not in (_MAP_TAG, _SEQ_TAG):
                self.error(mark, path, f"the tag {node.tag} is not supported here")
                return None
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            assert isinstance(node, MappingNode)
            return self._mapping(node, path)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, Mark] = {}
        for key_node, value_node in node.value:
            key_mark = _mark(key_node)
            if not isinstance(key_node, ScalarNode):
                self.error(
                    key_mark, path, "a key must be a plain name or number, not a list or a mapping"
                )
                continue
            if key_node.tag == _MERGE_TAG:
                self.error(key_mark, path, "merge keys (<<) are not supported: write the keys out")
                continue
            key = key_node.value
            key_path = (*path, key)
            if key in first_seen:
                first = first_seen[key]
                self.error(
                    key_mark,
                    key_path,
                    f"duplicate key: already given at line {first.line}, column "
                    f"{first.column}; YAML would silently keep only the last",
                )
                continue
            first_seen[key] = key_mark
            self.positions.keys[key_path] = key_mark
            result[key] = self.build(value_node, key_path)
        return result


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


# --- validation ------------------------------------------------------------------------


def validate_yaml(path: FileName, model_cls: type[M]) -> M:
    """Load ``path`` and validate it as ``model_cls``; raise YamlFileError with every error."""
    data, positions = load_yaml(path)
    return validate_data(path, data, positions, model_cls)


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

    ``model_cls`` lets an unknown key be answered with the keys allowed there.
    """
    file = os.fspath(path)
    located: list[Located] = []
    errors = exc.errors()
    for error in errors:
        loc = error_path(error)
        if error["type"] == "too_short" and _has_inner_error(loc, errors):
            continue  # pydantic counts only the valid items: the items' own errors say it
        at_key = error["type"] == "extra_forbidden" or "[key]" in error["loc"]
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

    Without ``positions`` the file is read again to find them.
    """
    return [str(error) for error in locate_problem_list(path, problems, positions)]


def locate_problem_list(
    path: FileName, problems: Iterable[Problem], positions: Positions | None = None
) -> list[Located]:
    """``locate_problems``, as data."""
    if positions is None:
        _, positions = load_yaml(path)
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


# --- salvage: cross-check what is valid even when some of a file is not --------------


@dataclass(frozen=True, slots=True)
class Salvage(Generic[T]):
    """The part of a file that validates, after dropping every value that does not.

    ``removed`` are the dropped paths in the file's own coordinates; use
    ``original_path`` to turn a path into ``model`` back into one into the file
    (list indexes shift when list items are dropped).
    """

    model: T
    removed: frozenset[Path]
    index_maps: dict[Path, list[int]] = dataclasses.field(repr=False)

    def original_path(self, path: Path) -> Path:
        return _to_original(path, self.index_maps)

    def original_problem(self, problem: Problem) -> Problem:
        return dataclasses.replace(problem, path=self.original_path(problem.path))


def salvage(data: Any, model_cls: type[M], max_rounds: int = 50) -> Salvage[M] | None:
    """Drop each invalid value (then, if that breaks its parent, the parent) until the
    rest validates; None when nothing valid is left to cross-check (an error at the
    top of the file).  Lets a loader report shape errors and cross-reference errors
    in one run instead of one after the other.
    """
    removed: set[Path] = set()
    for _ in range(max_rounds):
        maps: dict[Path, list[int]] = {}
        compact = _compact(data, (), removed, maps)
        try:
            model = model_cls.model_validate(compact)
        except ValidationError as exc:
            dropped_before = frozenset(removed)
            for error in exc.errors():
                target = _existing(data, _to_original(error_path(error), maps))
                while target in dropped_before:  # a required key already dropped: its owner
                    target = target[:-1]
                if not target:
                    return None
                removed.add(target)
            if len(removed) == len(dropped_before):
                return None
            continue
        return Salvage(model, frozenset(removed), maps)
    return None


def _compact(value: Any, path: Path, removed: set[Path], maps: dict[Path, list[int]]) -> Any:
    if isinstance(value, dict):
        return {
            key: _compact(item, (*path, key), removed, maps)
            for key, item in value.items()
            if (*path, key) not in removed
        }
    if isinstance(value, list):
        kept = [i for i in range(len(value)) if (*path, i) not in removed]
        maps[path] = kept
        return [_compact(value[i], (*path, i), removed, maps) for i in kept]
    return value


def _to_original(path: Iterable[PathKey], maps: dict[Path, list[int]]) -> Path:
    out: Path = ()
    for part in path:
        kept = maps.get(out)
        if isinstance(part, int) and kept is not None and 0 <= part < len(kept):
            part = kept[part]
        out = (*out, part)
    return out


def _existing(data: Any, path: Path) -> Path:
    """The deepest prefix-wise walk of ``path`` through ``data`` (steps not present skipped)."""
    found: Path = ()
    node = data
    for part in path:
        in_mapping = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_mapping or in_list):
            continue
        node = node[part]
        found = (*found, part)
    return found
