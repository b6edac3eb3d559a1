"""The job table: legal transitions, one `finished` per job, retention."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio

from stepline import AlreadyFinished, IllegalTransition, JobState, UnknownJob
from stepline.engine._jobs import JobTable
from stepline.spec._model import JobSpec, Seq


def make_table(keep: int = 10) -> tuple[JobTable, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return JobTable(events.append, keep=keep), events


SPEC = JobSpec(body=Seq(path="", steps=()))


async def test_lifecycle_events_in_order() -> None:
    table, events = make_table()
    job = table.accept(SPEC, name="n", request_id=7)
    table.start(job, trio.CancelScope())
    table.finish(job, JobState.SUCCEEDED, output=42)
    assert [e["event"] for e in events] == ["accepted", "started", "finished"]
    assert events[0]["id"] == 7
    assert events[0]["job"] == job.id
    assert events[2]["output"] == 42
    assert events[2]["state"] == "succeeded"


async def test_illegal_transitions_raise() -> None:
    table, _ = make_table()
    job = table.accept(SPEC, name=None)
    with pytest.raises(IllegalTransition):
        table.finish(job, JobState.SUCCEEDED)  # a queued job can only be cancelled
    table.start(job, trio.CancelScope())
    with pytest.raises(IllegalTransition):
        table.start(job, trio.CancelScope())
    table.finish(job, JobState.FAILED, error={"type": "fail"})
    with pytest.raises(IllegalTransition):
        table.finish(job, JobState.SUCCEEDED)  # never two `finished`


async def test_cancel_queued_finishes_at_once_with_zero_elapsed() -> None:
    table, events = make_table()
    job = table.accept(SPEC, name=None)
    table.request_cancel(job.id, request_id="c")
    assert [e["event"] for e in events] == ["accepted", "cancelling", "finished"]
    assert events[2]["state"] == "cancelled"
    assert events[2]["elapsed"] == 0
    with pytest.raises(AlreadyFinished):
        table.request_cancel(job.id)


async def test_cancel_running_cancels_its_scope_once() -> None:
    table, _events = make_table()
    job = table.accept(SPEC, name=None)
    table.start(job, trio.CancelScope())
    table.request_cancel(job.id)
    assert job.scope is not None
    assert job.scope.cancel_called
    assert job.cancel_reason == "cancelled by request"
    assert job.state is JobState.RUNNING  # its worker writes `finished` when the steps unwind


async def test_unknown_job() -> None:
    table, _ = make_table()
    with pytest.raises(UnknownJob):
        table.get("j99")


async def test_retention_keeps_the_most_recent_finished() -> None:
    table, _ = make_table(keep=2)
    jobs = [table.accept(SPEC, name=None) for _ in range(4)]
    for job in jobs:
        table.cancel(job, "x")
    assert [r["job"] for r in table.records()] == [jobs[2].id, jobs[3].id]
    assert table.counts()["finished"]["cancelled"] == 4  # counts are all-time


async def test_records_and_counts() -> None:
    table, _ = make_table()
    a = table.accept(SPEC, name="a")
    b = table.accept(SPEC, name="b")
    table.start(a, trio.CancelScope())
    assert table.counts()["queued"] == 1
    assert table.counts()["running"] == 1
    times = {"created": b.created, "started": None, "ended": None}
    assert table.records(b.id) == [
        {"job": b.id, "state": "queued", "name": "b", "elapsed": 0.0, **times}
    ]


def finish_with(table: JobTable, output: Any) -> str:
    job = table.accept(SPEC, name=None)
    table.start(job, trio.CancelScope())
    table.finish(job, JobState.SUCCEEDED, output=output)
    return job.id


async def test_kept_outputs_fit_the_byte_budget_newest_first() -> None:
    events: list[dict[str, Any]] = []
    table = JobTable(events.append, keep=10, keep_bytes=10_000)
    big = {"data": "x" * 3000}  # 3,011 bytes encoded
    ids = [finish_with(table, big) for _ in range(5)]
    small = finish_with(table, "tiny")  # under SMALL_OUTPUT: never dropped, never counted
    records = {r["job"]: r for r in table.records()}
    assert [records[j]["output"] is None for j in ids] == [True, True, False, False, False]
    assert records[ids[0]]["output_dropped"] == len(orjson.dumps(big))
    assert "output_dropped" not in records[ids[4]]
    assert records[small]["output"] == "tiny"
    assert all(e["output"] == big for e in events if e["event"] == "finished" and e["job"] in ids)


async def test_records_evicted_by_count_give_their_bytes_back() -> None:
    table = JobTable(lambda _: None, keep=2, keep_bytes=7_000)
    big = "y" * 3000
    for _ in range(50):  # only the two newest are kept: both fit, whatever came before
        last = [finish_with(table, big), finish_with(table, big)]
    assert [r["output"] for r in table.records()] == [big, big]
    assert [r["job"] for r in table.records()] == last


async def test_a_zero_budget_keeps_only_small_outputs() -> None:
    table = JobTable(lambda _: None, keep=5, keep_bytes=0)
    big, small = finish_with(table, ["z" * 2000]), finish_with(table, [1, 2])
    assert table.records(big)[0]["output_dropped"] == 2004
    assert table.records(small)[0]["output"] == [1, 2]
