"""What ``stepline run`` shows about a job, through the real command line: a failure's stderr
and stdout tails, its ``log`` lines, its retries and its handler tasks; a success in one short
line (``-v`` and ``--json`` for the whole output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stepline.cli._report import SHORT_OUTPUT, TAIL_LINES, Track, details, result_line
from stepline.engine._jobs import JobState

from ..driver import stepline
from ..terminal import STEPLINE, Terminal

pytestmark = pytest.mark.e2e


def job_file(tmp_path: Path, job: Any, name: str = "job.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(job))
    return str(path)


NOISY_FAILURE = {
    "name": "tests",
    "steps": [
        {"log": "shard 3 of 4"},
        {"run": "for i in $(seq 1 25); do echo out$i; echo err$i >&2; done; exit 3"},
    ],
}


def test_a_failure_shows_its_log_lines_and_the_tail_of_its_stderr(tmp_path: Path) -> None:
    path = job_file(tmp_path, NOISY_FAILURE)
    proc = stepline("run", path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith(f"failed    {path} (tests) ")]
    assert lines[at].endswith("failure at steps[1]: /bin/sh exited with status 3")
    shown = lines[at + 1 : -1]
    assert shown[0] == "    log: shard 3 of 4"
    assert shown[1] == f"    stderr, last {TAIL_LINES} lines:"
    assert shown[2 : 2 + TAIL_LINES] == [f"    │ err{i}" for i in range(16, 26)]
    assert lines[-1] == "1 job: 1 failed"


def test_verbose_shows_the_whole_tail_kept(tmp_path: Path) -> None:
    proc = stepline("run", "-v", job_file(tmp_path, NOISY_FAILURE))
    assert "    stderr:" in proc.stdout.splitlines()
    assert [line for line in proc.stdout.splitlines() if "│ err" in line] == [
        f"    │ err{i}" for i in range(1, 26)
    ]
    assert "log       " in proc.stdout  # log lines as they come, too


def test_a_graph_failure_names_the_handler_tasks_and_what_succeeded(tmp_path: Path) -> None:
    job = {
        "name": "ci",
        "tasks": {
            "build": {"steps": [{"value": "built"}]},
            "test": {"needs": "build", "steps": [{"run": "echo boom >&2; exit 1"}]},
            "report": {"needs": "test", "if": "failure", "steps": [{"value": "mailed"}]},
            "clean": {"needs": "test", "if": "always", "steps": [{"fail": "disk gone"}]},
        },
    }
    path = job_file(tmp_path, job)
    proc = stepline("run", path)
    assert proc.returncode == 1
    out = proc.stdout
    assert "failure at tasks.test.steps[0]: /bin/sh exited with status 1" in out
    assert "    │ boom" in out
    assert "    task report (if: failure) succeeded" in out
    assert "    task clean (if: always) failed: fail at tasks.clean.steps[0]: disk gone" in out
    assert "    tasks that succeeded: build" in out


def test_a_success_is_one_short_line_and_verbose_or_json_show_it_whole(tmp_path: Path) -> None:
    long_value = "x" * 500
    path = job_file(tmp_path, {"value": long_value})
    short = stepline("run", path).stdout.splitlines()[1]
    assert short.startswith(f"succeeded {path} ")
    assert short.endswith("…")
    assert len(short.split(" ", 3)[3]) == SHORT_OUTPUT  # state, path, elapsed, output
    assert long_value in stepline("run", "-v", path).stdout
    events = [json.loads(line) for line in stepline("run", "--json", path).stdout.splitlines()]
    assert events[-1]["output"] == long_value


# -- the report's pieces that depend on events other helpers add (retry, partial) -----------------


class FakeHandle:
    """The one thing a report reads of a job's handle: its final state."""

    state = JobState.FAILED


def track_of(job: Any, *events: dict[str, Any]) -> Track:
    track = Track("ci.json", FakeHandle(), job)  # type: ignore[arg-type]  # duck-typed handle
    for ev in events:
        track.take(ev, 0.0)
    return track


def test_retries_and_partial_outputs_are_reported() -> None:
    job = {"tasks": {"t": {"steps": []}, "h": {"needs": "t", "if": "failure", "steps": []}}}
    error = {"type": "failure", "message": "exit 1", "step": "tasks.t.steps[0]", "attempts": 3}
    track = track_of(
        job,
        {"event": "retry", "job": "j1", "step": "tasks.t.steps[0]", "attempt": 1, "attempts": 3},
        {"event": "task", "job": "j1", "task": "h", "status": "succeeded"},
        {
            "event": "finished",
            "state": "failed",
            "elapsed": 1.0,
            "error": {**error, "stdout": "ran 3 tests\n"},
            "partial": {"h": {"sent": True}},
        },
    )
    assert result_line(track).startswith("failed    ci.json 1.00s failure at tasks.t.steps[0]")
    assert details(track) == [
        "    tried 3 times (retry); the last error is above",
        "    stdout:",
        "    │ ran 3 tests",
        '    task h (if: failure) succeeded: {"sent":true}',
    ]


def test_artifacts_and_matrix_handlers_are_reported() -> None:
    """Where the artifacts went (also for a failure); a matrix instance of a handler task is
    reported under its task's rule."""
    job = {
        "tasks": {
            "t": {"steps": []},
            "h": {"needs": "t", "if": "always", "matrix": {"n": [1]}, "steps": []},
        }
    }
    track = track_of(
        job,
        {"event": "task", "job": "j1", "task": "t", "status": "failed"},
        {"event": "task", "job": "j1", "task": "h[1]", "status": "succeeded"},
        {
            "event": "finished",
            "job": "j1",
            "state": "failed",
            "error": {"type": "failure", "message": "exit 1"},
            "partial": {"h[1]": 7},
            "artifacts": [
                {"path": f"junit-{k}.xml", "bytes": 100 * k, "sha256": "…"} for k in range(1, 8)
            ],
        },
    )
    track.artifacts = "out"
    assert details(track) == [
        "    artifacts: out/j1/ (7 files, 2800 bytes): junit-1.xml, junit-2.xml, junit-3.xml, "
        "junit-4.xml, junit-5.xml and 2 more",
        "    task h[1] (if: always) succeeded: 7",
    ]


# -- through the real CLI: retries, stdout tails, handler outputs, the live task lines ------------


def test_a_retried_failure_says_how_often_it_was_tried_and_shows_its_stdout(
    tmp_path: Path,
) -> None:
    job = {
        "name": "flaky",
        "steps": [
            {
                "run": "echo 'FAILED test_y - assert 1 == 2'; exit 1",
                "retry": {"attempts": 3, "backoff": 0},
            }
        ],
    }
    path = job_file(tmp_path, job)
    proc = stepline("run", path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    retries = [line for line in lines if line.startswith("retry     ")]
    assert retries == [
        f"retry     {path} (flaky) try {n} of 3 failed at steps[0]: "
        "/bin/sh exited with status 1; again in 0s"
        for n in (1, 2)
    ]
    (at,) = [i for i, line in enumerate(lines) if line.startswith("failed    ")]
    assert lines[at + 1 : at + 4] == [
        "    tried 3 times (retry); the last error is above",
        "    stdout:",
        "    │ FAILED test_y - assert 1 == 2",
    ]


def test_a_failed_graph_shows_what_its_handler_tasks_gave(tmp_path: Path) -> None:
    job = {
        "tasks": {
            "build": {"steps": [{"value": "built"}]},
            "test": {"needs": "build", "steps": [{"fail": "2 failed"}]},
            "report": {
                "needs": "test",
                "if": "failure",
                "steps": [{"run": "echo mailed the team"}],
            },
        }
    }
    proc = stepline("run", job_file(tmp_path, job))
    assert proc.returncode == 1
    report = next(line for line in proc.stdout.splitlines() if "task report" in line)
    assert report.startswith('    task report (if: failure) succeeded: {"exit":0,"stdout":"mailed')
    events = [
        json.loads(line)
        for line in stepline("run", "--json", str(tmp_path / "job.json")).stdout.splitlines()
    ]
    finished = events[-1]
    assert finished["partial"]["build"] == "built"
    assert finished["partial"]["report"]["stdout"] == "mailed the team\n"


def test_the_live_view_shows_a_line_per_running_task(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    job = {
        "name": "ci",
        "tasks": {
            "lint": {"steps": [{"run": wait}]},
            "unit": {"steps": [{"run": wait}]},
            "docs": {"needs": ["lint", "unit"], "steps": [{"value": "ok"}]},
        },
    }
    path = job_file(tmp_path, job)
    with Terminal([*STEPLINE, "run", path]) as term:
        term.wait_for(lambda t: "· lint" in t.text() and "· unit" in t.text())
        assert "· docs" not in term.text()  # waiting on its needs: not running
        assert f"▸ {path} (ci)" in term.text()
        gate.write_text("open\n")
        status = term.finish()
        screen = term.text()
    assert status == 0, screen
    assert "· lint" not in screen  # the block is gone once the job finished
    assert screen.splitlines()[-1] == "1 job: 1 succeeded"
    assert f"succeeded {path} (ci) " in screen
