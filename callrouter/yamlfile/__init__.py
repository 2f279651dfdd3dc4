"""Admin-edited YAML files as validated models, every error as ``FILE:LINE:COLUMN: message``.

- ``load``: YAML to plain data with the position of every value and mapping key
  (``load_yaml``, ``parse_yaml``); refuses what YAML would silently get wrong
  (duplicate keys, unsupported tags, ...) and files over ``MAX_FILE_BYTES``;
  ``read_yaml`` reports the local ones and goes on, for one run to show all errors.
- ``errors``: paths into the data, ``Positions``, and the located errors
  (``Located``, ``YamlFileError``, ``format_path``).
- ``validation``: pydantic's errors and the cross-checks' ``Problem``\\ s as located
  errors (``validate_yaml``, ``locate_validation_error``, ``locate_problems``).
- ``partial``: the part of a file that validates, to cross-check it even when the
  rest does not (``salvage``).

A path is a tuple of mapping keys (str) and list indexes (int), e.g.
``("users", "201", "followme", 0)``, shown to admins as ``users."201".followme[0]``.
A file that cannot be read raises ``OSError`` as usual; everything wrong *inside* a
file raises ``YamlFileError`` carrying every located error at once.
"""

from callrouter.yamlfile.errors import (
    FileName,
    Located,
    Mark,
    Path,
    PathKey,
    Positions,
    Problem,
    YamlFileError,
    format_path,
    sort_located,
)
from callrouter.yamlfile.load import (
    MAX_FILE_BYTES,
    UNREADABLE,
    Loaded,
    load_yaml,
    parse_yaml,
    read_yaml,
    read_yaml_text,
)
from callrouter.yamlfile.partial import Salvage, salvage
from callrouter.yamlfile.validation import (
    error_path,
    locate_problem_list,
    locate_problems,
    locate_validation_error,
    validate_data,
    validate_yaml,
)

__all__ = [
    "MAX_FILE_BYTES",
    "UNREADABLE",
    "FileName",
    "Loaded",
    "Located",
    "Mark",
    "Path",
    "PathKey",
    "Positions",
    "Problem",
    "Salvage",
    "YamlFileError",
    "error_path",
    "format_path",
    "load_yaml",
    "locate_problem_list",
    "locate_problems",
    "locate_validation_error",
    "parse_yaml",
    "read_yaml",
    "read_yaml_text",
    "salvage",
    "sort_located",
    "validate_data",
    "validate_yaml",
]
