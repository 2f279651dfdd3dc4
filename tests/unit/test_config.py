"""Settings that depend on one another."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from callrouter.config import Settings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"forward_prefix": "*4"}, "forward_prefix '*4' starts login_prefix '*44'"),
        ({"pickup_prefix": "*44"}, "login_prefix '*44' starts pickup_prefix '*44'"),
        ({"switch_prefix": "*7", "forward_prefix": "*71"}, "switch_prefix '*7' starts forward"),
    ],
)
def test_feature_code_prefixes_may_not_start_one_another(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(**overrides)  # type: ignore[arg-type]


def test_default_feature_codes_are_apart() -> None:
    settings = Settings()
    codes = {settings.login_prefix, settings.forward_prefix, settings.switch_prefix}
    assert codes | {settings.pickup_prefix} == {"*44", "*7", "*5", "*8"}
