"""``stepline run --state FILE``, through the real command line: the same command run again
resumes the batch — what succeeded is not run again, what was running when stepline was
SIGKILLed runs again, what failed runs again, an edited job is a new job. These tests run the
example of docs/state.md, "`stepline run --state`: resuming a batch"."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..driver import ENV
from ..proc_tools import new_tag, tagged_env, wait_until_gone
from ..terminal import STEPLINE
from .test_run_stops import wait_for_files

pytestmark = pytest.mark.e2e


def counted(tmp_path: Path, name: str, then: str = "") -> dict[str, Any]:
    """A job that appends a line to ``runs/NAME`` each time it runs, then runs ``then``."""
    (tmp_path / "runs").mkdir(exist_ok=True)
    line = f"echo ran >> {tmp_path / 'runs' / name}"
    return {"name": name, "run": f"{line}; {then}" if then else line}


def runs(tmp_path: Path, name: str) -> int:
    path = tmp_path / "runs" / name
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_jobs(tmp_path: Path, *jobs: Any) -> str:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STEPLINE, "run", *args], capture_output=True, text=True, env=ENV, timeout=60
    )


def test_a_finished_batch_run_again_reruns_only_what_did_not_succeed(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path, counted(tmp_path, "ok"), counted(tmp_path, "bad", "exit 1"))
    state = str(tmp_path / "batch.db")
    first = run("--state", state, jobs)
    assert first.returncode == 1, first.stderr
    second = run("--state", state, jobs)
    assert second.returncode == 1, second.stderr
    assert (runs(tmp_path, "ok"), runs(tmp_path, "bad")) == (1, 2)
    lines = second.stdout.splitlines()
    assert any(line.startswith(f"succeeded {jobs}:1 (ok) (earlier run) ") for line in lines)
    assert any(line.startswith(f"failed    {jobs}:2 (bad) ") for line in lines)
    assert lines[-1] == "2 jobs: 1 failed, 1 succeeded"
    # Fixed, the failed job succeeds; it is a new job (its text changed), the other is kept.
    jobs = write_jobs(tmp_path, counted(tmp_path, "ok"), counted(tmp_path, "bad", "true"))
    third = run("--state", state, jobs)
    assert third.returncode == 0, third.stdout
    assert (runs(tmp_path, "ok"), runs(tmp_path, "bad")) == (1, 3)
    again = run("--json", "--state", state, jobs)
    finished = [json.loads(line) for line in again.stdout.splitlines()]
    assert [(ev["event"], ev["state"], ev["earlier"]) for ev in finished] == [
        ("finished", "succeeded", True)
    ] * 2


def test_a_job_running_at_the_crash_runs_again_and_the_rest_is_kept(tmp_path: Path) -> None:
    marker = tmp_path / "slow.started"
    gate = tmp_path / "gate"
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    slow = counted(tmp_path, "slow", f"echo $$ > {marker}; {wait}")
    jobs = write_jobs(tmp_path, counted(tmp_path, "fast"), slow)
    state = str(tmp_path / "batch.db")
    tag = new_tag()
    proc = subprocess.Popen(
        [*STEPLINE, "run", "--state", state, jobs],
        env=tagged_env(tag),
        text=True,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # a result is shown once its outcome is durable
        if line.startswith("succeeded") and "(fast)" in line:
            break
    wait_for_files(marker)
    proc.send_signal(signal.SIGKILL)  # stepline dies with the slow job running
    proc.communicate(timeout=60)
    assert wait_until_gone(tag) == []  # its process went with it (the guardian)
    gate.write_text("open\n")
    resumed = run("--state", state, jobs)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (runs(tmp_path, "fast"), runs(tmp_path, "slow")) == (1, 2)
    lines = resumed.stdout.splitlines()
    assert any(line.startswith(f"succeeded {jobs}:1 (fast) (earlier run) ") for line in lines)
    assert any(line.startswith(f"succeeded {jobs}:2 (slow) ") for line in lines)
    assert lines[-1] == "2 jobs: 2 succeeded"


def test_an_unfinished_job_no_longer_in_the_batch_is_cancelled_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "old.started"
    old = counted(tmp_path, "old", f"echo $$ > {marker}; sleep 60")
    state = str(tmp_path / "batch.db")
    proc = subprocess.Popen(
        [*STEPLINE, "run", "--state", state, write_jobs(tmp_path, old)],
        env=ENV,
        stdout=subprocess.DEVNULL,
    )
    wait_for_files(marker)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = run("--state", state, write_jobs(tmp_path, counted(tmp_path, "new")))
    assert resumed.returncode == 0, resumed.stderr
    assert (runs(tmp_path, "old"), runs(tmp_path, "new")) == (1, 1)
    assert resumed.stdout.splitlines()[-1] == "1 job: 1 succeeded"


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("my notes, not a database\n" * 100)
    proc = run("--state", str(bogus), write_jobs(tmp_path, counted(tmp_path, "x")))
    assert proc.returncode == 2
    assert proc.stderr.startswith("stepline run: --state: ")
    assert "Traceback" not in proc.stderr
    assert runs(tmp_path, "x") == 0
    assert bogus.read_text() == "my notes, not a database\n" * 100
