"""What users install is what the tests prove: the wheel, not the checkout.

The rest of the suite runs against an editable install, which sees every file in the
checkout and so cannot notice a package, a migration or a data file that the wheel
leaves out. Here the wheel is built from (a clean copy of) the checkout, installed in
a fresh virtualenv outside it, and run from a directory outside it, without the
checkout on ``sys.path``: it must hold every module and file of the checkout's
``callrouter/`` and ``migrations/`` (compared, not listed, so moves elsewhere in the
tree need no change here), migrate a new database, import a directory and serve
against the sandbox Asterisk until its Stasis app is registered.

Dependencies come from the package index pip is configured with; pip's cache makes
reruns fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from callrouter.directory.database import head_revision
from sandbox.asterisk import AsteriskSandbox, pick_free_port

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
#: Source trees of the wheel's package, as (directory in the checkout, package name).
PACKAGE_DIRS = ((REPO / "callrouter", "callrouter"), (REPO / "migrations", "callrouter.migrations"))
#: Not copied into the build: what tools leave in a checkout.
BUILD_LEFTOVERS = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "*.db", "*.db-journal",
)  # fmt: skip
#: Modules that may not simply be imported: __main__ runs the CLI, env.py runs only
#: inside Alembic (``callrouter db upgrade`` below runs it).
NOT_IMPORTED = {"callrouter.__main__", "callrouter.migrations.env"}
#: Run with the installed interpreter: walk and import the installed package.
INSPECT = """
import importlib, json, pkgutil, sys, traceback
from pathlib import Path
import callrouter
errors = {}
def failed(name):
    errors[name] = traceback.format_exc()
modules = {"callrouter"}
for info in pkgutil.walk_packages(callrouter.__path__, "callrouter.", onerror=failed):
    modules.add(info.name)
for name in sorted(modules - set(sys.argv[1:])):
    try:
        importlib.import_module(name)
    except BaseException:
        failed(name)
root = Path(callrouter.__file__).parent
files = [
    str(p.relative_to(root)) for p in root.rglob("*")
    if p.is_file() and "__pycache__" not in p.parts
]
print(json.dumps({"file": callrouter.__file__, "sys_path": sys.path,
                  "modules": sorted(modules), "errors": errors, "files": sorted(files)}))
"""


@dataclass(frozen=True, slots=True)
class Installed:
    """The wheel installed in its own virtualenv, run from ``workdir``."""

    wheel: Path
    venv: Path
    workdir: Path
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def callrouter(self) -> Path:
        return self.venv / "bin" / "callrouter"

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli(self, *args: str) -> str:
        """``callrouter ARGS`` from the venv; its standard output, or a failure."""
        done = self.run(str(self.callrouter), *args)
        assert done.returncode == 0, _report(f"callrouter {' '.join(args)}", done)
        return done.stdout


def _report(what: str, done: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{what} exited {done.returncode}\n--- stdout ---\n{done.stdout}"
        f"\n--- stderr ---\n{done.stderr}"
    )


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def _step(what: str, *args: str | Path, cwd: Path, timeout: float = 600) -> None:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, _report(what, done)


def _clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without anything that could lead the installed
    callrouter back to the checkout or to this test's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CALLROUTER_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not _inside(Path(p), REPO)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel, make a fresh venv, install the wheel there (once per module)."""
    base = tmp_path_factory.mktemp("wheel")
    assert not _inside(base, REPO), f"{base} is inside the checkout {REPO}"
    # A copy, so that no build/ or *.egg-info from an earlier build (which would
    # still hold modules moved away since) goes into the wheel, and none is left here.
    source, dist, venv, workdir = base / "source", base / "dist", base / "venv", base / "work"
    shutil.copytree(REPO, source, ignore=BUILD_LEFTOVERS, symlinks=True)
    _step("pip wheel", sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
          "-w", dist, source, cwd=base)  # fmt: skip
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"callrouter-{VERSION}-py3-none-any.whl"]
    shutil.rmtree(source)
    _step("python -m venv", sys.executable, "-m", "venv", venv, cwd=base)
    _step("pip install", venv / "bin" / "python", "-m", "pip", "install", "-q",
          "--no-input", wheels[0], cwd=base)  # fmt: skip
    workdir.mkdir()
    for name in ("directory.yaml", "rules.yaml"):
        shutil.copy(REPO / "examples" / name, workdir / name)
    yield Installed(wheels[0], venv, workdir, _clean_env(venv))
    shutil.rmtree(venv, ignore_errors=True)


def checkout_modules() -> set[str]:
    """Every module and package the wheel should carry, from the checkout."""
    names: set[str] = set()
    for directory, package in PACKAGE_DIRS:
        for path in directory.rglob("*.py"):
            parts = path.relative_to(directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join((package, *parts)))
    return names


def checkout_files() -> set[str]:
    """Every file of those packages (data such as Alembic's script.py.mako too),
    relative to the installed ``callrouter/``."""
    files: set[str] = set()
    for directory, package in PACKAGE_DIRS:
        prefix = Path(*package.split(".")[1:])
        for path in directory.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(str(prefix / path.relative_to(directory)))
    return files


@dataclass(frozen=True, slots=True)
class Inspection:
    """The installed package, as its own interpreter sees it."""

    file: Path  # callrouter/__init__.py
    sys_path: list[str]
    modules: set[str]
    errors: dict[str, str]  # module: traceback
    files: set[str]  # relative to callrouter/


@pytest.fixture(scope="module")
def inspected(installed: Installed) -> Inspection:
    done = installed.run(str(installed.python), "-I", "-c", INSPECT, *sorted(NOT_IMPORTED))
    assert done.returncode == 0, _report("inspecting the installed package", done)
    found = json.loads(done.stdout)
    return Inspection(
        Path(found["file"]),
        found["sys_path"],
        set(found["modules"]),
        found["errors"],
        set(found["files"]),
    )


def test_the_installed_package_is_the_wheel_not_the_checkout(
    installed: Installed, inspected: Inspection
) -> None:
    assert _inside(inspected.file, installed.venv), inspected.file
    in_checkout = [p for p in inspected.sys_path if p and _inside(Path(p), REPO)]
    assert not in_checkout, inspected.sys_path


def test_the_wheel_carries_every_module_and_each_imports(inspected: Inspection) -> None:
    expected = checkout_modules()
    assert inspected.modules == expected, (
        f"missing from the wheel: {sorted(expected - inspected.modules)}; "
        f"in the wheel only: {sorted(inspected.modules - expected)}"
    )
    assert not inspected.errors, "\n".join(
        f"{name}:\n{trace}" for name, trace in inspected.errors.items()
    )


def test_the_wheel_carries_every_file_of_the_package(inspected: Inspection) -> None:
    missing = checkout_files() - inspected.files
    assert not missing, (
        "missing from the wheel (data not in package-data, or a folder without "
        f"__init__.py): {sorted(missing)}"
    )


def test_version_is_the_one_in_pyproject(installed: Installed) -> None:
    assert installed.cli("--version").split() == ["callrouter,", "version", VERSION]


@pytest.fixture(scope="module")
def database(installed: Installed) -> tuple[str, str, str]:
    """A new SQLite directory, migrated and loaded by the installed callrouter:
    (its URL, what ``db upgrade`` said, what ``directory import`` said)."""
    db_file = installed.workdir / "callrouter.db"
    assert not db_file.exists()
    url = f"sqlite:///{db_file}"
    upgraded = installed.cli("--db", url, "db", "upgrade")
    imported = installed.cli("--db", url, "directory", "import", "directory.yaml")
    return url, upgraded, imported


def test_db_upgrade_finds_the_migrations_in_the_wheel(
    installed: Installed, database: tuple[str, str, str]
) -> None:
    url, upgraded, imported = database
    assert upgraded.strip() == f"database upgraded from nothing to revision {head_revision()}"
    assert imported.startswith("imported directory.yaml: ")
    again = installed.cli("--db", url, "db", "upgrade")
    assert again.strip() == f"database is up to date (revision {head_revision()})"


def test_serve_registers_its_stasis_app_and_stops_on_sigterm(
    installed: Installed, database: tuple[str, str, str], asterisk: AsteriskSandbox
) -> None:
    url = database[0]
    app = f"callrouter-wheel-{uuid.uuid4().hex[:8]}"
    api_port = pick_free_port()
    env = {
        **installed.env,
        "CALLROUTER_DB": url,
        "CALLROUTER_RULES": str(installed.workdir / "rules.yaml"),
        "CALLROUTER_ARI_URL": asterisk.http_url,
        "CALLROUTER_ARI_USER": asterisk.ari_user,
        "CALLROUTER_ARI_PASSWORD": asterisk.ari_password,
        "CALLROUTER_ARI_APP": app,
        "CALLROUTER_AMI_HOST": asterisk.ami_host,
        "CALLROUTER_AMI_PORT": str(asterisk.ami_port),
        "CALLROUTER_AMI_USER": asterisk.ami_user,
        "CALLROUTER_AMI_SECRET": asterisk.ami_secret,
        "CALLROUTER_AGI_PORT": "0",
        "CALLROUTER_API_PORT": str(api_port),
        "CALLROUTER_SHUTDOWN_GRACE": "2",
    }
    stdout_path, stderr_path = installed.workdir / "serve.out", installed.workdir / "serve.err"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        server = subprocess.Popen(
            [str(installed.callrouter), "serve"],
            cwd=installed.workdir,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )

    def output() -> str:
        return (
            f"--- stdout ---\n{stdout_path.read_text()}\n--- stderr ---\n{stderr_path.read_text()}"
        )

    try:
        registered = False
        health: httpx.Response | None = None
        deadline = time.monotonic() + 30
        with httpx.Client(auth=(asterisk.ari_user, asterisk.ari_password), timeout=2) as ari:
            while time.monotonic() < deadline and server.poll() is None:
                if not registered:
                    apps = ari.get(f"{asterisk.ari_url}/applications")
                    apps.raise_for_status()
                    registered = app in [a["name"] for a in apps.json()]
                if registered:
                    try:
                        health = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health")
                        break
                    except httpx.TransportError:
                        pass
                time.sleep(0.1)
        if server.poll() is not None:
            pytest.fail(f"callrouter serve exited {server.returncode} while starting\n{output()}")
        if not registered:
            pytest.fail(f"the Stasis app {app} was not registered within 30 s\n{output()}")
        assert health is not None, f"the HTTP API did not answer within 30 s\n{output()}"
        assert health.status_code == 200, f"{health.status_code} {health.text}\n{output()}"
        assert health.json()["directory_revision"] > 0, health.text  # the imported directory

        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"callrouter serve did not stop within 30 s of SIGTERM\n{output()}")
        assert code == 0, f"callrouter serve exited {code} on SIGTERM\n{output()}"
        # What the wheel could get wrong: a module or file imported only late. (Other
        # errors logged at run time are for the tests of the router itself.)
        log = stderr_path.read_text()
        assert "ImportError" not in log and "ModuleNotFoundError" not in log, output()
        assert "callrouter stopped" in log, output()
        assert "event loop: uvloop" in log, output()  # the dependency came with the wheel
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
