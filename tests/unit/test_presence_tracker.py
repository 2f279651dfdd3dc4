"""PresenceTracker: who owns which device, what changed, heartbeats on an injected clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.domain.directory import DirectorySnapshot, User, Workplace
from callrouter.domain.presence import ClientStatus, DeviceState, PhoneStatus, UserPresence
from callrouter.presence.tracker import DEFAULT_HEARTBEAT_TIMEOUT, PresenceTracker

D = DeviceState
C = ClientStatus

ANNA = User("201", "Anna Berger", "staff", ("PJSIP/anna-soft", "PJSIP/anna-desk"))
BORIS = User("202", "Boris Chen", "staff", ("PJSIP/boris-desk",))
CLARA = User("203", "Clara Diaz", "staff", ())
OFFICE_1 = Workplace("office-1", "Office 1", "801", ("PJSIP/office1-desk", "PJSIP/office1-dect"))
OFFICE_2 = Workplace("office-2", "Office 2", "802", ("PJSIP/office2-desk",))


def snapshot(*users: User, **logins: str) -> DirectorySnapshot:
    return DirectorySnapshot(
        users={u.extension: u for u in (users or (ANNA, BORIS, CLARA))},
        workplaces={w.id: w for w in (OFFICE_1, OFFICE_2)},
        logins={ext.removeprefix("u"): wp for ext, wp in logins.items()},
    )


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tracker(clock: Clock) -> PresenceTracker:
    return PresenceTracker(snapshot(), heartbeat_timeout=60, clock=clock)


def extensions(changed: list[UserPresence]) -> list[str]:
    return [p.extension for p in changed]


def phone(tracker: PresenceTracker, extension: str) -> PhoneStatus:
    presence = tracker.user(extension)
    assert presence is not None
    return presence.phone


# --- from the start --------------------------------------------------------------------


def test_every_user_of_the_directory_is_known_from_the_start(tracker: PresenceTracker) -> None:
    assert sorted(tracker.users()) == ["201", "202", "203"]
    # Phones we know nothing about count as reachable (UNKNOWN); no phone: unavailable.
    assert tracker.user("201") == UserPresence("201", PhoneStatus(True, False, False))
    assert tracker.user("203") == UserPresence("203", PhoneStatus(False, False, False))
    assert tracker.user("999") is None
    assert tracker.devices() == {}
    assert tracker.device_state("PJSIP/anna-desk") is D.UNKNOWN
    assert tracker.reachable("PJSIP/anna-desk")


def test_an_empty_tracker_has_nobody() -> None:
    tracker = PresenceTracker()
    assert tracker.users() == {}
    assert tracker.set_device("PJSIP/anna-desk", D.INUSE) == []
    assert tracker.device_state("PJSIP/anna-desk") is D.INUSE


# --- direct phones ---------------------------------------------------------------------


def test_phone_status_comes_from_the_users_direct_phones(tracker: PresenceTracker) -> None:
    changed = tracker.set_device("PJSIP/anna-desk", D.INUSE)
    assert changed == [UserPresence("201", PhoneStatus(True, True, False))]
    assert tracker.user("201") == changed[0]
    assert tracker.user("202") == UserPresence("202", PhoneStatus(True, False, False))


def test_user_is_unavailable_only_when_every_phone_is(tracker: PresenceTracker) -> None:
    assert tracker.set_device("PJSIP/anna-desk", D.UNAVAILABLE) == []  # the softphone is left
    changed = tracker.set_device("PJSIP/anna-soft", D.UNAVAILABLE)
    assert extensions(changed) == ["201"]
    assert changed[0].phone == PhoneStatus(False, False, False)
    assert changed[0].device_state is D.UNAVAILABLE
    assert not tracker.reachable("PJSIP/anna-soft")


def test_set_device_returns_only_users_whose_merged_state_changed(tracker: PresenceTracker) -> None:
    assert extensions(tracker.set_device("PJSIP/anna-desk", D.INUSE)) == ["201"]
    # The same state again: nothing to publish.
    assert tracker.set_device("PJSIP/anna-desk", D.INUSE) == []
    # Another of her phones changes, but she is still on a call and reachable.
    assert tracker.set_device("PJSIP/anna-soft", D.NOT_INUSE) == []
    # A device nobody owns changes: nobody to publish.
    assert tracker.set_device("PJSIP/spare-1", D.INUSE) == []
    assert tracker.device_state("PJSIP/spare-1") is D.INUSE
    # Her call moves from one phone to the other: still the same merged state.
    assert tracker.set_device("PJSIP/anna-soft", D.INUSE) == []
    assert tracker.set_device("PJSIP/anna-desk", D.NOT_INUSE) == []
    changed = tracker.set_device("PJSIP/anna-soft", D.NOT_INUSE)
    assert changed == [UserPresence("201", PhoneStatus(True, False, False))]


def test_a_shared_device_changes_every_owner_and_only_them(clock: Clock) -> None:
    # Two users logged in at one workplace (the directory allows it; the policy may not).
    tracker = PresenceTracker(snapshot(u201="office-1", u202="office-1"), clock=clock)
    changed = tracker.set_device("PJSIP/office1-dect", D.RINGING)
    assert sorted(extensions(changed)) == ["201", "202"]
    assert all(p.phone.ringing for p in changed)
    assert not phone(tracker, "203").ringing


# --- logins move workplace phones --------------------------------------------------------


def test_a_login_brings_the_workplace_phones_and_a_logout_takes_them(
    tracker: PresenceTracker,
) -> None:
    tracker.set_device("PJSIP/office1-desk", D.INUSE)
    assert not phone(tracker, "202").on_call  # not logged in there: not Boris's phone

    changed = tracker.set_snapshot(snapshot(u202="office-1"))
    assert extensions(changed) == ["202"]
    assert changed[0].phone == PhoneStatus(True, True, False)
    assert extensions(tracker.set_device("PJSIP/office1-dect", D.RINGING)) == ["202"]
    assert phone(tracker, "202") == PhoneStatus(True, True, True)

    changed = tracker.set_snapshot(snapshot())  # logged out
    assert extensions(changed) == ["202"]
    assert changed[0].phone == PhoneStatus(True, False, False)
    assert tracker.set_device("PJSIP/office1-desk", D.NOT_INUSE) == []  # nobody's now


def test_a_login_makes_an_unavailable_user_reachable(tracker: PresenceTracker) -> None:
    tracker.set_device("PJSIP/boris-desk", D.UNAVAILABLE)
    assert not phone(tracker, "202").available
    changed = tracker.set_snapshot(snapshot(u202="office-2"))
    assert extensions(changed) == ["202"]
    assert changed[0].device_state is D.NOT_INUSE


def test_moving_to_another_workplace_swaps_the_phones(tracker: PresenceTracker) -> None:
    tracker.set_device("PJSIP/office1-desk", D.INUSE)
    tracker.set_snapshot(snapshot(u201="office-1"))
    assert phone(tracker, "201").on_call
    changed = tracker.set_snapshot(snapshot(u201="office-2"))
    assert extensions(changed) == ["201"]
    assert not changed[0].phone.on_call
    assert extensions(tracker.set_device("PJSIP/office2-desk", D.RINGING)) == ["201"]
    assert tracker.set_device("PJSIP/office1-desk", D.NOT_INUSE) == []


def test_a_snapshot_that_changes_nobodys_phones_reports_nobody(tracker: PresenceTracker) -> None:
    tracker.set_snapshot(snapshot(u201="office-1"))
    assert tracker.set_snapshot(replace(snapshot(u201="office-1"), revision=7)) == []


def test_a_login_reports_only_users_whose_merged_state_changed(tracker: PresenceTracker) -> None:
    # The workplace's phones are idle and so are Boris's: logging in changes nothing visible.
    assert tracker.set_snapshot(snapshot(u202="office-2")) == []
    assert tracker.set_device("PJSIP/office2-desk", D.INUSE) != []  # but they are his now


def test_users_removed_from_the_directory_vanish(tracker: PresenceTracker, clock: Clock) -> None:
    tracker.set_client("202", "boris-laptop", C.ONLINE)
    tracker.set_device("PJSIP/boris-desk", D.INUSE)
    assert tracker.set_snapshot(snapshot(ANNA, CLARA)) == []  # nobody left is changed
    assert sorted(tracker.users()) == ["201", "203"]
    assert tracker.user("202") is None
    assert tracker.client_statuses("202") == {}
    assert tracker.set_device("PJSIP/boris-desk", D.NOT_INUSE) == []
    assert tracker.next_expiry() is None  # his client is gone with him

    # Back in the directory: a fresh start (his old client does not come back).
    changed = tracker.set_snapshot(snapshot())
    assert changed == [UserPresence("202", PhoneStatus(True, False, False), C.OFFLINE)]


def test_a_new_user_appears_with_their_phones_state(tracker: PresenceTracker) -> None:
    tracker.set_device("PJSIP/dora-desk", D.RINGING)
    dora = User("204", "Dora Eck", None, ("PJSIP/dora-desk",))
    changed = tracker.set_snapshot(snapshot(ANNA, BORIS, CLARA, dora))
    assert changed == [UserPresence("204", PhoneStatus(True, False, True))]


def test_a_phone_moved_between_users_changes_both(tracker: PresenceTracker) -> None:
    tracker.set_device("PJSIP/boris-desk", D.INUSE)
    anna = replace(ANNA, phones=(*ANNA.phones, "PJSIP/boris-desk"))
    boris = replace(BORIS, phones=())
    changed = tracker.set_snapshot(snapshot(anna, boris, CLARA))
    assert sorted(extensions(changed)) == ["201", "202"]
    assert phone(tracker, "201").on_call
    assert phone(tracker, "202") == PhoneStatus(False, False, False)


# --- resync ------------------------------------------------------------------------------


def test_replace_devices_forgets_devices_not_listed(tracker: PresenceTracker) -> None:
    tracker.set_device("PJSIP/anna-desk", D.INUSE)
    tracker.set_device("PJSIP/boris-desk", D.UNAVAILABLE)
    tracker.set_device("PJSIP/spare-1", D.BUSY)
    changed = tracker.replace_devices({"PJSIP/anna-soft": D.RINGING})
    # Anna: desk forgotten (UNKNOWN), softphone ringing.  Boris: desk forgotten -> reachable.
    assert sorted(extensions(changed)) == ["201", "202"]
    assert phone(tracker, "201") == PhoneStatus(True, False, True)
    assert phone(tracker, "202") == PhoneStatus(True, False, False)
    assert tracker.devices() == {"PJSIP/anna-soft": D.RINGING}
    assert tracker.device_state("PJSIP/spare-1") is D.UNKNOWN


def test_replace_devices_reports_nobody_when_nothing_changed(tracker: PresenceTracker) -> None:
    tracker.set_device("PJSIP/anna-desk", D.INUSE)
    tracker.set_device("PJSIP/boris-desk", D.NOT_INUSE)
    states = {"PJSIP/anna-desk": D.INUSE, "PJSIP/boris-desk": D.NOT_INUSE}
    assert tracker.replace_devices(states) == []
    # A changed state of a device that changes nobody's merged state: nobody either.
    assert tracker.replace_devices({**states, "PJSIP/anna-soft": D.NOT_INUSE}) == []
    # UNKNOWN in the list is the same as not listed.
    assert tracker.replace_devices({"PJSIP/anna-desk": D.INUSE, "PJSIP/x": D.UNKNOWN}) == []
    assert "PJSIP/x" not in tracker.devices()


# --- clients -----------------------------------------------------------------------------


def test_client_statuses_merge_across_client_ids(tracker: PresenceTracker) -> None:
    assert tracker.set_client("201", "laptop", C.AWAY)[0].client is C.AWAY
    assert tracker.set_client("201", "mobile", C.ONLINE)[0].client is C.ONLINE
    assert tracker.client_statuses("201") == {"laptop": C.AWAY, "mobile": C.ONLINE}
    assert tracker.set_client("201", "laptop", C.DND)[0].client is C.DND  # any dnd wins
    assert tracker.set_client("201", "mobile", C.AWAY) == []  # dnd still wins
    changed = tracker.set_client("201", "laptop", C.OFFLINE)  # offline removes the client
    assert changed == [UserPresence("201", PhoneStatus(True, False, False), C.AWAY)]
    assert tracker.client_statuses("201") == {"mobile": C.AWAY}
    assert extensions(tracker.set_client("201", "mobile", C.OFFLINE)) == ["201"]
    assert tracker.client_statuses("201") == {}
    assert tracker.next_expiry() is None
    assert tracker.user("201") == UserPresence("201", PhoneStatus(True, False, False), C.OFFLINE)


def test_offline_for_an_unknown_client_changes_nothing(tracker: PresenceTracker) -> None:
    assert tracker.set_client("201", "never-seen", C.OFFLINE) == []
    assert tracker.client_statuses("201") == {}


def test_a_client_of_one_user_does_not_touch_another(tracker: PresenceTracker) -> None:
    assert extensions(tracker.set_client("202", "laptop", C.DND)) == ["202"]
    assert tracker.user("201") == UserPresence("201", PhoneStatus(True, False, False))


def test_a_client_for_an_unknown_extension_makes_no_user(tracker: PresenceTracker) -> None:
    assert tracker.set_client("999", "laptop", C.ONLINE) == []
    assert tracker.user("999") is None


# --- heartbeats ----------------------------------------------------------------------------


def test_a_silent_client_expires_after_the_heartbeat_timeout(
    tracker: PresenceTracker, clock: Clock
) -> None:
    tracker.set_client("201", "laptop", C.ONLINE)
    assert tracker.next_expiry() == clock.now + 60
    clock.advance(59.9)
    assert tracker.expire_clients() == []
    assert tracker.client_statuses("201") == {"laptop": C.ONLINE}
    clock.advance(0.1)  # exactly at the deadline: expired
    changed = tracker.expire_clients()
    assert changed == [UserPresence("201", PhoneStatus(True, False, False), C.OFFLINE)]
    assert tracker.client_statuses("201") == {}
    assert tracker.next_expiry() is None
    assert tracker.expire_clients() == []


def test_a_heartbeat_pushes_the_expiry_back(tracker: PresenceTracker, clock: Clock) -> None:
    tracker.set_client("201", "laptop", C.ONLINE)
    clock.advance(50)
    assert tracker.set_client("201", "laptop", C.ONLINE) == []  # same status: no change
    assert tracker.next_expiry() == clock.now + 60
    clock.advance(50)  # 100 s after the first, 50 after the heartbeat
    assert tracker.expire_clients() == []
    assert tracker.user("201") == UserPresence("201", PhoneStatus(True, False, False), C.ONLINE)


def test_next_expiry_is_the_earliest_client_and_expiry_takes_only_the_silent(
    tracker: PresenceTracker, clock: Clock
) -> None:
    tracker.set_client("201", "laptop", C.DND)
    clock.advance(10)
    tracker.set_client("201", "mobile", C.ONLINE)
    tracker.set_client("202", "laptop", C.AWAY)
    assert tracker.next_expiry() == 1060
    clock.advance(51)  # 1061: Anna's laptop (due 1060) is silent, the rest not yet (1070)
    changed = tracker.expire_clients()
    assert changed == [UserPresence("201", PhoneStatus(True, False, False), C.ONLINE)]
    assert tracker.client_statuses("201") == {"mobile": C.ONLINE}
    assert tracker.next_expiry() == 1070
    clock.advance(9)
    assert sorted(extensions(tracker.expire_clients())) == ["201", "202"]
    assert tracker.next_expiry() is None


def test_expiry_reports_a_user_only_when_the_merged_status_changed(
    tracker: PresenceTracker, clock: Clock
) -> None:
    tracker.set_client("201", "laptop", C.ONLINE)
    clock.advance(30)
    tracker.set_client("201", "mobile", C.ONLINE)
    clock.advance(30)
    assert tracker.expire_clients() == []  # the laptop went, but the mobile is online
    assert tracker.client_statuses("201") == {"mobile": C.ONLINE}


def test_the_default_heartbeat_timeout() -> None:
    clock = Clock()
    tracker = PresenceTracker(snapshot(), clock=clock)
    assert tracker.heartbeat_timeout == DEFAULT_HEARTBEAT_TIMEOUT == 90
    tracker.set_client("201", "laptop", C.ONLINE)
    assert tracker.next_expiry() == clock.now + 90


# --- the incremental state equals a fresh computation --------------------------------------

ENDPOINTS = [*ANNA.phones, *BORIS.phones, *OFFICE_1.phones, *OFFICE_2.phones, "PJSIP/spare-1"]
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("device"), st.sampled_from(ENDPOINTS), st.sampled_from(list(DeviceState))
        ),
        st.tuples(
            st.just("login"),
            st.sampled_from(["201", "202", "203"]),
            st.sampled_from([None, "office-1", "office-2"]),
        ),
        st.tuples(
            st.just("client"), st.sampled_from(["201", "202"]), st.sampled_from(list(ClientStatus))
        ),
        st.tuples(
            st.just("resync"),
            st.dictionaries(st.sampled_from(ENDPOINTS), st.sampled_from(list(DeviceState))),
        ),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_reported_changes_replay_to_a_fresh_trackers_state(ops: list[tuple[Any, ...]]) -> None:
    """Whatever happens, publishing only the reported changes keeps a mirror exact,
    and the tracker matches one built from scratch with the same inputs."""
    clock = Clock()
    tracker = PresenceTracker(snapshot(), clock=clock)
    mirror = dict(tracker.users())
    logins: dict[str, str] = {}
    for op in ops:
        if op[0] == "device":
            changed = tracker.set_device(op[1], op[2])
        elif op[0] == "login":
            if op[2] is None:
                logins.pop(op[1], None)
            else:
                logins[op[1]] = op[2]
            changed = tracker.set_snapshot(snapshot(**{f"u{e}": w for e, w in logins.items()}))
        elif op[0] == "client":
            changed = tracker.set_client(op[1], "app", op[2])
        else:
            changed = tracker.replace_devices(op[1])
        assert len(set(extensions(changed))) == len(changed)  # each user once
        for presence in changed:
            assert mirror[presence.extension] != presence  # only real changes
            mirror[presence.extension] = presence
        assert mirror == dict(tracker.users())

    fresh = PresenceTracker(snapshot(**{f"u{e}": w for e, w in logins.items()}), clock=clock)
    fresh.replace_devices(dict(tracker.devices()))
    for extension, statuses in [(e, tracker.client_statuses(e)) for e in ("201", "202")]:
        for client_id, status in statuses.items():
            fresh.set_client(extension, client_id, status)
    assert dict(fresh.users()) == dict(tracker.users())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["201", "202", "203"]), st.sampled_from([None, "office-1", "office-2"])
        ),
        max_size=8,
    ),
    st.lists(
        st.tuples(
            st.sampled_from(
                ["PJSIP/anna-desk", "PJSIP/office1-desk", "PJSIP/office2-desk", "PJSIP/boris-desk"]
            ),
            st.sampled_from([D.INUSE, D.UNAVAILABLE, D.NOT_INUSE]),
        ),
        max_size=6,
    ),
)
def test_updating_only_the_users_a_login_concerns_equals_a_rebuild(
    moves: list[tuple[str, str | None]], devices: list[tuple[str, DeviceState]]
) -> None:
    """What the router does on a login (only those users) leaves the same state as
    working everything out from scratch."""
    incremental = PresenceTracker(snapshot())
    logins: dict[str, str] = {}
    for endpoint, state in devices:
        incremental.set_device(endpoint, state)
    for extension, workplace in moves:
        before = dict(logins)
        for other in [e for e, w in logins.items() if w == workplace]:
            del logins[other]  # one user per workplace: the occupant moves out
        if workplace is None:
            logins.pop(extension, None)
        else:
            logins[extension] = workplace
        concerned = {e for e in before.keys() | logins.keys() if before.get(e) != logins.get(e)}
        incremental.set_snapshot(replace(snapshot(), logins=dict(logins)), concerned)
    rebuilt = PresenceTracker(replace(snapshot(), logins=dict(logins)))
    for endpoint, state in devices:
        rebuilt.set_device(endpoint, state)
    assert dict(incremental.users()) == dict(rebuilt.users())
    for endpoint in ("PJSIP/office1-desk", "PJSIP/office2-desk"):
        rebuilt_changed = extensions(rebuilt.set_device(endpoint, D.RINGING))
        assert extensions(incremental.set_device(endpoint, D.RINGING)) == rebuilt_changed
