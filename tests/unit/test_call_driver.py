"""CallDriver against the fake ARI: one POST /channels per leg, answer on StasisStart."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from callrouter.ari import AriClient
from callrouter.ari.events import Channel
from callrouter.calls.driver import LEG_APP_ARG, CallDriver
from callrouter.calls.flow import LegChannel, LegEnd
from callrouter.calls.intake import CallIntake
from callrouter.domain.directory import DirectorySnapshot, User
from callrouter.logs import JsonFormatter
from callrouter.routing.plan import ForwardHop, Leg, LegSource, PlanStatus, RingPlan
from callrouter.rules.model import RingRules
from tests.fakes import FakeAri, make_channel, make_event

PW = "pw"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri(password=PW) as server:
        yield server


def plan(*endpoints: str) -> RingPlan:
    legs = tuple(Leg(e, 0.0, 20.0, LegSource.FOLLOWME) for e in endpoints)
    return RingPlan("201", "Alice", None, PlanStatus.OK, legs)


async def wait_for(cond, timeout=3.0):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_legs_are_originated_then_ringing_then_the_answering_leg_is_bridged(fake, caplog):
    caplog.set_level(logging.INFO, logger="callrouter.calls.driver")
    fake.model.channels["caller-1"] = make_channel("caller-1", caller_number="555")
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        caller = Channel(id="caller-1", caller_number="555", caller_name="Bob")
        driver = CallDriver(ari, caller, plan("PJSIP/a", "PJSIP/b"))
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels/caller-1/ring")) == 1)
        paths = [(r.method, r.path) for r in fake.requests]
        assert paths == [
            ("POST", "/channels"),
            ("POST", "/channels"),
            ("POST", "/channels/caller-1/ring"),
        ]
        legs = [r.params for r in fake.requests[:2]]
        for p in legs:
            assert p["app"] == "callrouter" and p["appArgs"] == LEG_APP_ARG
            assert p["originator"] == "caller-1" and int(p["timeout"]) >= 20
            assert "callerId" not in p
        a, b = (p["channelId"] for p in legs)
        # Up alone does not bridge (not in Stasis yet); StasisStart does.
        await fake.send_event(make_event("ChannelStateChange", channel=make_channel(a, state="Up")))
        await asyncio.sleep(0.05)
        assert not fake.requests_to("POST", "/bridges")
        await fake.send_event(
            make_event("StasisStart", args=["leg"], channel=make_channel(a, state="Up"))
        )
        await wait_for(lambda: any(r.path.endswith("/addChannel") for r in fake.requests))
        assert fake.requests_to("DELETE", f"/channels/{b}")  # the loser is cancelled
        add = next(r for r in fake.requests if r.path.endswith("/addChannel"))
        assert add.params["channel"] == f"caller-1,{a}"
        await fake.send_event(
            make_event("ChannelDestroyed", cause=16, channel=make_channel(a, state="Up"))
        )
        await asyncio.wait_for(task, 3)
        assert fake.requests_to("DELETE", "/channels/caller-1")
        assert not fake.model.bridges
        # Nothing is set on an answered caller (BRIDGEPEER, Asterisk's, names the leg).
        assert not fake.requests_to("POST", "/channels/caller-1/variable")
    # Every line about the call carries its id as a field, for JSON logs.
    records = [r for r in caplog.records if r.name == "callrouter.calls.driver"]
    assert records and all(getattr(r, "call_id", None) == "caller-1" for r in records)
    assert json.loads(JsonFormatter().format(records[0]))["call_id"] == "caller-1"


async def test_busy_everywhere_continues_with_busy(fake):
    fake.model.channels["caller-2"] = make_channel("caller-2")
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(ari, Channel(id="caller-2"), plan("PJSIP/a"))
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 1)
        leg = fake.requests_to("POST", "/channels")[0].params["channelId"]
        await fake.send_event(make_event("Dial", dialstatus="BUSY", peer=make_channel(leg)))
        await fake.send_event(make_event("ChannelDestroyed", cause=17, channel=make_channel(leg)))
        await asyncio.wait_for(task, 3)
        var = fake.requests_to("POST", "/channels/caller-2/variable")[0]
        assert var.params == {"variable": "CALLROUTER_RESULT", "value": "BUSY"}
        assert fake.requests_to("POST", "/channels/caller-2/continue")


async def test_an_originate_without_answer_is_hung_up_and_a_refused_one_is_not(fake):
    fake.model.channels["caller-3"] = make_channel("caller-3")
    fake.set_response("POST", "/channels", 500, {"error": "Allocation failed"}, times=1)
    async with AriClient(fake.base_url, fake.user, PW, fake.app, request_timeout=0.2) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(ari, Channel(id="caller-3"), plan("PJSIP/a"))
        await asyncio.wait_for(driver.run(), 3)
        assert driver.flow.result.value == "NOANSWER"
        assert not [r for r in fake.requests if r.method == "DELETE" and "cr-leg" in r.path]
        fake.set_response("POST", "/channels", 200, make_channel("x"), delay=0.5, times=1)
        driver = CallDriver(ari, Channel(id="caller-3"), plan("PJSIP/a"))
        await asyncio.wait_for(driver.run(), 3)
        leg = next(iter(driver.flow.legs))
        assert fake.requests_to("DELETE", f"/channels/{leg}")


async def test_a_bridge_that_cannot_be_made_is_failed_not_answered(fake, caplog):
    caplog.set_level(logging.INFO, logger="callrouter.calls.driver")
    fake.model.channels["caller-4"] = make_channel("caller-4")
    fake.set_response("POST", "/bridges", 500, {"message": "Allocation failed"})
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(ari, Channel(id="caller-4"), plan("PJSIP/a", "PJSIP/b"))
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 2)
        a, b = (r.params["channelId"] for r in fake.requests_to("POST", "/channels"))
        await fake.send_event(
            make_event("StasisStart", args=["leg"], channel=make_channel(a, state="Up"))
        )
        await asyncio.wait_for(task, 3)
        assert driver.flow.result.value == "FAILED"
        assert fake.requests_to("DELETE", f"/channels/{a}")  # the winner
        assert fake.requests_to("DELETE", f"/channels/{b}")  # the loser
        assert fake.requests_to("DELETE", "/channels/caller-4")
        assert len([r for r in fake.requests if r.method == "DELETE" and a in r.path]) == 1
        assert not fake.requests_to("POST", "/channels/caller-4/variable")
    messages = [r.getMessage() for r in caplog.records if r.name == "callrouter.calls.driver"]
    assert any("could not connect PJSIP/a" in m for m in messages)
    assert messages[-1].startswith("call caller-4: finished, FAILED: 201 (")
    assert not any("connected with" in m for m in messages)


async def test_hand_back_stops_the_legs_and_continues_at_the_fallback(fake):
    fake.model.channels["caller-5"] = make_channel("caller-5")
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(ari, Channel(id="caller-5"), plan("PJSIP/a"))
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels/caller-5/ring")) == 1)
        leg = fake.requests_to("POST", "/channels")[0].params["channelId"]
        assert driver.channel_ids() == {"caller-5", leg}
        await driver.hand_back()
        await asyncio.wait_for(task, 3)
        assert driver.flow.result.value == "HANDED_BACK"
        assert len(fake.requests_to("DELETE", f"/channels/{leg}")) == 1
        cont = fake.requests_to("POST", "/channels/caller-5/continue")
        assert [r.params for r in cont] == [
            {"context": "callrouter", "extension": "201", "label": "fallback"}
        ]
        assert not fake.requests_to("POST", "/channels/caller-5/variable")


async def test_deadlines_come_from_the_injected_clock(fake):
    fake.model.channels["caller-6"] = make_channel("caller-6")
    now = [1000.0]
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(ari, Channel(id="caller-6"), plan("PJSIP/a"), clock=lambda: now[0])
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels/caller-6/ring")) == 1)
        leg = fake.requests_to("POST", "/channels")[0].params["channelId"]
        now[0] += 25.0  # past the leg's 20 s; the event wakes the driver to see it
        await fake.send_event(
            make_event(
                "Dial",
                caller=make_channel("caller-6"),
                peer=make_channel(leg, state="Ringing"),
                dialstatus="RINGING",
            )
        )
        await asyncio.wait_for(task, 3)
        assert driver.flow.result.value == "NOANSWER"
        assert driver.flow.legs[leg].end.value == "timeout"
        assert fake.requests_to("DELETE", f"/channels/{leg}")


def forwarding_plan(kind: str, timeout: float = 20.0) -> RingPlan:
    legs = (Leg("PJSIP/anna", 0.0, timeout, LegSource.FOLLOWME),)
    hop = ForwardHop("201", kind, "202", "admin")
    return RingPlan("201", "Anna", None, PlanStatus.OK, legs, forward_on=(hop,))


def boris_plan(hop: ForwardHop, previous: RingPlan) -> RingPlan:
    legs = (Leg("PJSIP/boris", 0.0, 0.3, LegSource.FOLLOWME),)
    return RingPlan("202", "Boris", None, PlanStatus.OK, legs, forwarded=(*previous.forwarded, hop))


def boris_noting(asked: list[ForwardHop]) -> Callable[[ForwardHop, RingPlan], RingPlan]:
    """``boris_plan``, noting in ``asked`` each hop the driver followed."""

    def next_plan(hop: ForwardHop, previous: RingPlan) -> RingPlan:
        asked.append(hop)
        return boris_plan(hop, previous)

    return next_plan


async def test_a_busy_plan_forwards_to_the_next_plan_which_is_bridged_when_it_answers(fake):
    fake.model.channels["caller-f1"] = make_channel("caller-f1")
    asked: list[ForwardHop] = []
    next_plan = boris_noting(asked)

    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(
            ari, Channel(id="caller-f1"), forwarding_plan("busy"), next_plan=next_plan
        )
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 1)
        anna = fake.requests_to("POST", "/channels")[0].params
        assert anna["endpoint"] == "PJSIP/anna"
        await fake.send_event(
            make_event("ChannelDestroyed", cause=17, channel=make_channel(anna["channelId"]))
        )
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 2)
        boris = fake.requests_to("POST", "/channels")[1].params
        assert boris["endpoint"] == "PJSIP/boris" and boris["originator"] == "caller-f1"
        assert asked == [ForwardHop("201", "busy", "202", "admin")]
        assert driver.plan.extension == "202" and len(driver.flows) == 2
        # The caller was told ringing once; nothing sent it to the dialplan.
        assert len(fake.requests_to("POST", "/channels/caller-f1/ring")) == 1
        assert not fake.requests_to("POST", "/channels/caller-f1/continue")
        await fake.send_event(
            make_event("StasisStart", args=["leg"], channel=make_channel(boris["channelId"]))
        )
        await wait_for(lambda: any(r.path.endswith("/addChannel") for r in fake.requests))
        add = next(r for r in fake.requests if r.path.endswith("/addChannel"))
        assert add.params["channel"] == f"caller-f1,{boris['channelId']}"
        await fake.send_event(make_event("ChannelDestroyed", channel=make_channel("caller-f1")))
        await asyncio.wait_for(task, 3)
        assert driver.flow.result is not None and driver.flow.result.value == "ANSWERED"


async def test_an_unanswered_plan_forwards_after_its_time_and_the_last_one_reaches_the_dialplan(
    fake,
):
    fake.model.channels["caller-f2"] = make_channel("caller-f2")
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(
            ari, Channel(id="caller-f2"), forwarding_plan("no_answer", 0.3), next_plan=boris_plan
        )
        await asyncio.wait_for(driver.run(), 5)
        originated = fake.requests_to("POST", "/channels")
        assert [r.params["endpoint"] for r in originated] == ["PJSIP/anna", "PJSIP/boris"]
        anna = originated[0].params["channelId"]
        # Anna's phone stopped ringing before Boris's started.
        order = [(r.method, r.path) for r in fake.requests]
        assert order.index(("DELETE", f"/channels/{anna}")) < order.index(("POST", "/channels"), 1)
        # Boris's plan has no forwarding: the call reaches the dialplan as his.
        var = fake.requests_to("POST", "/channels/caller-f2/variable")[0]
        assert var.params == {"variable": "CALLROUTER_RESULT", "value": "NOANSWER"}
        cont = fake.requests_to("POST", "/channels/caller-f2/continue")[0]
        assert cont.params["extension"] == "202"
        assert [f.result.value for f in driver.flows if f.result] == ["NOANSWER", "NOANSWER"]


async def anna_stopped(
    fake: FakeAri, ari: AriClient, caller_id: str
) -> tuple[CallDriver, asyncio.Future[None], str]:
    """A call whose first plan (Anna) ran out and forwards to Boris: its driver, its
    task, and Anna's leg, whose hang-up the driver just sent."""
    fake.model.channels[caller_id] = make_channel(caller_id)
    driver = CallDriver(
        ari, Channel(id=caller_id), forwarding_plan("no_answer", 0.2), next_plan=boris_plan
    )
    task = asyncio.ensure_future(driver.run())
    await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 1)
    anna = fake.requests_to("POST", "/channels")[0].params["channelId"]
    await wait_for(lambda: fake.requests_to("DELETE", f"/channels/{anna}"))
    return driver, task, anna


async def test_the_next_plan_rings_once_the_phones_before_are_gone_or_after_a_bound(fake):
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver, task, anna = await anna_stopped(fake, ari, "caller-f4")
        # Asterisk hangs Anna's channel up after the DELETE: Boris waits for it.
        await asyncio.sleep(0.2)
        assert len(fake.requests_to("POST", "/channels")) == 1
        await fake.send_event(make_event("ChannelDestroyed", cause=16, channel=make_channel(anna)))
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 2)
        assert driver.flows[0].legs[anna].channel is LegChannel.GONE
        assert driver.flows[0].legs[anna].end is LegEnd.TIMEOUT  # stopped, not failed
        # Boris's channel never reports gone: the dialplan gets the call all the same,
        # the wait bounded.
        await asyncio.wait_for(task, 3)
        assert fake.requests_to("POST", "/channels/caller-f4/continue")


async def test_a_caller_who_hangs_up_during_the_handover_rings_nobody_more(fake):
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        _, task, _ = await anna_stopped(fake, ari, "caller-f5")
        await fake.send_event(make_event("ChannelDestroyed", channel=make_channel("caller-f5")))
        await asyncio.wait_for(task, 3)
        assert len(fake.requests_to("POST", "/channels")) == 1  # Boris never rang
        assert not fake.requests_to("POST", "/channels/caller-f5/continue")


async def test_a_plan_no_phone_of_which_can_be_reached_forwards_on_unreachable_first(fake):
    fake.model.channels["caller-f3"] = make_channel("caller-f3")
    plan = replace(
        forwarding_plan("no_answer"),
        forward_on=(
            ForwardHop("201", "no_answer", "203", "admin"),
            ForwardHop("201", "unreachable", "202", "admin"),
        ),
    )
    asked: list[ForwardHop] = []
    next_plan = boris_noting(asked)

    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(ari, Channel(id="caller-f3"), plan, next_plan=next_plan)
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 1)
        anna = fake.requests_to("POST", "/channels")[0].params["channelId"]
        # Subscriber absent (an unregistered contact), long before the plan's 20 s.
        await fake.send_event(make_event("ChannelDestroyed", cause=20, channel=make_channel(anna)))
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 2)
        assert asked == [ForwardHop("201", "unreachable", "202", "admin")]
        assert driver.flows[0].legs[anna].end is LegEnd.UNREACHABLE
        assert not fake.requests_to("POST", "/channels/caller-f3/continue")
        await asyncio.wait_for(task, 5)  # Boris does not answer: the dialplan, as his
        cont = fake.requests_to("POST", "/channels/caller-f3/continue")[0]
        assert cont.params["extension"] == "202"


def confirm_plan() -> RingPlan:
    legs = (
        Leg("PJSIP/desk", 0.0, 20.0, LegSource.FOLLOWME),
        Leg("PJSIP/+491701@trunk", 0.0, 20.0, LegSource.FOLLOWME, confirm=True),
    )
    return RingPlan("201", "Alice", None, PlanStatus.OK, legs)


async def test_a_confirm_leg_hears_the_prompt_and_is_bridged_after_pressing_1(fake):
    fake.model.channels["caller-7"] = make_channel("caller-7")
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(ari, Channel(id="caller-7"), confirm_plan(), confirm_prompt="my/ask")
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 2)
        desk, mobile = (r.params["channelId"] for r in fake.requests_to("POST", "/channels"))
        await fake.send_event(
            make_event("StasisStart", args=["leg"], channel=make_channel(mobile, state="Up"))
        )
        await wait_for(lambda: fake.requests_to("POST", f"/channels/{mobile}/play"))
        (play,) = fake.requests_to("POST", f"/channels/{mobile}/play")
        assert play.params["media"] == "sound:my/ask,sound:silence/2,sound:my/ask"
        playback = play.params["playbackId"]
        # Answered, but not the call's yet: nobody is bridged or cancelled.
        assert not fake.requests_to("POST", "/bridges")
        assert not fake.requests_to("DELETE", f"/channels/{desk}")
        assert not fake.requests_to("POST", "/channels/caller-7/answer")
        await fake.send_event(
            make_event("ChannelDtmfReceived", digit="1", channel=make_channel(mobile, state="Up"))
        )
        await wait_for(lambda: any(r.path.endswith("/addChannel") for r in fake.requests))
        # The prompt stopped before the bridge (Asterisk would run it to its end first).
        paths = [(r.method, r.path) for r in fake.requests]
        stop = paths.index(("DELETE", f"/playbacks/{playback}"))
        assert stop < next(i for i, (_, p) in enumerate(paths) if p.endswith("/addChannel"))
        add = next(r for r in fake.requests if r.path.endswith("/addChannel"))
        assert add.params["channel"] == f"caller-7,{mobile}"
        assert fake.requests_to("DELETE", f"/channels/{desk}")  # the desk phone stops
        await fake.send_event(
            make_event("ChannelDestroyed", cause=16, channel=make_channel(mobile))
        )
        await asyncio.wait_for(task, 3)
        assert driver.flow.result.value == "ANSWERED"
        assert driver.flow.winner is driver.flow.legs[mobile]


async def test_a_confirm_leg_that_does_not_press_1_in_time_is_hung_up_and_the_rest_ring_on(fake):
    fake.model.channels["caller-8"] = make_channel("caller-8")
    now = [1000.0]
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        await ari.wait_connected(3)
        driver = CallDriver(
            ari, Channel(id="caller-8"), confirm_plan(), clock=lambda: now[0], confirm_timeout=5
        )
        task = asyncio.ensure_future(driver.run())
        await wait_for(lambda: len(fake.requests_to("POST", "/channels")) == 2)
        desk, mobile = (r.params["channelId"] for r in fake.requests_to("POST", "/channels"))
        up = make_channel(mobile, state="Up")
        await fake.send_event(make_event("StasisStart", args=["leg"], channel=up))
        await wait_for(lambda: fake.requests_to("POST", f"/channels/{mobile}/play"))
        now[0] += 4.0  # within its 5 s: a digit that is not 1 changes nothing
        await fake.send_event(make_event("ChannelDtmfReceived", digit="5", channel=up))
        now[0] += 2.0  # past its 5 s; the next event wakes the driver to see it
        await fake.send_event(make_event("ChannelDtmfReceived", digit="1", channel=up))
        await wait_for(lambda: fake.requests_to("DELETE", f"/channels/{mobile}"))
        assert not fake.requests_to("POST", "/bridges")
        assert not fake.requests_to("DELETE", f"/channels/{desk}")  # rings on
        assert driver.flow.legs[mobile].end.value == "unconfirmed"
        await fake.send_event(
            make_event("StasisStart", args=["leg"], channel=make_channel(desk, state="Up"))
        )
        await wait_for(lambda: any(r.path.endswith("/addChannel") for r in fake.requests))
        add = next(r for r in fake.requests if r.path.endswith("/addChannel"))
        assert add.params["channel"] == f"caller-8,{desk}"
        # The dropped leg's prompt ended with its channel; the desk phone had none.
        assert not [r for r in fake.requests if r.path.startswith("/playbacks")]
        await fake.send_event(make_event("ChannelDestroyed", cause=16, channel=make_channel(desk)))
        await asyncio.wait_for(task, 3)
        assert driver.flow.result.value == "ANSWERED"


async def test_the_intake_gives_each_call_the_rules_confirm_prompt_and_time(fake):
    snapshot = DirectorySnapshot(users={"201": User("201", "Alice", phones=("PJSIP/a",))})
    rules = RingRules.model_validate(
        {
            "defaults": {"confirm_prompt": "custom/press-1", "confirm_timeout": 4},
            "users": {"201": {"followme": [{"ring": ["PJSIP/a"], "confirm": True}]}},
        }
    )
    async with AriClient(fake.base_url, fake.user, PW, fake.app) as ari:
        intake = CallIntake(ari, lambda: (snapshot, rules))
        ari.on_event = intake.on_event
        await ari.wait_connected(3)
        fake.model.channels["caller-9"] = make_channel("caller-9")
        await fake.send_event(
            make_event("StasisStart", args=["201"], channel=make_channel("caller-9"))
        )
        await wait_for(lambda: fake.requests_to("POST", "/channels"))
        leg = fake.requests_to("POST", "/channels")[0].params["channelId"]
        await fake.send_event(
            make_event("StasisStart", args=["leg"], channel=make_channel(leg, state="Up"))
        )
        await wait_for(lambda: fake.requests_to("POST", f"/channels/{leg}/play"))
        (play,) = fake.requests_to("POST", f"/channels/{leg}/play")
        assert play.params["media"].startswith("sound:custom/press-1,")
        assert intake.calls["caller-9"].flow.confirm_timeout == 4
        await fake.send_event(make_event("StasisEnd", channel=make_channel("caller-9")))
        await wait_for(lambda: not intake.calls)
        assert fake.requests_to("DELETE", f"/channels/{leg}")
        await intake.stop(0.5)
