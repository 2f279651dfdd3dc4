"""callrouter.yamlfile: YAML to plain data with positions, and located errors."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from callrouter.yamlfile import (
    MAX_FILE_BYTES,
    UNREADABLE,
    Located,
    Mark,
    Problem,
    YamlFileError,
    format_path,
    load_yaml,
    locate_problems,
    parse_yaml,
    read_yaml,
    read_yaml_text,
    salvage,
    validate_yaml,
)
from callrouter.yamlfile import load as yaml_load


def write(tmp_path: Path, text: str | bytes, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str | bytes, model: type[BaseModel] | None = None) -> list[str]:
    """The error lines for ``text``, with the file name shortened to ``f.yaml``."""
    path = write(tmp_path, text)
    with pytest.raises(YamlFileError) as caught:
        if model is None:
            load_yaml(path)
        else:
            validate_yaml(path, model)
    assert caught.value.path == str(path)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return [line.replace(str(path), "f.yaml", 1) for line in caught.value.errors]


# --- loading -------------------------------------------------------------------------


def test_data_and_positions_of_values_and_keys() -> None:
    data, positions = parse_yaml(
        "users:\n"
        '  "201":\n'
        "    followme:\n"
        "      - ring: [PJSIP/a, '+4917012345678']\n"
        "        timeout: 15\n"
    )
    assert data == {
        "users": {"201": {"followme": [{"ring": ["PJSIP/a", "+4917012345678"], "timeout": 15}]}}
    }
    entry = ("users", "201", "followme", 0)
    assert positions.keys[("users", "201")] == Mark(2, 3)
    assert positions.values[(*entry,)] == Mark(4, 9)
    assert positions.keys[(*entry, "ring")] == Mark(4, 9)
    assert positions.values[(*entry, "ring", 1)] == Mark(4, 25)
    assert positions.values[(*entry, "timeout")] == Mark(5, 18)
    assert positions.scalars[(*entry, "timeout")] == "15"
    # A scalar is pointed at itself, a collection at its key.
    assert positions.locate((*entry, "timeout")) == Mark(5, 18)
    assert positions.locate(("users", "201")) == Mark(2, 3)
    assert positions.locate((*entry, "timeout"), at_key=True) == Mark(5, 9)
    # A path deeper than the data: its nearest recorded ancestor.
    assert positions.locate((*entry, "delay")) == Mark(4, 9)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("201", "201"),
        ("0201", "0201"),  # not YAML 1.1 octal
        ('"201"', "201"),
        ("1.50", "1.50"),
        ("true", "true"),
        ("~", "~"),
        ("office-1", "office-1"),
    ],
)
def test_mapping_keys_are_their_raw_text(key: str, expected: str) -> None:
    data, _ = parse_yaml(f"{key}: x\n")
    assert data == {expected: "x"}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_file_is_an_empty_mapping(text: str) -> None:
    data, positions = parse_yaml(text)
    assert data == {}
    assert positions.locate(()) == Mark(1, 1)


def test_aliases_repeat_their_anchor() -> None:
    data, positions = parse_yaml("a: &steps [x, y]\nb: *steps\n")
    assert data == {"a": ["x", "y"], "b": ["x", "y"]}
    assert positions.values[("b", 1)] == Mark(1, 15)  # where the anchored value stands


LOAD_ERRORS: list[tuple[str, str | bytes, list[str]]] = [
    (
        "duplicate key",
        "a: 1\nb: 2\na: 3\n",
        [
            "f.yaml:3:1: a: duplicate key: already given at line 1, column 1; "
            "YAML would silently keep only the last",
        ],
    ),
    (
        "duplicate raw key, quoted and not",
        'users:\n  201: {}\n  "201": {}\n',
        [
            'f.yaml:3:3: users."201": duplicate key: already given at line 2, column 3; '
            "YAML would silently keep only the last",
        ],
    ),
    (
        "every duplicate, nested too",
        "a: {x: 1, x: 2}\nb:\n  - y: 1\n    y: 2\n",
        [
            "f.yaml:1:11: a.x: duplicate key: already given at line 1, column 5; "
            "YAML would silently keep only the last",
            "f.yaml:4:5: b[0].y: duplicate key: already given at line 3, column 5; "
            "YAML would silently keep only the last",
        ],
    ),
    (
        "syntax: unclosed flow list",
        "a: [1, 2\nb: 3\n",
        [
            "f.yaml:2:2: YAML syntax error: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence at line 1, column 4)",
        ],
    ),
    (
        "syntax: mapping value in a plain scalar",
        "a: b: c\n",
        [
            "f.yaml:1:5: YAML syntax error: mapping values are not allowed here",
        ],
    ),
    (
        "syntax: tab indentation",
        "a:\n\t- x\n",
        [
            "f.yaml:2:1: YAML syntax error: a tab; indent with spaces only",
        ],
    ),
    (
        "two documents",
        "a: 1\n---\nb: 2\n",
        [
            "f.yaml:2:1: YAML syntax error: expected a single document in the stream at "
            "line 1, column 1, but found another document",
        ],
    ),
    (
        "python tag is never constructed",
        "x: !!python/object/apply:os.system [ls]\n",
        [
            "f.yaml:1:4: x: the tag tag:yaml.org,2002:python/object/apply:os.system "
            "is not supported here",
        ],
    ),
    (
        "unknown scalar tag",
        "x: !secret abc\n",
        [
            "f.yaml:1:4: x: cannot read this value: could not determine a constructor "
            "for the tag '!secret'",
        ],
    ),
    (
        "recursive alias",
        "a: &a [*a]\n",
        [
            "f.yaml:1:4: a[0]: an alias (*name) refers to a value that contains itself",
        ],
    ),
    (
        "merge key",
        "base: &b {timeout: 5}\nentry:\n  <<: *b\n",
        [
            "f.yaml:3:3: entry: merge keys (<<) are not supported: write the keys out",
        ],
    ),
    (
        "a list as a key",
        "? [a, b]\n: 1\n",
        [
            "f.yaml:1:3: a key must be a plain name or number, not a list or a mapping",
        ],
    ),
    (
        "impossible date",
        "since: 2024-13-45\n",
        [
            "f.yaml:1:8: since: cannot read this value: month must be in 1..12",
        ],
    ),
    (
        "control character",
        "name: a\x07b\n",
        [
            "f.yaml:1:8: character U+0007 is not allowed in a YAML file",
        ],
    ),
    (
        "not UTF-8",
        b"name: Gr\xfc\xdfe\n",
        [
            "f.yaml:1:9: not UTF-8 text (byte 0xFC): save the file as UTF-8",
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in LOAD_ERRORS], ids=[c[0] for c in LOAD_ERRORS]
)
def test_load_errors_are_located(tmp_path: Path, text: str | bytes, expected: list[str]) -> None:
    assert errors_of(tmp_path, text) == expected


def test_read_yaml_reports_local_problems_and_goes_on() -> None:
    loaded = read_yaml_text(
        "a: 1\n"
        "b: !secret abc\n"
        "c: [x, !!python/object/apply:os.system [ls], z]\n"
        "a: 2\n"
        "d: {since: 2024-13-45, ok: yes}\n"
    )
    # The first of two values is kept; a value that cannot be read is UNREADABLE.
    assert loaded.data == {
        "a": 1,
        "b": UNREADABLE,
        "c": ["x", UNREADABLE, "z"],
        "d": {"since": UNREADABLE, "ok": True},
    }
    assert loaded.positions.unreadable == {("b",), ("c", 1), ("d", "since")}
    assert loaded.positions.values[("d", "ok")] == Mark(5, 28)
    assert [str(error) for error in loaded.errors] == [
        "<string>:2:4: b: cannot read this value: could not determine a constructor "
        "for the tag '!secret'",
        "<string>:3:8: c[1]: the tag tag:yaml.org,2002:python/object/apply:os.system "
        "is not supported here",
        "<string>:4:1: a: duplicate key: already given at line 1, column 1; "
        "YAML would silently keep only the last",
        "<string>:5:12: d.since: cannot read this value: month must be in 1..12",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\nb: [1, 2\n",  # a syntax error after a duplicate key
        "a: 1\n\tb: 2\n",
        b"a: 1\nb: Gr\xfc\xdfe\n",
        "a: 1\nb: \x07\n",
    ],
)
def test_read_yaml_stops_where_the_file_cannot_be_parsed(tmp_path: Path, text: str | bytes) -> None:
    with pytest.raises(YamlFileError) as caught:
        read_yaml(write(tmp_path, text))
    assert len(caught.value.errors) == 1


def test_read_yaml_of_a_valid_file_has_no_errors(tmp_path: Path) -> None:
    loaded = read_yaml(write(tmp_path, "a: [1, 2]\n"))
    assert (loaded.data, loaded.errors, loaded.positions.unreadable) == ({"a": [1, 2]}, (), set())


def test_aliases_may_not_explode(tmp_path: Path) -> None:
    lines = ["l0: &l0 [a, a, a, a, a, a, a, a, a, a]"]
    for level in range(1, 8):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{refs}]")
    [error] = errors_of(tmp_path, "\n".join(lines) + "\n")
    assert error.endswith("aliases (*name) expand to too much data; write the values out")


def test_an_unreadable_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "missing.yaml")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    with path.open("wb") as sparse:  # were it read, its NUL bytes would be another error
        sparse.truncate(10 * 1024 * 1024)
    with pytest.raises(YamlFileError) as caught:
        load_yaml(path)
    assert caught.value.errors == [
        f"{path}:1:1: the file is too large to read: 10485760 bytes (10.0 MiB); "
        "the limit is 4194304 bytes (4.0 MiB)"
    ]
    assert MAX_FILE_BYTES == 4 * 1024 * 1024


def test_the_size_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a: 1\nb: 2\n"
    monkeypatch.setattr(yaml_load, "MAX_FILE_BYTES", len(text))
    assert load_yaml(write(tmp_path, text))[0] == {"a": 1, "b": 2}
    assert errors_of(tmp_path, text + "#") == [
        "f.yaml:1:1: the file is too large to read: 11 bytes; the limit is 10 bytes"
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_the_read_is_capped_where_the_size_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yaml_load, "MAX_FILE_BYTES", 64)
    path = tmp_path / "f.yaml"
    os.mkfifo(path)

    def feed() -> None:
        # The reader may stop at the limit and close its end before all is written.
        with contextlib.suppress(BrokenPipeError), path.open("wb", buffering=0) as pipe:
            pipe.write(b"a: 1\n" * 1000)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with pytest.raises(YamlFileError) as caught:
            load_yaml(path)
    finally:
        writer.join(timeout=10)
    assert caught.value.errors == [
        f"{path}:1:1: the file is too large to read: at least 65 bytes; the limit is 64 bytes"
    ]


# --- validation ----------------------------------------------------------------------


def _digits(value: str) -> str:
    if not value.isdigit():
        raise ValueError(f"extension {value!r} must be digits")
    return value


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ring: tuple[str, ...] = Field(min_length=1)
    timeout: Annotated[float, Field(gt=0)] | None = None


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    pin: str | None = None
    followme: tuple[Entry, ...] | None = None


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: dict[Annotated[str, AfterValidator(_digits)], Person] = {}
    title: str = ""

    @model_validator(mode="after")
    def _no_anonymous(self) -> Sample:
        for key, person in self.users.items():
            if person.name == "anonymous":
                raise PydanticCustomError(
                    "anonymous", "no anonymous users", {"path": ("users", key, "name")}
                )
        return self


VALIDATION_ERRORS: list[tuple[str, str, list[str]]] = [
    (
        "greater than 0 (the issue's example)",
        'users:\n  "201":\n    name: Anna\n    followme:\n      - ring: [a]\n'
        "      - ring: [b]\n        timeout: 0\n",
        ['f.yaml:7:18: users."201".followme[1].timeout: Input should be greater than 0'],
    ),
    (
        "unknown key points at the key and suggests",
        "users:\n  '201':\n    name: Anna\n    folowme: []\n",
        ["f.yaml:4:5: users.\"201\".folowme: unknown key; did you mean 'followme'?"],
    ),
    (
        "unknown key without a close match lists the allowed keys",
        "colour: blue\n",
        ["f.yaml:1:1: colour: unknown key; allowed here: users, title"],
    ),
    (
        "missing key: at its mapping, named in the path",
        "users:\n  '201':\n    pin: '1234'\n",
        ['f.yaml:2:3: users."201".name: required, but missing'],
    ),
    (
        "a number where text belongs: the raw text, quoted",
        "title: 0755\nusers:\n  '201': {name: 12.50}\n",  # 0755: YAML 1.1 octal, 493
        [
            "f.yaml:1:8: title: expected text, but YAML reads 0755 as a number: "
            'write it in quotes, "0755"',
            'f.yaml:3:17: users."201".name: expected text, but YAML reads 12.50 as a number: '
            'write it in quotes, "12.50"',
        ],
    ),
    (
        "yes/no are booleans in YAML 1.1",
        "title: no\n",
        [
            "f.yaml:1:8: title: expected text, but YAML reads no as a true/false value: "
            'write it in quotes, "no"'
        ],
    ),
    (
        "a secret is never echoed",
        "users:\n  '201': {name: Anna, pin: 4711}\n",
        ['f.yaml:2:28: users."201".pin: expected text, got a number'],
    ),
    (
        "a mapping key validated on its own, pointed at",
        "users:\n  '201': {name: A}\n  2x: {name: B}\n",
        ["f.yaml:3:3: users.\"2x\": extension '2x' must be digits"],
    ),
    (
        "wrong container types",
        "users:\n  '201': [name]\n  '202':\n    name: B\n    followme: {ring: a}\n",
        [
            'f.yaml:2:3: users."201": expected a mapping (key: value), got a list',
            'f.yaml:5:5: users."202".followme: expected a list, got a mapping',
        ],
    ),
    (
        "a validator may point deeper through its context path",
        "users:\n  '201':\n    name: anonymous\n",
        ['f.yaml:3:11: users."201".name: no anonymous users'],
    ),
    (
        "the file is not a mapping",
        "- a\n- b\n",
        ["f.yaml:1:1: expected a mapping (key: value), got a list"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [c[1:] for c in VALIDATION_ERRORS],
    ids=[c[0] for c in VALIDATION_ERRORS],
)
def test_validation_errors_are_located(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert errors_of(tmp_path, text, Sample) == expected


def test_every_error_is_reported_sorted_by_line_then_column(tmp_path: Path) -> None:
    text = (
        "users:\n"
        "  '202': {name: 5, pin: x, extra: 1}\n"
        "  '201':\n"
        "    followme:\n"
        "      - ring: []\n"
        "        timeout: -1\n"
        "title: [x]\n"
    )
    assert errors_of(tmp_path, text, Sample) == [
        'f.yaml:2:17: users."202".name: expected text, but YAML reads 5 as a number: '
        'write it in quotes, "5"',
        'f.yaml:2:28: users."202".extra: unknown key; allowed here: name, pin, followme',
        'f.yaml:3:3: users."201".name: required, but missing',
        'f.yaml:5:9: users."201".followme[0].ring: '
        "Tuple should have at least 1 item after validation, not 0",
        'f.yaml:6:18: users."201".followme[0].timeout: Input should be greater than 0',
        "f.yaml:7:1: title: expected text, got a list",
    ]


def test_yaml_problems_and_validation_errors_come_together(tmp_path: Path) -> None:
    text = (
        "users:\n"
        "  '201': {name: Anna}\n"
        "  '201': {name: Other}\n"
        "  '202':\n"
        "    name: !upper boris\n"
        "    followme:\n"
        "      - ring: [a, !x b]\n"
        "        timeout: 0\n"
        "title: [x]\n"
    )
    # Each unreadable value reported once, as such: not again as a validation error.
    assert errors_of(tmp_path, text, Sample) == [
        'f.yaml:3:3: users."201": duplicate key: already given at line 2, column 3; '
        "YAML would silently keep only the last",
        'f.yaml:5:11: users."202".name: cannot read this value: could not determine a '
        "constructor for the tag '!upper'",
        'f.yaml:7:19: users."202".followme[0].ring[1]: cannot read this value: could not '
        "determine a constructor for the tag '!x'",
        'f.yaml:8:18: users."202".followme[0].timeout: Input should be greater than 0',
        "f.yaml:9:1: title: expected text, got a list",
    ]


def test_a_key_is_checked_although_its_value_cannot_be_read(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "colour: !x red\nusers:\n  2x: !y {name: B}\n", Sample) == [
        "f.yaml:1:1: colour: unknown key; allowed here: users, title",
        "f.yaml:1:9: colour: cannot read this value: could not determine a constructor "
        "for the tag '!x'",
        "f.yaml:3:3: users.\"2x\": extension '2x' must be digits",
        'f.yaml:3:7: users."2x": the tag !y is not supported here',
    ]


def test_a_yaml_problem_in_a_valid_document_is_still_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "users:\n  '201': {name: A}\ntitle: a\ntitle: b\n", Sample) == [
        "f.yaml:4:1: title: duplicate key: already given at line 3, column 1; "
        "YAML would silently keep only the last",
    ]


def test_validate_returns_the_model(tmp_path: Path) -> None:
    path = write(tmp_path, "users:\n  '201': {name: Anna}\n")
    assert validate_yaml(path, Sample).users["201"].name == "Anna"


# --- problems from cross-checks -----------------------------------------------------


def test_locate_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "users:\n  '201':\n    followme:\n      - ring: [a, b]\nlogins:\n  '299': office-1\n",
    )
    problems = [
        Problem(("logins", "299"), "no user has the extension 299", at_key=True),
        Problem(("logins", "299"), "unknown workplace"),
        Problem(("users", "201", "followme", 0, "ring", 1), "b is not in the directory"),
        Problem(("users", "201"), "no user has the extension 201"),
        Problem((), "the whole file"),
    ]
    assert locate_problems(path, problems) == [
        f"{path}:1:1: the whole file",
        f'{path}:2:3: users."201": no user has the extension 201',
        f'{path}:4:19: users."201".followme[0].ring[1]: b is not in the directory',
        f'{path}:6:3: logins."299": no user has the extension 299',
        f'{path}:6:10: logins."299": unknown workplace',
    ]


def test_locate_problems_in_a_file_with_yaml_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nb: !x 2\na: 3\n")
    problems = [Problem(("b",), "b is wrong"), Problem(("a",), "a is wrong")]
    assert locate_problems(path, problems) == [
        f"{path}:1:4: a: a is wrong",
        f"{path}:2:4: b: b is wrong",
    ]


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ((), ""),
        (("users", "201", "followme", 1, "timeout"), 'users."201".followme[1].timeout'),
        (("workplaces", "office-1", "ring", 0), "workplaces.office-1.ring[0]"),
        (("logins", "a b"), 'logins."a b"'),
        ((0, "x"), "[0].x"),
    ],
)
def test_format_path(path: tuple[str | int, ...], shown: str) -> None:
    assert format_path(path) == shown


def test_error_carries_its_data() -> None:
    error = YamlFileError.from_located(
        "f.yaml", [Located("f.yaml", 3, 1, "b"), Located("f.yaml", 1, 9, "a")]
    )
    assert error.errors == ["f.yaml:1:9: a", "f.yaml:3:1: b"]
    assert [(e.line, e.column) for e in error.located] == [(1, 9), (3, 1)]
    assert str(error) == "f.yaml:1:9: a\nf.yaml:3:1: b"


# --- salvage -------------------------------------------------------------------------


def test_salvage_drops_the_invalid_and_maps_paths_back() -> None:
    data: Any = {
        "users": {
            "201": {"name": "Anna", "followme": [{"ring": []}, {"ring": ["b"], "timeout": 5}]},
            "2x": {"name": "Bad"},
            "202": {"pin": "1"},  # missing its name: dropped entirely
        },
        "title": 7,
    }
    partial = salvage(data, Sample)
    assert partial is not None
    assert partial.model.users["201"].followme == (Entry(ring=("b",), timeout=5),)
    assert set(partial.model.users) == {"201"}
    assert partial.model.title == ""
    assert partial.original_path(("users", "201", "followme", 0, "ring", 0)) == (
        "users",
        "201",
        "followme",
        1,
        "ring",
        0,
    )
    assert ("users", "202") in partial.removed


def test_salvage_gives_up_on_an_error_at_the_top() -> None:
    assert salvage(["not", "a", "mapping"], Sample) is None


# --- invariants ------------------------------------------------------------------------

_TEXT = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")), max_size=12)
_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_TEXT, _DATA, max_size=5))
def test_round_trip_and_every_path_has_a_position(data: dict[str, Any]) -> None:
    for style in (False, None):  # block style, then PyYAML's mixed default
        text = yaml.safe_dump(data, default_flow_style=style, allow_unicode=True)
        loaded, positions = parse_yaml(text)
        assert loaded == data
        for path in _paths(data):
            assert path in positions.values
            if path and isinstance(path[-1], str):
                assert path in positions.keys
