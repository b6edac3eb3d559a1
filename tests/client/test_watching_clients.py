"""Watching from Python: every API's `logs`, `output_lines()`, status filters, cancel options,
and `output`/`retry` events in a job's `events()`."""

from __future__ import annotations

import pytest

import stepline
from stepline import AsyncClient, Client, JobFailed
from stepline import steps as s

ARGS = ("--workers", "2", "--heartbeat", "0")

SCRIPT = "for n in 1 2 3; do echo line $n; done; echo oops >&2; exit 3"


def check_failure(lines: list[dict[str, object]], error: dict[str, object]) -> None:
    out = [line["line"] for line in lines if line["stream"] == "stdout"]
    assert out == ["line 1", "line 2", "line 3"]
    assert [line["line"] for line in lines if line["stream"] == "stderr"] == ["oops"]
    assert sorted(int(str(line["n"])) for line in lines) == [5, 6, 7, 8]  # the second try
    assert error["attempts"] == 2
    assert error["stdout"] == "line 1\nline 2\nline 3\n"


async def test_the_in_process_api() -> None:
    job = s.job(s.retry(s.run(SCRIPT, stream=True), 2))
    async with stepline.open_executor(heartbeat=0) as ex:
        handle = await ex.submit(job, name="watched")
        lines = [line async for line in handle.output_lines()]
        with pytest.raises(JobFailed) as failed:
            await handle.wait()
        kinds = [ev["event"] async for ev in handle.events()]
        page = await ex.logs(handle, after=7)
        records = await ex.status(state=["failed"], name="watched", limit=1)
        sleeper = await ex.submit(s.job(s.run("sleep 60", grace=60)))
        assert await sleeper.cancel(force=True) is True
    assert len(lines) == 8
    check_failure(lines[-4:], failed.value.error)
    assert kinds.count("retry") == 1
    assert kinds.count("output") == 8  # two tries of four lines
    assert page == {"job": handle.id, "lines": [lines[-1]], "next": 8, "trimmed": 0, "done": True}
    assert [r["job"] for r in records] == [handle.id]
    assert sleeper.state.value == "cancelled"


def test_the_sync_client() -> None:
    with Client(ARGS) as client:
        job = client.submit(s.job(s.retry(s.run(SCRIPT), 2)), name="watched")
        lines = list(job.output_lines(timeout=30))
        with pytest.raises(JobFailed) as failed:
            job.wait(timeout=30)
        assert [line["n"] for line in client.logs(job, after=6)["lines"]] == [7, 8]
        assert [r["job"] for r in client.status(state="failed", limit=5)] == [job.id]
        sleeper = client.submit(s.job(s.run("trap '' TERM; sleep 60", grace=60)))
        assert sleeper.cancel(timeout=30, grace=0.1) is True
        assert [e["event"] for e in job.events()].count("retry") == 1
    check_failure(lines[-4:], failed.value.error)


async def test_the_async_client() -> None:
    async with AsyncClient(ARGS) as client:
        job = await client.submit(s.job(s.retry(s.run(SCRIPT), 2), stream=True))
        lines = [line async for line in job.output_lines()]
        with pytest.raises(JobFailed) as failed:
            await job.wait()
        assert (await client.logs(job.id))["done"] is True
        assert [r["job"] for r in await client.status(since=0, limit=1)] == [job.id]
        sleeper = await client.submit(s.job(s.run("sleep 60", grace=60)))
        assert await sleeper.cancel(force=True) is True
        kinds = [e["event"] async for e in job.events()]
    assert kinds.count("output") == 8
    check_failure(lines[-4:], failed.value.error)
