"""Bare ``value`` jobs completed in one step answer exactly as the general path does.

``stepline serve`` completes a submitted ``{"value": v}`` in one transition
(``JobTable.complete_value``): checked by ``value_job`` instead of ``validate_job``, its three
events encoded together by ``completed_lines``. These tests feed the same lines to two real
servers on in-memory pipes, one taking that lane and one kept on the general path (a hook on
every finish needs each ``finished`` as a dict, which turns the lane off), and require the same
events, field for field and in the same key order, and the same ``status`` and ``stats``
answers, times aside. The encoder is also held to orjson's own bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from stepline import Config
from stepline.engine._jobs import Job
from stepline.engine._values import RUN_BYTES
from stepline.server._serve import Server
from stepline.spec._fields import MAX_JSON_DEPTH
from stepline.spec._validate import NOT_A_VALUE, validate_job, value_job, value_spec
from stepline.wire._events import completed_lines, completed_run_lines

from ..hypothesis_profiles import note, scaled

Event = dict[str, Any]
_TIMES: Final = frozenset({"ts", "elapsed", "created", "started", "ended"})

# JSON values as a driver may send them; strings that defer (`${job...}`) are left out: such a
# job waits for a worker, and what runs at once after it then depends on the scheduler.
_text = st.text(max_size=12).filter(lambda s: "${job" not in s and "${tasks" not in s)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_request_ids = st.none() | st.text(max_size=6) | st.integers(-(2**40), 2**40)


def _submit(value: Any, request_id: Any, name: str | None) -> bytes:
    command: dict[str, Any] = {"op": "submit", "job": {"value": value}}
    if request_id is not None:
        command["id"] = request_id
    if name is not None:
        command["name"] = name
    return orjson.dumps(command) + b"\n"


_submits = st.builds(_submit, _values, _request_ids, st.none() | _text)
# Lines the lane must leave to the general path, mixed in: refused values, other at-once jobs.
_others = st.sampled_from(
    [
        b'{"op":"submit","job":{"value":"${params.x}"}}\n',
        b'{"op":"submit","job":{"value":' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * 65 + b"}}\n",
        b'{"op":"submit","job":{"value":18446744073709551616}}\n',
        b'{"op":"submit","job":{"value":1,"name":"n"}}\n',
        b'{"op":"submit","job":{"steps":[{"value":1}]}}\n',
        b'{"op":"submit","job":{"fail":"no"},"id":7}\n',
        b'{"op":"submit","job":{"value":1},"extra":1}\n',
        b'{"op":"status","job":"j1"}\n',
        b'{"op":"cancel","job":"j1"}\n',
    ]
)
_VALUE_SUBMIT: Final = b'{"op":"submit","job":{"value"'
_CLOSING: Final = b'{"op":"status"}\n{"op":"stats","id":"s"}\n'


async def _serve(
    config: Config, data: bytes, *, general: bool, cuts: Sequence[int] = ()
) -> list[Event]:
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    stdout, stdout_receive = trio.testing.memory_stream_one_way_pair()
    server = Server(config, stdin, stdout, handle_signals=False)
    pipes = (stdin_send, stdout, stdout_receive)
    return await serve_through(server, pipes, data, general=general, cuts=cuts)


Pipes = tuple[trio.abc.SendStream, trio.abc.SendStream, trio.abc.ReceiveStream]


async def serve_through(
    server: Server, pipes: Pipes, data: bytes, *, general: bool, cuts: Sequence[int] = ()
) -> list[Event]:
    """Run ``server`` fed ``data`` through ``pipes`` (our end of its stdin, its stdout and our
    end of that) to its end; its events. ``general``: a finish hook keeps every job off the
    one-step lane. ``cuts``: offsets in ``data`` where it is cut into pieces written one at a
    time, each once the server has handled the last and waits for more (its own read)."""
    stdin_send, stdout, stdout_receive = pipes
    if general:
        server.executor.on_finish(lambda job, finished: None)
    out = bytearray()

    async def read() -> None:
        while chunk := await stdout_receive.receive_some():
            out.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        if cuts:
            nursery.start_soon(_write, stdin_send, data, cuts)
        else:
            await stdin_send.send_all(data)
            await stdin_send.aclose()
        assert await server.run() == 0
        await stdout.aclose()
    return [orjson.loads(line) for line in bytes(out).splitlines()]


async def _write(stdin: trio.abc.SendStream, data: bytes, cuts: Sequence[int]) -> None:
    """``data`` into ``stdin`` in the pieces ``cuts`` makes, each once everyone waits, so that
    the reader gets each as one chunk; then EOF."""
    start = 0
    for end in [*sorted(cuts), len(data)]:
        await trio.testing.wait_all_tasks_blocked()
        await stdin.send_all(data[start:end])
        start = end
    await stdin.aclose()


def _timeless(ev: Any) -> Any:
    """``ev`` with every time replaced, keeping the key order (a list of pairs)."""
    if isinstance(ev, dict):
        return [(k, None if k in _TIMES else _timeless(v)) for k, v in ev.items()]
    if isinstance(ev, list):
        return [_timeless(v) for v in ev]
    return ev


async def _same_answers(config: Config, data: bytes, cuts: Sequence[int] = ()) -> list[Event]:
    lane = await _serve(config, data, general=False, cuts=cuts)
    general = await _serve(config, data, general=True, cuts=cuts)
    assert [_timeless(e) for e in lane] == [_timeless(e) for e in general]
    return lane


@given(st.lists(_submits | _others, min_size=1, max_size=30))
@scaled(60)
def test_the_lane_answers_as_the_general_path(lines: list[bytes]) -> None:
    data = b"".join(lines) + _CLOSING
    note(f"{sum(line.startswith(_VALUE_SUBMIT) for line in lines)} value submits")
    # keep 5 records and 2 KiB of outputs: retention drops records and outputs on both paths
    config = Config(workers=2, queue_size=16, heartbeat=0, keep=5, keep_bytes=2048)
    trio.run(_same_answers, config, data)


# Outputs big enough that a few of them fill a run (RUN_BYTES), which then completes early.
_big_submits = st.builds(
    _submit, st.integers(8000, 30000).map(lambda n: "b" * n), _request_ids, st.none()
)
# Up to 130 value submits in a row: longer than the reader's 64 commands between yields.
_value_runs = st.builds(
    lambda count, rid: [_submit(i, rid, None) for i in range(count)],
    st.integers(1, 130),
    _request_ids,
)


@given(
    st.lists(
        _value_runs | (_submits | _big_submits | _others).map(lambda line: [line]), max_size=8
    ),
    st.lists(st.integers(min_value=0), max_size=5),
)
@scaled(40)
def test_runs_of_values_answer_as_the_general_path(
    blocks: list[list[bytes]], cuts: list[int]
) -> None:
    """Runs of value jobs (engine/_values.py): longer than the reader's fairness count, cut
    short by refused values, other commands and full runs, and split across reads anywhere
    (inside a line too)."""
    lines = [line for block in blocks for line in block]
    data = b"".join(lines) + _CLOSING
    note(f"{len(lines) // 50 * 50}+ lines, {len(cuts)} cuts")
    config = Config(workers=2, queue_size=16, heartbeat=0, keep=60, keep_bytes=96 << 10)
    trio.run(_same_answers, config, data, [cut % len(data) for cut in cuts])


async def test_a_long_run_with_commands_inside_answers_as_the_general_path() -> None:
    values = [_submit(i, i if i % 3 else None, None) for i in range(300)]
    values[100] = b'{"op":"submit","job":{"value":"${params.x}"},"id":"bad"}\n'
    values[150] = b'{"op":"status","job":"j149","id":"st"}\n'
    values[200] = _submit("b" * (RUN_BYTES + 1), "big", None)
    events = await _same_answers(Config(heartbeat=0, keep=250), b"".join(values) + _CLOSING)
    (refused,) = [e for e in events if e.get("id") == "bad"]
    assert refused["event"] == "error"
    (status,) = [e for e in events if e.get("id") == "st"]
    assert status["jobs"][0]["state"] == "succeeded"  # the run before it was completed first
    assert sum(e["event"] == "finished" for e in events) == 298


async def test_a_value_job_is_three_lines_and_a_kept_record() -> None:
    data = _submit({"a": [1, 2.5]}, "r", "nm") + _CLOSING
    events = await _same_answers(Config(heartbeat=0), data)
    kinds = [e["event"] for e in events]
    assert kinds == ["ready", "accepted", "started", "finished", "status", "stats", "bye"]
    finished = events[3]
    assert (finished["output"], finished["id"], finished["elapsed"]) == ({"a": [1, 2.5]}, "r", 0)
    (record,) = events[4]["jobs"]
    assert (record["job"], record["name"], record["state"]) == ("j1", "nm", "succeeded")
    assert events[5]["finished"]["succeeded"] == 1


async def test_big_outputs_are_dropped_from_kept_records_on_both_paths() -> None:
    big = "x" * 3000
    data = b"".join(_submit(big, None, None) for _ in range(3)) + _CLOSING
    events = await _same_answers(Config(heartbeat=0, keep_bytes=4096), data)
    (status,) = [e for e in events if e["event"] == "status"]
    assert [r.get("output_dropped") for r in status["jobs"]] == [3002, 3002, None]


@given(
    st.integers(min_value=1, max_value=10**12),
    st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.just(1765000000.0),
    _values,
    _request_ids,
)
@scaled(300)
def test_completed_lines_are_orjsons_bytes(number: int, ts: float, output: Any, rid: Any) -> None:
    job_id = f"j{number}"
    tag = {} if rid is None else {"id": rid}
    events = [
        {"event": "accepted", "ts": ts, "job": job_id, **tag},
        {"event": "started", "ts": ts, "job": job_id, **tag},
        {
            "event": "finished",
            "ts": ts,
            "job": job_id,
            "state": "succeeded",
            "elapsed": 0.0,
            "output": output,
            **tag,
        },
    ]
    expected = b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)
    assert completed_lines(job_id, ts, orjson.dumps(output), rid) == expected


@given(
    st.integers(min_value=1, max_value=10**12),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.lists(st.tuples(_values, _request_ids), max_size=5),
)
@scaled(200)
def test_a_runs_lines_are_its_jobs_lines_joined(
    first: int, ts: float, jobs: list[tuple[Any, Any]]
) -> None:
    job_ids = [f"j{first + i}" for i in range(len(jobs))]
    outputs = [orjson.dumps(value) for value, _ in jobs]
    request_ids = [rid for _, rid in jobs]
    each = zip(job_ids, outputs, request_ids, strict=True)
    expected = b"".join(completed_lines(job_id, ts, out, rid) for job_id, out, rid in each)
    assert completed_run_lines(ts, job_ids, outputs, request_ids) == expected


@given(_values)
@scaled(200)
def test_value_job_checks_as_validate_job_does(value: Any) -> None:
    raw = {"value": value}
    checked = value_job(raw)
    assert checked is not NOT_A_VALUE
    assert value_spec(checked) == validate_job(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"value": "${params.x}"},  # refused: validate_job says why
        {"value": math.inf},
        {"value": 2**64},
        {"value": "${job.id}"},  # deferred until the job starts
        {"value": 1, "name": "n"},
        {"steps": [{"value": 1}]},
        [{"value": 1}],
    ],
)
def test_what_value_job_leaves_to_validate_job(raw: Any) -> None:
    assert value_job(raw) is NOT_A_VALUE


def test_a_value_jobs_spec_is_made_when_asked_for() -> None:
    job = Job("j1", None, None, value=[1])
    assert job.spec == validate_job({"value": [1]})
    assert job.spec is job.spec
