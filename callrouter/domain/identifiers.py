"""The identifiers of the domain, each defined once: its pattern, its length, its words.

Every place that takes one of these from outside — the rules and directory YAML,
the SQL schema's column sizes, the HTTP API (and its OpenAPI document), user
tokens, feature codes and the CLI — uses the definitions here, so that an
extension means the same thing everywhere.

Each ``Annotated`` type validates with a message that names the value and says
what is expected (pydantic adds the file position or the request field), refuses a
YAML number where digits must be text (leading zeros would be lost), and carries
its pattern into JSON schemas.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from callrouter.domain.endpoint import endpoint_problem

# --- patterns and lengths --------------------------------------------------------

EXTENSION_PATTERN = re.compile(r"[0-9]{1,20}")
EXTENSION_LENGTH = 20
WORKPLACE_ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
WORKPLACE_ID_LENGTH = 64
WORKPLACE_CODE_PATTERN = re.compile(r"[0-9]{1,10}")
WORKPLACE_CODE_LENGTH = 10
# A PIN as stored: 4 to 12 digits.  What a caller types is only checked for its
# alphabet and length (PIN_INPUT_PATTERN), so a short wrong PIN is a wrong PIN.
PIN_PATTERN = re.compile(r"[0-9]{4,12}")
PIN_INPUT_PATTERN = re.compile(r"[0-9]{1,12}")
PIN_LENGTH = 12
ENDPOINT_LENGTH = 255
NAME_LENGTH = 200
ROLE_NAME_LENGTH = 64
CLIENT_ID_LENGTH = 64
CLIENT_ID_PATTERN = re.compile(rf"[A-Za-z0-9._-]{{1,{CLIENT_ID_LENGTH}}}")
# A node: one Asterisk (with its routers) of several on one directory.
NODE_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
NODE_LENGTH = 32


def extension_problem(value: str) -> str | None:
    if EXTENSION_PATTERN.fullmatch(value):
        return None
    return f"extension {value!r} must be 1 to 20 digits"


def workplace_id_problem(value: str) -> str | None:
    if WORKPLACE_ID_PATTERN.fullmatch(value):
        return None
    return (
        f"workplace id {value!r} must be a slug: lower-case letters, digits and inner "
        "hyphens, at most 64 characters, e.g. office-1"
    )


def workplace_code_problem(value: str) -> str | None:
    if WORKPLACE_CODE_PATTERN.fullmatch(value):
        return None
    return f"workplace code {value!r} must be 1 to 10 digits"


def node_problem(value: str) -> str | None:
    if NODE_PATTERN.fullmatch(value):
        return None
    return (
        f"node {value!r} must be a slug: lower-case letters, digits and inner hyphens, "
        f"at most {NODE_LENGTH} characters, e.g. berlin-1"
    )


def stored_endpoint_problem(value: str) -> str | None:
    """Why ``value`` cannot be a phone of the directory (dialable, and fits its column)."""
    problem = endpoint_problem(value)
    if problem is None and len(value) > ENDPOINT_LENGTH:
        problem = f"endpoint {value!r} is longer than {ENDPOINT_LENGTH} characters"
    return problem


def is_extension(value: str) -> bool:
    return EXTENSION_PATTERN.fullmatch(value) is not None


# --- pydantic types ----------------------------------------------------------------


def _checked(problem: Callable[[str], str | None]) -> Callable[[str], str]:
    def check(value: str) -> str:
        message = problem(value)
        if message is not None:
            raise ValueError(message)
        return value

    return check


def _not_a_number(what: str, example: str) -> Callable[[Any], Any]:
    """Refuse a YAML number where digits must be text: leading zeros would be lost."""

    def check(value: Any) -> Any:
        if isinstance(value, int | float):  # bool too
            raise ValueError(
                f'write the {what} in quotes, e.g. "{example}": unquoted, YAML reads it '
                "as a number and leading zeros would be lost"
            )
        return value

    return check


def _name_problem(what: str, max_length: int) -> Callable[[str], str | None]:
    def problem(value: str) -> str | None:
        if not value.strip():
            return f"the {what} must not be empty"
        control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
        if control is not None:
            return f"the {what} must not contain control characters (found U+{ord(control):04X})"
        if len(value) > max_length:
            return f"the {what} is longer than {max_length} characters"
        return None

    return problem


def _schema(pattern: re.Pattern[str] | None, max_length: int, example: str) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, "examples": [example]}
    if pattern is not None:
        schema["pattern"] = f"^{pattern.pattern}$"
    return WithJsonSchema(schema)


Extension = Annotated[
    str,
    BeforeValidator(_not_a_number("extension", "201")),
    AfterValidator(_checked(extension_problem)),
    _schema(EXTENSION_PATTERN, EXTENSION_LENGTH, "201"),
]
WorkplaceId = Annotated[
    str,
    AfterValidator(_checked(workplace_id_problem)),
    _schema(WORKPLACE_ID_PATTERN, WORKPLACE_ID_LENGTH, "hotdesk-1"),
]
WorkplaceCode = Annotated[
    str,
    BeforeValidator(_not_a_number("workplace code", "801")),
    AfterValidator(_checked(workplace_code_problem)),
    _schema(WORKPLACE_CODE_PATTERN, WORKPLACE_CODE_LENGTH, "801"),
]
Endpoint = Annotated[
    str,
    AfterValidator(_checked(stored_endpoint_problem)),
    _schema(None, ENDPOINT_LENGTH, "PJSIP/desk-12"),
]
NodeName = Annotated[
    str,
    AfterValidator(_checked(node_problem)),
    _schema(NODE_PATTERN, NODE_LENGTH, "berlin-1"),
]
DisplayName = Annotated[
    str,
    AfterValidator(_checked(_name_problem("name", NAME_LENGTH))),
    _schema(None, NAME_LENGTH, "Anna Schmidt"),
]
RoleName = Annotated[
    str,
    AfterValidator(_checked(_name_problem("role name", ROLE_NAME_LENGTH))),
    _schema(None, ROLE_NAME_LENGTH, "sales"),
]
