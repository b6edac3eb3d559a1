"""Real node processes for the cluster tests: ``stepline serve`` (driven over pipes, as
``tests/driver.py`` does) and ``stepline worker`` (no driver)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import trio

from tests.driver import ENV, Driver

STEPLINE = [sys.executable, "-m", "stepline"]


@asynccontextmanager
async def serve_node(url: str, *args: str) -> AsyncIterator[Driver]:
    """A ``serve`` node; its ``ready`` (with ``node``, its id) is ``driver.events[0]``."""
    proc = await trio.lowlevel.open_process(
        [*STEPLINE, "serve", "--state", url, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=ENV,
    )
    driver = Driver(proc)
    try:
        ready = await driver.next_event()
        assert ready["event"] == "ready", ready
        yield driver
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@asynccontextmanager
async def worker_node(url: str, *args: str, stderr: Any = None) -> AsyncIterator[trio.Process]:
    """A ``worker`` node, stopped with SIGTERM (or killed) at the end; ``stderr``: a file for
    its log (inherited by default)."""
    proc = await trio.lowlevel.open_process(
        [*STEPLINE, "worker", "--state", url, *args],
        stdin=subprocess.DEVNULL,
        stderr=stderr,
        env=ENV,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the test's database (autocommit) and return its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


async def live_nodes(url: str, count: int) -> None:
    """Wait until ``count`` nodes have joined."""
    while sql(url, "SELECT count(*) FROM stepline_nodes")[0][0] < count:
        await trio.sleep(0.05)
