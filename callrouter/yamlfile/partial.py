"""Salvage: cross-check what is valid in a file even when some of it is not.

``salvage`` drops each value that fails validation (then, if that breaks its parent,
the parent) until the rest validates, so a loader can report shape errors and
cross-reference errors in one run instead of one after the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from callrouter.yamlfile.errors import Path, PathKey, Problem
from callrouter.yamlfile.validation import error_path

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


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
