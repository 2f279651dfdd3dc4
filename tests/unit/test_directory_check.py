"""The directory file: values (document.py), cross-references (check.py), loading (loader.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callrouter.directory.check import EVERY_NAME, Unchecked, check_document
from callrouter.directory.document import DirectoryDocument
from callrouter.directory.loader import load_document
from callrouter.directory.pins import hash_pin
from callrouter.yamlfile import Problem, YamlFileError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def directory_errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "directory.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlFileError) as caught:
        load_document(path)
    prefix = f"{path}:"
    assert all(line.startswith(prefix) for line in caught.value.errors)
    return ["directory.yaml:" + line.removeprefix(prefix) for line in caught.value.errors]


# --- examples ------------------------------------------------------------------------


def test_the_example_directory_loads_and_checks_clean() -> None:
    document = load_document(EXAMPLES / "directory.yaml")
    assert check_document(document) == []
    assert len(document.users) == 8
    assert len(document.workplaces) == 4
    assert {role.name: role.workplaces for role in document.roles} == {
        "staff": None,
        "intern": ("hotdesk-1", "hotdesk-2"),
    }
    assert document.logins == {"201": "office-1", "205": "office-2", "206": "hotdesk-1"}
    assert document.users[0].pin == "4711"


# --- single values (document.py), each located -----------------------------------------

USER = 'users:\n  - extension: "201"\n    name: Anna Berger\n'
BAD_PARAMETERS = "scrypt$1048576$1$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2g"

BAD_VALUES: list[tuple[str, str, list[str]]] = [
    (
        "PIN as a YAML number: quote it",
        USER + "    pin: 4711\n",
        [
            'directory.yaml:4:10: users[0].pin: write the PIN in quotes, e.g. pin: "0815": '
            "unquoted, YAML reads it as a number and leading zeros would be lost"
        ],
    ),
    (
        "PIN too short",
        USER + '    pin: "12"\n',
        ["directory.yaml:4:10: users[0].pin: the PIN must be 4 to 12 digits"],
    ),
    (
        "PIN too long",
        USER + '    pin: "1234567890123"\n',
        ["directory.yaml:4:10: users[0].pin: the PIN must be 4 to 12 digits"],
    ),
    (
        "PIN not digits",
        USER + "    pin: abcd\n",
        ["directory.yaml:4:10: users[0].pin: the PIN must be 4 to 12 digits"],
    ),
    (
        "pin and pin_hash both",
        USER + f'    pin: "1234"\n    pin_hash: "{hash_pin("1234")}"\n',
        ["directory.yaml:5:15: users[0].pin_hash: give either pin or pin_hash, not both"],
    ),
    (
        "pin_hash not written by export",
        USER + '    pin_hash: "1234"\n',
        [
            "directory.yaml:4:15: users[0].pin_hash: pin_hash of user 201 is not a hash written "
            "by callrouter directory export (not in the format scrypt$n$r$p$salt$hash); "
            'to set a PIN, write it as pin: "1234"'
        ],
    ),
    (
        # Well-formed, but OpenSSL refuses n >= 2**(16 * r): verifying it was a 500.
        "pin_hash with scrypt parameters OpenSSL refuses",
        USER + f'    pin_hash: "{BAD_PARAMETERS}"\n',
        [
            "directory.yaml:4:15: users[0].pin_hash: pin_hash of user 201 is not a hash written "
            "by callrouter directory export (scrypt parameters this system cannot verify: "
            "n = 1048576 is not below 2**(16 * r) = 65536); "
            'to set a PIN, write it as pin: "1234"'
        ],
    ),
    (
        "extension as a YAML number",
        "users:\n  - extension: 201\n    name: Anna\n",
        [
            'directory.yaml:2:16: users[0].extension: write the extension in quotes, e.g. "201": '
            "unquoted, YAML reads it as a number and leading zeros would be lost"
        ],
    ),
    (
        "extension not digits",
        'users:\n  - extension: "20 1"\n    name: Anna\n',
        ["directory.yaml:2:16: users[0].extension: extension '20 1' must be 1 to 20 digits"],
    ),
    (
        "extension too long",
        f'users:\n  - extension: "{"1" * 21}"\n    name: Anna\n',
        [f"directory.yaml:2:16: users[0].extension: extension '{'1' * 21}' must be 1 to 20 digits"],
    ),
    (
        "extension missing",
        "users:\n  - name: Anna\n",
        ["directory.yaml:2:5: users[0].extension: required, but missing"],
    ),
    (
        "empty name",
        'users:\n  - extension: "201"\n    name: "  "\n',
        ["directory.yaml:3:11: users[0].name: the name must not be empty"],
    ),
    (
        "control character in a name",
        'users:\n  - extension: "201"\n    name: "Anna\\tBerger"\n',
        [
            "directory.yaml:3:11: users[0].name: the name must not contain control characters "
            "(found U+0009)"
        ],
    ),
    (
        "a name YAML reads as a number",
        'users:\n  - extension: "201"\n    name: 2024\n',
        [
            "directory.yaml:3:11: users[0].name: expected text, but YAML reads 2024 as a number: "
            'write it in quotes, "2024"'
        ],
    ),
    (
        "bad phone: names the endpoint and why",
        USER + '    phones: [PJSIP/anna-desk, "PJSIP/anna desk"]\n',
        [
            "directory.yaml:4:31: users[0].phones[1]: endpoint 'PJSIP/anna desk' contains ' ', "
            "which would change a Dial string"
        ],
    ),
    (
        "phone without a technology",
        USER + "    phones: [anna-desk]\n",
        [
            "directory.yaml:4:14: users[0].phones[0]: endpoint 'anna-desk' must start with a "
            "technology (PJSIP, SIP, IAX2, DAHDI, Local) and a slash, e.g. PJSIP/desk-12"
        ],
    ),
    (
        "misspelt key",
        USER + "    phone: [PJSIP/a]\n",
        ["directory.yaml:4:5: users[0].phone: unknown key; did you mean 'phones'?"],
    ),
    (
        "workplace id not a slug",
        'workplaces:\n  - id: Office 1\n    name: Office 1\n    code: "801"\n',
        [
            "directory.yaml:2:9: workplaces[0].id: workplace id 'Office 1' must be a slug: "
            "lower-case letters, digits and inner hyphens, at most 64 characters, e.g. office-1"
        ],
    ),
    (
        "workplace code not digits",
        'workplaces:\n  - id: office-1\n    name: Office 1\n    code: "80-1"\n',
        ["directory.yaml:4:11: workplaces[0].code: workplace code '80-1' must be 1 to 10 digits"],
    ),
    (
        "workplace code as a YAML number",
        "workplaces:\n  - id: office-1\n    name: Office 1\n    code: 801\n",
        [
            "directory.yaml:4:11: workplaces[0].code: write the workplace code in quotes, e.g. "
            '"801": unquoted, YAML reads it as a number and leading zeros would be lost'
        ],
    ),
    (
        "role workplace not a slug",
        "roles:\n  - name: intern\n    workplaces: [Hot_Desk]\n",
        [
            "directory.yaml:3:18: roles[0].workplaces[0]: workplace id 'Hot_Desk' must be a slug: "
            "lower-case letters, digits and inner hyphens, at most 64 characters, e.g. office-1"
        ],
    ),
    (
        "unassigned phone invalid",
        'phones: [PJSIP/ok, "PJSIP/x,y"]\n',
        [
            "directory.yaml:1:20: phones[1]: endpoint 'PJSIP/x,y' contains ',', which would change "
            "a Dial string"
        ],
    ),
    (
        "login key not an extension",
        "logins:\n  anna: office-1\n",
        ["directory.yaml:2:3: logins.anna: extension 'anna' must be 1 to 20 digits"],
    ),
    (
        "users written as a mapping",
        'users:\n  "201": {name: Anna}\n',
        ["directory.yaml:1:1: users: expected a list, got a mapping"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES]
)
def test_bad_values_are_located(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert directory_errors(tmp_path, text) == expected


def test_a_pin_is_never_echoed(tmp_path: Path) -> None:
    for pin in ("98", '"98"', "9876543210987", '"98x76"', "[9876]"):
        errors = directory_errors(tmp_path, USER + f"    pin: {pin}\n")
        assert len(errors) == 1
        assert "98" not in errors[0].split(":", 3)[3]


def test_a_pin_hash_is_never_echoed(tmp_path: Path) -> None:
    for stored in ("98765432", BAD_PARAMETERS, BAD_PARAMETERS.replace("$1$1$", "$1$0$")):
        errors = directory_errors(tmp_path, USER + f'    pin_hash: "{stored}"\n')
        assert len(errors) == 1 and "user 201" in errors[0]
        assert stored.rsplit("$", 1)[-1] not in errors[0] and "c2FsdHNh" not in errors[0]


# --- cross-references (check.py) --------------------------------------------------------


def document(**data: Any) -> DirectoryDocument:
    return DirectoryDocument.model_validate(data)


def user(extension: str, *phones: str, role: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "extension": extension,
        "name": f"User {extension}",
        "phones": list(phones),
    }
    if role is not None:
        entry["role"] = role
    return entry


def workplace(workplace_id: str, code: str, *phones: str) -> dict[str, Any]:
    return {"id": workplace_id, "name": workplace_id.title(), "code": code, "phones": list(phones)}


CROSS: list[tuple[str, dict[str, Any], list[Problem]]] = [
    (
        "a consistent document",
        {
            "roles": [{"name": "staff"}, {"name": "intern", "workplaces": ["desk-1"]}],
            "users": [user("201", "PJSIP/a", role="staff"), user("202", role="intern")],
            "workplaces": [workplace("desk-1", "801", "PJSIP/d1"), workplace("desk-2", "802")],
            "phones": ["PJSIP/spare"],
            "logins": {"201": "desk-2", "202": "desk-1"},
        },
        [],
    ),
    (
        "duplicate extension",
        {"users": [user("201"), user("202"), user("201")]},
        [
            Problem(
                ("users", 2, "extension"), "extension 201 is used twice: it is already User 201's"
            )
        ],
    ),
    (
        "duplicate role name",
        {"roles": [{"name": "staff"}, {"name": "staff"}]},
        [Problem(("roles", 1, "name"), "role 'staff' is defined twice")],
    ),
    (
        "duplicate workplace id",
        {"workplaces": [workplace("desk-1", "801"), workplace("desk-1", "802")]},
        [Problem(("workplaces", 1, "id"), "workplace id desk-1 is used twice")],
    ),
    (
        "duplicate workplace code",
        {"workplaces": [workplace("desk-1", "801"), workplace("desk-2", "801")]},
        [Problem(("workplaces", 1, "code"), "code 801 is already the code of workplace desk-1")],
    ),
    (
        "workplace code equal to an extension",
        {"users": [user("801")], "workplaces": [workplace("desk-1", "801")]},
        [
            Problem(
                ("workplaces", 0, "code"),
                "code 801 is also the extension of user 801 "
                "(User 801): a dial code must differ from every extension",
            )
        ],
    ),
    (
        "a phone of two users",
        {"users": [user("201", "PJSIP/a"), user("202", "PJSIP/b", "PJSIP/a")]},
        [
            Problem(
                ("users", 1, "phones", 1),
                "PJSIP/a is assigned twice: it already belongs to "
                "user 201 (User 201); a phone belongs to at most one user or workplace",
            )
        ],
    ),
    (
        "a phone of a user and a workplace",
        {"users": [user("201", "PJSIP/a")], "workplaces": [workplace("desk-1", "801", "PJSIP/a")]},
        [
            Problem(
                ("workplaces", 0, "phones", 0),
                "PJSIP/a is assigned twice: it already belongs "
                "to user 201 (User 201); a phone belongs to at most one user or workplace",
            )
        ],
    ),
    (
        "a phone of two workplaces",
        {
            "workplaces": [
                workplace("desk-1", "801", "PJSIP/d"),
                workplace("desk-2", "802", "PJSIP/d"),
            ]
        },
        [
            Problem(
                ("workplaces", 1, "phones", 0),
                "PJSIP/d is assigned twice: it already belongs "
                "to workplace desk-1; a phone belongs to at most one user or workplace",
            )
        ],
    ),
    (
        "a phone listed twice for one user",
        {"users": [user("201", "PJSIP/a", "PJSIP/a")]},
        [Problem(("users", 0, "phones", 1), "PJSIP/a is listed twice for user 201 (User 201)")],
    ),
    (
        "an assigned phone also in the unassigned list",
        {"users": [user("201", "PJSIP/a")], "phones": ["PJSIP/b", "PJSIP/a"]},
        [
            Problem(
                ("phones", 1), "PJSIP/a is listed as unassigned, but belongs to user 201 (User 201)"
            )
        ],
    ),
    (
        "an unassigned phone listed twice",
        {"phones": ["PJSIP/b", "PJSIP/b"]},
        [Problem(("phones", 1), "PJSIP/b is listed twice for the unassigned phones")],
    ),
    (
        "unknown role, with a suggestion",
        {"roles": [{"name": "staff"}], "users": [user("201", role="staf")]},
        [Problem(("users", 0, "role"), "unknown role 'staf'; did you mean 'staff'?")],
    ),
    (
        "unknown role, none defined",
        {"users": [user("201", role="staff")]},
        [Problem(("users", 0, "role"), "unknown role 'staff': the file defines no roles")],
    ),
    (
        "unknown workplace in a role",
        {
            "roles": [{"name": "intern", "workplaces": ["desk-1", "lab"]}],
            "workplaces": [workplace("desk-1", "801")],
        },
        [
            Problem(
                ("roles", 0, "workplaces", 1), "unknown workplace 'lab'; the file defines: desk-1"
            )
        ],
    ),
    (
        "unknown extension in logins, at the key",
        {"workplaces": [workplace("desk-1", "801")], "logins": {"299": "desk-1"}},
        [Problem(("logins", "299"), "no user has the extension 299", at_key=True)],
    ),
    (
        "unknown workplace in logins",
        {
            "users": [user("201")],
            "workplaces": [workplace("desk-1", "801")],
            "logins": {"201": "desk-2"},
        },
        [Problem(("logins", "201"), "unknown workplace 'desk-2'; did you mean 'desk-1'?")],
    ),
    (
        "two users at one workplace",
        {
            "users": [user("201"), user("202")],
            "workplaces": [workplace("desk-1", "801")],
            "logins": {"201": "desk-1", "202": "desk-1"},
        },
        [
            Problem(
                ("logins", "202"),
                "user 201 (User 201) is already logged in at desk-1; "
                "a workplace holds at most one user",
            )
        ],
    ),
    (
        "two logins at one workplace, the first by an unknown extension",
        {
            "users": [user("201")],
            "workplaces": [workplace("desk-1", "801")],
            "logins": {"298": "desk-1", "299": "desk-1"},
        },
        [
            Problem(("logins", "298"), "no user has the extension 298", at_key=True),
            Problem(("logins", "299"), "no user has the extension 299", at_key=True),
            Problem(
                ("logins", "299"),
                "user 298 is already logged in at desk-1; a workplace holds at most one user",
            ),
        ],
    ),
    (
        "a login the role does not allow",
        {
            "roles": [{"name": "intern", "workplaces": ["desk-1"]}],
            "users": [user("201", role="intern")],
            "workplaces": [workplace("desk-1", "801"), workplace("desk-2", "802")],
            "logins": {"201": "desk-2"},
        },
        [
            Problem(
                ("logins", "201"),
                "user 201 may not log in at desk-2: role intern may log in only at desk-1",
            )
        ],
    ),
    (
        "a role that allows no workplace",
        {
            "roles": [{"name": "guest", "workplaces": []}],
            "users": [user("201", role="guest")],
            "workplaces": [workplace("desk-1", "801")],
            "logins": {"201": "desk-1"},
        },
        [
            Problem(
                ("logins", "201"),
                "user 201 may not log in at desk-1: role guest may log in at no workplace",
            )
        ],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CROSS], ids=[c[0] for c in CROSS])
def test_check_document(data: dict[str, Any], expected: list[Problem]) -> None:
    assert check_document(document(**data)) == expected


def test_unchecked_names_are_not_reported_unknown() -> None:
    doc = document(users=[user("201", role="staff")], logins={"201": "desk-1", "202": "desk-2"})
    assert check_document(doc) != []
    unchecked = Unchecked(roles={"staff"}, extensions={"202"}, workplaces=EVERY_NAME)
    assert check_document(doc, unchecked=unchecked) == []


def test_a_workplace_taken_by_an_unchecked_user_is_reported_without_a_name() -> None:
    doc = document(users=[user("201")], logins={"202": "desk-1", "201": "desk-1"})
    unchecked = Unchecked(extensions={"202"}, workplaces=EVERY_NAME)
    assert check_document(doc, unchecked=unchecked) == [
        Problem(
            ("logins", "201"),
            "user 202 is already logged in at desk-1; a workplace holds at most one user",
        )
    ]


# --- the loader: every error at once ---------------------------------------------------

SEVERAL = """\
roles:
  - name: staff
  - name: intern
    workplaces: [hotdesk-1, lab]
users:
  - extension: "201"
    name: Anna Berger
    role: staff
    pin: 4711
    phones: [PJSIP/anna-desk]
  - extension: "201"
    name: Anna Twin
    role: staf
    phones: [PJSIP/anna-desk]
  - extension: "203"
    name: Clara
    role: intern
workplaces:
  - id: office-1
    name: Office 1
    code: "80x"
  - id: hotdesk-1
    name: Hot desk 1
    code: "203"
logins:
  "203": office-1
  "299": hotdesk-1
"""


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    assert directory_errors(tmp_path, SEVERAL) == [
        "directory.yaml:4:29: roles[1].workplaces[1]: unknown workplace 'lab'; "
        "the file defines: hotdesk-1",
        'directory.yaml:9:10: users[0].pin: write the PIN in quotes, e.g. pin: "0815": '
        "unquoted, YAML reads it as a number and leading zeros would be lost",
        "directory.yaml:11:16: users[1].extension: extension 201 is used twice: "
        "it is already Anna Berger's",
        "directory.yaml:13:11: users[1].role: unknown role 'staf'; did you mean 'staff'?",
        "directory.yaml:14:14: users[1].phones[0]: PJSIP/anna-desk is assigned twice: it "
        "already belongs to user 201 (Anna Berger); a phone belongs to at most one user "
        "or workplace",
        "directory.yaml:21:11: workplaces[0].code: workplace code '80x' must be 1 to 10 digits",
        "directory.yaml:24:11: workplaces[1].code: code 203 is also the extension of "
        "user 203 (Clara): a dial code must differ from every extension",
        # office-1 is left out for its bad code, yet not reported as unknown.
        'directory.yaml:26:10: logins."203": user 203 may not log in at office-1: '
        "role intern may log in only at hotdesk-1, lab",
        'directory.yaml:27:3: logins."299": no user has the extension 299',
    ]


def test_yaml_problems_values_and_cross_references_in_one_run(tmp_path: Path) -> None:
    text = (
        "roles:\n"
        "  - name: staff\n"
        "users:\n"
        '  - extension: "201"\n'
        "    name: Anna Berger\n"
        "    name: Anna B.\n"
        '    pin: "12"\n'
        "    phones: [PJSIP/anna-desk]\n"
        '  - extension: !ext "202"\n'
        "    name: Boris Chen\n"
        '  - extension: "203"\n'
        "    name: Clara\n"
        "    role: staf\n"
        "    phones: [PJSIP/anna-desk]\n"
        "workplaces:\n"
        '  - {id: office-1, name: Office 1, code: "801"}\n'
        "logins:\n"
        '  "202": office-1\n'
        '  "299": office-1\n'
    )
    assert directory_errors(tmp_path, text) == [
        "directory.yaml:6:5: users[0].name: duplicate key: already given at line 5, "
        "column 5; YAML would silently keep only the last",
        "directory.yaml:7:10: users[0].pin: the PIN must be 4 to 12 digits",
        "directory.yaml:9:16: users[1].extension: cannot read this value: could not "
        "determine a constructor for the tag '!ext'",
        "directory.yaml:13:11: users[2].role: unknown role 'staf'; did you mean 'staff'?",
        "directory.yaml:14:14: users[2].phones[0]: PJSIP/anna-desk is assigned twice: it "
        "already belongs to user 201 (Anna Berger); a phone belongs to at most one user "
        "or workplace",
        # 202 is defined, if unreadably: not an unknown user, and it holds office-1.
        'directory.yaml:19:3: logins."299": no user has the extension 299',
        'directory.yaml:19:10: logins."299": user 202 is already logged in at office-1; '
        "a workplace holds at most one user",
    ]


def test_a_duplicate_key_in_a_valid_directory_is_refused(tmp_path: Path) -> None:
    text = USER + '    pin: "0815"\n    pin: "4711"\n'
    assert directory_errors(tmp_path, text) == [
        "directory.yaml:5:5: users[0].pin: duplicate key: already given at line 4, "
        "column 5; YAML would silently keep only the last",
    ]


def test_errors_at_the_top_stop_cross_checks(tmp_path: Path) -> None:
    assert directory_errors(tmp_path, "- a list\n") == [
        "directory.yaml:1:1: expected a mapping (key: value), got a list",
    ]


def test_a_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(USER + '    pin: "0815"\n    phones: [PJSIP/anna-desk]\n')
    loaded = load_document(path)
    assert loaded.users[0].pin == "0815"
    assert loaded.users[0].phones == ("PJSIP/anna-desk",)


def test_a_directory_file_over_its_limit_is_refused_unread(tmp_path: Path) -> None:
    from callrouter.directory.loader import MAX_DIRECTORY_BYTES
    from callrouter.yamlfile import MAX_FILE_BYTES

    assert MAX_DIRECTORY_BYTES > MAX_FILE_BYTES  # directories are larger than rules
    path = tmp_path / "directory.yaml"
    with path.open("wb") as out:  # sparse: nothing is written, nothing may be read
        out.truncate(MAX_DIRECTORY_BYTES + 1)
    with pytest.raises(YamlFileError) as caught:
        load_document(path)
    (line,) = caught.value.errors
    assert line == (
        f"{path}:1:1: the file is too large to read: {MAX_DIRECTORY_BYTES + 1} bytes "
        f"(16.0 MiB); the limit is {MAX_DIRECTORY_BYTES} bytes (16.0 MiB)"
    )
