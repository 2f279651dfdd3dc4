"""The sandbox Asterisk: Asterisk 22 from Debian sid, in a chroot, on loopback ports.

Two layers:

* :func:`ensure_rootfs` builds (once, cached in ``.cache/asterisk-root``) a Debian sid
  minbase tree with ``asterisk`` and ``asterisk-modules`` installed.
* :class:`AsteriskSandbox` runs one Asterisk in that tree with a private configuration,
  run, log, spool and lib directory (``/run-callrouter/<id>/`` inside the chroot), so
  several sandboxes (two test sessions, a demo and a benchmark) can run side by side.

Everything here needs root (debootstrap, chroot, mount). When that is not possible,
:class:`SandboxUnavailable` says why, so tests can skip with a useful reason.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CONFIG_TEMPLATE_DIR = REPO / "asterisk-config"
DIALPLAN_DIR = REPO / "dialplan"
DEFAULT_ROOTFS = REPO / ".cache" / "asterisk-root"
#: The dialplan admins copy (``AsteriskSandbox(extensions_conf=...)`` runs it).
EXAMPLE_EXTENSIONS_CONF = DIALPLAN_DIR / "extensions.conf.example"

#: Written last into a finished tree; a tree without it is half-built and is rebuilt.
ROOTFS_MARKER = ".callrouter-rootfs-complete"
#: Inside the chroot: one folder per running sandbox.
RUN_ROOT_IN_CHROOT = "/run-callrouter"
DEBIAN_SUITE = "sid"
# asterisk depends on the English core sounds already; named here because the router
# plays one of them (followme/options, to confirm legs) and the e2e tests hear it.
ASTERISK_PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-en-gsm")

#: Defaults of the files in asterisk-config/ (Docker uses them as they are).
DEFAULT_HTTP_PORT = 18088
DEFAULT_AMI_PORT = 15038
DEFAULT_SIP_PORT = 15060
ARI_APP = "callrouter"


class SandboxUnavailable(RuntimeError):
    """The sandbox Asterisk cannot be had on this machine (not root, no debootstrap...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxError(RuntimeError):
    """The sandbox Asterisk was available but misbehaved (did not start, did not reload)."""


# ---------------------------------------------------------------------------------------
# The root filesystem
# ---------------------------------------------------------------------------------------


def _run(
    cmd: list[str], *, what: str, env: Mapping[str, str] | None = None, timeout: float = 1800
) -> None:
    """Run a set-up command; on failure raise with its output's tail."""
    log.info("sandbox: %s: %s", what, " ".join(cmd))
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SandboxUnavailable(f"{what}: {cmd[0]} not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxUnavailable(f"{what}: timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise SandboxUnavailable(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest first), from /proc/mounts."""
    prefix = str(path.resolve())
    found: list[str] = []
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            # Spaces in mount points are written as \040.
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unmount_all_under(path: Path) -> None:
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False)
    left = _mounts_under(path)
    if left:
        raise SandboxError(f"cannot unmount {left}; refusing to touch {path}")


def remove_tree(path: Path) -> None:
    """Delete a (half-built) chroot, never following a mount into the host."""
    if not path.exists():
        return
    _unmount_all_under(path)
    shutil.rmtree(path)


@contextlib.contextmanager
def _mounted_proc(root: Path) -> Iterator[None]:
    target = root / "proc"
    target.mkdir(exist_ok=True)
    _run(["mount", "-t", "proc", "proc", str(target)], what="mount proc in the chroot")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_debootstrap() -> str:
    found = shutil.which("debootstrap")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise SandboxUnavailable("debootstrap is not installed and there is no apt-get to get it")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], what="apt-get update on the host", env=env)
    _run(
        ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"],
        what="install debootstrap on the host",
        env=env,
    )
    found = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if not found:
        raise SandboxUnavailable("debootstrap was installed but cannot be found on PATH")
    return found


def rootfs_ready(root: Path = DEFAULT_ROOTFS) -> bool:
    """True when ``root`` is a finished tree (built by :func:`ensure_rootfs`)."""
    return (root / ROOTFS_MARKER).is_file()


def ensure_rootfs(cache_dir: Path = DEFAULT_ROOTFS) -> Path:
    """Return a Debian sid chroot with Asterisk installed, building it if needed.

    Idempotent and safe to call from several processes at once: a file lock serialises
    builds; the tree is built in ``<cache_dir>.tmp`` and renamed when complete, and a
    marker file tells a finished tree from a half-built one.
    """
    cache_dir = Path(cache_dir).resolve()
    if rootfs_ready(cache_dir):
        return cache_dir
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            f"building the Asterisk chroot needs root (debootstrap, chroot, mount); "
            f"run as root once, or provide a finished tree at {cache_dir}"
        )
    with _file_lock(cache_dir.with_name(cache_dir.name + ".lock")):
        if rootfs_ready(cache_dir):  # another process built it while we waited
            return cache_dir
        started = time.monotonic()
        debootstrap = _ensure_debootstrap()
        tmp = cache_dir.with_name(cache_dir.name + ".tmp")
        remove_tree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        _run(
            [debootstrap, "--variant=minbase", DEBIAN_SUITE, str(tmp)],
            what=f"debootstrap Debian {DEBIAN_SUITE}",
        )
        _prepare_tree(tmp)
        env = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        with _mounted_proc(tmp):
            _run(
                ["chroot", str(tmp), "apt-get", "update"],
                what="apt-get update in the chroot",
                env=env,
            )
            _run(
                [
                    "chroot",
                    str(tmp),
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    *ASTERISK_PACKAGES,
                ],
                what="install Asterisk in the chroot",
                env=env,
            )
            _run(["chroot", str(tmp), "apt-get", "clean"], what="apt-get clean", env=env)
        _run(["chroot", str(tmp), "asterisk", "-V"], what="check the Asterisk binary")
        (tmp / ROOTFS_MARKER).write_text(
            f"built {time.strftime('%Y-%m-%dT%H:%M:%S')} in {time.monotonic() - started:.0f} s\n",
            encoding="utf-8",
        )
        remove_tree(cache_dir)  # a half-built tree from an older layout
        tmp.rename(cache_dir)
        log.info(
            "sandbox: Asterisk chroot ready at %s in %.0f s", cache_dir, time.monotonic() - started
        )
        return cache_dir


def _prepare_tree(root: Path) -> None:
    """Files the chroot needs before apt runs in it (see ASTERISK.md)."""
    # The mirror's sid snapshot can be past its Valid-Until date.
    (root / "etc/apt/apt.conf.d/99no-check-valid").write_text(
        'Acquire::Check-Valid-Until "false";\n', encoding="utf-8"
    )
    # Without /etc/hosts, Asterisk resolves the host name through DNS while setting
    # up RTP, which stalls on a network without outside DNS.
    host = socket.gethostname()
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost {host}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        encoding="utf-8",
    )
    # No service may start inside the chroot while packages install.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
    policy.chmod(0o755)


# ---------------------------------------------------------------------------------------
# Ports and configuration rendering
# ---------------------------------------------------------------------------------------

#: Ports for sandboxes are picked here: above 10000, below rtp.conf's 20000-40000
#: RTP range and below the kernel's ephemeral range (32768+).
PORT_RANGE = (10000, 19999)


def port_is_free(port: int, *, udp: bool = False, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound now (TCP, or UDP when ``udp``)."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(*, udp: bool = False, exclude: Iterable[int] = ()) -> int:
    """A port in :data:`PORT_RANGE` that is free for TCP and UDP alike."""
    excluded = set(exclude)
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randint(*PORT_RANGE)
        if port in excluded:
            continue
        if port_is_free(port, udp=udp) and port_is_free(port, udp=not udp):
            return port
    raise SandboxError(f"no free port found in {PORT_RANGE} after 200 tries")


def set_option(text: str, section: str, key: str, value: str) -> str:
    """Return config ``text`` with ``key`` in ``[section]`` set to ``value``.

    The key must already be there (the templates in asterisk-config/ carry every key
    the sandbox changes): a renamed key fails loudly instead of being ignored.
    """
    lines = text.splitlines(keepends=True)
    current: str | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped[1 : stripped.index("]")] if "]" in stripped else None
            continue
        if current != section or stripped.startswith(";") or "=" not in stripped:
            continue
        name = stripped.partition("=")[0]
        name = name.strip()
        if name == key:
            arrow = stripped[len(name) :].lstrip().startswith("=>")
            lines[index] = f"{key} {'=>' if arrow else '='} {value}\n"
            return "".join(lines)
    raise SandboxError(f"template has no '{key}' in [{section}]; cannot set it to {value!r}")


def uncomment_option(text: str, section: str, key: str, value: str) -> str:
    """Return config ``text`` with the commented-out ``;key = ...`` of ``[section]``
    written as ``key = value`` (for options a template leaves off by default)."""
    lines = text.splitlines(keepends=True)
    current: str | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped[1 : stripped.index("]")] if "]" in stripped else None
        elif (
            current == section
            and stripped.startswith(";")
            and stripped[1:].partition("=")[0].strip() == key
        ):
            lines[index] = f"{key} = {value}\n"
            return "".join(lines)
    raise SandboxError(f"template has no ';{key}' in [{section}]; cannot set it to {value!r}")


@dataclass(frozen=True)
class SandboxPorts:
    """Loopback ports of one sandbox."""

    http: int
    ami: int
    sip: int

    def check_free(self) -> None:
        busy = [
            f"{what} {port}/{proto}"
            for what, port, proto in (
                ("HTTP/ARI", self.http, "tcp"),
                ("AMI", self.ami, "tcp"),
                ("SIP", self.sip, "udp"),
            )
            if not port_is_free(port, udp=proto == "udp")
        ]
        if busy:
            raise SandboxError(f"ports already in use on 127.0.0.1: {', '.join(busy)}")


@dataclass(frozen=True)
class Endpoint:
    """A PJSIP endpoint for another SIP user agent than the simulated phones (SIPp).

    Built from the same templates as the phones (context ``phones``, identified by
    its name as From user, no authentication).  ``port``: its contact is
    ``sip:NAME@127.0.0.1:PORT``; None: no contact (it only calls in).  ``options``:
    more endpoint settings, e.g. ``{"send_connected_line": "no"}``.
    """

    name: str
    port: int | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if not _valid_phone_name(self.name):
            raise ValueError(f"endpoint name {self.name!r}: use letters, digits, '-' and '_'")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"endpoint {self.name!r}: port {self.port} out of range")
        for key, value in self.options.items():
            if not _valid_phone_name(key) or any(ch in value for ch in "\r\n;[]"):
                raise ValueError(f"endpoint {self.name!r}: bad option {key} = {value!r}")


# ---------------------------------------------------------------------------------------
# One Asterisk
# ---------------------------------------------------------------------------------------

PHONES_FILE = "pjsip_phones.conf"
#: Device states shared with other sandboxes (:func:`link_nodes`), from this example.
NODES_FILE = "pjsip_nodes.conf"
NODES_EXAMPLE = CONFIG_TEMPLATE_DIR / "pjsip_nodes.conf.example"
SANDBOX_DIALPLAN_FILE = "extensions_sandbox.conf"
_RUN_SUBDIRS = ("etc", "run", "log", "spool", "lib", "lib/keys", "cache")


class AsteriskSandbox:
    """One Asterisk in the chroot, on loopback ports, with its own run directory.

    Use it as a context manager (``with`` or ``async with``) or call :meth:`start` and
    :meth:`stop`. All methods are synchronous (they run ``asterisk -rx`` and poll HTTP);
    the ``*_async`` variants run them in a worker thread for use inside event loops.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        http_port: int | None = None,
        ami_port: int | None = None,
        sip_port: int | None = None,
        verbose: int = 3,
        start_timeout: float = 30.0,
        keep_files: bool = False,
        extensions_conf: Path | None = None,
    ) -> None:
        """``extensions_conf``: run this file as the dialplan's extensions.conf, as it
        is, instead of asterisk-config/extensions.conf (e.g. EXAMPLE_EXTENSIONS_CONF,
        to test what admins copy).  Its phones context must be ``[phones]``, where
        the sandbox's phones call from (``context = phones`` in pjsip.conf); without
        the sandbox's own contexts, :meth:`set_dialplan` and the benchmarks' ``*NNN``
        are not available unless the file includes them.
        """
        self.root = Path(root).resolve() if root is not None else DEFAULT_ROOTFS
        self.extensions_conf = Path(extensions_conf) if extensions_conf is not None else None
        http = http_port or pick_free_port()
        ami = ami_port or pick_free_port(exclude={http})
        sip = sip_port or pick_free_port(udp=True, exclude={http, ami})
        self.ports = SandboxPorts(http=http, ami=ami, sip=sip)
        self._fixed_ports = (http_port, ami_port, sip_port)
        self.verbose = verbose
        self.start_timeout = start_timeout
        self.keep_files = keep_files
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        #: The run directory as Asterisk sees it (inside the chroot) ...
        self.run_dir_in_chroot = f"{RUN_ROOT_IN_CHROOT}/{self.id}"
        #: ... and as the host sees it.
        self.run_dir = self.root / self.run_dir_in_chroot.lstrip("/")
        self.ari_user = ARI_APP
        self.ari_password = secrets.token_urlsafe(18)
        self.ami_user = ARI_APP
        self.ami_secret = secrets.token_urlsafe(18)
        self.ami_host = "127.0.0.1"
        #: Seconds from starting the process to fully booted (last start).
        self.started_in = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._phones: dict[str, int] = {}
        self._extra_dialplan = ""
        self._qualified: set[str] = set()
        self._endpoints: dict[str, Endpoint] = {}
        #: Asterisk's entity id, its own per instance: device states shared between
        #: sandboxes (:func:`link_nodes`) are told apart by it.
        self.entity_id = "02:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))
        self._nodes_conf = ""

    # -- addresses --------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        return self.ports.http

    @property
    def ami_port(self) -> int:
        return self.ports.ami

    @property
    def sip_port(self) -> int:
        return self.ports.sip

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT``: Asterisk's HTTP server."""
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def ari_url(self) -> str:
        """``http://127.0.0.1:PORT/ari``: the base of ARI's REST resources."""
        return f"{self.http_url}/ari"

    @property
    def ari_events_url(self) -> str:
        """``ws://127.0.0.1:PORT/ari/events``: add ``?app=...`` (and basic auth)."""
        return f"ws://127.0.0.1:{self.ports.http}/ari/events"

    @property
    def etc_dir(self) -> Path:
        return self.run_dir / "etc"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "log" / "messages.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The Asterisk process's id (``chroot`` execs Asterisk), while it runs."""
        return self._process.pid if self._process is not None and self.running else None

    def __repr__(self) -> str:
        return (
            f"<AsteriskSandbox {self.id} http={self.ports.http} ami={self.ports.ami} "
            f"sip={self.ports.sip} {'running' if self.running else 'stopped'}>"
        )

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Render the configuration, start Asterisk and wait until it is fully booted."""
        if self.running:
            raise SandboxError(f"{self!r} is already running")
        if os.geteuid() != 0:
            raise SandboxUnavailable("running the sandbox Asterisk needs root (chroot)")
        if not rootfs_ready(self.root):
            raise SandboxUnavailable(
                f"no finished Asterisk chroot at {self.root}; call ensure_rootfs() first"
            )
        remove_stale_run_dirs(self.root)
        self._ensure_ports_free()
        if not self.etc_dir.exists():
            self._make_run_dir()
        self._render_config()
        out = open(self.run_dir / "log" / "asterisk.out", "ab")  # noqa: SIM115 (child owns it)
        started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                [
                    "chroot",
                    str(self.root),
                    "asterisk",
                    "-C",
                    self._conf_in_chroot,
                    "-f",
                    "-U",
                    "root",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        try:
            self._wait_ready(started)
        except BaseException:
            self._terminate()
            raise
        self.started_in = time.monotonic() - started
        _RUNNING.add(self)
        log.info("sandbox: %r ready in %.2f s", self, self.started_in)

    def stop(self) -> None:
        """Stop Asterisk (``core stop now``, then signals) and delete the run directory."""
        self._terminate()
        if not self.keep_files:
            remove_tree(self.run_dir)

    def restart(self) -> None:
        """Stop and start again with the same ports, credentials, phones and AstDB."""
        self._terminate()
        self.start()

    def __enter__(self) -> AsteriskSandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)

    async def restart_async(self) -> None:
        await asyncio.to_thread(self.restart)

    async def __aenter__(self) -> AsteriskSandbox:
        await self.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()

    # -- control ----------------------------------------------------------------------

    def cli(self, command: str, *, timeout: float = 15.0) -> str:
        """Run one Asterisk CLI command (``asterisk -rx``) and return its output."""
        if not self.running:
            raise SandboxError(f"{self!r} is not running; cannot run {command!r}")
        try:
            proc = subprocess.run(
                ["chroot", str(self.root), "asterisk", "-C", self._conf_in_chroot, "-rx", command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"CLI {command!r} timed out after {timeout} s") from exc
        if proc.returncode != 0:
            raise SandboxError(
                f"CLI {command!r} failed (exit {proc.returncode}): "
                f"{proc.stdout.strip()} {proc.stderr.strip()}\n{self.log_tail()}"
            )
        return proc.stdout

    async def cli_async(self, command: str, *, timeout: float = 15.0) -> str:
        return await asyncio.to_thread(self.cli, command, timeout=timeout)

    def db_put(self, family: str, key: str, value: str) -> None:
        """Set an AstDB entry (e.g. ``db_put("native", "100", "PJSIP/a&PJSIP/b")``)."""
        out = self.cli(f"database put {family} {key} {_cli_quote(value)}")
        if "Updated database successfully" not in out:
            raise SandboxError(f"database put {family}/{key} failed: {out.strip()}")

    def db_get(self, family: str, key: str) -> str | None:
        out = self.cli(f"database get {family} {key}").strip()
        prefix = "Value: "
        return out[len(prefix) :] if out.startswith(prefix) else None

    def db_del(self, family: str, key: str) -> None:
        self.cli(f"database del {family} {key}")

    def add_phones(
        self,
        phones: Mapping[str, int] | Iterable[tuple[str, int]],
        *,
        qualify: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Add (or move) PJSIP endpoints ``NAME`` with contact ``sip:NAME@127.0.0.1:PORT``.

        Phones calling in are identified by their From user (``endpoint_identifier_order
        = username``), land in context ``phones`` and need no authentication.  With
        ``qualify``, Asterisk sends them OPTIONS every second and marks the contact
        unreachable (device state UNAVAILABLE) when one stops answering.
        """
        items = dict(phones.items() if isinstance(phones, Mapping) else phones)
        for name, port in items.items():
            if not _valid_phone_name(name):
                raise ValueError(f"phone name {name!r}: use letters, digits, '-' and '_'")
            if not 0 < port < 65536:
                raise ValueError(f"phone {name!r}: port {port} out of range")
        self._phones.update(items)
        if qualify:
            self._qualified.update(items)
        else:
            self._qualified.difference_update(items)
        self._reload_phones(set(items), timeout=timeout)

    def remove_phones(self, names: Iterable[str], *, timeout: float = 10.0) -> None:
        for name in names:
            self._phones.pop(name, None)
        self._reload_phones(set(), timeout=timeout)

    async def add_phones_async(
        self,
        phones: Mapping[str, int] | Iterable[tuple[str, int]],
        *,
        qualify: bool = False,
        timeout: float = 10.0,
    ) -> None:
        await asyncio.to_thread(self.add_phones, phones, qualify=qualify, timeout=timeout)

    @property
    def phones(self) -> dict[str, int]:
        """The phones added so far: name -> SIP port."""
        return dict(self._phones)

    def add_endpoints(self, endpoints: Iterable[Endpoint], *, timeout: float = 10.0) -> None:
        """Add (or replace) PJSIP endpoints for other user agents (see :class:`Endpoint`).

        They are written into the same file as the phones (pjsip_phones.conf); a name
        may not be a phone's too.
        """
        items = {endpoint.name: endpoint for endpoint in endpoints}
        for endpoint in items.values():
            endpoint.check()
            if endpoint.name in self._phones:
                raise ValueError(f"endpoint {endpoint.name!r} is a phone already")
        self._endpoints.update(items)
        self._reload_phones(set(items), timeout=timeout)

    def remove_endpoints(self, names: Iterable[str], *, timeout: float = 10.0) -> None:
        for name in names:
            self._endpoints.pop(name, None)
        self._reload_phones(set(), timeout=timeout)

    async def add_endpoints_async(
        self, endpoints: Iterable[Endpoint], *, timeout: float = 10.0
    ) -> None:
        await asyncio.to_thread(self.add_endpoints, list(endpoints), timeout=timeout)

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """The endpoints added by :meth:`add_endpoints`: name -> Endpoint."""
        return dict(self._endpoints)

    def set_dialplan(self, extra: str) -> None:
        """Replace the test dialplan (``extensions_sandbox.conf``) and reload the dialplan."""
        extensions = (self.etc_dir / "extensions.conf").read_text(encoding="utf-8")
        if SANDBOX_DIALPLAN_FILE not in extensions:
            # It would be written and reloaded, and silently never used.
            raise SandboxError(
                f"this sandbox's extensions.conf ({self.extensions_conf}) does not include "
                f"{SANDBOX_DIALPLAN_FILE}: set_dialplan() is not available"
            )
        self._extra_dialplan = extra
        (self.etc_dir / SANDBOX_DIALPLAN_FILE).write_text(extra, encoding="utf-8")
        out = self.cli("dialplan reload")
        if "Dialplan reloaded" not in out:
            raise SandboxError(f"dialplan reload failed: {out.strip()}\n{self.log_tail()}")

    def set_nodes_conf(self, text: str) -> None:
        """Set pjsip_nodes.conf (see :func:`link_nodes`), before :meth:`start`
        (the ports it names are fixed by then; the tests link fresh sandboxes)."""
        if self.running:
            raise SandboxError(f"{self!r} is running: set its nodes before start()")
        self._nodes_conf = text

    def log_tail(self, lines: int = 40) -> str:
        """The end of Asterisk's messages.log and of its stdout, for error messages."""
        parts = []
        for path in (self.log_file, self.run_dir / "log" / "asterisk.out"):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {path} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts) or f"(no Asterisk logs in {self.run_dir / 'log'})"

    # -- internals --------------------------------------------------------------------

    def _ensure_ports_free(self) -> None:
        """Check the ports; at the first start, ports picked at random (not given by the
        caller) are picked again if something took them meanwhile."""
        for _ in range(5):
            try:
                self.ports.check_free()
                return
            except SandboxError:
                http, ami, sip = self._fixed_ports
                if (http and ami and sip) or self.started_in:
                    raise  # given by the caller, or a restart: must stay the same
                http = http or pick_free_port()
                ami = ami or pick_free_port(exclude={http})
                sip = sip or pick_free_port(udp=True, exclude={http, ami})
                self.ports = SandboxPorts(http=http, ami=ami, sip=sip)
        self.ports.check_free()

    @property
    def _conf_in_chroot(self) -> str:
        return f"{self.run_dir_in_chroot}/etc/asterisk.conf"

    def _make_run_dir(self) -> None:
        for sub in _RUN_SUBDIRS:
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        # Marks whose run directory this is, so a crashed owner's can be cleaned up.
        (self.run_dir / "owner.pid").write_text(f"{os.getpid()}\n", encoding="utf-8")

    def _render_config(self) -> None:
        """Copy asterisk-config/ and dialplan/callrouter.conf, with ports and secrets
        (and ``extensions_conf`` as extensions.conf, when given)."""
        if not CONFIG_TEMPLATE_DIR.is_dir():
            raise SandboxError(f"configuration templates missing: {CONFIG_TEMPLATE_DIR}")
        etc = self.etc_dir
        inside = self.run_dir_in_chroot
        for template in sorted(CONFIG_TEMPLATE_DIR.glob("*.conf")):
            (etc / template.name).write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
        shutil.copyfile(DIALPLAN_DIR / "callrouter.conf", etc / "callrouter.conf")
        if self.extensions_conf is not None:
            shutil.copyfile(self.extensions_conf, etc / "extensions.conf")

        def edit(name: str, section: str, key: str, value: str) -> None:
            path = etc / name
            path.write_text(
                set_option(path.read_text(encoding="utf-8"), section, key, value), encoding="utf-8"
            )

        for key, sub in (
            ("astetcdir", "etc"),
            ("astvarlibdir", "lib"),
            ("astdbdir", "lib"),
            ("astkeydir", "lib"),
            ("astspooldir", "spool"),
            ("astrundir", "run"),
            ("astlogdir", "log"),
            ("astcachedir", "cache"),
        ):
            edit("asterisk.conf", "directories", key, f"{inside}/{sub}")
        edit("asterisk.conf", "options", "verbose", str(self.verbose))
        conf = etc / "asterisk.conf"
        conf.write_text(
            uncomment_option(
                conf.read_text(encoding="utf-8"), "options", "entityid", self.entity_id
            ),
            encoding="utf-8",
        )
        edit("http.conf", "general", "bindport", str(self.ports.http))
        edit("manager.conf", "general", "port", str(self.ports.ami))
        edit("manager.conf", "callrouter", "secret", self.ami_secret)
        edit("ari.conf", "callrouter", "password", self.ari_password)
        edit("pjsip.conf", "transport-udp", "bind", f"127.0.0.1:{self.ports.sip}")
        (etc / PHONES_FILE).write_text(self._phones_conf(), encoding="utf-8")
        (etc / NODES_FILE).write_text(self._nodes_conf, encoding="utf-8")
        (etc / SANDBOX_DIALPLAN_FILE).write_text(self._extra_dialplan, encoding="utf-8")
        for path in etc.iterdir():
            path.chmod(0o600)  # holds this instance's secrets

    def _phones_conf(self) -> str:
        out = ["; Written by sandbox/asterisk.py (AsteriskSandbox.add_phones).\n"]
        for name, port in sorted(self._phones.items()):
            out.append(
                f"\n[{name}](phone-endpoint)\naors = {name}\n"
                f"callerid = {name} <{name}>\n"
                f"\n[{name}](phone-aor)\ncontact = sip:{name}@127.0.0.1:{port}\n"
            )
            if name in self._qualified:
                out.append("qualify_frequency = 1\nqualify_timeout = 0.5\n")
        for name, endpoint in sorted(self._endpoints.items()):
            options = "".join(f"{key} = {value}\n" for key, value in endpoint.options.items())
            contact = (
                f"contact = sip:{name}@127.0.0.1:{endpoint.port}\n"
                if endpoint.port is not None
                else ""
            )
            out.append(
                f"\n; AsteriskSandbox.add_endpoints\n[{name}](phone-endpoint)\naors = {name}\n"
                f"callerid = {name} <{name}>\n{options}"
                f"\n[{name}](phone-aor)\n{contact}"
            )
        return "".join(out)

    def _reload_phones(self, wanted: set[str], *, timeout: float) -> None:
        path = self.etc_dir / PHONES_FILE
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.write_text(self._phones_conf(), encoding="utf-8")
        # Asterisk reloads a file only when it looks changed; make sure it does.
        if path.stat().st_mtime_ns <= before + 1_000_000_000:
            stamp = before + 1_000_000_000
            os.utime(path, ns=(stamp, stamp))
        if not self.running:
            return  # start() renders the file
        self.cli("module reload res_pjsip.so")
        deadline = time.monotonic() + timeout
        pending = set(wanted)
        while True:
            for name in sorted(pending):
                out = self.cli(f"pjsip show endpoint {name}")
                if "Unable to find object" not in out and f"Endpoint:  {name}" in out:
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"PJSIP does not know phones {sorted(pending)} {timeout} s after reload"
                    f"\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.start_timeout
        url = f"{self.ari_url}/asterisk/info"
        last_error = "no answer yet"
        with httpx.Client(auth=(self.ari_user, self.ari_password), timeout=2.0) as client:
            while True:
                assert self._process is not None
                code = self._process.poll()
                if code is not None:
                    raise SandboxError(
                        f"Asterisk exited with code {code} while starting\n{self.log_tail()}"
                    )
                try:
                    response = client.get(url)
                    if response.status_code == 200:
                        break
                    last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"Asterisk did not answer GET {url} within {self.start_timeout} s "
                        f"(last: {last_error})\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        remaining = max(1.0, deadline - time.monotonic())
        self.cli("core waitfullybooted", timeout=remaining)
        with socket.create_connection((self.ami_host, self.ports.ami), timeout=2) as ami:
            banner = ami.recv(100)
        if not banner.startswith(b"Asterisk Call Manager"):
            raise SandboxError(f"AMI on port {self.ports.ami} sent {banner!r}")

    def _terminate(self) -> None:
        """Stop the Asterisk process for sure: core stop now, SIGTERM, SIGKILL."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(SandboxError, OSError):
                self.cli("core stop now", timeout=5)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("sandbox: %r ignored 'core stop now'; sending SIGTERM", self)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # Signal the whole session: nothing Asterisk started may outlive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        self._process = None
        _RUNNING.discard(self)


def node_conf(self_name: str, self_port: int, peer_name: str, peer_port: int) -> str:
    """asterisk-config/pjsip_nodes.conf.example for node ``self_name`` (SIP on
    127.0.0.1:``self_port``) sharing device states with ``peer_name``."""
    for name in (self_name, peer_name):
        if not _valid_phone_name(name):
            raise ValueError(f"node name {name!r}: use letters, digits, '-' and '_'")
    if self_name == peer_name:
        raise ValueError(f"a node cannot share device states with itself ({self_name!r})")
    example = NODES_EXAMPLE.read_text(encoding="utf-8")
    values = {
        "node-a": self_name,
        "node-b": peer_name,
        "192.0.2.1:5060": f"127.0.0.1:{self_port}",
        "192.0.2.2:5060": f"127.0.0.1:{peer_port}",
        "192.0.2.2": "127.0.0.1",
    }
    missing = [token for token in values if token not in example]
    if missing:
        raise SandboxError(f"{NODES_EXAMPLE} no longer names {missing}; update node_conf()")
    pattern = re.compile("|".join(re.escape(token) for token in values))
    return pattern.sub(lambda found: values[found.group(0)], example)


def link_nodes(
    first: AsteriskSandbox, first_name: str, second: AsteriskSandbox, second_name: str
) -> None:
    """Make two sandboxes share their PJSIP device states both ways
    (res_pjsip_publish_asterisk, configured from pjsip_nodes.conf.example).

    Call it before either starts.  Their ports are fixed from now on: each names
    the other's SIP port, so a port taken meanwhile fails the start instead of
    being picked again.
    """
    for sandbox in (first, second):
        ports = sandbox.ports
        sandbox._fixed_ports = (ports.http, ports.ami, ports.sip)
    first.set_nodes_conf(node_conf(first_name, first.sip_port, second_name, second.sip_port))
    second.set_nodes_conf(node_conf(second_name, second.sip_port, first_name, first.sip_port))


def _cli_quote(value: str) -> str:
    if not value or any(ch.isspace() or ch == '"' for ch in value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _valid_phone_name(name: str) -> bool:
    return bool(name) and all(ch.isalnum() or ch in "-_" for ch in name) and name.isascii()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_run_dirs(root: Path) -> None:
    """Delete run directories whose owning process is gone (a crashed test run)."""
    base = root / RUN_ROOT_IN_CHROOT.lstrip("/")
    if not base.is_dir():
        return
    for run_dir in base.iterdir():
        try:
            owner = int((run_dir / "owner.pid").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            # No owner file: half-made; leave it unless it is old.
            if time.time() - run_dir.stat().st_mtime < 600:
                continue
            owner = -1
        if owner > 0 and _pid_alive(owner):
            continue
        _kill_orphan(run_dir)
        log.info("sandbox: removing stale run directory %s", run_dir)
        remove_tree(run_dir)


def _kill_orphan(run_dir: Path) -> None:
    """Stop an Asterisk left running by a process that died without stopping it."""
    try:
        pid = int((run_dir / "run" / "asterisk.pid").read_text(encoding="utf-8").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return
    if f"{RUN_ROOT_IN_CHROOT}/{run_dir.name}/etc/asterisk.conf" not in cmdline:
        return  # the pid is someone else's now
    log.warning("sandbox: stopping orphaned Asterisk %d of %s", pid, run_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if not _pid_alive(pid):
            return


#: Sandboxes started by this process, stopped at exit if their owner forgot.
_RUNNING: weakref.WeakSet[AsteriskSandbox] = weakref.WeakSet()


@atexit.register
def _stop_forgotten_sandboxes() -> None:
    for sandbox in list(_RUNNING):
        with contextlib.suppress(Exception):
            sandbox.stop()
