"""The everyday options of ``stepline run``, through the real command line: ``--params``,
``--json``, ``--halt``, ``--timeout``, ``--quiet``, ``-j``; and what the parser refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..driver import lifecycle_ok, stepline
from ..proc_tools import new_tag, tagged_env, wait_until_gone

pytestmark = pytest.mark.e2e


def jobs_file(tmp_path: Path, *jobs: Any) -> str:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return str(path)


GREET = {"name": "greet", "steps": [{"value": "hello ${params.who}"}]}


def test_params_are_given_to_every_job(tmp_path: Path) -> None:
    jobs = jobs_file(tmp_path, GREET, {**GREET, "params": {"who": "default"}})
    done = stepline("run", jobs, "--params", '{"who": "pipes"}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('"hello pipes"') == 2
    missing = stepline("run", jobs)
    assert missing.returncode == 2
    assert "jobs.jsonl:1 (greet): invalid job: steps[0].value: " in missing.stderr
    assert "unknown parameter 'who'" in missing.stderr
    assert "not JSON" in stepline("run", jobs, "--params", "{").stderr
    assert "expected a JSON object" in stepline("run", jobs, "--params", "[1]").stderr


def test_json_writes_every_event_and_nothing_else(tmp_path: Path) -> None:
    jobs = jobs_file(tmp_path, {"value": 1}, {"steps": [{"log": "hi"}, {"fail": "no"}]})
    proc = stepline("run", "--json", jobs)
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    lifecycle_ok(events)
    assert {ev["source"] for ev in events} == {f"{jobs}:1", f"{jobs}:2"}
    assert [ev["message"] for ev in events if ev["event"] == "log"] == ["hi"]
    assert all(isinstance(ev["ts"], float) for ev in events)
    assert proc.stderr == ""


def test_halt_cancels_the_rest_at_the_first_failure(tmp_path: Path) -> None:
    tag = new_tag()
    jobs = jobs_file(
        tmp_path,
        {"name": "slow", "steps": [{"run": "sleep 60"}]},
        {"name": "broken", "steps": [{"sleep": 0.2}, {"fail": "no"}]},
        {"name": "waiting", "steps": [{"value": 3}]},
    )
    proc = stepline("run", "-j", "2", "--halt", jobs, env=tagged_env(tag))
    assert proc.returncode == 1
    assert f"stepline run: --halt: {jobs}:2 (broken) failed: cancelling 2 jobs…" in proc.stderr
    assert proc.stdout.splitlines()[-1] == "3 jobs: 2 cancelled, 1 failed"
    assert wait_until_gone(tag) == []


def test_without_halt_every_job_runs(tmp_path: Path) -> None:
    jobs = jobs_file(tmp_path, {"fail": "no"}, {"value": 2})
    proc = stepline("run", "-j", "1", jobs)
    assert proc.stdout.splitlines()[-1] == "2 jobs: 1 failed, 1 succeeded"


def test_timeout_bounds_every_job(tmp_path: Path) -> None:
    jobs = jobs_file(
        tmp_path,
        {"name": "long", "steps": [{"run": "sleep 60"}]},
        {"name": "own", "timeout": 0.1, "steps": [{"sleep": 60}]},
        {"sleep": 60},  # a bare step
        {"name": "quick", "steps": [{"value": 1}]},
    )
    proc = stepline("run", "-j", "4", "--timeout", "0.5", jobs)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "4 jobs: 1 succeeded, 3 timed_out"
    assert "job timed out after 0.1s" in proc.stdout  # the job's own, shorter, timeout
    assert proc.stdout.count("job timed out after 0.5s") == 2


def test_quiet_shows_only_what_did_not_succeed(tmp_path: Path) -> None:
    ok = jobs_file(tmp_path, {"value": 1}, {"value": 2})
    assert stepline("run", "-q", ok).stdout == ""
    mixed = jobs_file(tmp_path, {"value": 1}, {"fail": "no"})
    lines = stepline("run", "--quiet", mixed).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["failed", "2"]
    assert lines[-1] == "2 jobs: 1 failed, 1 succeeded"


def test_the_parser_takes_no_abbreviations_and_shows_defaults() -> None:
    refused = stepline("run", "--worker", "8", "x.json")
    assert refused.returncode == 2
    assert "unrecognized arguments: --worker" in refused.stderr
    assert stepline("serve", "--work", "8").returncode == 2
    helped = stepline("run", "--help").stdout
    assert "jobs running at once (default: 4)" in helped
    serve_help = " ".join(stepline("serve", "--help").stdout.split())
    for described in ["--on-full", "--heartbeat", "--max-line"]:
        after = serve_help.split(described, 2)[2]  # past the usage line, in the option list
        assert after.split(" --", 1)[0].strip() != "", described
    assert "(default: block)" in serve_help
