"""Reading a directory file: a DirectoryDocument, or every error at once.

Shape and values first (pydantic), then the cross-references (``check_document``).
When some entries are invalid the rest is still cross-checked, so one run reports
a bad PIN *and* a duplicate extension, each as ``FILE:LINE:COLUMN: message``.
Nothing is written anywhere: importing is ``callrouter.directory.store``'s job and
happens only for a document this returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from callrouter.directory.check import EVERY_NAME, Unchecked, check_document
from callrouter.directory.document import DirectoryDocument
from callrouter.yamlfile import (
    FileName,
    Path,
    Positions,
    YamlFileError,
    locate_problem_list,
    locate_validation_error,
    read_yaml,
    salvage,
)


def load_document(path: FileName) -> DirectoryDocument:
    """The directory document in ``path``.

    Raises YamlFileError with every error found (YAML, shape, values and
    cross-references), sorted by line and column; OSError when unreadable.  Only a
    YAML problem that stops loading (a syntax error) hides the others.
    """
    loaded = read_yaml(path)
    data, positions = loaded.data, loaded.positions
    errors = list(loaded.errors)
    try:
        document = DirectoryDocument.model_validate(data)
    except ValidationError as exc:
        errors += locate_validation_error(path, exc, positions, DirectoryDocument)
        partial = salvage(data, DirectoryDocument)
        if partial is not None:
            found = check_document(partial.model, unchecked=_unchecked(positions, partial.removed))
            problems = [partial.original_problem(problem) for problem in found]
            errors += locate_problem_list(path, problems, positions)
        raise YamlFileError.from_located(path, errors) from None
    errors += locate_problem_list(path, check_document(document), positions)
    if errors:
        raise YamlFileError.from_located(path, errors)
    return document


# Which key names an entry of each section, and which Unchecked field it goes to.
_IDENTITY = {
    "roles": ("name", "roles"),
    "users": ("extension", "extensions"),
    "workplaces": ("id", "workplaces"),
}


def _unchecked(positions: Positions, removed: Iterable[Path]) -> Unchecked:
    """The names of the entries dropped for errors: references to them are not 'unknown'.

    Names are taken as written (the raw text of the value), so ``extension: 0202``
    still counts as "0202" although YAML reads it as a number.
    """
    names: dict[str, Any] = {"roles": set(), "extensions": set(), "workplaces": set()}
    for path in removed:
        if not path or path[0] not in _IDENTITY:
            continue
        key, field = _IDENTITY[str(path[0])]
        if len(path) == 1:  # the whole section
            names[field] = EVERY_NAME
        elif len(path) == 2 and isinstance(names[field], set):
            raw = positions.scalars.get((*path, key))
            if raw is not None:
                names[field].add(raw)
    return Unchecked(names["roles"], names["extensions"], names["workplaces"])
