"""Reading a directory file: a DirectoryDocument, or every error at once.

Shape and values first (pydantic), then the cross-references (``check_document``).
When some entries are invalid the rest is still cross-checked, so one run reports
a bad PIN *and* a duplicate extension, each as ``FILE:LINE:COLUMN: message``.
Nothing is written anywhere: importing is ``callrouter.directory.importer``'s job.
It checks a document again with ``document_problems`` (the same validation, without
file positions), since a document built in code need not have come through here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from callrouter.directory.check import EVERY_NAME, Unchecked, check_document, repeats
from callrouter.directory.document import DirectoryDocument
from callrouter.yamlfile import (
    FileName,
    Path,
    Positions,
    YamlFileError,
    error_path,
    format_path,
    locate_problem_list,
    locate_validation_error,
    read_yaml,
    salvage,
)

# A directory file is imported by the CLI, not reloaded by the daemon, so it may be
# larger than a rules file: 16 MiB holds some 160,000 users (measured here: 20,000
# users, 2 MB, took 20 s and 200 MB to load, so 16 MiB about 1.5 GB and minutes).
# A larger directory is imported in parts (without --prune).
MAX_DIRECTORY_BYTES = 16 * 1024 * 1024


def load_document(path: FileName) -> DirectoryDocument:
    """The directory document in ``path``.

    Raises YamlFileError with every error found (YAML, shape, values and
    cross-references), sorted by line and column; OSError when unreadable.  Only a
    YAML problem that stops loading (a syntax error) hides the others.
    """
    loaded = read_yaml(path, max_bytes=MAX_DIRECTORY_BYTES)
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


def document_problems(doc: DirectoryDocument) -> list[str]:
    """What keeps the database from holding ``doc``, found the way ``load_document`` finds it.

    Its values (``DirectoryDocument``'s own validation, run again: a document built
    in code may have skipped it with ``model_construct`` or ``model_copy(update=...)``)
    and its names given twice (``repeats``); the references are the importer's to
    check, since the database can resolve them too.  Messages carry no file position.
    """
    problems = [f"{repeat.kind} {repeat.value} appears twice" for repeat in repeats(doc)]
    try:
        DirectoryDocument.model_validate(doc.model_dump(warnings=False))
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            message = error["msg"]
            for prefix in ("Value error, ", "Assertion failed, "):  # as for a file
                message = message.removeprefix(prefix)
            problems.append(f"{format_path(error_path(error))}: {message}")
    return problems


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
