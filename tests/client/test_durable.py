"""``open_executor(state=PATH)``: an embedded executor kept in an SQLite file, as ``stepline
serve --state`` keeps its jobs: closed and opened again, it knows them; killed, it runs again
(or fails) what it was running."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

import stepline
from stepline import JobFailed, JobState
from stepline.store import StoreError

from ..driver import ENV


async def test_jobs_are_known_after_a_close_and_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with stepline.open_executor(state=db) as ex:
        done = await ex.submit({"value": {"n": 1}}, name="first")
        ran = await ex.submit({"run": ["echo", "hello"]})
        bad = await ex.submit({"fail": "no"})
        assert await done.wait() == {"n": 1}
        await ran.wait()
        with pytest.raises(JobFailed):
            await bad.wait()
        assert ex.recovered == []
    async with stepline.open_executor(state=str(db)) as ex:
        records = {r["job"]: r for r in await ex.status()}
        assert ex.recovered == []  # nothing was left unfinished
        later = await ex.submit({"value": 2})
        assert await later.wait() == 2
    assert records[done.id]["state"] == "succeeded"
    assert records[done.id]["output"] == {"n": 1}
    assert records[done.id]["name"] == "first"
    assert records[ran.id]["output"]["stdout"] == "hello\n"
    assert records[bad.id]["state"] == "failed"
    assert later.id not in (done.id, ran.id, bad.id)  # ids go on from the file's


_KILLED = textwrap.dedent(
    """
    import sys, trio, stepline

    async def main():
        async with stepline.open_executor(state=sys.argv[1]) as ex:
            job = await ex.submit({"run": sys.argv[2]})
            async for ev in job.events():
                if ev["event"] == "started":
                    print(job.id, flush=True)
                    await trio.sleep_forever()

    trio.run(main)
    """
)


async def _killed_mid_job(db: Path, marker: Path) -> str:
    """A program embedding an executor over ``db`` is SIGKILLed while its job runs; the
    job's id. The job's first run marks ``marker`` and sleeps; a later run says ``again``."""
    script = f"if [ -f {marker} ]; then echo again; else touch {marker}; exec sleep 300; fi"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _KILLED, str(db), script], stdout=subprocess.PIPE, env=ENV
    )
    assert proc.stdout is not None
    with trio.fail_after(60):
        line = b""
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive_some(100)
        while not marker.exists():
            await trio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    return line.decode().strip()


async def test_a_job_running_when_the_process_was_killed_runs_again(tmp_path: Path) -> None:
    db, marker = tmp_path / "state.db", tmp_path / "ran"
    job_id = await _killed_mid_job(db, marker)
    async with stepline.open_executor(state=db) as ex:
        (again,) = ex.recovered
        assert again.id == job_id
        output = await again.wait()
        events = [e["event"] async for e in again.events()]
    assert output["stdout"] == "again\n"
    # (the last run's `started` may come first: committed, not yet marked written, when killed)
    assert events[-3:] == ["recovered", "started", "finished"], events


async def test_with_on_restart_fail_it_finishes_failed_instead(tmp_path: Path) -> None:
    db, marker = tmp_path / "state.db", tmp_path / "ran"
    job_id = await _killed_mid_job(db, marker)
    async with stepline.open_executor(state=db, on_restart="fail") as ex:
        (lost,) = ex.recovered
        with pytest.raises(JobFailed) as failed:
            await lost.wait()
    assert lost.id == job_id
    assert lost.state is JobState.FAILED
    assert failed.value.error["type"] == "interrupted"


async def test_a_bad_state_or_policy_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_restart must be 'rerun' or 'fail', not 'never'"):
        async with stepline.open_executor(state=tmp_path / "s.db", on_restart="never"):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="takes an SQLite file"):
        async with stepline.open_executor(state="postgresql://localhost/x"):
            pass  # pragma: no cover
    (tmp_path / "foreign").write_text("not a database")
    with pytest.raises(StoreError, match="foreign"):
        async with stepline.open_executor(state=tmp_path / "foreign"):
            pass  # pragma: no cover
    assert not (tmp_path / "s.db").exists()
