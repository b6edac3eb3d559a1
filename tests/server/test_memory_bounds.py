"""Memory stays bounded in bytes, not only in events, when the driver stops reading stdout.

Each test measures the resident memory of the real ``stepline serve`` process while it is
pushed, with bounds far above what the fixed code uses and far below what the unbounded code
reached (figures in NOTES.md). Nothing is dropped on the way: every job's ``finished`` arrives,
whole, once the driver reads again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from ..driver import lifecycle_ok
from .test_faults import MiB, RssSampler, served

pytestmark = pytest.mark.e2e

BIG_JOB_SCRIPT = (
    "printf x >> {counter}; "
    "head -c 1048576 /dev/zero | tr '\\0' a; head -c 1048576 /dev/zero | tr '\\0' b >&2"
)


async def wait_until_settled(counter: Path, total: int, quiet: float = 3.0) -> int:
    """How many jobs ran once all ``total`` did, or once none started for ``quiet`` seconds:
    a stepline that waits for its reader stops starting jobs, one that buffers runs them all."""
    ran, still = -1, 0.0
    while True:
        now = len(counter.read_bytes()) if counter.exists() else 0
        if now >= total:
            return now
        still = still + 0.1 if now == ran else 0.0
        if still >= quiet:
            return now
        ran = now
        await trio.sleep(0.1)


async def test_unread_big_outputs_wait_instead_of_piling_up(tmp_path: Path) -> None:
    """300 jobs of 2 MiB output each, stdout unread: the outbox used to hold them all (RSS
    29 -> 651 MiB); now the workers wait for the reader once it holds about a MiB."""
    counter = tmp_path / "ran"
    job = {"run": ["sh", "-c", BIG_JOB_SCRIPT.format(counter=counter)]}
    total = 300
    async with (
        served("--keep", "0", "--queue", "400", "--heartbeat", "0", deadline=300) as sl,
        trio.open_nursery() as nursery,
    ):
        sampler = RssSampler(sl.pid)
        nursery.start_soon(sampler.run)

        async def submit_all() -> None:
            for n in range(total):
                await sl.driver.send({"op": "submit", "job": job, "id": n})

        nursery.start_soon(submit_all)
        ran = await wait_until_settled(counter, total)
        finished: list[dict[str, Any]] = []
        while len(finished) < total:
            ev = await sl.driver.next_event()
            if ev["event"] == "finished":
                finished.append(ev)
        await sl.driver.close_stdin()
        await sl.driver.rest()
        nursery.cancel_scope.cancel()
    assert ran < total, "every job ran while nobody read stdout: nothing waited"
    for ev in finished:
        assert ev["state"] == "succeeded", ev
        assert ev["output"]["stdout"] == "a" * MiB
        assert ev["output"]["stderr"] == "b" * MiB
    lifecycle_ok(sl.driver.events)
    assert sampler.growth < 150 * MiB, f"RSS grew by {sampler.growth / MiB:.1f} MiB"


async def test_kept_records_hold_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    """100 jobs of 2 MiB output each, read as they finish, all kept (``--keep`` 1000): the
    records used to hold every output (RSS 29 -> 250 MiB, and ``status`` was a 200 MB line). Now
    the most recent outputs are kept up to the budget, and older records say what they lost."""
    job = {"run": ["sh", "-c", BIG_JOB_SCRIPT.format(counter=tmp_path / "ran")]}
    total = 100
    async with served("--heartbeat", "0", deadline=300) as sl, trio.open_nursery() as nursery:
        sampler = RssSampler(sl.pid)
        nursery.start_soon(sampler.run)
        for n in range(total):
            await sl.driver.send({"op": "submit", "job": job, "id": n})
        finished = [await sl.driver.wait_for("finished") for _ in range(total)]
        await sl.driver.send({"op": "status", "id": "all"})
        status = await sl.driver.wait_for("status", id="all")
        await sl.driver.send({"op": "status", "id": "last", "job": finished[-1]["job"]})
        last = await sl.driver.wait_for("status", id="last")
        await sl.driver.close_stdin()
        await sl.driver.rest()
        nursery.cancel_scope.cancel()
    assert all(ev["output"]["stdout"] == "a" * MiB for ev in finished)  # `finished` is whole
    records = status["jobs"]
    assert len(records) == total
    full = [r for r in records if r["output"] is not None]
    dropped = [r for r in records if r["output"] is None]
    assert full
    assert dropped
    assert all(r["output_dropped"] > 2 * MiB for r in dropped)
    assert all(r["output"]["stdout"] == "a" * MiB for r in full)
    assert not any("output_dropped" in r for r in full)
    assert len(full) * 2 * MiB <= 16 * MiB  # the default budget
    newest = {ev["job"] for ev in finished[-len(full) :]}
    assert {r["job"] for r in full} == newest  # the most recent outputs are the ones kept
    assert last["jobs"][0]["output"]["stderr"] == "b" * MiB
    assert sampler.growth < 100 * MiB, f"RSS grew by {sampler.growth / MiB:.1f} MiB"
