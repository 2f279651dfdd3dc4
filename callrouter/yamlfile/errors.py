"""Paths into a file's data, where each stands in the file, and the located errors.

A path is a tuple of mapping keys (str) and list indexes (int), e.g.
``("users", "201", "followme", 0)``, shown to admins as ``users."201".followme[0]``
(``format_path``).  ``Positions`` records where each path was written; a
``Located`` is one error with its place, ``str()`` giving ``FILE:LINE:COLUMN: message``;
``YamlFileError`` carries every located error of one file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PathKey = str | int
Path = tuple[PathKey, ...]
FileName = str | os.PathLike[str]

# Keys shown to admins without quotes in a dotted path; anything else is JSON-quoted.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


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
    # Values that could not be read (e.g. an unsupported tag), already reported as
    # such while loading: errors found in them later are not reported again.
    unreadable: set[Path] = field(default_factory=set)

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

    def in_unreadable(self, path: Iterable[PathKey]) -> bool:
        """Whether ``path`` (as ``nearest`` finds it) is, or is in, an unreadable value."""
        if not self.unreadable:
            return False
        found = self.nearest(path)
        return any(found[:length] in self.unreadable for length in range(len(found) + 1))


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
