"""Phones on nodes (several Asterisks on one directory): the file's ``nodes`` section,
its errors, import, export and the snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.directory import schema as s
from callrouter.directory.errors import ImportRejected
from callrouter.directory.export import export_document
from callrouter.directory.importer import import_document
from callrouter.directory.snapshot import load_snapshot
from callrouter.domain.directory import DirectorySnapshot
from tests.unit.test_directory_check import directory_errors
from tests.unit.test_directory_store import document, engine, rows  # noqa: F401 (fixture)

NODES = {"berlin": ["PJSIP/anna-desk", "PJSIP/office1-desk"], "hamburg": ["PJSIP/anna-soft"]}

FILE = """\
users:
  - extension: "201"
    name: Anna Berger
    phones: [PJSIP/anna-desk, PJSIP/anna-soft]
phones: [PJSIP/spare-1]
"""


async def test_nodes_are_imported_exported_and_in_the_snapshot(
    engine: AsyncEngine,  # noqa: F811
) -> None:
    await import_document(engine, document(nodes=NODES), prune=False, actor="test")
    assert await rows(engine, s.phones, "endpoint", "node") == [
        ("PJSIP/anna-desk", "berlin"),
        ("PJSIP/anna-soft", "hamburg"),
        ("PJSIP/boris-desk", None),
        ("PJSIP/hotdesk1-desk", None),
        ("PJSIP/office1-dect", None),
        ("PJSIP/office1-desk", "berlin"),
        ("PJSIP/spare-1", None),
    ]
    snapshot = await load_snapshot(engine)
    assert snapshot.phone_nodes == {
        "PJSIP/anna-desk": "berlin",
        "PJSIP/office1-desk": "berlin",
        "PJSIP/anna-soft": "hamburg",
    }
    exported = await export_document(engine)
    assert exported.nodes == {
        "berlin": ("PJSIP/anna-desk", "PJSIP/office1-desk"),
        "hamburg": ("PJSIP/anna-soft",),
    }
    report = await import_document(engine, exported, prune=False, actor="test")
    assert report.phones.updated == report.phones.created == 0


async def test_a_phone_the_file_names_without_a_node_loses_its_node(
    engine: AsyncEngine,  # noqa: F811
) -> None:
    await import_document(engine, document(nodes=NODES), prune=False, actor="test")
    moved = {"hamburg": ["PJSIP/anna-desk"]}
    report = await import_document(engine, document(nodes=moved), prune=False, actor="test")
    assert report.phones.updated == 3  # anna-desk moved, anna-soft and office1-desk cleared
    assert (await load_snapshot(engine)).phone_nodes == {"PJSIP/anna-desk": "hamburg"}


async def test_a_phone_the_file_no_longer_lists_keeps_its_node(
    engine: AsyncEngine,  # noqa: F811
) -> None:
    await import_document(engine, document(nodes=NODES), prune=False, actor="test")
    users: list[dict[str, Any]] = [
        {"extension": "201", "name": "Anna Berger", "phones": ["PJSIP/anna-soft"]}
    ]
    # Anna no longer lists her desk phone: it becomes unassigned, still in Berlin.
    await import_document(
        engine,
        document(users=users, workplaces=[], phones=[], logins={}, nodes={}),
        prune=False,
        actor="test",
    )
    snapshot = await load_snapshot(engine)
    assert "PJSIP/anna-desk" in snapshot.unassigned_phones
    assert snapshot.phone_nodes["PJSIP/anna-desk"] == "berlin"
    assert "PJSIP/anna-soft" not in snapshot.phone_nodes  # named, without a node


async def test_a_document_built_in_code_with_a_phone_on_two_nodes_is_refused(
    engine: AsyncEngine,  # noqa: F811
) -> None:
    twice = document(nodes={"berlin": ["PJSIP/anna-desk"], "hamburg": ["PJSIP/anna-desk"]})
    with pytest.raises(ImportRejected) as refused:
        await import_document(engine, twice, prune=False, actor="test")
    assert "node phone PJSIP/anna-desk appears twice" in str(refused.value)
    assert await rows(engine, s.phones, "endpoint") == []


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        (
            "nodes:\n  Berlin: [PJSIP/anna-desk]\n",
            [
                "directory.yaml:7:3: nodes.Berlin: node 'Berlin' must be a slug: "
                "lower-case letters, digits and inner hyphens, at most 32 characters, "
                "e.g. berlin-1"
            ],
        ),
        (
            "nodes:\n  berlin: [PJSIP/anna-desk, PJSIP/nobody]\n",
            [
                "directory.yaml:7:29: nodes.berlin[1]: PJSIP/nobody is on node berlin but is "
                "none of this file's phones; list it under a user, a workplace or phones first"
            ],
        ),
        (
            "nodes:\n  berlin: [PJSIP/anna-desk]\n  hamburg: [PJSIP/spare-1, PJSIP/anna-desk]\n",
            [
                "directory.yaml:8:28: nodes.hamburg[1]: PJSIP/anna-desk is listed twice: "
                "it is already on node berlin"
            ],
        ),
        (
            "nodes:\n  berlin: [PJSIP/anna-desk, PJSIP/anna-desk]\n",
            [
                "directory.yaml:7:29: nodes.berlin[1]: PJSIP/anna-desk is listed twice: "
                "it is already on this node"
            ],
        ),
        (
            "nodes:\n  berlin: [PJSIP/anna desk]\n",
            [
                "directory.yaml:7:12: nodes.berlin[0]: endpoint 'PJSIP/anna desk' contains "
                "' ', which would change a Dial string"
            ],
        ),
    ],
    ids=["not a slug", "unknown phone", "on two nodes", "twice on one", "bad endpoint"],
)
def test_bad_nodes_are_reported_where_they_are(
    tmp_path: Path, nodes: str, expected: list[str]
) -> None:
    assert directory_errors(tmp_path, FILE + nodes) == expected


def test_a_phone_without_a_node_is_on_every_node() -> None:
    snapshot = DirectorySnapshot(phone_nodes={"PJSIP/b-desk": "b"})
    assert snapshot.on_node("PJSIP/a-desk", "a") and snapshot.on_node("PJSIP/a-desk", None)
    assert snapshot.on_node("PJSIP/b-desk", "b")
    assert not snapshot.on_node("PJSIP/b-desk", "a")
    assert snapshot.on_node("PJSIP/b-desk", None)  # a router of a single Asterisk
