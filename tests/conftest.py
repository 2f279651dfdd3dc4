"""Shared test configuration: PostgreSQL variants may not silently disappear.

Test modules that run on both database backends follow one convention::

    POSTGRES_URL = os.environ.get("CALLROUTER_TEST_POSTGRES")
    BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])

    @pytest.fixture(params=BACKENDS)
    async def engine(request, ...): ...

Without ``CALLROUTER_TEST_POSTGRES`` the ``[postgresql]`` variants are not generated
at all: nothing is skipped, nothing reported.  That is fine on a laptop, but not in CI
or with ``CALLROUTER_REQUIRE_E2E=1`` (what ``./scripts/test`` sets, where it starts a
throwaway PostgreSQL itself): there every ``[sqlite]`` variant of such a module gets a
``[postgresql]`` twin that fails, saying why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest

POSTGRES_ENV = "CALLROUTER_TEST_POSTGRES"
_SQLITE_ID = re.compile(r"\bsqlite\b")


def postgres_required() -> bool:
    """True in CI or with CALLROUTER_REQUIRE_E2E=1 (the same rule as the e2e tests)."""
    ci = os.environ.get("CI", "")
    return (
        ci.lower() not in ("", "0", "false", "no")
        or os.environ.get("CALLROUTER_REQUIRE_E2E") == "1"
    )


def _backend_parametrised(item: pytest.Item) -> bool:
    """A ``[sqlite]`` variant of a test in a module following the BACKENDS convention."""
    module = getattr(item, "module", None)
    backends = getattr(module, "BACKENDS", None)
    callspec = getattr(item, "callspec", None)
    if not isinstance(backends, list) or "sqlite" not in backends or callspec is None:
        return False
    return "postgresql" not in backends and "sqlite" in callspec.params.values()


def _missing_postgres(name: str) -> Callable[[], None]:
    def test() -> None:
        pytest.fail(
            f"{name} needs PostgreSQL and it is required here (CI or "
            f"CALLROUTER_REQUIRE_E2E=1), but {POSTGRES_ENV} is not set: run ./scripts/test "
            f"(it starts a throwaway server) or set {POSTGRES_ENV} to an empty database's "
            f"URL (postgresql+asyncpg://user@127.0.0.1:PORT/db); "
            f"CALLROUTER_REQUIRE_E2E=0 leaves these tests out",
            pytrace=False,
        )

    return test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(POSTGRES_ENV) or not postgres_required():
        return
    twins: list[pytest.Item] = []
    for item in items:
        if not isinstance(item, pytest.Function) or not _backend_parametrised(item):
            continue
        name = item.originalname + "[" + _SQLITE_ID.sub("postgresql", item.callspec.id, 1) + "]"
        twin = pytest.Function.from_parent(item.parent, name=name, callobj=_missing_postgres(name))
        twin.add_marker(pytest.mark.postgres)
        twins.append(twin)
    # Next to their [sqlite] variants would be nicer to read, but order does not matter.
    items.extend(twins)
