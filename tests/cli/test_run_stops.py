"""``stepline run`` stops the way ``stepline serve`` does, through the real command line: a
signal cancels every job (processes stopped, workspaces removed) while the display says so,
a second signal kills at once, a closed stdout stops it without a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ..proc_tools import new_tag, tagged_env, wait_until_gone
from ..terminal import STEPLINE, Terminal

pytestmark = pytest.mark.e2e


def sleeper(tmp_path: Path, name: str, *, ignore_term: bool = False, graph: bool = False) -> Any:
    """A job whose process writes its pid and working directory, then sleeps for a minute."""
    trap = "trap '' TERM; " if ignore_term else ""
    line = f"{trap}pwd > {tmp_path / name}.cwd; echo $$ > {tmp_path / name}.pid; sleep 60"
    run: dict[str, Any] = {"run": line}
    if ignore_term:
        run["grace"] = 300  # only a SIGKILL can stop it before the test's guard
    if graph:
        return {"name": name, "tasks": {"t": {"steps": [run]}}}
    return {"name": name, "steps": [run]}


def jobs_file(tmp_path: Path, *jobs: Any) -> str:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return str(path)


def wait_for_files(*paths: Path) -> None:
    """Until each file holds a line (a guard of 60 s against hanging; never a measurement)."""
    deadline = time.monotonic() + 60
    while not all(p.exists() and p.read_text().endswith("\n") for p in paths):
        assert time.monotonic() < deadline, f"not all written: {paths}"
        time.sleep(0.02)


def test_ctrl_c_on_a_terminal_cancels_every_job_and_says_so(tmp_path: Path) -> None:
    tag = new_tag()
    jobs = jobs_file(
        tmp_path,
        sleeper(tmp_path, "a"),
        sleeper(tmp_path, "b", graph=True),
        {"name": "queued", "steps": [{"value": 1}]},
    )
    with Terminal([*STEPLINE, "run", "--workers", "2", jobs], env=tagged_env(tag)) as term:
        wait_for_files(tmp_path / "a.pid", tmp_path / "b.pid")
        term.wait_for_text("0/3 done, 2 running, 1 queued")
        term.wait_for_text("▸ " + jobs + ":2 (b)")
        term.wait_for_text("· t ")  # the graph job's running task, on a line of its own
        workspace = Path((tmp_path / "b.cwd").read_text().strip())
        assert workspace.is_dir()
        term.type(b"\x03")  # Ctrl-C: the terminal sends SIGINT
        status = term.finish()
        screen = term.text()
    assert status == 130, screen
    assert "SIGINT: cancelling 3 jobs…" in screen
    assert "3 jobs: 3 cancelled" in screen
    assert "interrupted; 3 of 3 jobs were cancelled" in screen
    assert "Traceback" not in screen
    assert "KeyboardInterrupt" not in screen
    assert wait_until_gone(tag) == []
    assert not workspace.exists()


def test_sigterm_cancels_every_job_and_exits_143(tmp_path: Path) -> None:
    tag = new_tag()
    jobs = jobs_file(tmp_path, sleeper(tmp_path, "a"), sleeper(tmp_path, "b", graph=True))
    proc = subprocess.Popen(
        [*STEPLINE, "run", jobs],
        env=tagged_env(tag),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for_files(tmp_path / "a.pid", tmp_path / "b.cwd")
    workspace = Path((tmp_path / "b.cwd").read_text().strip())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stepline run: SIGTERM: cancelling 2 jobs…" in err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == "2 jobs: 2 cancelled"
    assert sorted(line.split()[0] for line in out.splitlines()[2:-1]) == ["cancelled"] * 2
    assert wait_until_gone(tag) == []
    assert not workspace.exists()


def test_a_second_signal_kills_at_once(tmp_path: Path) -> None:
    tag = new_tag()
    jobs = jobs_file(tmp_path, sleeper(tmp_path, "stubborn", ignore_term=True))
    proc = subprocess.Popen(
        [*STEPLINE, "run", jobs],
        env=tagged_env(tag),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    wait_for_files(tmp_path / "stubborn.pid")
    proc.send_signal(signal.SIGINT)
    assert proc.stderr.readline() == "stepline run: SIGINT: cancelling 1 job…\n"
    # The job ignores SIGTERM and has a grace of 300 s: only the second signal ends it in time.
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "second SIGINT: killing every process now" in err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == "1 job: 1 cancelled"
    assert wait_until_gone(tag) == []


def bash(shell: str, tag: str) -> subprocess.CompletedProcess[str]:
    """Run a shell pipeline (``stepline run … | head -1``) to its end, its processes tagged."""
    return subprocess.run(
        ["bash", "-c", shell],
        env=tagged_env(tag),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_closed_stdout_cancels_every_job_without_a_traceback(tmp_path: Path) -> None:
    tag = new_tag()
    jobs = jobs_file(tmp_path, {"value": 1}, sleeper(tmp_path, "a"), sleeper(tmp_path, "b"))
    shell = f'{" ".join(STEPLINE)} run {jobs} | head -1; echo "status ${{PIPESTATUS[0]}}" >&2'
    proc = bash(shell, tag)
    assert proc.stdout.startswith("started")
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert "BrokenPipeError" not in proc.stderr
    assert "stepline run: stdout was closed by its reader: cancelling" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "status 1"
    assert wait_until_gone(tag) == []


def test_a_closed_stdout_in_json_mode_too(tmp_path: Path) -> None:
    tag = new_tag()
    jobs = jobs_file(tmp_path, sleeper(tmp_path, "a"), sleeper(tmp_path, "b"))
    shell = f'{" ".join(STEPLINE)} run --json {jobs} | head -1; echo "status ${{PIPESTATUS[0]}}"'
    proc = bash(shell, tag)
    first, status = proc.stdout.splitlines()
    assert json.loads(first)["event"] == "accepted"
    assert status == "status 1"
    assert "Traceback" not in proc.stderr
    assert wait_until_gone(tag) == []
