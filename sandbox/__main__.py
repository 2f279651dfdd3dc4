"""``python -m sandbox``: build the Asterisk chroot, or run a sandbox Asterisk (with
simulated phones) until interrupted, for the demo and for trying things by hand.

    python -m sandbox build
    python -m sandbox run --phone alice:answer=2 --phone bob:ring --phone carol:busy
    python -m sandbox run --extensions-conf dialplan/extensions.conf.example --phone alice
    python -m sandbox clean [--rootfs]

``run`` writes the connection details (ARI/AMI credentials included) to a JSON file
readable by root only (default .cache/sandbox.json) and prints them with secrets masked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from sandbox.asterisk import (
    DEFAULT_ROOTFS,
    REPO,
    AsteriskSandbox,
    SandboxError,
    SandboxUnavailable,
    ensure_rootfs,
    remove_stale_run_dirs,
    remove_tree,
)
from sandbox.phones import (
    Answer,
    Behaviour,
    Busy,
    PhoneBank,
    PhoneEvent,
    Reject,
    Ring,
    Silent,
    SimulatedPhone,
)

log = logging.getLogger("sandbox")


def parse_phone(spec: str) -> tuple[str, Behaviour]:
    """``alice``, ``alice:ring``, ``alice:answer=1.5``, ``alice:busy``, ``alice:silent``,
    ``alice:reject=480``."""
    name, _, behaviour = spec.partition(":")
    kind, _, arg = behaviour.partition("=")
    match kind or "ring":
        case "ring":
            return name, Ring()
        case "answer":
            return name, Answer(float(arg or 0))
        case "busy":
            return name, Busy()
        case "silent":
            return name, Silent()
        case "reject":
            return name, Reject(int(arg or 603))
    raise argparse.ArgumentTypeError(f"unknown phone behaviour {behaviour!r} in {spec!r}")


def connection_info(sandbox: AsteriskSandbox) -> dict[str, object]:
    return {
        "ari_url": sandbox.ari_url,
        "ari_events_url": sandbox.ari_events_url,
        "ari_user": sandbox.ari_user,
        "ari_password": sandbox.ari_password,
        "ami_host": sandbox.ami_host,
        "ami_port": sandbox.ami_port,
        "ami_user": sandbox.ami_user,
        "ami_secret": sandbox.ami_secret,
        "sip_host": "127.0.0.1",
        "sip_port": sandbox.sip_port,
        "http_url": sandbox.http_url,
        "phones": sandbox.phones,
        "cli": f"chroot {sandbox.root} asterisk -C {sandbox.run_dir_in_chroot}"
        f"/etc/asterisk.conf -r",
        "pid": os.getpid(),
    }


def print_event(phone: SimulatedPhone, event: PhoneEvent) -> None:
    if event.retransmission:
        return
    arrow = "<-" if event.direction == "in" else "->"
    what = event.kind if event.message.is_request else f"{event.kind} ({event.method})"
    print(
        f"{time.strftime('%H:%M:%S')} {phone.name:>12} {arrow} {what:<16} {event.call_id}",
        flush=True,
    )


async def run(args: argparse.Namespace) -> int:
    root = ensure_rootfs(Path(args.root))
    sandbox = AsteriskSandbox(
        root,
        http_port=args.http_port,
        ami_port=args.ami_port,
        sip_port=args.sip_port,
        verbose=args.verbose,
        extensions_conf=args.extensions_conf,
    )
    await sandbox.start_async()
    info_file = Path(args.info_file)
    try:
        async with PhoneBank() as bank:
            for spec in args.phone:
                name, behaviour = parse_phone(spec)
                phone = await bank.add(name, behaviour=behaviour)
                phone.on_event = print_event
            if len(bank):
                await sandbox.add_phones_async(bank.contacts())
            info = connection_info(sandbox)
            info_file.parent.mkdir(parents=True, exist_ok=True)
            info_file.touch(mode=0o600)
            info_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            for key, value in info.items():
                shown = "***" if key in ("ari_password", "ami_secret") else value
                print(f"{key:>15}: {shown}")
            print(f"{'details':>15}: {info_file} (with the secrets)")
            print(f"Asterisk ready in {sandbox.started_in:.2f} s; Ctrl-C stops it.", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
    finally:
        await sandbox.stop_async()
        info_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOTFS), help="the chroot's folder")
    parser.add_argument("-v", "--debug", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the Asterisk chroot (once; cached)")
    run_parser = commands.add_parser("run", help="run a sandbox Asterisk until Ctrl-C")
    run_parser.add_argument("--http-port", type=int, help="ARI/HTTP port (default: random)")
    run_parser.add_argument("--ami-port", type=int, help="AMI port (default: random)")
    run_parser.add_argument("--sip-port", type=int, help="SIP UDP port (default: random)")
    run_parser.add_argument("--verbose", type=int, default=3, help="Asterisk verbosity")
    run_parser.add_argument(
        "--extensions-conf",
        type=Path,
        metavar="FILE",
        help="run FILE as extensions.conf, as it is (e.g. dialplan/extensions.conf.example)",
    )
    run_parser.add_argument(
        "--phone",
        action="append",
        default=[],
        metavar="NAME[:ring|answer=SECONDS|busy|silent|reject=CODE]",
        help="a simulated phone, also a PJSIP endpoint (repeatable)",
    )
    run_parser.add_argument(
        "--info-file",
        default=str(REPO / ".cache" / "sandbox.json"),
        help="where to write the connection details (JSON)",
    )
    clean = commands.add_parser("clean", help="remove run folders of dead sandboxes")
    clean.add_argument("--rootfs", action="store_true", help="also delete the whole chroot")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "build":
            started = time.monotonic()
            root = ensure_rootfs(Path(args.root))
            print(f"{root} ready ({time.monotonic() - started:.1f} s)")
            return 0
        if args.command == "run":
            for spec in args.phone:
                parse_phone(spec)
            return asyncio.run(run(args))
        root = Path(args.root)
        if args.rootfs:
            remove_tree(root)
            remove_tree(root.with_name(root.name + ".tmp"))
        elif root.is_dir():
            remove_stale_run_dirs(root)
        return 0
    except (SandboxUnavailable, SandboxError, argparse.ArgumentTypeError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
