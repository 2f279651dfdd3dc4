"""confirm: true and its settings in rules.yaml: what loads, and every bad value located
as FILE:LINE:COLUMN with the field."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from callrouter.domain.directory import DirectorySnapshot, User
from callrouter.routing.plan import CallContext
from callrouter.routing.resolver import resolve_plan
from callrouter.routing.timeline import format_plan
from callrouter.rules.loader import load_rules
from callrouter.rules.model import RingRules
from tests.unit.test_rules_loader import rules_errors

SOUND_RULE = "up to 100 letters, digits, _ and -, folders split by /, without an extension"

BAD_CONFIRMS: list[tuple[str, str, list[str]]] = [
    (
        "confirm on the entry that starts the workplace timeline",
        'users:\n  "201":\n    followme:\n      - ring: [PJSIP/a]\n      - ring: [workplace]\n'
        "        confirm: true\n",
        [
            'rules.yaml:6:18: users."201".followme[1].confirm: confirm: applies to the phones '
            "and numbers of this entry; the workplace's own rule decides how its phones ring"
        ],
    ),
    (
        "confirm is yes or no",
        'users:\n  "201":\n    followme:\n      - {ring: [PJSIP/a], confirm: "if you like"}\n',
        [
            'rules.yaml:4:36: users."201".followme[0].confirm: '
            "Input should be a valid boolean, unable to interpret input"
        ],
    ),
    (
        "a prompt that climbs out of the sounds folder",
        'defaults:\n  confirm_prompt: "../../etc/passwd"\n',
        [
            f"rules.yaml:2:19: defaults.confirm_prompt: '../../etc/passwd' is not a sound name: "
            f"{SOUND_RULE}, e.g. followme/options"
        ],
    ),
    (
        "a prompt that would add media to the play request",
        'defaults:\n  confirm_prompt: "followme/options,recording:secret"\n',
        [
            f"rules.yaml:2:19: defaults.confirm_prompt: 'followme/options,recording:secret' is "
            f"not a sound name: {SOUND_RULE}, e.g. followme/options"
        ],
    ),
    (
        "a prompt with its file extension",
        "defaults:\n  confirm_prompt: followme/options.gsm\n",
        [
            f"rules.yaml:2:19: defaults.confirm_prompt: 'followme/options.gsm' is not a sound "
            f"name: {SOUND_RULE}, e.g. followme/options"
        ],
    ),
    (
        "an empty prompt",
        'defaults:\n  confirm_prompt: ""\n',
        [
            f"rules.yaml:2:19: defaults.confirm_prompt: '' is not a sound name: {SOUND_RULE}, "
            "e.g. followme/options"
        ],
    ),
    (
        "a prompt that is a number",
        "defaults:\n  confirm_prompt: 12\n",
        [
            "rules.yaml:2:19: defaults.confirm_prompt: expected text, but YAML reads 12 as a "
            'number: write it in quotes, "12"'
        ],
    ),
    (
        "no time to confirm",
        "defaults:\n  confirm_timeout: 0\n",
        ["rules.yaml:2:20: defaults.confirm_timeout: Input should be greater than 0"],
    ),
    (
        "a confirm time of hours",
        "defaults:\n  confirm_timeout: 3600\n",
        ["rules.yaml:2:20: defaults.confirm_timeout: Input should be less than or equal to 120"],
    ),
    (
        "a confirm time in words",
        "defaults:\n  confirm_timeout: ten\n",
        ["rules.yaml:2:20: defaults.confirm_timeout: expected a number, got text"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_CONFIRMS], ids=[c[0] for c in BAD_CONFIRMS]
)
def test_bad_confirm_settings_are_located(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert rules_errors(tmp_path, text) == expected


def test_the_prompt_is_cut_short_in_its_error(tmp_path: Path) -> None:
    (error,) = rules_errors(tmp_path, f"defaults:\n  confirm_prompt: {'a' * 300}\n")
    assert f"'{'a' * 40}' is not a sound name" in error and "a" * 41 not in error


def test_confirm_entries_and_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "defaults:\n"
        "  external_endpoint: PJSIP/{number}@trunk\n"
        "  confirm_prompt: custom/press-1-to-take-it\n"
        "  confirm_timeout: 7.5\n"
        "users:\n"
        '  "201":\n'
        "    followme:\n"
        "      - {ring: [PJSIP/a]}\n"
        '      - {ring: ["+4917012345678", PJSIP/b], confirm: true, delay: 5}\n'
        "workplaces:\n"
        "  office-1:\n"
        "    ring: [{ring: [PJSIP/c], confirm: true}]\n"  # a workplace's own phones may
    )
    rules = load_rules(path)
    assert rules.defaults.confirm_prompt == "custom/press-1-to-take-it"
    assert rules.defaults.confirm_timeout == 7.5
    followme = rules.users["201"].followme
    assert followme is not None and [e.confirm for e in followme] == [False, True]
    ring = rules.workplaces["office-1"].ring
    assert ring is not None and ring[0].confirm


def test_the_defaults_are_app_followmes_prompt_and_ten_seconds() -> None:
    defaults = RingRules().defaults
    assert (defaults.confirm_prompt, defaults.confirm_timeout) == ("followme/options", 10)


def test_the_plan_shows_which_legs_must_press_1(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        'users:\n  "201":\n    followme:\n      - {ring: [PJSIP/a]}\n'
        "      - {ring: [PJSIP/b], confirm: true}\n"
    )
    snapshot = DirectorySnapshot(users={"201": User("201", "Anna", phones=("PJSIP/a", "PJSIP/b"))})
    plan = resolve_plan(snapshot, load_rules(path), "201")
    assert [leg.confirm for leg in plan.legs] == [False, True]
    lines = format_plan(plan).splitlines()
    assert lines[2].startswith("       0     20  PJSIP/a") and "press 1" not in lines[2]
    assert lines[3].startswith("       0     20  PJSIP/b") and lines[3].endswith(
        "  confirm: press 1"
    )


def test_the_examples_mobile_of_boris_must_press_1() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    rules = load_rules(examples / "rules.yaml")
    snapshot = DirectorySnapshot(users={"202": User("202", "Boris", phones=("PJSIP/boris-desk",))})
    evening = CallContext(internal=False, at=datetime(2026, 12, 2, 19, 0))
    plan = resolve_plan(snapshot, rules, "202", call=evening)
    assert {leg.endpoint: leg.confirm for leg in plan.legs} == {
        "PJSIP/boris-desk": False,
        "PJSIP/+4917055555555@trunk": True,
    }
