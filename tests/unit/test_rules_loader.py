"""load_rules(): rules.yaml to RingRules, every error as FILE:LINE:COLUMN: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.rules.loader import load_rules
from callrouter.rules.model import RingRules
from callrouter.yamlfile import MAX_FILE_BYTES, YamlFileError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEMPLATE = 'defaults:\n  external_endpoint: "PJSIP/{number}@trunk"\n'


def rules_errors(tmp_path: Path, text: str, snapshot: DirectorySnapshot | None = None) -> list[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlFileError) as caught:
        load_rules(path, snapshot)
    prefix = f"{path}:"
    assert all(line.startswith(prefix) for line in caught.value.errors)
    return ["rules.yaml:" + line.removeprefix(prefix) for line in caught.value.errors]


def test_the_example_loads() -> None:
    rules = load_rules(EXAMPLES / "rules.yaml")
    assert rules.defaults.external_endpoint == "PJSIP/{number}@trunk"
    followme = rules.users["201"].followme
    assert followme is not None
    assert followme[1].ring == ("+4917012345678",)
    assert (followme[1].delay, followme[1].timeout) == (15, 25)
    assert followme[2].names_workplace


def test_an_empty_file_is_the_default_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("# nothing yet\n")
    assert load_rules(path) == RingRules()


BAD_RULES: list[tuple[str, str, list[str]]] = [
    (
        "timeout must be positive",
        'users:\n  "201":\n    followme:\n      - ring: [PJSIP/a]\n      - ring: [PJSIP/b]\n'
        "        timeout: 0\n",
        ['rules.yaml:6:18: users."201".followme[1].timeout: Input should be greater than 0'],
    ),
    (
        "delay may not be negative",
        "users:\n  '201':\n    followme:\n      - {ring: [PJSIP/a], delay: -5}\n",
        [
            'rules.yaml:4:34: users."201".followme[0].delay: '
            "Input should be greater than or equal to 0"
        ],
    ),
    (
        "a misspelt key, with a suggestion",
        "workplaces:\n  office-1:\n    ring:\n      - ring: [PJSIP/a]\n        tiemout: 3\n",
        [
            "rules.yaml:5:9: workplaces.office-1.ring[0].tiemout: unknown key; "
            "did you mean 'timeout'?"
        ],
    ),
    (
        "an unknown top-level key",
        "user:\n  '201': {}\n",
        ["rules.yaml:1:1: user: unknown key; did you mean 'users'?"],
    ),
    (
        "an extension that is not digits, at the key",
        "users:\n  '201': {}\n  anna: {}\n",
        ["rules.yaml:3:3: users.anna: extension 'anna' must be 1 to 20 digits"],
    ),
    (
        "a workplace id that is not a slug",
        "workplaces:\n  Office_1: {}\n",
        [
            "rules.yaml:2:3: workplaces.Office_1: workplace id 'Office_1' must be a slug: "
            "lower-case letters, digits and inner hyphens, at most 64 characters, e.g. office-1"
        ],
    ),
    (
        "an unquoted number as a target",
        TEMPLATE + "users:\n  '201':\n    followme:\n      - ring: [PJSIP/a, 4917012345678]\n",
        [
            'rules.yaml:6:25: users."201".followme[0].ring[1]: 4917012345678 is a number: '
            'write external numbers in quotes with a leading +, e.g. "+4917012345678"'
        ],
    ),
    (
        "a bad external number",
        TEMPLATE + "users:\n  '201':\n    followme:\n      - ring: ['+1']\n",
        [
            "rules.yaml:6:16: users.\"201\".followme[0].ring[0]: '+1' is not an external "
            "number: + and 2 to 20 digits, e.g. +4917012345678"
        ],
    ),
    (
        "an endpoint that would change a Dial string",
        "users:\n  '201':\n    followme:\n      - ring: ['PJSIP/a&PJSIP/b']\n",
        [
            "rules.yaml:4:16: users.\"201\".followme[0].ring[0]: endpoint 'PJSIP/a&PJSIP/b' "
            "contains '&', which would change a Dial string"
        ],
    ),
    (
        "an unknown technology",
        "users:\n  '201':\n    followme:\n      - ring: [SKYPE/anna]\n",
        [
            "rules.yaml:4:16: users.\"201\".followme[0].ring[0]: endpoint 'SKYPE/anna' must "
            "start with a technology (PJSIP, SIP, IAX2, DAHDI, Local) and a slash, "
            "e.g. PJSIP/desk-12"
        ],
    ),
    (
        "an external number needs the template, pointed at the number",
        "users:\n  '201':\n    followme:\n      - ring: [PJSIP/a]\n      - ring: ['+4930123456']\n",
        [
            'rules.yaml:5:16: users."201".followme[1].ring[0]: external number +4930123456 '
            "needs defaults.external_endpoint, e.g. PJSIP/{number}@trunk"
        ],
    ),
    (
        "a bad template",
        "defaults:\n  external_endpoint: PJSIP/trunk\n",
        [
            "rules.yaml:2:22: defaults.external_endpoint: external_endpoint must contain "
            "{number} exactly once, e.g. PJSIP/{number}@trunk"
        ],
    ),
    (
        "a target twice in one entry, at the second",
        "users:\n  '201':\n    followme:\n      - ring: [PJSIP/a, PJSIP/b, PJSIP/a]\n",
        [
            'rules.yaml:4:34: users."201".followme[0].ring[2]: '
            "PJSIP/a is listed twice in the same entry"
        ],
    ),
    (
        "workplace named in two FollowMe entries",
        "users:\n  '201':\n    followme:\n      - ring: [workplace]\n      - ring: [workplace]\n",
        [
            "rules.yaml:3:5: users.\"201\".followme: 'workplace' may start the workplace "
            "timeline in one entry only"
        ],
    ),
    (
        "workplace as a target of a workplace rule",
        "workplaces:\n  office-1:\n    ring:\n      - ring: [workplace]\n",
        [
            "rules.yaml:3:5: workplaces.office-1.ring: 'workplace' is a FollowMe target; "
            "a workplace rule names phones"
        ],
    ),
    (
        "an entry without ring",
        "users:\n  '201':\n    followme:\n      - timeout: 5\n",
        ['rules.yaml:4:9: users."201".followme[0].ring: required, but missing'],
    ),
    (
        "an empty ring",
        "users:\n  '201':\n    followme:\n      - ring: []\n",
        [
            'rules.yaml:4:9: users."201".followme[0].ring: '
            "Tuple should have at least 1 item after validation, not 0"
        ],
    ),
    (
        "followme written as a mapping",
        "users:\n  '201':\n    followme:\n      ring: [PJSIP/a]\n",
        ['rules.yaml:3:5: users."201".followme: expected a list, got a mapping'],
    ),
    (
        "a timeout in words",
        "defaults:\n  timeout: twenty\n",
        ["rules.yaml:2:12: defaults.timeout: expected a number, got text"],
    ),
    (
        "a duplicate extension (YAML would keep the last)",
        "users:\n  '201': {}\n  201: {}\n",
        [
            'rules.yaml:3:3: users."201": duplicate key: already given at line 2, column 3; '
            "YAML would silently keep only the last"
        ],
    ),
    (
        "a syntax error",
        "users:\n  '201':\n    followme:\n      - ring: [PJSIP/a\n",
        [
            "rules.yaml:5:1: YAML syntax error: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 4, column 15)"
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES]
)
def test_bad_rules_are_located(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert rules_errors(tmp_path, text) == expected


def test_every_error_is_reported(tmp_path: Path) -> None:
    text = (
        "defaults:\n"
        "  timeout: 0\n"
        "users:\n"
        "  '201':\n"
        "    followme:\n"
        "      - ring: [PJSIP/a, 'PJSIP/b c']\n"
        "        delay: -1\n"
        "  abc: {}\n"
        "workplaces:\n"
        "  office-1:\n"
        "    rings: []\n"
    )
    assert rules_errors(tmp_path, text) == [
        "rules.yaml:2:12: defaults.timeout: Input should be greater than 0",
        "rules.yaml:6:25: users.\"201\".followme[0].ring[1]: endpoint 'PJSIP/b c' contains "
        "' ', which would change a Dial string",
        'rules.yaml:7:16: users."201".followme[0].delay: '
        "Input should be greater than or equal to 0",
        "rules.yaml:8:3: users.abc: extension 'abc' must be 1 to 20 digits",
        "rules.yaml:11:5: workplaces.office-1.rings: unknown key; did you mean 'ring'?",
    ]


SNAPSHOT = DirectorySnapshot(
    users={
        "201": User("201", "Anna Berger", "staff", ("PJSIP/anna-desk",)),
        "202": User("202", "Boris Chen", "staff", ("PJSIP/boris-desk",)),
    },
    workplaces={"office-1": Workplace("office-1", "Office 1", "801", ("PJSIP/office1-desk",))},
)


def test_with_a_directory_shape_and_directory_errors_come_together(tmp_path: Path) -> None:
    text = (
        "users:\n"
        "  '201':\n"
        "    followme:\n"
        "      - ring: [PJSIP/anna-desk]\n"
        "        timeout: 0\n"
        "      - ring: [PJSIP/boris-desk]\n"
        "  '299': {}\n"
        "workplaces:\n"
        "  office-1:\n"
        "    ring:\n"
        "      - ring: [PJSIP/ghost]\n"
    )
    assert rules_errors(tmp_path, text, SNAPSHOT) == [
        'rules.yaml:5:18: users."201".followme[0].timeout: Input should be greater than 0',
        'rules.yaml:6:16: users."201".followme[1].ring[0]: PJSIP/boris-desk belongs to '
        "user 202 (Boris Chen), not to user 201",
        'rules.yaml:7:3: users."299": no user has the extension 299',
        "rules.yaml:11:16: workplaces.office-1.ring[0].ring[0]: PJSIP/ghost is not in the "
        "directory",
    ]


def test_an_unknown_key_an_unknown_workplace_and_a_foreign_phone_in_one_run(
    tmp_path: Path,
) -> None:
    text = (
        "users:\n"
        "  '201':\n"
        "    followme:\n"
        "      - ring: [PJSIP/anna-desk, PJSIP/boris-desk]\n"
        "    colour: red\n"
        "workplaces:\n"
        "  office-9: {}\n"
    )
    assert rules_errors(tmp_path, text, SNAPSHOT) == [
        'rules.yaml:4:33: users."201".followme[0].ring[1]: PJSIP/boris-desk belongs to '
        "user 202 (Boris Chen), not to user 201",
        'rules.yaml:5:5: users."201".colour: unknown key; allowed here: followme, call_waiting, '
        "forward, user_forwarding, picked_up_by",
        "rules.yaml:7:3: workplaces.office-9: no workplace has the id office-9",
    ]


def test_a_rule_that_fails_as_a_whole_still_has_its_phones_checked(tmp_path: Path) -> None:
    # 'workplace' twice is an error of the whole FollowMe list; its entries, each
    # valid on its own, are still checked against the directory.
    text = (
        "users:\n"
        "  '201':\n"
        "    followme:\n"
        "      - ring: [workplace, PJSIP/ghost]\n"
        "      - ring: [workplace, PJSIP/boris-desk]\n"
    )
    assert rules_errors(tmp_path, text, SNAPSHOT) == [
        "rules.yaml:3:5: users.\"201\".followme: 'workplace' may start the workplace "
        "timeline in one entry only",
        'rules.yaml:4:27: users."201".followme[0].ring[1]: PJSIP/ghost is not in the directory',
        'rules.yaml:5:27: users."201".followme[1].ring[1]: PJSIP/boris-desk belongs to '
        "user 202 (Boris Chen), not to user 201",
    ]


def test_dropped_entries_do_not_shift_the_positions_of_the_rest(tmp_path: Path) -> None:
    text = (
        "workplaces:\n"
        "  office-1:\n"
        "    ring:\n"
        "      - timeout: 5\n"
        "      - ring: [PJSIP/office1-desk, PJSIP/anna-desk]\n"
        "        colour: red\n"
        "  Office_2:\n"
        "    ring:\n"
        "      - ring: [PJSIP/ghost]\n"
    )
    assert rules_errors(tmp_path, text, SNAPSHOT) == [
        "rules.yaml:4:9: workplaces.office-1.ring[0].ring: required, but missing",
        "rules.yaml:5:36: workplaces.office-1.ring[1].ring[1]: PJSIP/anna-desk belongs to "
        "user 201 (Anna Berger), not to workplace office-1",
        "rules.yaml:6:9: workplaces.office-1.ring[1].colour: unknown key; "
        "allowed here: ring, delay, timeout, calls, when, unless, switch, confirm",
        # An invalid workplace id: its rule is not looked up in the directory.
        "rules.yaml:7:3: workplaces.Office_2: workplace id 'Office_2' must be a slug: "
        "lower-case letters, digits and inner hyphens, at most 64 characters, e.g. office-1",
    ]


def test_many_external_numbers_without_a_template_hide_no_directory_error(
    tmp_path: Path,
) -> None:
    # One error for the missing template; every rule is still checked.
    users = "".join(
        f"  '{1000 + n}':\n    followme:\n      - ring: ['+49170{n:07d}']\n" for n in range(60)
    )
    text = "users:\n" + users + "  '201':\n    followme:\n      - ring: [PJSIP/ghost]\n"
    errors = rules_errors(tmp_path, text, SNAPSHOT)
    assert [e for e in errors if "no user has the extension" not in e] == [
        'rules.yaml:4:16: users."1000".followme[0].ring[0]: external number +491700000000 '
        "needs defaults.external_endpoint, e.g. PJSIP/{number}@trunk",
        'rules.yaml:184:16: users."201".followme[0].ring[0]: PJSIP/ghost is not in the directory',
    ]
    assert len(errors) == 2 + 60


def test_a_duplicate_key_a_schema_error_and_a_directory_error_in_one_run(
    tmp_path: Path,
) -> None:
    text = (
        "defaults:\n"
        "  timeout: 0\n"
        "users:\n"
        "  '201':\n"
        "    followme:\n"
        "      - ring: [PJSIP/anna-desk, PJSIP/boris-desk]\n"
        "  201: {}\n"
        "  '299': {}\n"
    )
    expected = [
        "rules.yaml:2:12: defaults.timeout: Input should be greater than 0",
        'rules.yaml:6:33: users."201".followme[0].ring[1]: PJSIP/boris-desk belongs to '
        "user 202 (Boris Chen), not to user 201",
        'rules.yaml:7:3: users."201": duplicate key: already given at line 4, column 3; '
        "YAML would silently keep only the last",
        'rules.yaml:8:3: users."299": no user has the extension 299',
    ]
    assert rules_errors(tmp_path, text, SNAPSHOT) == expected
    # Without a directory: the file's own errors, both kinds.
    assert rules_errors(tmp_path, text) == [expected[0], expected[2]]


def test_unreadable_values_are_reported_once_and_the_rest_is_checked(tmp_path: Path) -> None:
    text = (
        "workplaces:\n"
        "  office-1:\n"
        "    ring:\n"
        "      - ring: [PJSIP/office1-desk, !secret x]\n"
        "        delay: !!python/object/apply:os.system [ls]\n"
        "      - ring: [PJSIP/ghost]\n"
        "        timeout: 2024-13-45\n"
    )
    assert rules_errors(tmp_path, text, SNAPSHOT) == [
        "rules.yaml:4:36: workplaces.office-1.ring[0].ring[1]: cannot read this value: "
        "could not determine a constructor for the tag '!secret'",
        "rules.yaml:5:16: workplaces.office-1.ring[0].delay: the tag "
        "tag:yaml.org,2002:python/object/apply:os.system is not supported here",
        "rules.yaml:6:16: workplaces.office-1.ring[1].ring[0]: PJSIP/ghost is not in the directory",
        "rules.yaml:7:18: workplaces.office-1.ring[1].timeout: cannot read this value: "
        "month must be in 1..12",
    ]


def test_a_duplicate_key_in_rules_valid_otherwise_is_refused(tmp_path: Path) -> None:
    text = "users:\n  '201':\n    followme:\n      - ring: [PJSIP/anna-desk]\n  '201': {}\n"
    assert rules_errors(tmp_path, text, SNAPSHOT) == [
        'rules.yaml:5:3: users."201": duplicate key: already given at line 2, column 3; '
        "YAML would silently keep only the last",
    ]


def test_a_syntax_error_still_stops_loading(tmp_path: Path) -> None:
    text = "defaults:\n  timeout: 0\nusers:\n  '201': {}\n  '201': {\n"
    [error] = rules_errors(tmp_path, text, SNAPSHOT)
    assert error.startswith("rules.yaml:6:1: YAML syntax error: ")


def test_with_a_directory_valid_rules_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("users:\n  '201':\n    followme:\n      - ring: [PJSIP/anna-desk]\n")
    assert load_rules(path, SNAPSHOT).users["201"].followme is not None


def test_a_missing_file_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "nowhere.yaml")


def test_a_rules_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    with path.open("wb") as sparse:
        sparse.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(YamlFileError) as caught:
        load_rules(path, SNAPSHOT)
    assert caught.value.errors == [
        f"{path}:1:1: the file is too large to read: 4194305 bytes (4.0 MiB); "
        "the limit is 4194304 bytes (4.0 MiB)"
    ]
