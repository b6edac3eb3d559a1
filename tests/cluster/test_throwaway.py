"""The throwaway PostgreSQL of the tests, the benchmark and the demo never outlives its owner."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepline.cluster._throwaway import PostgresMissing, find_binaries

_OWNER = (
    "import time\n"
    "from stepline.cluster._throwaway import ThrowawayPostgres\n"
    "pg = ThrowawayPostgres()\n"
    "pg.start()\n"
    "print(pg.directory, flush=True)\n"
    "time.sleep(600)\n"
)


def _alive(pid: int) -> bool:
    """Running, and not a zombie (the tests may run in a subreaper, which reaps no stranger)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_server_whose_owner_was_killed_is_stopped_and_removed():
    try:
        find_binaries()
    except PostgresMissing as exc:
        pytest.skip(str(exc))
    argv = [sys.executable, "-c", _OWNER]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as owner:
        assert owner.stdout is not None
        directory = Path(owner.stdout.readline().strip())
        postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
        assert _alive(postmaster)
        owner.kill()  # no atexit, no fixture teardown: only the guardian is left to clean up
    deadline = time.monotonic() + 30
    while (directory.exists() or _alive(postmaster)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(postmaster)
    assert not directory.exists()
