"""The AstDB fallback: entries (pure) and the publisher that keeps AstDB in step."""

from __future__ import annotations

from typing import Any

from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.fallback.astdb import FallbackPublisher
from callrouter.fallback.entries import FallbackEntry, fallback_entries
from callrouter.rules.model import RingRules

SNAPSHOT = DirectorySnapshot(
    users={
        "201": User("201", "Anna", phones=("PJSIP/anna-desk", "PJSIP/anna-soft")),
        "202": User("202", "Boris", phones=("PJSIP/boris-desk",)),
        "205": User("205", "Emma"),
    },
    workplaces={"office-1": Workplace("office-1", "Office 1", "801", ("PJSIP/office1-desk",))},
    logins={"205": "office-1"},
)
RULES = RingRules.model_validate({"defaults": {"timeout": 25}})


def test_every_user_with_a_phone_gets_all_their_phones() -> None:
    assert fallback_entries(SNAPSHOT, RULES) == {
        "201": FallbackEntry("PJSIP/anna-desk&PJSIP/anna-soft", 25),
        "202": FallbackEntry("PJSIP/boris-desk", 25),
        "205": FallbackEntry("PJSIP/office1-desk", 25),  # her workplace's phone
    }


def test_only_the_users_a_change_concerns() -> None:
    full = fallback_entries(SNAPSHOT, RULES)
    assert fallback_entries(SNAPSHOT, RULES, {"205", "999"}) == {"205": full["205"]}
    assert fallback_entries(SNAPSHOT, RULES, set()) == {}


class RecordingAmi:
    def __init__(self) -> None:
        self.actions: list[tuple[str, ...]] = []

    async def db_put(self, family: str, key: str, value: str) -> None:
        self.actions.append(("put", family, key, value))

    async def db_del(self, family: str, key: str) -> None:
        self.actions.append(("del", family, key))


async def test_a_partial_publish_leaves_the_others_alone() -> None:
    ami = RecordingAmi()
    publisher = FallbackPublisher(ami)  # type: ignore[arg-type]
    publisher.published = {}
    await publisher.publish(fallback_entries(SNAPSHOT, RULES))
    assert len(ami.actions) == 6
    ami.actions.clear()

    # Emma logs out: only her entry is worked out again, and it goes away.
    logged_out = DirectorySnapshot(users=SNAPSHOT.users, workplaces=SNAPSHOT.workplaces)
    await publisher.publish(fallback_entries(logged_out, RULES, {"205"}), {"205"})
    assert ami.actions == [("del", "callrouter", "205"), ("del", "callrouter-timeout", "205")]
    published: Any = publisher.published
    assert set(published) == {"201", "202"}

    # Nothing concerned changed: nothing is written.
    ami.actions.clear()
    await publisher.publish(fallback_entries(logged_out, RULES, {"201"}), {"201"})
    assert ami.actions == []


def test_phones_rung_only_after_confirming_are_left_out_of_the_fallback() -> None:
    """Dial() cannot confirm one leg while the others ring: a confirm phone's voicemail
    would take the call, so it is not in the dial string at all."""
    rules = RingRules.model_validate(
        {
            "defaults": {"timeout": 25},
            "users": {
                "201": {
                    "followme": [
                        {"ring": ["PJSIP/anna-desk"]},
                        # One confirm entry is enough, whatever its conditions.
                        {"ring": ["PJSIP/anna-soft"], "confirm": True, "calls": "external"},
                        {"ring": ["PJSIP/anna-soft"], "delay": 30},
                    ]
                },
                "202": {"followme": [{"ring": ["PJSIP/boris-desk"], "confirm": True}]},
            },
            "workplaces": {
                "office-1": {"ring": [{"ring": ["PJSIP/office1-desk"], "confirm": True}]}
            },
        }
    )
    entries = fallback_entries(SNAPSHOT, rules)
    assert entries["201"].dial == "PJSIP/anna-desk"
    # Every phone of Boris's and of Emma's workplace confirms: no entry, and the dialplan
    # says NOPHONES rather than letting a voicemail answer.
    assert set(entries) == {"201"}
