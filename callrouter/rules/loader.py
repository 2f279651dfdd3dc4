"""Reading rules.yaml: RingRules, or every error as ``FILE:LINE:COLUMN: message``.

Used by the daemon (at start and on every change of the file) and by
``callrouter rules check``.
"""

from __future__ import annotations

from pydantic import ValidationError

from callrouter.domain.directory import DirectorySnapshot
from callrouter.rules.check import check_rules, check_rules_data
from callrouter.rules.model import RingRules
from callrouter.yamlfile import (
    FileName,
    YamlFileError,
    locate_problem_list,
    locate_validation_error,
    read_yaml,
)


def load_rules(path: FileName, snapshot: DirectorySnapshot | None = None) -> RingRules:
    """The ring rules in ``path``.

    With ``snapshot`` the rules are also checked against the directory
    (``check_rules``), and those problems are reported together with any shape
    errors: the parts of the file that are valid are still cross-checked, each
    rule and ring entry on its own (``check_rules_data``).  So are the YAML problems
    that do not stop loading (a duplicate key keeps its first value, a value that
    cannot be read is invalid); a syntax error stops it.

    Raises YamlFileError with every error found, sorted by line and column, and
    OSError when the file cannot be read.
    """
    loaded = read_yaml(path)
    data, positions = loaded.data, loaded.positions
    errors = list(loaded.errors)
    try:
        rules = RingRules.model_validate(data)
    except ValidationError as exc:
        errors += locate_validation_error(path, exc, positions, RingRules)
        if snapshot is not None:
            problems = check_rules_data(data, snapshot)
            errors += locate_problem_list(path, problems, positions)
        raise YamlFileError.from_located(path, errors) from None
    if snapshot is not None:
        errors += locate_problem_list(path, check_rules(rules, snapshot), positions)
    if errors:
        raise YamlFileError.from_located(path, errors)
    return rules
