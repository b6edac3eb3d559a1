"""``stepline run FILE...``: loading job files, the views, and the exit status."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from trio.testing import MockClock

from stepline import steps as s
from stepline.cli._jobfiles import BadFile, Entry, load_entries, load_file, load_templates
from stepline.cli._progress import LiveView, PlainView, View
from stepline.cli._run import Options, Session
from stepline.cli._term import Output

from ..driver import stepline as cli


def write(path: Path, *jobs: Any, lines: bool = False) -> str:
    if lines:
        path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    else:
        (job,) = jobs
        path.write_text(json.dumps(job, indent=2))
    return str(path)


# -- loading -------------------------------------------------------------------------------------


def test_a_json_file_is_one_job_and_other_files_are_json_lines(tmp_path: Path) -> None:
    one = write(tmp_path / "one.json", s.job(s.value(1), name="first"))
    many = tmp_path / "many.jsonl"
    many.write_text('{"value": 1}\n\n   \n{"name": "b", "steps": [{"value": 2}]}\n')
    assert load_file(one) == [Entry(f"{one} (first)", s.job(s.value(1), name="first"))]
    assert [e.label for e in load_file(str(many))] == [f"{many}:1", f"{many}:4 (b)"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad.json", '{"value": 1,}', "bad.json: not JSON"),
        ("bad.jsonl", '{"value": 1}\n{oops\n', "bad.jsonl:2: not JSON"),
        ("empty.jsonl", "\n\n", "empty.jsonl: no jobs in this file"),
        ("invalid.json", '{"steps": [{"sleep": "x"}]}', r"invalid\.json: invalid job: steps\[0\]"),
        ("nojob.jsonl", "[1, 2]\n", "nojob.jsonl:1: invalid job: a job must be an object"),
    ],
)
def test_file_problems_name_the_file_and_line(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(BadFile, match=problem):
        load_entries([str(tmp_path / name)], {})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{")
    (tmp_path / "b.json").write_text('{"fail": 5}')
    paths = [str(tmp_path / "a.json"), str(tmp_path / "b.json"), str(tmp_path / "missing.json")]
    with pytest.raises(BadFile) as caught:
        load_entries(paths, {})
    problems = str(caught.value).splitlines()
    assert len(problems) == 3  # in the order of the files
    assert "a.json: not JSON" in problems[0]
    assert "b.json: invalid job" in problems[1]
    assert "missing.json: cannot read" in problems[2]


def test_templates_are_name_equals_file_and_are_checked(tmp_path: Path) -> None:
    greet = write(tmp_path / "greet.json", {"steps": [{"value": "${params.who}"}]})
    assert load_templates([f"greet={greet}"]) == {"greet": {"steps": [{"value": "${params.who}"}]}}
    with pytest.raises(BadFile, match="expected NAME=FILE"):
        load_templates([greet])
    bad = write(tmp_path / "bad.json", {"steps": [{"use": "nope"}]})
    with pytest.raises(BadFile, match=r"bad\.json: invalid template"):
        load_templates([f"bad={bad}"])
    uses = write(tmp_path / "uses.json", s.job(s.use("greet", who="x")))
    assert len(load_entries([uses], load_templates([f"greet={greet}"]))) == 1
    with pytest.raises(BadFile, match="unknown template"):
        load_entries([uses], {})


# -- running, on the mock clock ------------------------------------------------------------------


async def run_entries(jobs: list[Any], view: View, workers: int = 2) -> bool:
    entries = [Entry(f"job{i}", job) for i, job in enumerate(jobs, 1)]
    session = Session(entries, {}, view, Options(workers=workers))
    return await session.run(handle_signals=False) == 0


async def test_plain_output_is_one_final_line_per_change(autojump_clock: MockClock) -> None:
    out = io.StringIO()
    ok = await run_entries(
        [s.job(s.sleep(2), s.value({"n": 1})), s.job(s.sleep(1), s.fail("no"))],
        PlainView(Output(out)),
    )
    assert ok is False
    lines = out.getvalue().splitlines()
    assert sorted(lines[:2]) == ["started   job1", "started   job2"]  # at the same instant
    assert lines[2:] == [
        "failed    job2 1.00s fail at steps[1]: no",
        'succeeded job1 2.00s {"n":1}',
        "2 jobs: 1 failed, 1 succeeded",
    ]


async def test_all_succeeded_is_true(autojump_clock: MockClock) -> None:
    out = io.StringIO()
    assert await run_entries(
        [s.value(1), s.value(2), s.value(3)], PlainView(Output(out)), workers=1
    )
    assert out.getvalue().splitlines()[-1] == "3 jobs: 3 succeeded"


async def test_the_live_view_redraws_a_block_below_the_results(autojump_clock: MockClock) -> None:
    out = io.StringIO()
    jobs = [s.job(s.sleep(0.35), s.value("a")), s.job(s.sleep(0.15), s.value("b")), s.sleep(1)]
    assert await run_entries(jobs, LiveView(Output(out), color=False), workers=2)
    text = out.getvalue()
    assert "\x1b[" in text  # cursor movements: the block is redrawn
    assert "▸ job1" in text
    assert "0/3 done, 2 running, 1 queued, 0 not succeeded" in text
    # Whatever was redrawn, what remains on screen is every result, then the summary:
    assert screen(text) == [
        'succeeded job2 0.15s "b"',
        'succeeded job1 0.35s "a"',
        "succeeded job3 1.00s null",
        "3 jobs: 3 succeeded",
    ]


def screen(text: str) -> list[str]:
    """Replay the output on a tiny line-based terminal: `\\r\\x1b[nA\\x1b[J` erases n lines."""
    lines: list[str] = []
    for part in text.split("\r\x1b["):
        if "A\x1b[J" in part:
            count, part = part.split("A\x1b[J", 1)
            del lines[len(lines) - int(count) :]
        lines += part.splitlines()
    return lines


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_exit_status(tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", s.job(s.run(["echo", "hi"])))
    bad = write(tmp_path / "bad.jsonl", s.value(1), s.run("exit 3"), lines=True)
    invalid = write(tmp_path / "invalid.json", {"sleep": -1})
    assert cli("run", good).returncode == 0
    failed = cli("run", good, bad)
    assert failed.returncode == 1
    assert f"succeeded {good} " in failed.stdout
    assert f"failed    {bad}:2 " in failed.stdout
    assert "failure at steps[0]" in failed.stdout
    refused = cli("run", good, invalid)
    assert refused.returncode == 2
    assert refused.stderr.startswith("stepline run: ")
    assert "invalid.json: invalid job" in refused.stderr


@pytest.mark.e2e
def test_the_cli_runs_nothing_when_a_file_is_invalid(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    touch = write(tmp_path / "touch.json", s.job(s.run(["touch", str(marker)])))
    invalid = write(tmp_path / "invalid.json", {"nope": 1})
    proc = cli("run", touch, invalid)
    assert proc.returncode == 2
    assert not marker.exists()
    assert proc.stdout == ""
    assert "invalid.json: invalid job" in proc.stderr


@pytest.mark.e2e
def test_the_cli_reads_json_lines_from_stdin_and_writes_plain_lines() -> None:
    jobs = "".join(json.dumps(j) + "\n" for j in [s.value(1), s.job(s.fail("x"), name="f")])
    proc = cli("run", "-", stdin=jobs)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    # The elapsed time is the machine's: a loaded one took 0.01 s for the failing job.
    assert sorted(re.sub(r" \d+\.\d\ds ", " T ", line) for line in lines[:-1]) == [
        "failed    -:2 (f) T fail at steps[0]: x",
        "started   -:1",
        "started   -:2 (f)",
        "succeeded -:1 T 1",
    ]
    assert lines[-1] == "2 jobs: 1 failed, 1 succeeded"
    assert "\x1b" not in proc.stdout
