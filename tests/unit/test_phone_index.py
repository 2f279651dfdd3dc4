"""The snapshot's phone index: whose each phone is, built once per set of users and
workplaces and kept by a logins-only reload."""

from __future__ import annotations

from dataclasses import replace

from callrouter.domain.directory import DirectorySnapshot, PhoneOwner, User, Workplace

ANNA = User("201", "Anna", phones=("PJSIP/anna",))
HOT = Workplace("hot-1", "Hot desk 1", "801", ("PJSIP/hot",))
SNAPSHOT = DirectorySnapshot(
    users={"201": ANNA, "202": User("202", "Bert")},
    workplaces={"hot-1": HOT},
    logins={"202": "hot-1"},
    unassigned_phones=("PJSIP/lobby",),
)


def test_whose_phone_and_who_sits_there() -> None:
    assert [SNAPSHOT.is_phone(p) for p in ("PJSIP/anna", "PJSIP/hot", "PJSIP/lobby")] == [
        True,
        True,
        True,
    ]
    assert not SNAPSHOT.is_phone("PJSIP/stranger")
    assert SNAPSHOT.user_at("PJSIP/anna") == "201"  # her own phone
    assert SNAPSHOT.user_at("PJSIP/hot") == "202"  # logged in at its workplace
    assert SNAPSHOT.user_at("PJSIP/lobby") is None and SNAPSHOT.user_at("PJSIP/x") is None
    assert SNAPSHOT.occupants == {"hot-1": "202"}
    assert SNAPSHOT.phone_owners() == {
        "PJSIP/anna": PhoneOwner("user", "201"),
        "PJSIP/hot": PhoneOwner("workplace", "hot-1"),
    }


def test_a_logins_only_reload_keeps_the_index_and_a_new_directory_rebuilds_it() -> None:
    logged_out = replace(SNAPSHOT, logins={}, revision=2)
    assert logged_out.phone_index is SNAPSHOT.phone_index
    assert logged_out.user_at("PJSIP/hot") is None and logged_out.occupants == {}
    moved = replace(SNAPSHOT, users={"201": replace(ANNA, phones=("PJSIP/anna-new",))})
    assert moved.phone_index is not SNAPSHOT.phone_index
    assert moved.is_phone("PJSIP/anna-new") and not moved.is_phone("PJSIP/anna")
    # Equal snapshots compare equal whatever their derived index.
    assert replace(SNAPSHOT) == SNAPSHOT
