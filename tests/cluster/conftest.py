"""A real PostgreSQL for the cluster tests: a throwaway server started once per session from
the machine's binaries, or the one named by ``STEPLINE_TEST_POSTGRES`` (a postgresql:// URL of
a role allowed to create databases). Each test gets a database of its own."""

from __future__ import annotations

import itertools
import os
import urllib.parse
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (the test extra)")

# Below the importorskip: without psycopg the module is skipped before this import fails.
from stepline.cluster._throwaway import PostgresMissing, ThrowawayPostgres  # noqa: E402

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database."""
    named = os.environ.get("STEPLINE_TEST_POSTGRES")
    if named:
        yield named
        return
    try:
        server = ThrowawayPostgres()
    except PostgresMissing as exc:
        pytest.skip(f"no PostgreSQL to test against: {exc}, and STEPLINE_TEST_POSTGRES is unset")
    with server:
        yield server.url


@pytest.fixture
def cluster_url(postgres_server: str) -> str:
    """A fresh, empty database on that server, as a postgresql:// URL."""
    name = f"stepline_test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(postgres_server, name)


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)  # (urlunsplit would drop an empty host: "postgresql:/x")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{name}{query}"


def with_user(url: str, user: str) -> str:
    """The same database as another role (the URL's query string carries the user)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    query["user"] = [user]
    encoded = urllib.parse.urlencode(query, doseq=True)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{encoded}"
