"""Every setting is in the example settings file and in the README's settings table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callrouter.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
FIELDS = list(Settings.model_fields)
# Secrets may also come from a file; the example names the file, never the secret.
SECRETS = {name.removesuffix("_file") for name in FIELDS if name.endswith("_file")}


@pytest.mark.parametrize("name", [f for f in FIELDS if not f.endswith("_file")])
def test_the_setting_is_documented(name: str) -> None:
    example = (ROOT / "examples" / "callrouter.yaml").read_text()
    key = f"{name}_file" if name in SECRETS else name
    assert re.search(rf"^#?\s*{key}:", example, re.M), f"{key} is not in examples/callrouter.yaml"
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.lstrip().startswith("| `"))
    assert f"`{name}`" in table, f"{name} is not in the README's settings table"


def test_the_example_values_are_the_defaults_where_it_sets_the_fastagi_caps() -> None:
    settings = load_settings(ROOT / "examples" / "callrouter.yaml")
    defaults = Settings()
    for name in FIELDS:
        if name.startswith("agi_"):
            assert getattr(settings, name) == getattr(defaults, name), name
