"""pytest plugin: real PostgreSQL servers for tests that ask for them.

Registered in the root ``conftest.py`` for every test run, so it must cost nothing
when unused: it imports only pytest at load time, and a server starts only when a
test requests one of the fixtures below. Tests that use them get the ``postgres``
marker, so ``-m "not postgres"`` deselects them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cleo_operator.data.pool import SitePools
    from tests.harness.postgres import PostgresServer

_POSTGRES_FIXTURES = frozenset(
    {
        "postgres_server",
        "postgres_database",
        "fresh_database_name",
        "postgres_replica_pair",
        "tenant_name",
        "postgres_site_pools",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that need a server, so they can be selected or deselected."""
    for item in items:
        if _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway server for the whole session (superuser: ``postgres_server.superuser``).

    Tests share it: give each test its own database (``postgres_database``) or its own
    names, and leave the server's global settings as you found them.
    """
    from tests.harness.postgres import PostgresServer  # noqa: PLC0415  (lazy: see module doc)

    # A template of its own: tests use it as "another database cluster entirely" beside
    # the replica pairs, so its system identifier must differ from theirs.
    server = PostgresServer(template="session")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_database_name(postgres_server: PostgresServer) -> Iterator[str]:
    """A database name nobody uses yet; whatever the test creates under it is dropped."""
    name = f"test_{secrets.token_hex(6)}"
    yield name
    _drop_database(postgres_server, name)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer, fresh_database_name: str) -> str:
    """A fresh, empty database on the session server (dropped after the test)."""
    from psycopg import sql  # noqa: PLC0415

    postgres_server.execute(
        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh_database_name))
    )
    return fresh_database_name


@pytest.fixture
def postgres_replica_pair() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A new primary and a streaming hot standby of it, for one test (it may promote)."""
    from tests.harness.postgres import PostgresServer, make_standby  # noqa: PLC0415

    with PostgresServer() as primary:
        standby = make_standby(primary)
        try:
            yield primary, standby
        finally:
            standby.stop()


def _drop_database(server: PostgresServer, name: str) -> None:
    from psycopg import sql  # noqa: PLC0415

    server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def tenant_name(postgres_server: PostgresServer) -> Iterator[str]:
    """A unique tenant name; its ``cleo_<tenant>`` database and role are dropped afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    yield name
    from psycopg import sql  # noqa: PLC0415

    ident = "cleo_" + name.replace("-", "_")
    _drop_database(postgres_server, ident)
    postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ident)))


@pytest.fixture
def postgres_site_pools(postgres_server: PostgresServer) -> Iterator[SitePools]:
    """A ``SitePools`` with one site, ``main``: the session server, as its superuser."""
    from cleo_operator.data.pool import SitePools  # noqa: PLC0415
    from cleo_operator.data.sites import AdminCredentials  # noqa: PLC0415

    site = postgres_server.site()
    credentials = AdminCredentials(
        user=postgres_server.superuser, password=postgres_server.password
    )
    with SitePools({"main": site}, credentials=lambda _site: credentials) as pools:
        yield pools


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port where a site hangs: it accepts TCP connections and never answers."""
    import socket  # noqa: PLC0415  (lazy: see module doc)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port: int = sock.getsockname()[1]
        yield port
