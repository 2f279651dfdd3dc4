"""Pickup for a person (*8 + extension): the flow's table, who may pick up whom, the
driver and the intake on the fake ARI, and the races (the callee answers at the same
moment, two pickers at once, the caller hangs up during the pickup)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from callrouter.ari import AriClient
from callrouter.ari.events import Channel, parse_event
from callrouter.calls.driver import CallDriver
from callrouter.calls.flow import (
    CallFlow,
    CallPhase,
    CallResult,
    Connect,
    HangupCaller,
    LegEnd,
    LegPhase,
    StartOutcome,
    StopLeg,
)
from callrouter.calls.intake import CallIntake, leg_outcomes
from callrouter.calls.pickup import Picker, PickupResult, picker_at, pickup_refusal
from callrouter.domain.directory import DirectorySnapshot, Role, User, Workplace
from callrouter.metrics import PICKUP_OUTCOMES, Metrics
from callrouter.routing.plan import ForwardHop, Leg, LegSource, PlanStatus, RingPlan
from callrouter.rules.check import check_rules
from callrouter.rules.model import RingRules
from callrouter.yamlfile import Problem
from tests.fakes import FakeAri, make_channel, make_event
from tests.unit.test_metrics import samples

# --- the flow -----------------------------------------------------------------------


def flow_for(*legs: tuple[str, float, float]) -> CallFlow:
    plan = RingPlan(
        "201",
        "Anna",
        None,
        PlanStatus.OK,
        tuple(Leg(e, a, b, LegSource.FOLLOWME) for e, a, b in legs),
    )
    counter = itertools.count(1)
    return CallFlow("call-1", plan, lambda: f"leg-{next(counter)}")


def started(*legs: tuple[str, float, float]) -> CallFlow:
    flow = flow_for(*legs)
    flow.start(0)
    for leg_id in flow.legs:
        if flow.legs[leg_id].active:
            flow.leg_created(leg_id, StartOutcome.CREATED, 0)
    return flow


def test_a_pickup_wins_like_an_answering_leg_every_other_leg_is_cancelled() -> None:
    flow = started(("PJSIP/a", 0, 20), ("PJSIP/b", 0, 20), ("PJSIP/c", 10, 30))
    assert flow.ringing()
    commands = flow.picked_up("picker-1", "PJSIP/x")
    assert commands == [StopLeg("leg-1"), StopLeg("leg-2"), Connect("picker-1", "PJSIP/x")]
    assert flow.phase is CallPhase.CONNECTING and not flow.ringing()
    assert flow.winner is flow.legs["picker-1"]
    assert flow.winner.leg.source is LegSource.PICKUP
    assert flow.legs["leg-3"].phase is LegPhase.ENDED  # the pending one never starts
    assert flow.next_deadline() is None
    assert flow.tick(10) == []
    # The cancelled legs and the picker's hang-ups go out once each.
    assert flow.leg_hangup_sent("leg-1") and not flow.leg_hangup_sent("leg-1")
    assert not flow.leg_hangup_sent("leg-3")  # never asked for
    # The picker is no leg asked for: metrics count the cancelled legs only.
    flow.connected()
    assert sorted(leg_outcomes(flow)) == ["cancelled", "cancelled"]


def test_the_pickers_own_phone_ringing_for_the_call_is_cancelled_like_the_others() -> None:
    flow = started(("PJSIP/a", 0, 20), ("PJSIP/x", 0, 20))
    assert flow.picked_up("picker-1", "PJSIP/x") == [
        StopLeg("leg-1"),
        StopLeg("leg-2"),
        Connect("picker-1", "PJSIP/x"),
    ]


def test_the_callee_answering_first_leaves_nothing_to_pick_up() -> None:
    flow = started(("PJSIP/a", 0, 20), ("PJSIP/b", 0, 20))
    assert flow.leg_answered("leg-1") == [StopLeg("leg-2"), Connect("leg-1", "PJSIP/a")]
    assert flow.picked_up("picker-1", "PJSIP/x") == []
    assert "picker-1" not in flow.legs and flow.winner is flow.legs["leg-1"]


def test_a_leg_answering_just_after_the_pickup_lost_the_race_and_is_hung_up() -> None:
    flow = started(("PJSIP/a", 0, 20))
    flow.picked_up("picker-1", "PJSIP/x")
    # Its StopLeg went out with the pickup; its answer changes nothing.
    assert flow.leg_answered("leg-1") == []
    assert flow.winner is flow.legs["picker-1"]


def test_two_pickers_one_wins_the_second_finds_nothing() -> None:
    flow = started(("PJSIP/a", 0, 20))
    assert flow.picked_up("picker-1", "PJSIP/x") != []
    assert flow.picked_up("picker-2", "PJSIP/y") == []
    assert flow.picked_up("picker-1", "PJSIP/x") == []  # the same one twice: nothing new
    assert "picker-2" not in flow.legs


def test_the_caller_gone_leaves_nothing_to_pick_up() -> None:
    flow = started(("PJSIP/a", 0, 20))
    flow.caller_gone()
    assert flow.picked_up("picker-1", "PJSIP/x") == []
    assert flow.result is CallResult.HANGUP


def test_nothing_to_pick_up_before_a_phone_rings() -> None:
    flow = flow_for(("PJSIP/a", 5, 20))  # a rule's delay: nothing rings in the first 5 s
    assert not flow.ringing()
    flow.start(0)
    assert not flow.ringing() and flow.picked_up("picker-1", "PJSIP/x") == []
    flow.tick(5)
    assert flow.ringing()


def test_a_picked_up_call_ends_when_either_side_hangs_up() -> None:
    flow = started(("PJSIP/a", 0, 20))
    flow.picked_up("picker-1", "PJSIP/x")
    flow.connected()
    assert flow.leg_gone("picker-1", 3, cause=16) == [HangupCaller()]
    assert flow.result is CallResult.ANSWERED
    flow = started(("PJSIP/a", 0, 20))
    flow.picked_up("picker-1", "PJSIP/x")
    flow.connected()
    assert flow.caller_gone() == [StopLeg("picker-1")]
    assert flow.result is CallResult.ANSWERED
    assert flow.legs["picker-1"].end is LegEnd.CANCELLED


# --- who may pick up ------------------------------------------------------------------

SNAPSHOT = DirectorySnapshot(
    users={
        "201": User("201", "Anna", role="staff", phones=("PJSIP/anna",)),
        "202": User("202", "Bert", role="staff", phones=("PJSIP/bert",)),
        "203": User("203", "Cleo", role="intern", phones=("PJSIP/cleo",)),
        "204": User("204", "Dave"),  # no role, logged in at hot-1
    },
    workplaces={"hot-1": Workplace("hot-1", "Hot desk", "801", phones=("PJSIP/hot",))},
    roles={"staff": Role("staff"), "intern": Role("intern")},
    logins={"204": "hot-1"},
    unassigned_phones=("PJSIP/lobby",),
)
ANYONE = RingRules()
STAFF_ONLY = RingRules.model_validate({"defaults": {"picked_up_by": ["staff"]}})


def picker(endpoint: str, snapshot: DirectorySnapshot = SNAPSHOT) -> Picker | None:
    return picker_at(snapshot, endpoint)


def test_the_picking_user_is_the_phones_user_or_whoever_is_logged_in_at_its_workplace() -> None:
    assert picker("PJSIP/bert") == Picker("PJSIP/bert", "202")
    assert picker("PJSIP/hot") == Picker("PJSIP/hot", "204")
    assert picker("PJSIP/lobby") == Picker("PJSIP/lobby", None)  # a phone, nobody's
    assert picker("PJSIP/stranger") is None  # no phone of the directory
    nobody_in = DirectorySnapshot(SNAPSHOT.users, SNAPSHOT.workplaces, SNAPSHOT.roles)
    assert picker("PJSIP/hot", nobody_in) == Picker("PJSIP/hot", None)


def test_the_picker_follows_a_login_without_a_rebuild_of_the_phones() -> None:
    assert picker_at(SNAPSHOT, "PJSIP/hot") == Picker("PJSIP/hot", "204")
    moved = replace(SNAPSHOT, logins={"203": "hot-1"})  # as a logins-only reload does
    assert moved.phone_index is SNAPSHOT.phone_index
    assert picker_at(moved, "PJSIP/hot") == Picker("PJSIP/hot", "203")
    assert picker_at(moved, None) is None


@pytest.mark.parametrize(
    ("rules", "endpoint", "refused"),
    [
        (ANYONE, "PJSIP/cleo", None),
        (ANYONE, "PJSIP/lobby", None),  # anyone at a phone of the directory
        (ANYONE, "PJSIP/stranger", "not a phone of the directory"),
        (STAFF_ONLY, "PJSIP/bert", None),
        (STAFF_ONLY, "PJSIP/cleo", "user 203's role intern is not in picked_up_by"),
        (STAFF_ONLY, "PJSIP/hot", "user 204's role (none) is not in picked_up_by"),
        (STAFF_ONLY, "PJSIP/lobby", "PJSIP/lobby has no user, and picked_up_by is staff"),
        (STAFF_ONLY, "PJSIP/stranger", "not a phone of the directory"),
    ],
)
def test_picked_up_by_restricts_by_the_picking_users_role(
    rules: RingRules, endpoint: str, refused: str | None
) -> None:
    assert pickup_refusal(SNAPSHOT, rules, "201", picker(endpoint)) == refused


def test_a_users_own_rule_wins_and_the_callee_may_always_pick_up_their_own_calls() -> None:
    rules = RingRules.model_validate(
        {"defaults": {"picked_up_by": ["staff"]}, "users": {"201": {"picked_up_by": ["intern"]}}}
    )
    assert pickup_refusal(SNAPSHOT, rules, "201", picker("PJSIP/cleo")) is None
    assert pickup_refusal(SNAPSHOT, rules, "201", picker("PJSIP/bert")) is not None
    assert pickup_refusal(SNAPSHOT, rules, "202", picker("PJSIP/bert")) is None  # own
    own_elsewhere = Picker("PJSIP/lobby", "201")
    assert pickup_refusal(SNAPSHOT, rules, "201", own_elsewhere) is None


def test_the_pickup_metric_labels_are_the_results() -> None:
    assert set(PICKUP_OUTCOMES) == {r.value.lower() for r in PickupResult}
    found = samples(Metrics())
    assert all(found["callrouter_pickups_total", (("outcome", o),)] == 0 for o in PICKUP_OUTCOMES)


def test_rules_check_names_a_role_in_picked_up_by_the_directory_does_not_have() -> None:
    rules = RingRules.model_validate(
        {
            "defaults": {"picked_up_by": ["staff", "stuff"]},
            "users": {"201": {"picked_up_by": ["x"]}},
        }
    )
    assert check_rules(rules, SNAPSHOT) == [
        Problem(
            ("defaults", "picked_up_by", 1),
            "no role is named stuff (the directory's: intern, staff)",
        ),
        Problem(
            ("users", "201", "picked_up_by", 0),
            "no role is named x (the directory's: intern, staff)",
        ),
    ]
    assert check_rules(STAFF_ONLY, SNAPSHOT) == []


# --- on the fake ARI: the driver and the intake --------------------------------------

PW = "pw"


async def until(cond: Callable[[], object], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


class Rig:
    def __init__(self, fake: FakeAri, ari: AriClient, intake: CallIntake) -> None:
        self.fake, self.ari, self.intake = fake, ari, intake
        self.serial = itertools.count(1)

    def channel(self, channel_id: str, endpoint: str) -> dict[str, object]:
        name = f"{endpoint}-{next(self.serial):08x}"
        chan = make_channel(channel_id, name=name)
        self.fake.model.channels[channel_id] = chan
        return chan

    async def call(self, caller: str, extension: str, endpoint: str = "PJSIP/ext") -> None:
        chan = self.channel(caller, endpoint)
        await self.fake.send_event(make_event("StasisStart", args=[extension], channel=chan))

    async def dial_pickup(self, picker: str, endpoint: str, extension: str = "201") -> None:
        chan = self.channel(picker, endpoint)
        await self.fake.send_event(
            make_event("StasisStart", args=[extension, "pickup"], channel=chan)
        )

    def legs_of(self, caller: str) -> list[str]:
        return [
            r.params["channelId"]
            for r in self.fake.requests_to("POST", "/channels")
            if r.params.get("originator") == caller
        ]

    async def ringing(self, caller: str, n: int) -> list[str]:
        await until(lambda: len(self.legs_of(caller)) == n)
        driver = self.intake.calls[caller]
        await until(lambda: driver.ringing_for(driver.plan.extension))
        return self.legs_of(caller)

    def result_of(self, picker: str) -> str | None:
        """CALLROUTER_RESULT set on a picker sent to [callrouter-pickup-result]."""
        cont = self.fake.requests_to("POST", f"/channels/{picker}/continue")
        if not cont:
            return None
        assert cont[0].params == {
            "context": "callrouter-pickup-result",
            "extension": "s",
            "priority": "1",
        }
        return self.fake.model.variables[(picker, "CALLROUTER_RESULT")]

    def bridged(self) -> list[list[str]]:
        return [b["channels"] for b in self.fake.model.bridges.values()]

    def deleted(self, channel_id: str) -> bool:
        return bool(self.fake.requests_to("DELETE", f"/channels/{channel_id}"))

    def count(self, outcome: str) -> float:
        return samples(self.intake.metrics)["callrouter_pickups_total", (("outcome", outcome),)]


DIRECTORY = DirectorySnapshot(
    users={
        "201": User("201", "Anna", role="staff", phones=("PJSIP/anna-desk", "PJSIP/anna-soft")),
        "202": User("202", "Bert", role="staff", phones=("PJSIP/bert",)),
        "203": User("203", "Cleo", role="intern", phones=("PJSIP/cleo",)),
    },
    roles={"staff": Role("staff"), "intern": Role("intern")},
)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with (
        FakeAri(password=PW) as fake,
        AriClient(fake.base_url, fake.user, PW, fake.app) as ari,
    ):
        intake = CallIntake(ari, lambda: (DIRECTORY, STAFF_ONLY), metrics=Metrics())
        ari.on_event = intake.on_event
        await ari.wait_connected(3)
        yield Rig(fake, ari, intake)
        await intake.stop(0.5)


async def test_a_colleague_picks_up_the_caller_is_bridged_with_it_and_the_legs_cancelled(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter.calls")
    await rig.call("caller-1", "201")
    desk, soft = await rig.ringing("caller-1", 2)
    await rig.dial_pickup("picker-1", "PJSIP/bert")
    await until(lambda: rig.bridged() == [["caller-1", "picker-1"]])
    assert rig.deleted(desk) and rig.deleted(soft)
    assert not rig.deleted("picker-1")
    # The picker is answered before the other legs are cancelled; the caller too.
    paths = [(r.method, r.path) for r in rig.fake.requests]
    answer = paths.index(("POST", "/channels/picker-1/answer"))
    assert answer < paths.index(("DELETE", f"/channels/{desk}"))
    assert ("POST", "/channels/caller-1/answer") in paths
    assert rig.result_of("picker-1") is None  # not sent to the dialplan
    assert rig.count("picked_up") == 1
    # Then it is an answered call like any other: the picker hangs up, it ends.
    driver = rig.intake.calls["caller-1"]
    chan = rig.fake.model.channels["picker-1"]
    await rig.fake.send_event(make_event("ChannelDestroyed", cause=16, channel=chan))
    await until(lambda: "caller-1" not in rig.intake.calls)
    assert rig.deleted("caller-1") and not rig.fake.model.bridges
    assert driver.flow.result is CallResult.ANSWERED
    assert not rig.ari.is_routed("picker-1")
    finished = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    assert len(finished) == 1
    assert finished[0].startswith(
        "call caller-1: finished, ANSWERED: 201 (Anna), 2 leg(s), "
        "picked up by PJSIP/bert (202), status ok, "
    )
    calls = samples(rig.intake.metrics)
    assert calls["callrouter_calls_total", (("result", "answered"),)] == 1
    assert calls["callrouter_legs_total", (("outcome", "cancelled"),)] == 2
    assert calls["callrouter_legs_total", (("outcome", "answered"),)] == 0


async def test_a_picker_whose_role_is_not_listed_is_refused_and_the_phones_ring_on(
    rig: Rig,
) -> None:
    await rig.call("caller-1", "201")
    desk, soft = await rig.ringing("caller-1", 2)
    await rig.dial_pickup("picker-1", "PJSIP/cleo")  # an intern; picked_up_by: staff
    await until(lambda: rig.result_of("picker-1") is not None)
    assert rig.result_of("picker-1") == "REFUSED"
    assert not rig.fake.requests_to("POST", "/channels/picker-1/answer")
    assert not rig.deleted(desk) and not rig.deleted(soft)
    assert rig.intake.calls["caller-1"].flow.ringing()
    # Not a phone of the directory at all: refused too, whether anything rings or not.
    await rig.dial_pickup("picker-2", "PJSIP/stranger")
    await until(lambda: rig.result_of("picker-2") == "REFUSED")
    assert rig.count("refused") == 2 and rig.count("picked_up") == 0


async def test_nothing_ringing_sends_the_picker_to_the_dialplan_with_nocall(rig: Rig) -> None:
    await rig.dial_pickup("picker-1", "PJSIP/bert")
    await until(lambda: rig.result_of("picker-1") is not None)
    assert rig.result_of("picker-1") == "NOCALL"
    assert not rig.intake.calls and not rig.ari.is_routed("picker-1")
    await rig.dial_pickup("picker-2", "PJSIP/bert", extension="2,0;x")  # junk: nothing
    await until(lambda: rig.result_of("picker-2") == "NOCALL")
    assert rig.count("nocall") == 2


async def test_two_pickers_at_once_one_wins_the_other_finds_nothing(rig: Rig) -> None:
    await rig.call("caller-1", "201")
    await rig.ringing("caller-1", 2)
    await rig.dial_pickup("picker-1", "PJSIP/bert")
    await rig.dial_pickup("picker-2", "PJSIP/anna-soft")  # Anna herself, elsewhere
    await until(lambda: rig.result_of("picker-2") is not None and rig.bridged())
    assert rig.bridged() == [["caller-1", "picker-1"]]
    assert rig.result_of("picker-2") == "NOCALL"
    assert not rig.ari.is_routed("picker-2")


async def test_the_callee_answering_at_the_same_moment_one_of_them_wins(rig: Rig) -> None:
    await rig.call("caller-1", "201")
    desk, _ = await rig.ringing("caller-1", 2)
    up = rig.fake.model.channels[desk] | {"state": "Up"}
    await rig.fake.send_event(make_event("StasisStart", args=["leg"], channel=up))
    await rig.dial_pickup("picker-1", "PJSIP/bert")
    await until(lambda: rig.result_of("picker-1") is not None)
    assert rig.result_of("picker-1") == "NOCALL"
    await until(lambda: rig.bridged() == [["caller-1", desk]])
    # The other way round: the pickup first, the phone's answer comes too late (the
    # call's queue decides: whatever reached it first wins).
    await rig.call("caller-2", "201")
    desk2, soft2 = await rig.ringing("caller-2", 2)
    up = rig.fake.model.channels[desk2] | {"state": "Up"}
    await rig.dial_pickup("picker-2", "PJSIP/bert")
    await until(lambda: ["caller-2", "picker-2"] in rig.bridged())
    await rig.fake.send_event(make_event("StasisStart", args=["leg"], channel=up))
    await until(lambda: rig.deleted(desk2) and rig.deleted(soft2))
    assert ["caller-2", "picker-2"] in rig.bridged()
    assert rig.intake.calls["caller-2"].flow.winner.leg_id == "picker-2"  # type: ignore[union-attr]


async def test_the_caller_hanging_up_during_the_pickup_leaves_nothing_to_pick_up(
    rig: Rig,
) -> None:
    await rig.call("caller-1", "201")
    await rig.ringing("caller-1", 2)
    chan = rig.fake.model.channels["caller-1"]
    await rig.fake.send_event(make_event("StasisEnd", channel=chan))
    await rig.dial_pickup("picker-1", "PJSIP/bert")
    await until(lambda: rig.result_of("picker-1") is not None)
    assert rig.result_of("picker-1") == "NOCALL"
    assert not rig.fake.model.bridges


async def test_a_picker_gone_before_it_was_answered_leaves_the_call_ringing(rig: Rig) -> None:
    await rig.call("caller-1", "201")
    desk, soft = await rig.ringing("caller-1", 2)
    rig.fake.set_response("POST", "/channels/picker-1/answer", 404, {"message": "Not found"})
    await rig.dial_pickup("picker-1", "PJSIP/bert")
    await until(lambda: rig.fake.requests_to("POST", "/channels/picker-1/continue"))
    assert not rig.deleted(desk) and not rig.deleted(soft)
    driver = rig.intake.calls["caller-1"]
    assert driver.flow.ringing() and not rig.ari.is_routed("picker-1")


async def test_the_oldest_ringing_call_is_picked_up_first_and_never_ones_own(
    rig: Rig,
) -> None:
    await rig.call("caller-1", "201", endpoint="PJSIP/bert")  # Bert calls Anna ...
    await rig.ringing("caller-1", 2)
    await rig.call("caller-2", "201")
    await rig.ringing("caller-2", 2)
    await rig.call("caller-3", "201")
    await rig.ringing("caller-3", 2)
    # ... and picks up from his own phone: not his own call, the next oldest one.
    await rig.dial_pickup("picker-1", "PJSIP/bert")
    await until(lambda: rig.bridged())
    assert rig.bridged() == [["caller-2", "picker-1"]]
    assert rig.intake.calls["caller-1"].flow.ringing()
    assert rig.intake.calls["caller-3"].flow.ringing()


async def test_a_picker_waiting_in_the_app_at_a_resync_is_no_call(rig: Rig) -> None:
    chan = rig.channel("picker-1", "PJSIP/bert")
    chan["dialplan"] = chan["dialplan"] | {  # type: ignore[operator]
        "app_name": "Stasis",
        "app_data": "callrouter,201,pickup",
    }
    await rig.intake.on_connected()
    await until(lambda: rig.result_of("picker-1") is not None)
    assert rig.result_of("picker-1") == "NOCALL"  # nothing rings for 201
    assert not rig.fake.requests_to("POST", "/channels")  # no leg rung for it
    assert not rig.intake.calls


async def test_pickups_still_queued_when_the_call_ends_get_false() -> None:
    async with (
        FakeAri(password=PW) as fake,
        AriClient(fake.base_url, fake.user, PW, fake.app) as ari,
    ):
        await ari.wait_connected(3)
        fake.model.channels["caller-1"] = make_channel("caller-1")
        plan = RingPlan(
            "201", "Anna", None, PlanStatus.OK, (Leg("PJSIP/a", 0, 20, LegSource.FOLLOWME),)
        )
        driver = CallDriver(ari, Channel(id="caller-1", name="PJSIP/c-00000001"), plan)
        task = asyncio.ensure_future(driver.run())
        await until(lambda: driver.ringing_for("201"))
        assert not driver.ringing_for("202")
        # The caller's hang-up is in the queue ahead of the pickup.
        hang_up = make_event("StasisEnd", channel=make_channel("caller-1"))
        driver.queue.put_nowait(parse_event(json.dumps(hang_up)))
        late = await asyncio.wait_for(driver.pick_up("picker-1", "PJSIP/x", None), 3)
        assert late is False
        await asyncio.wait_for(task, 3)
        assert not fake.requests_to("POST", "/channels/picker-1/answer")


async def test_a_forwarded_call_is_picked_up_by_the_extension_it_rings_for_now() -> None:
    async with (
        FakeAri(password=PW) as fake,
        AriClient(fake.base_url, fake.user, PW, fake.app) as ari,
    ):
        await ari.wait_connected(3)
        fake.model.channels["caller-1"] = make_channel("caller-1")
        fake.model.channels["picker-1"] = make_channel("picker-1")
        hop = ForwardHop("201", "busy", "202", "admin")
        anna = RingPlan(
            "201",
            "Anna",
            None,
            PlanStatus.OK,
            (Leg("PJSIP/anna", 0, 20, LegSource.FOLLOWME),),
            forward_on=(hop,),
        )
        boris = RingPlan(
            "202",
            "Boris",
            None,
            PlanStatus.OK,
            (Leg("PJSIP/boris", 0, 20, LegSource.FOLLOWME),),
            forwarded=(hop,),
        )
        driver = CallDriver(
            ari,
            Channel(id="caller-1", name="PJSIP/c-00000001"),
            anna,
            next_plan=lambda hop, previous: boris,
        )
        task = asyncio.ensure_future(driver.run())
        await until(lambda: driver.ringing_for("201"))
        (first,) = (r.params["channelId"] for r in fake.requests_to("POST", "/channels"))
        await fake.send_event(make_event("ChannelDestroyed", cause=17, channel=make_channel(first)))
        await until(lambda: driver.ringing_for("202"))
        assert not driver.ringing_for("201")  # Anna's plan is over: *8201 finds nothing
        assert await asyncio.wait_for(driver.pick_up("picker-1", "PJSIP/x", "203"), 3)
        await until(lambda: any(r.path.endswith("/addChannel") for r in fake.requests))
        add = next(r for r in fake.requests if r.path.endswith("/addChannel"))
        assert add.params["channel"] == "caller-1,picker-1"
        second = fake.requests_to("POST", "/channels")[1].params["channelId"]
        assert fake.requests_to("DELETE", f"/channels/{second}")  # Boris's phone stops
        await fake.send_event(make_event("ChannelDestroyed", channel=make_channel("caller-1")))
        await asyncio.wait_for(task, 3)
        assert fake.requests_to("DELETE", "/channels/picker-1")
        assert not ari.is_routed("picker-1")


async def test_twenty_pickers_at_once_exactly_one_wins(rig: Rig) -> None:
    await rig.call("caller-1", "201")
    await rig.ringing("caller-1", 2)
    pickers = [f"picker-{i}" for i in range(20)]
    for picker_id in pickers:
        await rig.dial_pickup(picker_id, "PJSIP/bert")
    await until(lambda: all(rig.result_of(p) is not None for p in pickers[1:]), timeout=10)
    assert rig.bridged() == [["caller-1", "picker-0"]]  # the first to reach the call
    assert {rig.result_of(p) for p in pickers[1:]} == {"NOCALL"}
    assert rig.count("picked_up") == 1 and rig.count("nocall") == 19


async def test_a_local_channel_or_an_oversized_extension_gets_nowhere(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter.calls")
    await rig.call("caller-1", "201")
    desk, soft = await rig.ringing("caller-1", 2)
    # A Local channel names no phone: whoever set it up is no phone of the directory.
    chan = make_channel("picker-1", name="Local/201@phones-00000001;2")
    rig.fake.model.channels["picker-1"] = chan
    await rig.fake.send_event(make_event("StasisStart", args=["201", "pickup"], channel=chan))
    await until(lambda: rig.result_of("picker-1") == "REFUSED")
    await rig.dial_pickup("picker-2", "PJSIP/bert", extension="2" * 10_000)
    await until(lambda: rig.result_of("picker-2") == "NOCALL")
    assert not rig.deleted(desk) and not rig.deleted(soft)
    assert max(len(r.getMessage()) for r in caplog.records) < 300  # no 10,000 digits logged
