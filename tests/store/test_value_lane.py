"""With ``--state``, bare ``value`` jobs completed in one step answer as the general path does.

``stepline serve --state`` completes a submitted ``{"value": v}`` that a worker would start at
once in one step (``store/_admit.py``'s ``stage_value``): its final row and its three events,
numbered at commit, join one batch, and its lines are written after that commit. Other submits
are staged, accepted after their record's commit, and run after. These tests feed the same lines
to two real servers on in-memory pipes, each on its own SQLite file, one taking that lane and
one kept on the general path (a hook on every finish needs each ``finished`` as a dict, which
turns the lane off), and require, times aside: the same events for every job, in the same
order and with the same fields; the same replies (under ``--on-restart rerun``: with ``fail``
the general path's value job waits for a worker, so a reply may find it queued); every logged
event numbered 1, 2, ... in the order written; and, started again on each file, the same
``status``, the same next job id, nothing recovered and the same rows (requests included). A
failed commit refuses the lane's submits as it refuses the others.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from stepline import Config
from stepline.server._serve import Server
from stepline.store import Backend, MemoryBackend, Store, backend_for
from stepline.store._pipeline import MAX_STAGED_VALUES
from stepline.store._recovery import RestartPolicy
from stepline.wire._events import numbered_completed_lines, numbered_completed_run_lines

from ..hypothesis_profiles import note, scaled
from ..server.test_values_at_once import (
    _big_submits,
    _others,
    _request_ids,
    _submits,
    _timeless,
    _value_runs,
    _values,
    serve_through,
)

Event = dict[str, Any]
_LOGGED: Final = frozenset({"accepted", "started", "finished", "cancelling", "recovered"})
_CLOSING: Final = b'{"op":"status"}\n{"op":"stats","id":"s"}\n'
_AFTER_RESTART: Final = b'{"op":"status"}\n{"op":"submit","id":"next","job":{"value":0}}\n'
_VALUE_SUBMIT: Final = b'{"op":"submit","job":{"value"'


async def _serve(
    backend: Backend, data: bytes, config: Config, *, general: bool, on_restart: RestartPolicy
) -> list[Event]:
    """One ``serve --state`` run on ``backend``, fed ``data``; its events."""
    store = await Store.open(backend, keep=config.keep, write_ahead_start=on_restart == "fail")
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    stdout, stdout_receive = trio.testing.memory_stream_one_way_pair()
    server = Server(config, stdin, stdout, handle_signals=False, store=store, on_restart=on_restart)
    return await serve_through(server, (stdin_send, stdout, stdout_receive), data, general=general)


def _unnumbered(events: list[Event], *, first: int = 1) -> list[Event]:
    """The events without ``seq``, once checked: the logged ones carry first, first + 1, ... in
    the order written, and no other event carries one."""
    logged = [e for e in events if e["event"] in _LOGGED]
    assert [e["seq"] for e in logged] == list(range(first, first + len(logged)))
    assert all("seq" not in e for e in events if e["event"] not in _LOGGED)
    return [{k: v for k, v in e.items() if k != "seq"} for e in events]


def _in_order(event: Event) -> Event:
    """A ``status`` reply with its records in job order (finish order may differ: see
    :func:`_lane_and_general`)."""
    if event["event"] == "status":
        event["jobs"].sort(key=lambda record: int(record["job"][1:]))
    return event


def _by_job(events: list[Event]) -> tuple[dict[str, list[Any]], list[Any]]:
    """Each job's events in order, and every other event in order, times aside."""
    jobs: dict[str, list[Any]] = defaultdict(list)
    others = []
    for e in events:
        if e["event"] in _LOGGED:
            jobs[e["job"]].append(_timeless(e))
        else:
            others.append(_timeless(e))
    return dict(jobs), others


async def _lane_and_general(data: bytes, config: Config, on_restart: RestartPolicy) -> list[Event]:
    """Serve ``data`` on the lane and on the general path, then restart each on its file; the
    lane's events, once every comparison held."""
    runs, restarts, files = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for general in (False, True):
            path = Path(tmp, f"{general}.db")
            events = await _serve(
                backend_for(path), data, config, general=general, on_restart=on_restart
            )
            runs.append(_unnumbered(events))
            logged = sum(e["event"] in _LOGGED for e in events)
            again = await _serve(
                backend_for(path), _AFTER_RESTART, config, general=general, on_restart=on_restart
            )
            assert [e for e in again if e["event"] == "recovered"] == []
            files.append(_rows(path))
            restarts.append([_timeless(_in_order(e)) for e in _unnumbered(again, first=logged + 1)])
    (lane_jobs, lane_replies), (jobs, replies) = _by_job(runs[0]), _by_job(runs[1])
    assert lane_jobs == jobs
    if on_restart == "rerun":
        # With --on-restart fail the general path runs a value job on a worker once its start
        # is committed, so a reply may still find it queued where the lane had completed it,
        # and two workers may finish (and so number) jobs in either order.
        assert lane_replies == replies
    assert restarts[0] == restarts[1]
    assert files[0] == files[1]
    return runs[0]


def _rows(path: Path) -> list[tuple[Any, ...]]:
    """The file's jobs as stored, their elapsed times and finish numbers aside."""
    with closing(sqlite3.connect(path)) as conn:
        query = "SELECT id, name, request, state, CAST(result AS TEXT) FROM jobs ORDER BY rowid"
        return sorted(conn.execute(query))


@given(st.lists(_submits | _others, min_size=1, max_size=20), st.sampled_from(["rerun", "fail"]))
@scaled(25)
def test_the_lane_answers_as_the_general_path_with_state(
    lines: list[bytes], on_restart: RestartPolicy
) -> None:
    data = b"".join(lines) + _CLOSING
    note(f"{sum(line.startswith(_VALUE_SUBMIT) for line in lines)} value submits")
    # keep 5 records and 2 KiB of outputs: retention drops records and outputs on both paths
    # (under rerun: with fail, which records are the newest 5 depends on the workers' order)
    keep = 5 if on_restart == "rerun" else 1000
    config = Config(workers=2, queue_size=16, heartbeat=0, keep=keep, keep_bytes=2048)
    trio.run(_lane_and_general, data, config, on_restart)


@given(
    st.lists(
        _value_runs | (_submits | _big_submits | _others).map(lambda line: [line]), max_size=6
    ),
    st.sampled_from(["rerun", "fail"]),
)
@scaled(15)
def test_runs_of_values_answer_as_the_general_path_with_state(
    blocks: list[list[bytes]], on_restart: RestartPolicy
) -> None:
    """Runs of value jobs staged together (store/_values.py): longer than the reader's
    fairness count, cut short by refused values, other commands and full runs (RUN_BYTES)."""
    lines = [line for block in blocks for line in block]
    note(f"{len(lines) // 50 * 50}+ lines")
    keep = 60 if on_restart == "rerun" else 1000
    config = Config(workers=2, queue_size=16, heartbeat=0, keep=keep, keep_bytes=96 << 10)
    trio.run(_lane_and_general, b"".join(lines) + _CLOSING, config, on_restart)


@given(
    st.integers(min_value=1, max_value=10**12),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.lists(st.tuples(_values, _request_ids), max_size=5),
    st.integers(min_value=0, max_value=10**12),
)
@scaled(200)
def test_a_runs_numbered_lines_are_its_jobs_numbered_lines_joined(
    first: int, ts: float, jobs: list[tuple[Any, Any]], seq: int
) -> None:
    job_ids = [f"j{first + i}" for i in range(len(jobs))]
    outputs = [orjson.dumps(value) for value, _ in jobs]
    request_ids = [rid for _, rid in jobs]
    each = zip(job_ids, outputs, request_ids, strict=True)
    expected = b"".join(
        numbered_completed_lines(job_id, ts, out, rid) % (n, n + 1, n + 2)
        for n, (job_id, out, rid) in zip(range(seq, seq + 3 * len(jobs), 3), each, strict=True)
    )
    run = numbered_completed_run_lines(ts, job_ids, outputs, request_ids)
    assert run % tuple(range(seq, seq + 3 * len(jobs))) == expected


@pytest.mark.parametrize("on_restart", ["rerun", "fail"])
async def test_value_jobs_are_three_numbered_lines_and_one_final_row(
    on_restart: RestartPolicy,
) -> None:
    """The lane's events, in order, and a file that holds each job once, final."""
    values = [{"a": [1, 2.5]}, "50%", None]
    data = b"".join(
        orjson.dumps({"op": "submit", "id": f"r{i}", "job": {"value": v}}) + b"\n"
        for i, v in enumerate(values)
    )
    events = await _lane_and_general(data + _CLOSING, Config(heartbeat=0), on_restart)
    kinds = [e["event"] for e in events]
    assert kinds == ["ready", *["accepted", "started", "finished"] * 3, "status", "stats", "bye"]
    finished = [e for e in events if e["event"] == "finished"]
    assert [(e["output"], e["id"], e["elapsed"]) for e in finished] == [
        (v, f"r{i}", 0) for i, v in enumerate(values)
    ]


async def test_a_failed_commit_refuses_the_lanes_submits(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Value jobs staged in a batch whose commit fails are refused (``store_failed``), none of
    their events written and nothing of them stored; the id counter still moves on."""
    backend = MemoryBackend()
    backend.failing = OSError("disk full")
    data = b"".join(b'{"op":"submit","id":%d,"job":{"value":%d}}\n' % (i, i) for i in range(3))
    events = await _serve(backend, data, Config(heartbeat=0), general=False, on_restart="rerun")
    assert [e["event"] for e in events] == ["ready", "error", "error", "error", "bye"]
    assert {e["code"] for e in events if e["event"] == "error"} == {"store_failed"}
    assert [e["id"] for e in events if e["event"] == "error"] == [0, 1, 2]
    assert backend.jobs == {}
    backend.failing = None
    again = await _serve(
        backend, _AFTER_RESTART, Config(heartbeat=0), general=False, on_restart="rerun"
    )
    assert [e["job"] for e in again if e["event"] == "accepted"] == ["j1"]


class _SlowBackend(MemoryBackend):
    """Commits take a second (on trio's clock): submits pile up while one is made."""

    async def commit(self, batch: Any) -> None:
        await trio.sleep(1)
        await super().commit(batch)


async def test_value_jobs_keep_their_lane_beyond_the_staged_bound(
    autojump_clock: trio.abc.Clock,
) -> None:
    """More value jobs than may be staged at once while a commit is slow: the reader waits for
    the oldest commit and every job still completes in one step (three lines together), none
    falls back to waiting for a slot and a worker."""
    jobs = MAX_STAGED_VALUES + 200
    data = b"".join(b'{"op":"submit","job":{"value":%d}}\n' % i for i in range(jobs))
    backend = _SlowBackend()
    events = await _serve(backend, data, Config(heartbeat=0), general=False, on_restart="rerun")
    lifecycle = [e for e in events if e["event"] in _LOGGED]
    kinds = [e["event"] for e in lifecycle]
    assert kinds == ["accepted", "started", "finished"] * jobs
    assert [e["job"] for e in lifecycle[::3]] == [f"j{n}" for n in range(1, jobs + 1)]
    assert {row[2] for row in backend.jobs.values()} == {"succeeded"}
