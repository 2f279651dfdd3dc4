"""What may be dialled: Asterisk endpoints and external numbers.

Every string that can end up in a Dial string or a ``POST /channels/create`` passes
through here first.  The allowed alphabet is deliberately small: anything that
could change the meaning of a Dial string (``&``, ``,``, ``|``, brackets, white
space, ``$``, ``{``, ``}``) is rejected, never escaped.
"""

from __future__ import annotations

import re

TECHNOLOGIES = ("PJSIP", "SIP", "IAX2", "DAHDI", "Local")

_ENDPOINT = re.compile(r"(PJSIP|SIP|IAX2|DAHDI|Local)/[A-Za-z0-9._@+-]+")
_EXTERNAL_NUMBER = re.compile(r"\+[0-9]{2,20}")
_DANGEROUS = set("&,|() \t\r\n$}{;")


class InvalidEndpoint(ValueError):
    """A string that is not a dialable endpoint; the message says why."""


def endpoint_problem(value: str) -> str | None:
    """Why ``value`` is not a valid endpoint, or None when it is one."""
    if _ENDPOINT.fullmatch(value):
        return None
    if not value:
        return "endpoint is empty"
    bad = sorted({c for c in value if c in _DANGEROUS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"endpoint {value!r} contains {shown}, which would change a Dial string"
    technology, slash, resource = value.partition("/")
    if not slash or technology not in TECHNOLOGIES:
        return (
            f"endpoint {value!r} must start with a technology "
            f"({', '.join(TECHNOLOGIES)}) and a slash, e.g. PJSIP/desk-12"
        )
    if not resource:
        return f"endpoint {value!r} has no resource after the slash"
    return f"endpoint {value!r} may contain only letters, digits and ._@+- after the slash"


def validate_endpoint(value: str) -> str:
    """Return ``value`` unchanged if it is a valid endpoint, else raise InvalidEndpoint."""
    problem = endpoint_problem(value)
    if problem is not None:
        raise InvalidEndpoint(problem)
    return value


def is_endpoint(value: str) -> bool:
    return _ENDPOINT.fullmatch(value) is not None


def is_external_number(value: str) -> bool:
    """An external number: ``+`` and 2 to 20 digits (E.164 and shorter service numbers)."""
    return _EXTERNAL_NUMBER.fullmatch(value) is not None


def external_endpoint_problem(template: str) -> str | None:
    """Why a ``defaults.external_endpoint`` template is unusable, or None."""
    if template.count("{number}") != 1:
        return "external_endpoint must contain {number} exactly once, e.g. PJSIP/{number}@trunk"
    rest = template.replace("{number}", "")
    if "{" in rest or "}" in rest:
        return "external_endpoint may contain no placeholder other than {number}"
    problem = endpoint_problem(template.replace("{number}", "+4930123456"))
    if problem is not None:
        return f"external_endpoint {template!r} does not make a valid endpoint: {problem}"
    return None


def expand_external(template: str, number: str) -> str:
    """The endpoint that dials ``number`` through ``template`` (both already validated)."""
    return template.replace("{number}", number)


# PJSIP/anna-desk-0000001a -> PJSIP/anna-desk (the endpoint behind a channel name)
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]{8}$")


def caller_endpoint(channel_name: str) -> str | None:
    """The endpoint a channel belongs to, or None (Local channels, odd names)."""
    if channel_name.startswith("Local/"):
        return None
    endpoint = _CHANNEL_SUFFIX.sub("", channel_name)
    return endpoint if endpoint != channel_name else None
