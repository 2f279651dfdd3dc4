"""The ``callrouter`` command line.

Every command takes the global ``--db`` and ``--rules``; errors an admin can fix are
printed as one clear message per problem (``FILE:LINE:COLUMN: message``) with exit
status 1, never as a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import yaml
from click.core import ParameterSource

from callrouter.config import DEFAULT_DB, DEFAULT_RULES

P = ParamSpec("P")
T = TypeVar("T")


class Failure(click.ClickException):
    """An error for the admin: printed without a traceback, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


def admin_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Turn the errors an admin can act on into clean messages."""
    from callrouter.directory.database import DatabaseError
    from callrouter.directory.errors import DirectoryError
    from callrouter.yamlfile import YamlFileError

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except YamlFileError as exc:
            raise Failure(str(exc)) from None
        except (DatabaseError, DirectoryError) as exc:
            raise Failure(f"error: {exc}") from None
        except FileNotFoundError as exc:
            raise Failure(f"error: {exc.filename}: no such file") from None

    return wrapper


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="CALLROUTER_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="Directory database URL (env CALLROUTER_DB).",
)
@click.option(
    "--rules",
    "rules_path",
    envvar="CALLROUTER_RULES",
    default=DEFAULT_RULES,
    show_default=True,
    type=click.Path(path_type=Path),
    help="Ring rules file (env CALLROUTER_RULES).",
)
@click.version_option(package_name="callrouter")
@click.pass_context
def main(ctx: click.Context, db: str, rules_path: Path) -> None:
    """Routes calls to people, not phones: a call router beside Asterisk."""
    ctx.obj = {
        "db": db,
        "rules": rules_path,
        "db_given": ctx.get_parameter_source("db") is not ParameterSource.DEFAULT,
        "rules_given": ctx.get_parameter_source("rules_path") is not ParameterSource.DEFAULT,
    }


# --- db -------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The directory database's schema."""


@db.command("upgrade")
@click.pass_obj
@admin_errors
def db_upgrade(obj: dict[str, Any]) -> None:
    """Create the database, or upgrade it to this version's schema."""
    from callrouter.directory.database import upgrade

    before, after = run(upgrade(obj["db"]))
    if before == after:
        click.echo(f"database is up to date (revision {after})")
    else:
        click.echo(f"database upgraded from {before or 'nothing'} to revision {after}")


# --- directory --------------------------------------------------------------------------


@main.group()
def directory() -> None:
    """Users, phones, workplaces, roles and logins."""


@directory.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--prune", is_flag=True, help="Delete what the file no longer names.")
@click.pass_obj
@admin_errors
def directory_import(obj: dict[str, Any], file: Path, prune: bool) -> None:
    """Load FILE into the directory (all or nothing; importing twice changes nothing)."""
    from callrouter.directory.importer import import_document
    from callrouter.directory.loader import load_document

    document = load_document(file)

    async def go() -> Any:
        engine = await _open_database(obj["db"])
        try:
            return await import_document(engine, document, prune=prune, actor="cli:import")
        finally:
            await engine.dispose()

    report = run(go())
    click.echo(f"imported {file}: {report}")


@directory.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here instead of standard output.",
)
@click.pass_obj
@admin_errors
def directory_export(obj: dict[str, Any], output: Path | None) -> None:
    """Write the directory in the import format."""
    from callrouter.directory.export import export_document

    async def go() -> Any:
        engine = await _open_database(obj["db"])
        try:
            return await export_document(engine)
        finally:
            await engine.dispose()

    text = dump_document(run(go()))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


def dump_document(document: Any) -> str:
    data = document.model_dump(mode="json", exclude_none=True)
    for user in data.get("users", []):
        if not user.get("phones"):
            user.pop("phones", None)
    for workplace in data.get("workplaces", []):
        if not workplace.get("phones"):
            workplace.pop("phones", None)
    data = {k: v for k, v in data.items() if v not in ([], {}, None)}
    return yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100
    )


# --- rules ------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """Ring rules (YAML)."""


@rules.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
@admin_errors
def rules_check(obj: dict[str, Any], file: Path | None) -> None:
    """Check a rules file (default: --rules) and, where the database exists, check it
    against the directory: every problem as FILE:LINE:COLUMN: message."""
    from callrouter.directory.database import DatabaseError
    from callrouter.rules.loader import load_rules

    path = file or obj["rules"]
    if not obj["db_given"] and not _sqlite_file_exists(obj["db"]):
        load_rules(path)
        click.echo(
            f"{path}: valid (no directory at {obj['db']}: phones and workplaces "
            "not checked; pass --db)",
            err=True,
        )
        return
    try:
        snapshot = run(_load_snapshot(obj["db"]))
    except DatabaseError:
        # No directory to check against: the file's own errors first, as without one;
        # a valid file then fails with the database's error.
        load_rules(path)
        raise
    # The file's errors and the directory's together, in one run.
    load_rules(path, snapshot)
    click.echo(f"{path}: valid")


# --- plan -------------------------------------------------------------------------------


def _router_option(help_text: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """``--router URL``: the running router's HTTP API (plan, status)."""
    return click.option(
        "--router",
        "router_url",
        envvar="CALLROUTER_ROUTER_URL",
        default="http://127.0.0.1:8090",
        show_default=True,
        help=help_text,
    )


@main.command()
@click.argument("extension")
@click.option("--caller", help="The calling endpoint, which is never rung.")
@click.option(
    "--node",
    envvar="CALLROUTER_NODE",
    help="Plan as the router of this node would (phones of other nodes left out).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--ignore-presence",
    is_flag=True,
    help="Show the rule alone, as if every phone were free and reachable.",
)
@click.option(
    "--external",
    is_flag=True,
    help="As for an external call (default: internal when --caller is a directory phone).",
)
@click.option(
    "--at",
    "at_text",
    metavar='"YYYY-MM-DD HH:MM"',
    help="As at this local time, for schedules (when:/unless:); default: now, in "
    "CALLROUTER_TIMEZONE or the machine's zone.",
)
@_router_option(
    "The running router's HTTP API, for live presence "
    "(admin token from CALLROUTER_API_ADMIN_TOKEN)."
)
@click.pass_obj
@admin_errors
def plan(
    obj: dict[str, Any],
    extension: str,
    caller: str | None,
    node: str | None,
    as_json: bool,
    ignore_presence: bool,
    external: bool,
    at_text: str | None,
    router_url: str,
) -> None:
    """Show which phone would ring when if EXTENSION were called now.

    Presence (unreachable phones, do-not-disturb, busy) comes from the running
    router; without one, or with --ignore-presence, the rule alone is shown.
    """
    from callrouter.domain.endpoint import endpoint_problem
    from callrouter.domain.identifiers import node_problem
    from callrouter.routing.chain import plan_tree
    from callrouter.routing.plan import CallContext
    from callrouter.routing.resolver import resolve_plan
    from callrouter.routing.timeline import format_tree
    from callrouter.rules.loader import load_rules
    from callrouter.rules.model import EMPTY_RULES

    if caller is not None and (problem := endpoint_problem(caller)) is not None:
        raise click.BadParameter(problem, param_hint="--caller")
    if node is not None and (problem := node_problem(node)) is not None:
        raise click.BadParameter(problem, param_hint="--node")
    rules_path: Path = obj["rules"]
    if rules_path.exists() or obj["rules_given"]:
        ring_rules = load_rules(rules_path)
    else:
        click.echo(f"note: no rules file at {rules_path}: every phone rings at once", err=True)
        ring_rules = EMPTY_RULES
    snapshot = run(_load_snapshot(obj["db"]))
    presence = None
    if not ignore_presence:
        presence, why_not = _live_presence(snapshot, extension, router_url)
        if presence is None:
            click.echo(f"note: presence not applied ({why_not}); showing the rule alone", err=True)
    internal = not external and (caller is None or snapshot.is_phone(caller))
    context = CallContext(internal=internal, at=_local_time(at_text))
    result = resolve_plan(
        snapshot, ring_rules, extension, caller, presence=presence, call=context, node=node
    )
    tree = plan_tree(snapshot, ring_rules, result, caller, presence, context, node)
    if as_json:
        click.echo(json.dumps(tree.to_json()))
    else:
        click.echo(format_tree(tree), nl=False)
    for warning in result.warnings if as_json else ():
        click.echo(f"warning: {warning}", err=True)


def _local_time(text: str | None) -> datetime:
    """``--at`` (or now) in the router's zone: CALLROUTER_TIMEZONE or the machine's."""
    import os
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from callrouter.routing.plan import parse_local_time

    name = os.environ.get("CALLROUTER_TIMEZONE")
    try:
        zone = ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(
            f"unknown time zone {name!r}", param_hint="CALLROUTER_TIMEZONE"
        ) from None
    if text is None:
        return datetime.now(zone).astimezone(zone)
    try:
        return parse_local_time(text, zone)
    except ValueError as exc:
        raise click.BadParameter(f"{text[:40]!r} is {exc}", param_hint="--at") from None


def _live_presence(snapshot: Any, extension: str, router_url: str) -> tuple[Any, str]:
    """A PresenceTracker filled from the running router's API, or (None, why not)."""
    import os

    import httpx

    from callrouter.domain.presence import ClientStatus, DeviceState
    from callrouter.presence.tracker import PresenceTracker

    token = os.environ.get("CALLROUTER_API_ADMIN_TOKEN")
    if not token:
        return None, "CALLROUTER_API_ADMIN_TOKEN is not set"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=router_url, headers=headers, timeout=3.0) as api:
            devices = api.get("/api/v1/devices")
            devices.raise_for_status()
            user = api.get(f"/api/v1/presence/{extension}")
    except httpx.HTTPStatusError as exc:
        return None, f"the router at {router_url} answered {exc.response.status_code}"
    except httpx.HTTPError as exc:
        return None, f"no router at {router_url}: {exc.__class__.__name__}"
    tracker = PresenceTracker(snapshot)
    tracker.replace_devices({e: DeviceState.parse(s) for e, s in devices.json().items()})
    if user.status_code == 200:
        status = ClientStatus(user.json()["client"])
        if status is not ClientStatus.OFFLINE:
            tracker.set_client(extension, "router", status)
    return tracker, ""


# --- status -----------------------------------------------------------------------------

STATUS_READY, STATUS_NOT_READY, STATUS_UNREACHABLE = 0, 1, 2


@main.command()
@_router_option("The running router's HTTP API.")
@click.option("--json", "as_json", is_flag=True, help="Print the router's answer as JSON.")
def status(router_url: str, as_json: bool) -> None:
    """Ask the running router whether it can route calls now.

    Exit status 0 when it is ready, 1 when it is not (the reasons are printed),
    2 when it cannot be reached.
    """
    import httpx

    try:
        with httpx.Client(base_url=router_url, timeout=3.0) as api:
            reply = api.get("/api/v1/health/ready")
        state = reply.json() if reply.status_code in (200, 503) else None
    except httpx.HTTPError as exc:
        click.echo(f"error: no router at {router_url}: {exc.__class__.__name__}: {exc}", err=True)
        sys.exit(STATUS_UNREACHABLE)
    except ValueError:  # not JSON: not a router's answer
        state = None
    if not isinstance(state, dict) or "ready" not in state:
        click.echo(
            f"error: {router_url} did not answer as a router does "
            f"(GET /api/v1/health/ready: {reply.status_code})",
            err=True,
        )
        sys.exit(STATUS_UNREACHABLE)
    if as_json:
        click.echo(json.dumps(state, indent=2))
    else:
        click.echo(_format_status(router_url, state), nl=False)
    sys.exit(STATUS_READY if state["ready"] else STATUS_NOT_READY)


def _since(when: object) -> str:
    if not isinstance(when, int | float):
        return ""
    return " since " + datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_status(router_url: str, state: dict[str, Any]) -> str:
    def connected(flag: object) -> str:
        return "connected" if flag else "NOT connected"

    checked = state.get("snapshot_checked_seconds_ago")
    database = "reachable" if state.get("database_reachable") else "UNREACHABLE"
    if checked is not None:
        database += f" (snapshot confirmed {checked:.1f} s ago)"
    lines = [
        f"router at {router_url}: {'ready' if state['ready'] else 'NOT READY'}",
        f"  ARI        {connected(state.get('ari_connected'))}",
        f"  AMI        {connected(state.get('ami_connected'))}",
        f"  database   {database}",
        f"  directory  revision {state.get('directory_revision')}",
        f"  calls      {state.get('calls_in_progress')} in progress",
        f"  role       {state.get('role', 'active')}{_since(state.get('role_since'))}",
    ]
    lines += [f"  not ready: {reason}" for reason in state.get("reasons", [])]
    lines += [f"  warning: {warning}" for warning in state.get("warnings", [])]
    return "\n".join(lines) + "\n"


# --- logins -----------------------------------------------------------------------------


_EXTENSION_ARG = click.argument("extension")


def _check_extension(extension: str) -> None:
    from callrouter.domain.identifiers import EXTENSION_PATTERN

    if not EXTENSION_PATTERN.fullmatch(extension):
        raise click.BadParameter(
            f"{extension!r} is not an extension (1 to 20 digits)", param_hint="EXTENSION"
        )


@main.command()
@_EXTENSION_ARG
@click.argument("workplace")
@click.option(
    "--occupied",
    type=click.Choice(["displace", "refuse"]),
    default="displace",
    show_default=True,
    help="If someone is at WORKPLACE: move them out, or refuse.",
)
@click.pass_obj
@admin_errors
def login(obj: dict[str, Any], extension: str, workplace: str, occupied: str) -> None:
    """Log the user EXTENSION in at WORKPLACE (the role must allow it).

    Running routers see the change within their poll interval.
    """
    from callrouter.logins.store import set_login

    _check_extension(extension)

    async def go() -> Any:
        engine = await _open_database(obj["db"])
        try:
            return await set_login(
                engine,
                extension,
                workplace,
                actor="admin",
                source="cli",
                policy="refuse" if occupied == "refuse" else "displace",
            )
        finally:
            await engine.dispose()

    change = run(go())
    if not change.changed:
        click.echo(f"{extension} is already logged in at {workplace}")
        return
    moved = f" (was at {change.old_workplace})" if change.old_workplace else ""
    click.echo(f"{extension} logged in at {workplace}{moved}")
    if change.displaced:
        click.echo(f"{change.displaced} was logged out of {workplace}")


@main.command()
@_EXTENSION_ARG
@click.pass_obj
@admin_errors
def logout(obj: dict[str, Any], extension: str) -> None:
    """Log the user EXTENSION out of their workplace."""
    from callrouter.logins.store import clear_login

    _check_extension(extension)

    async def go() -> Any:
        engine = await _open_database(obj["db"])
        try:
            return await clear_login(engine, extension, actor="admin", source="cli")
        finally:
            await engine.dispose()

    change = run(go())
    if change.changed:
        click.echo(f"{extension} logged out of {change.old_workplace}")
    else:
        click.echo(f"{extension} was not logged in")


@main.command()
@click.pass_obj
@admin_errors
def logins(obj: dict[str, Any]) -> None:
    """List who is logged in where."""
    snapshot = run(_load_snapshot(obj["db"]))
    if not snapshot.logins:
        click.echo("nobody is logged in")
    for extension, workplace_id in sorted(snapshot.logins.items(), key=lambda item: item[1]):
        user = snapshot.users[extension]
        click.echo(f"{workplace_id}\t{extension}\t{user.name}")


# --- serve ------------------------------------------------------------------------------


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Settings file (YAML); the environment (CALLROUTER_*) overrides it.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines for people (text) or machines (json).",
)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None)
@click.pass_obj
@admin_errors
def serve(
    obj: dict[str, Any], config_file: Path | None, log_format: str | None, log_level: str | None
) -> None:
    """Run the router: take calls from Asterisk (ARI) and ring people's phones."""
    from pydantic import ValidationError

    from callrouter.app import serve as serve_forever
    from callrouter.config import load_settings

    overrides: dict[str, Any] = {"log_format": log_format, "log_level": log_level}
    if obj["db_given"]:
        overrides["db"] = obj["db"]
    if obj["rules_given"]:
        overrides["rules"] = obj["rules"]
    try:
        settings = load_settings(config_file, **overrides)
        settings.require_secrets()
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise Failure("error: invalid settings:\n" + "\n".join(lines)) from None
    except ValueError as exc:
        raise Failure(f"error: {exc}") from None
    sys.exit(serve_forever(settings))


# --- helpers ----------------------------------------------------------------------------


def _sqlite_file_exists(url: str) -> bool:
    if not url.startswith("sqlite"):
        return True
    path = url.split("///", 1)[-1]
    return path in ("", ":memory:") or Path(path).exists()


async def _open_database(url: str) -> Any:
    from callrouter.directory.database import check_schema, create_engine

    engine = create_engine(url)
    try:
        await check_schema(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def _load_snapshot(url: str) -> Any:
    from callrouter.directory.snapshot import load_snapshot

    engine = await _open_database(url)
    try:
        return await load_snapshot(engine)
    finally:
        await engine.dispose()
