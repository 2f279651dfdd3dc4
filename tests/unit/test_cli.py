"""The callrouter command line, run in-process on a temporary SQLite directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from callrouter.cli.main import main
from tests.fakes.fake_router_api import FakeRouterApi

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    db = f"sqlite:///{tmp_path}/cli.db"

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, ["--db", db, "--rules", str(EXAMPLES / "rules.yaml"), *args])
        return result.exit_code, result.stdout, result.stderr

    return run


def test_outdated_schema_is_refused_with_the_fix(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("plan", "201")
    assert code == 1
    assert "callrouter db upgrade" in err


def test_import_plan_export_round_trip(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    code, out, _ = cli("directory", "import", str(EXAMPLES / "directory.yaml"))
    assert code == 0, out
    code, out, _ = cli("plan", "201", "--json")
    assert code == 0
    plan = json.loads(out)
    assert set(plan) == {
        "extension", "user", "workplace", "status", "legs", "unreachable", "skipped", "elsewhere",
        "warnings", "forwarded", "forward_on", "then",
    }  # fmt: skip
    assert plan["extension"] == "201" and plan["status"] == "ok"
    assert plan["legs"] == sorted(plan["legs"], key=lambda leg: (leg["start"], leg["endpoint"]))
    assert {
        "endpoint": "PJSIP/anna-desk",
        "start": 0,
        "stop": 15,
        "source": "followme",
        "confirm": False,
    } in plan["legs"]
    code, out, _ = cli("plan", "201")
    assert "PJSIP/anna-desk" in out and "followme" in out
    code, out, _ = cli("plan", "9999", "--json")
    assert json.loads(out)["status"] == "unknown-extension"

    exported = tmp_path / "exported.yaml"
    assert cli("directory", "export", "-o", str(exported))[0] == 0
    assert "4711" not in exported.read_text()  # PINs leave only as hashes
    code, out, _ = cli("directory", "import", str(exported))
    assert code == 0
    assert "no changes" in out  # the export round-trips exactly
    assert cli("rules", "check", str(EXAMPLES / "rules.yaml"))[0] == 0


def test_rules_check_reports_every_error_and_exits_1(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "defaults:\n  timeout: 0\nusers:\n  '201':\n    followme:\n"
        "      - ring: ['PJSIP/a&b']\n        colour: red\n"
    )
    code, _, err = cli("rules", "check", str(bad))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith(f"{bad}:2:")
    assert "'&'" in err and "colour" in err


THREE_ERRORS = (
    "users:\n"
    "  '201':\n"
    "    followme:\n"
    "      - ring: [PJSIP/anna-desk, PJSIP/boris-desk]\n"
    "    colour: red\n"
    "workplaces:\n"
    "  office-9:\n"
    "    ring:\n"
    "      - ring: [PJSIP/office1-desk]\n"
)


def test_rules_check_reports_shape_and_directory_errors_in_one_run(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    bad = tmp_path / "rules.yaml"
    bad.write_text(THREE_ERRORS)
    code, out, err = cli("rules", "check", str(bad))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f'{bad}:4:33: users."201".followme[0].ring[1]: PJSIP/boris-desk belongs to user 202 '
        "(Boris Chen), not to user 201",
        f'{bad}:5:5: users."201".colour: unknown key; allowed here: followme, call_waiting, '
        "forward, user_forwarding, picked_up_by",
        f"{bad}:7:3: workplaces.office-9: no workplace has the id office-9",
    ]


def test_rules_check_reports_yaml_shape_and_directory_errors_in_one_run(
    cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    bad = tmp_path / "rules.yaml"
    bad.write_text(THREE_ERRORS + "  office-9: {}\n")
    code, out, err = cli("rules", "check", str(bad))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f'{bad}:4:33: users."201".followme[0].ring[1]: PJSIP/boris-desk belongs to user 202 '
        "(Boris Chen), not to user 201",
        f'{bad}:5:5: users."201".colour: unknown key; allowed here: followme, call_waiting, '
        "forward, user_forwarding, picked_up_by",
        f"{bad}:7:3: workplaces.office-9: no workplace has the id office-9",
        f"{bad}:10:3: workplaces.office-9: duplicate key: already given at line 7, column 3; "
        "YAML would silently keep only the last",
    ]


def test_rules_check_with_only_directory_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text(THREE_ERRORS.replace("    colour: red\n", ""))
    code, out, err = cli("rules", "check", str(rules))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f'{rules}:4:33: users."201".followme[0].ring[1]: PJSIP/boris-desk belongs to user 202 '
        "(Boris Chen), not to user 201",
        f"{rules}:6:3: workplaces.office-9: no workplace has the id office-9",
    ]
    rules.write_text("users:\n  '201':\n    followme:\n      - ring: [PJSIP/anna-desk]\n")
    assert cli("rules", "check", str(rules)) == (0, f"{rules}: valid\n", "")


def test_rules_check_without_a_usable_directory(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "rules.yaml"
    bad.write_text(THREE_ERRORS)
    # No schema in the database: the file's own errors, then (once it is valid) the fix.
    code, _, err = cli("rules", "check", str(bad))
    assert code == 1
    assert err.splitlines() == [
        f'{bad}:5:5: users."201".colour: unknown key; allowed here: followme, call_waiting, '
        "forward, user_forwarding, picked_up_by"
    ]
    code, _, err = cli("rules", "check", str(EXAMPLES / "rules.yaml"))
    assert code == 1 and "callrouter db upgrade" in err


def test_bad_caller_endpoint_is_rejected(cli) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    code, _, err = cli("plan", "201", "--caller", "PJSIP/x,y")
    assert code == 2 and "','" in err


def test_admin_logs_users_in_and_out(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    code, out, _ = cli("login", "205", "hotdesk-2")
    assert code == 0 and out.startswith("205 logged in at hotdesk-2"), out
    code, out, _ = cli("logins")
    assert "hotdesk-2\t205\t" in out
    # Interns may use hot desks only: refused, with the reason, exit status 1.
    code, _, err = cli("login", "206", "office-2")
    assert code == 1 and "does not allow workplace office-2" in err
    # Occupied: refused on request, else the one there moves out.
    code, _, err = cli("login", "204", "hotdesk-2", "--occupied", "refuse")
    assert code == 1 and "occupied by 205" in err
    code, out, _ = cli("login", "204", "hotdesk-2")
    assert code == 0 and "205 was logged out of hotdesk-2" in out
    code, out, _ = cli("logout", "204")
    assert code == 0 and out.strip() == "204 logged out of hotdesk-2"
    code, out, _ = cli("logout", "204")
    assert out.strip() == "204 was not logged in"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("login", "2x1", "office-1"), "is not an extension"),
        (("login", "999", "office-1"), "999"),
        (("login", "201", "nowhere"), "nowhere"),
        (("logout", "999"), "999"),
    ],
)
def test_login_mistakes_are_named(cli, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    code, _, err = cli(*args)
    assert code != 0 and message in err, err


def _router_answering(devices: dict[str, str], client: str) -> FakeRouterApi:
    """The two API answers `plan` asks a running router for."""
    return FakeRouterApi(
        {
            "/api/v1/devices": (200, devices),
            "/api/v1/presence/201": (200, {"extension": "201", "client": client}),
        }
    )


def test_plan_applies_live_presence_from_the_router(cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    monkeypatch.setenv("CALLROUTER_API_ADMIN_TOKEN", "admin-token-0123456789")
    api = _router_answering(
        {"PJSIP/anna-desk": "UNAVAILABLE", "PJSIP/anna-soft": "NOT_INUSE"}, "online"
    )
    try:
        code, out, _ = cli("plan", "201", "--json", "--router", api.url)
        assert code == 0
        plan = json.loads(out)
        assert plan["unreachable"] == ["PJSIP/anna-desk"]
        assert "PJSIP/anna-desk" not in {leg["endpoint"] for leg in plan["legs"]}
        assert api.seen_tokens[0] == "Bearer admin-token-0123456789"
        # The rule alone:
        code, out, _ = cli("plan", "201", "--json", "--ignore-presence", "--router", api.url)
        assert code == 0
        assert "PJSIP/anna-desk" in {leg["endpoint"] for leg in json.loads(out)["legs"]}
    finally:
        api.close()
    dnd = _router_answering({}, "dnd")
    try:
        _code, out, _ = cli("plan", "201", "--router", dnd.url)
        assert "do not disturb" in out and "(dnd)" in out
    finally:
        dnd.close()


def test_plan_without_a_router_says_presence_is_not_applied(cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    monkeypatch.setenv("CALLROUTER_API_ADMIN_TOKEN", "admin-token-0123456789")
    code, out, err = cli("plan", "201", "--router", "http://127.0.0.1:9")
    assert code == 0 and "PJSIP/anna-desk" in out
    assert "presence not applied (no router at http://127.0.0.1:9" in err
    monkeypatch.delenv("CALLROUTER_API_ADMIN_TOKEN")
    code, out, err = cli("plan", "201")
    assert "CALLROUTER_API_ADMIN_TOKEN is not set" in err


def test_plan_at_a_time_and_for_an_external_call(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    mobile = "PJSIP/+4917055555555@trunk"
    # The example's Boris: his mobile only for external calls outside office hours.
    evening = ("--ignore-presence", "--at", "2026-12-02 19:00")
    code, out, _ = cli("plan", "202", *evening, "--external")
    assert code == 0 and mobile in out and "PJSIP/boris-desk" in out
    code, out, _ = cli("plan", "202", *evening, "--caller", "PJSIP/anna-desk")  # internal
    assert code == 0 and mobile not in out
    assert "does not apply: user 202 followme[1]: external calls only" in out
    code, out, _ = cli("plan", "202", "--ignore-presence", "--at", "2026-12-02 10:00", "--external")
    assert code == 0 and mobile not in out
    assert "unless office-hours: in the schedule at Wed 10:00" in out
    code, out, _ = cli("plan", "202", "--ignore-presence", "--at", "2026-12-24 10:00", "--external")
    assert code == 0 and mobile in out  # a day off
    code, _, err = cli("plan", "202", "--at", "tomorrow")
    assert code != 0 and "'tomorrow' is not a local time" in err


def test_plan_shows_where_an_unanswered_call_is_forwarded(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")[0] == 0
    assert cli("directory", "import", str(EXAMPLES / "directory.yaml"))[0] == 0
    assert cli("login", "205", "office-2")[0] == 0
    code, out, _ = cli("plan", "205", "--ignore-presence")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "Extension 205: Emma Fischer, logged in at office-2"
    assert "  When busy:" in lines and "  When nobody answers (after 20 s):" in lines
    after = lines[lines.index("  When nobody answers (after 20 s):") + 1 :]
    assert after[0] == "    205 forwards no answer to 210 (rules)"
    assert after[1].startswith("    Extension 210: Reception")
    code, out, _ = cli("plan", "205", "--ignore-presence", "--json")
    then = json.loads(out)["then"]
    assert then["no_answer"]["extension"] == "210"
    assert then["no_answer"]["forwarded"] == [
        {"from": "205", "kind": "no_answer", "to": "210", "set_by": "admin"}
    ]
