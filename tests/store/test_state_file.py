"""The state file itself: refused when it is not ours, damaged or in use; never reset or
half-written; untouched without ``--state``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import trio

from ..driver import ENV, SERVE, run_cli, serve
from .test_state import by_event, drain, rows, submit

SRC = str(Path(__file__).resolve().parents[2] / "src")


def refused(state: Path, *args: str) -> str:
    """Start on ``state``: it must fail with status 2 and no output, leaving the file as it was."""
    before = state.read_bytes()
    events, rc, stderr = run_cli([submit({"value": 1})], "--state", str(state), *args)
    assert rc == 2, stderr
    assert events == []
    assert "Traceback" not in stderr
    assert state.read_bytes() == before  # never a silent reset
    return stderr


def test_a_corrupt_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"this is not a database\n" * 200)
    assert "is corrupt" in refused(state)


def test_a_damaged_database_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    _, rc, _ = run_cli([submit({"value": i}) for i in range(50)], "--state", str(state))
    assert rc == 0
    data = bytearray(state.read_bytes())
    assert len(data) > 4096
    data[4096 + 8 : 4096 + 200] = b"\xa5" * 192  # a page's header and cells
    state.write_bytes(bytes(data))
    assert "corrupt" in refused(state)


def test_a_state_file_from_a_newer_stepline_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with closing(sqlite3.connect(state)) as conn:
        conn.execute("CREATE TABLE jobs (id TEXT)")
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    stderr = refused(state)
    assert "format 99" in stderr
    assert "newer" in stderr


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with closing(sqlite3.connect(state)) as conn:
        conn.execute("CREATE TABLE precious (data TEXT)")
        conn.commit()
    assert "not a stepline state file" in refused(state)


async def test_a_state_file_in_use_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    async with serve("--state", str(state)) as first:
        await first.send({"op": "ping", "id": 1})
        await first.wait_for("pong")
        _, rc, stderr = await trio.to_thread.run_sync(lambda: run_cli([], "--state", str(state)))
        assert rc == 2
        assert "in use" in stderr
        await drain(first)


def test_without_state_nothing_touches_the_disk(tmp_path: Path) -> None:
    commands = b'{"op":"define","name":"t","job":{"value":1}}\n{"op":"submit","template":"t"}\n'
    proc = subprocess.run(
        SERVE,
        input=commands,
        cwd=tmp_path,
        capture_output=True,
        check=False,
        env={**ENV, "PYTHONPATH": SRC},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert b'"finished"' in proc.stdout
    assert list(tmp_path.iterdir()) == []


def finished_file(state: Path, jobs: int) -> None:
    _, rc, stderr = run_cli([submit({"value": i}) for i in range(jobs)], "--state", str(state))
    assert rc == 0, stderr


def damage_request(state: Path, job_id: str, request: bytes) -> None:
    """Make a finished job look unfinished, with ``request`` as its stored submit."""
    with closing(sqlite3.connect(state)) as conn:
        conn.execute(
            "UPDATE jobs SET state = 'queued', fin = NULL, request = ? WHERE id = ?",
            (request, job_id),
        )
        conn.commit()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"[1]",
        b"null",
        b'{"job": {"value": 1}, "params": [1]}',
        b'{"job": {"value": 1}, "templates": []}',
    ],
)
def test_a_stored_request_of_the_wrong_shape_is_refused_as_corrupt(
    tmp_path: Path, request_bytes: bytes
) -> None:
    state = tmp_path / "state.db"
    finished_file(state, 3)
    damage_request(state, "j2", request_bytes)
    stderr = refused(state)
    assert "is corrupt" in stderr
    assert "j2" in stderr


@pytest.mark.parametrize("request_bytes", [b"[1]", b"not json"])
def test_a_refused_file_is_not_pruned_to_keep_first(tmp_path: Path, request_bytes: bytes) -> None:
    """51 rows became 10: loading pruned to --keep and committed before checking every row.
    (``not json`` was refused cleanly then, so it shows the pruning alone.)"""
    state = tmp_path / "state.db"
    finished_file(state, 51)
    damage_request(state, "j51", request_bytes)
    assert "is corrupt" in refused(state, "--keep", "10")
    assert rows(state, "SELECT count(*) FROM jobs") == [(51,)]


_DIE_WHILE_CREATING = """
import os, signal, sqlite3, sys
real = sqlite3.connect
def connect(*args, **kwargs):
    conn = real(*args, **kwargs)
    def trace(statement):
        if statement.lstrip().startswith("CREATE TABLE jobs"):
            os.kill(os.getpid(), signal.SIGKILL)  # a crash in the middle of creating the schema
    conn.set_trace_callback(trace)
    return conn
sqlite3.connect = connect
sys.argv = ["stepline", "serve", "--state", sys.argv[1]]
from stepline.cli._main import main
main()
"""


def test_a_crash_while_creating_the_schema_leaves_a_file_the_next_start_opens(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    env = {**ENV, "PYTHONPATH": SRC}
    died = subprocess.run(
        [sys.executable, "-c", _DIE_WHILE_CREATING, str(state)],
        input=b"",
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert died.returncode == -9, died.stderr
    assert state.exists()
    events, rc, stderr = run_cli([submit({"value": 1})], "--state", str(state))
    assert rc == 0, stderr
    assert by_event(events, "finished")[0]["output"] == 1


# Runs stepline serve --state, but with no file descriptor left once the state file is about
# to be opened: the soft limit lowered to what is open, and every gap below it filled.
_NO_DESCRIPTOR_LEFT = """
import os, resource, sys
import stepline.store._sqlite
import stepline.store._store as store
choose = store.backend_for
def backend_for(location):
    backend = choose(location)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) - 1, hard))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        return backend
store.backend_for = backend_for
sys.argv = ["stepline", "serve", "--state", sys.argv[1]]
from stepline.cli._main import main
main()
"""


def test_no_file_descriptor_left_for_the_state_file_is_a_clear_refusal(tmp_path: Path) -> None:
    """EMFILE when the state file is opened: status 2 and the reason, no traceback, no output,
    and nothing created; the same file opens once descriptors are free."""
    state = tmp_path / "state.db"
    starved = subprocess.run(
        [sys.executable, "-c", _NO_DESCRIPTOR_LEFT, str(state)],
        input=b'{"op": "submit", "job": {"value": 1}}\n',
        capture_output=True,
        env={**ENV, "PYTHONPATH": SRC},
        timeout=60,
        check=False,
    )
    stderr = starved.stderr.decode()
    assert starved.returncode == 2, stderr
    assert starved.stdout == b""
    assert "Traceback" not in stderr
    assert f"cannot open state file {state}" in stderr
    assert "Too many open files (EMFILE)" in stderr
    assert not state.exists()
    events, rc, stderr = run_cli([submit({"value": 1})], "--state", str(state))
    assert rc == 0, stderr
    assert by_event(events, "finished")[0]["output"] == 1
