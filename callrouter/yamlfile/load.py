"""YAML text to plain data, with the position of every value and every mapping key.

``load_yaml`` composes PyYAML's node tree itself and turns it into plain data (only
YAML's standard scalars go through PyYAML's SafeConstructor; a ``!!python/...`` or
any other tag is an error), recording where each value and each mapping key stands
in the file.  Mapping keys are kept as their raw text, so
``201:`` is ``"201"`` and ``0201:`` stays ``"0201"`` (no YAML 1.1 octal), and a key
written twice is an error instead of PyYAML's silent "last one wins".

A file that cannot be read raises ``OSError`` as usual; everything wrong *inside* a
file raises ``YamlFileError`` carrying every located error at once.

``read_yaml`` goes on where a problem is local, so that the schema's and the
cross-checks' errors of the same file can be reported in the same run: a duplicate
key keeps its first value, a value that cannot be read (an unsupported tag, a date
like 2024-13-45) becomes ``UNREADABLE`` (invalid for any model field) and its path
is recorded in ``Positions.unreadable``.  Only what stops parsing altogether (a
syntax error, bytes that are not UTF-8, a file over ``MAX_FILE_BYTES``, aliases
expanding to too much data) raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from callrouter.yamlfile.errors import (
    FileName,
    Located,
    Mark,
    Path,
    Positions,
    YamlFileError,
    format_path,
)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
# Aliases may repeat parts of a document, but not blow it up ("billion laughs").
_ALIAS_EXPANSION_FACTOR = 10
_ALIAS_EXPANSION_SLACK = 10_000
# Larger files are refused unread: PyYAML is pure Python here, and a 10 MB rules file
# once took 30 s to parse.  Far above any real directory or rules file (a 4 MiB one
# holds some 28,000 FollowMe rules and itself takes 10 to 30 s).
MAX_FILE_BYTES = 4 * 1024 * 1024


class _Unreadable:
    """The type of ``UNREADABLE``: no model field accepts it (unless typed Any/object)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNREADABLE"


# In ``read_yaml``'s data: a value that could not be read, its error already reported.
UNREADABLE: Final = _Unreadable()


@dataclass(frozen=True, slots=True)
class Loaded:
    """A file's data and positions, and the problems in it that did not stop loading."""

    data: Any
    positions: Positions
    errors: tuple[Located, ...] = ()


def load_yaml(path: FileName, *, max_bytes: int | None = None) -> tuple[Any, Positions]:
    """Read ``path`` into plain data and the positions of its parts.

    Raises OSError when the file cannot be read and YamlFileError for anything
    wrong inside it (syntax, duplicate keys, unsupported tags) or when it is larger
    than ``max_bytes`` (default ``MAX_FILE_BYTES``).  An empty file is an empty mapping.
    """
    return _strict(read_yaml(path, max_bytes=max_bytes))


def read_yaml(path: FileName, *, max_bytes: int | None = None) -> Loaded:
    """``load_yaml``, going on after local problems: they are returned, not raised.

    Raises OSError, and YamlFileError only for what stops parsing (module docstring).
    """
    return read_yaml_text(_read_file(path, max_bytes), os.fspath(path))


def _read_file(path: FileName, max_bytes: int | None) -> bytes:
    """The file's bytes; YamlFileError, unread, when it is larger than ``limit``.

    The size is taken from the open file before reading, and the read is capped too,
    for a file that grows meanwhile or reports no size (a pipe).
    """
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes  # read now: tests patch it
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        source = b"" if size > limit else stream.read(limit + 1)
    if size > limit or len(source) > limit:
        file = os.fspath(path)
        # No size known (a pipe) or grown since: the read stopped past the limit.
        shown = _size(size) if size > limit else f"at least {len(source)} bytes"
        message = f"the file is too large to read: {shown}; the limit is {_size(limit)}"
        raise YamlFileError.from_located(file, [Located(file, 1, 1, message)])
    return source


def _size(count: int) -> str:
    mib = f" ({count / 2**20:.1f} MiB)" if count >= 2**20 else ""
    return f"{count} bytes{mib}"


def parse_yaml(source: str | bytes, file: str = "<string>") -> tuple[Any, Positions]:
    """``load_yaml`` for text already in memory; ``file`` only names it in errors."""
    return _strict(read_yaml_text(source, file))


def _strict(loaded: Loaded) -> tuple[Any, Positions]:
    if loaded.errors:
        raise YamlFileError.from_located(loaded.errors[0].file, loaded.errors)
    return loaded.data, loaded.positions


def read_yaml_text(source: str | bytes, file: str = "<string>") -> Loaded:
    """``read_yaml`` for text already in memory; ``file`` only names it in errors."""
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
        return Loaded({}, builder.positions)
    data = builder.build(root)
    return Loaded(data, builder.positions, tuple(builder.errors))


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

    def unreadable(self, mark: Mark, path: Path, message: str) -> _Unreadable:
        self.error(mark, path, message)
        self.positions.unreadable.add(path)
        return UNREADABLE

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
                return self.unreadable(mark, path, f"cannot read this value: {exc.problem}")
            except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-13-45
                return self.unreadable(mark, path, f"cannot read this value: {exc}")
        if id(node) in self._open:
            message = "an alias (*name) refers to a value that contains itself"
            return self.unreadable(mark, path, message)
        self._open.add(id(node))
        try:
            if node.tag not in (_MAP_TAG, _SEQ_TAG):
                return self.unreadable(mark, path, f"the tag {node.tag} is not supported here")
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
