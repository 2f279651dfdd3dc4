"""The sandbox's configuration for two Asterisks sharing device states (pure parts)."""

from __future__ import annotations

import pytest

from sandbox.asterisk import (
    NODES_EXAMPLE,
    AsteriskSandbox,
    SandboxError,
    link_nodes,
    node_conf,
    uncomment_option,
)


def test_the_example_is_rendered_with_names_and_loopback_ports() -> None:
    conf = node_conf("east", 12001, "west", 12002)
    assert "[west]\ntype = endpoint" in conf
    assert "[west]\ntype = inbound-publication\nendpoint = west\n" in conf
    assert "event_asterisk-devicestate = west-states" in conf
    assert "[east-to-west]\ntype = outbound-publish" in conf
    assert "server_uri = sip:east@127.0.0.1:12002" in conf
    assert "from_uri = sip:east@127.0.0.1:12001" in conf
    assert "devicestate_publish = east-to-west" in conf
    for left in ("node-a", "node-b", "192.0.2."):
        assert left not in conf
    # The example's own names swap cleanly too (one pass, no double replacement).
    swapped = node_conf("node-b", 5, "node-a", 6)
    assert "[node-b-to-node-a]" in swapped and "[node-a-states]" in swapped


@pytest.mark.parametrize(
    ("first", "second"), [("east", "east"), ("ea st", "west"), ("east", "we;st")]
)
def test_bad_node_names_are_refused(first: str, second: str) -> None:
    with pytest.raises(ValueError):
        node_conf(first, 1, second, 2)


def test_the_example_is_what_admins_read() -> None:
    lines = NODES_EXAMPLE.read_text(encoding="utf-8").splitlines()
    # Only phones go either way: each router's Custom:user-EXT states stay home.
    assert "@device_state_filter = ^PJSIP/" in lines  # what we send
    assert "device_state_filter = ^PJSIP/" in lines  # what we accept


def test_a_commented_option_is_set_in_its_section_only() -> None:
    text = "[a]\n;entityid = 1\n[options]\nverbose = 3\n;entityid = 02:00:00:00:00:0a\n"
    assert uncomment_option(text, "options", "entityid", "02:00:01:02:03:04") == (
        "[a]\n;entityid = 1\n[options]\nverbose = 3\nentityid = 02:00:01:02:03:04\n"
    )
    with pytest.raises(SandboxError, match="no ';missing'"):
        uncomment_option(text, "options", "missing", "x")


def test_linked_sandboxes_keep_their_ports_and_have_their_own_entity_ids() -> None:
    first, second = AsteriskSandbox(), AsteriskSandbox()
    assert first.entity_id != second.entity_id
    link_nodes(first, "east", second, "west")
    for sandbox in (first, second):
        ports = sandbox.ports
        assert sandbox._fixed_ports == (ports.http, ports.ami, ports.sip)
