"""``stepline check`` and ``stepline graph``, in-process and through the real command line; and
the example graph job run end to end by a real ``stepline serve``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stepline import InvalidJob
from stepline.cli._main import main
from stepline.spec._validate import validate_job

from ..driver import ENV, lifecycle_ok, run_cli, serve

EXAMPLE = Path(__file__).parents[2] / "examples" / "graph-etl.json"

SMALL = {
    "name": "small",
    "tasks": {
        "a": {"steps": [{"run": 'make "all"'}, {"sleep": 1, "name": "pause"}]},
        "b": {"needs": ["a"], "steps": [{"value": 1}]},
        "c": {"needs": "a", "steps": [{"log": "x <y>"}]},
        "fix": {"needs": ["b"], "if": "failure", "steps": [{"fail": "no"}]},
        "end": {"needs": ["b", "c"], "if": "always", "steps": []},
    },
}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``stepline ARGV`` in-process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def write(tmp_path: Path, name: str, job: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(job) if not isinstance(job, str) else job)
    return str(path)


# -- check ----------------------------------------------------------------------------------------


def test_check_ok(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli(capsys, "check", str(EXAMPLE)) == (0, "ok\n", "")
    assert cli(capsys, "check", write(tmp_path, "s.json", SMALL), str(EXAMPLE))[0] == 0


def test_check_reports_every_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cycle = write(
        tmp_path,
        "cycle.json",
        {"tasks": {"a": {"needs": "b", "steps": []}, "b": {"needs": "a", "steps": []}}},
    )
    upstream = write(
        tmp_path,
        "up.json",
        {"tasks": {"a": {"steps": []}, "b": {"steps": [{"value": "${tasks.a.output}"}]}}},
    )
    broken = write(tmp_path, "broken.json", "{not json")
    status, out, err = cli(capsys, "check", cycle, str(EXAMPLE), upstream, broken, "missing.json")
    assert (status, out) == (2, "")
    lines = err.splitlines()
    assert lines[0] == f"{cycle}: invalid job: tasks: cycle a -> b -> a"
    with pytest.raises(InvalidJob) as submitted:  # the very message a submit gets
        validate_job(json.loads(Path(cycle).read_text()))
    assert lines[0].endswith(": invalid job: " + submitted.value.message)
    assert lines[1].startswith(f"{upstream}: invalid job: tasks.b.steps[0].value: ")
    assert "task 'a' is not upstream of 'b'" in lines[1]
    assert lines[2].startswith(f"{broken}: not JSON: ")
    assert lines[3].startswith("missing.json: cannot read: ")
    assert len(lines) == 4


def test_check_with_params_and_templates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    job = write(
        tmp_path,
        "j.json",
        {"tasks": {"a": {"steps": [{"use": "t", "with": {"x": 1}}, {"sleep": "${params.d}"}]}}},
    )
    template = write(tmp_path, "t.json", {"steps": [{"value": "${params.x}"}]})
    status, _, err = cli(capsys, "check", job, "--template", f"t={template}")
    assert status == 2
    assert "unknown parameter 'd'" in err
    args = ("check", job, "--template", f"t={template}", "--params", '{"d": 2}')
    assert cli(capsys, *args) == (0, "ok\n", "")
    assert cli(capsys, "check", job, "--params", "[1]")[2] == "--params: expected a JSON object\n"


# -- graph ----------------------------------------------------------------------------------------


def test_graph_dot_exact(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = cli(capsys, "graph", write(tmp_path, "s.json", SMALL))
    assert status == 0
    assert out == "\n".join(
        [
            'digraph "small" {',
            "  rankdir=LR;",
            '  node [shape=box, style=rounded, fontname="Helvetica"];',
            '  "a" [label="a\\nrun: make \\"all\\"\\npause (sleep)"];',
            '  "b" [label="b\\nvalue"];',
            '  "c" [label="c\\nlog: x <y>"];',
            '  "fix" [label="fix\\nfail: no"];',
            '  "end" [label="end"];',
            '  "a" -> "b";',
            '  "a" -> "c";',
            '  "b" -> "fix" [style=dashed, color=red, label="failure"];',
            '  "b" -> "end" [style=dotted, label="always"];',
            '  "c" -> "end" [style=dotted, label="always"];',
            "}",
            "",
        ]
    )


def test_graph_dot_edges_of_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "graph", str(EXAMPLE), "--format", "dot")
    assert status == 0
    edges = set(re.findall(r'^  "(\w+)" -> "(\w+)"', out, re.MULTILINE))
    assert edges == {
        ("fetch_orders", "transform_orders"),
        ("fetch_customers", "transform_customers"),
        ("transform_orders", "load"),
        ("transform_customers", "load"),
        ("load", "cleanup"),
    }
    nodes = re.findall(r'^  "(\w+)" \[label="', out, re.MULTILINE)
    assert nodes.index("load") > nodes.index("transform_orders")  # each after its needs
    assert "report-eu" in out  # parameters are substituted: this is what would run


def test_graph_mermaid_exact(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = cli(capsys, "graph", write(tmp_path, "s.json", SMALL), "--format", "mermaid")
    assert status == 0
    assert out == "\n".join(
        [
            "flowchart LR",
            '  t0["a<br/>run: make #quot;all#quot;<br/>pause (sleep)"]',
            '  t1["b<br/>value"]',
            '  t2["c<br/>log: x #lt;y#gt;"]',
            '  t3["fix<br/>fail: no"]',
            '  t4["end"]',
            "  t0 --> t1",
            "  t0 --> t2",
            "  t1 -. failure .-> t3",
            "  t1 -. always .-> t4",
            "  t2 -. always .-> t4",
            "",
        ]
    )


def test_graph_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = cli(capsys, "graph", write(tmp_path, "s.json", SMALL), "--format", "json")
    assert status == 0
    model = json.loads(out)
    assert model["name"] == "small"
    assert [t["name"] for t in model["tasks"]] == ["a", "b", "c", "fix", "end"]
    assert model["tasks"][0]["steps"] == ['run: make "all"', "pause (sleep)"]
    assert {"from": "b", "to": "fix", "if": "failure"} in model["edges"]
    assert len(model["edges"]) == 5


def test_graph_orders_tasks_after_their_needs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    job = {
        "tasks": {
            "z": {"needs": ["y"], "steps": []},
            "y": {"needs": "x", "steps": []},
            "x": {"steps": [{"sleep": "${params.unset}"}]},
        }
    }
    status, out, _ = cli(capsys, "graph", write(tmp_path, "j.json", job), "--format", "json")
    assert status == 0
    model = json.loads(out)
    assert [t["name"] for t in model["tasks"]] == ["x", "y", "z"]
    assert model["tasks"][0]["steps"] == ["sleep ${params.unset}"]  # left as written


def test_graph_refuses_what_it_cannot_draw(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = cli(capsys, "graph", write(tmp_path, "s.json", {"steps": [{"value": 1}]}))
    assert status == 2
    assert "has 'steps', not 'tasks'" in err
    bad = write(tmp_path, "b.json", {"tasks": {"a": {"needs": "a", "steps": []}}})
    assert cli(capsys, "graph", bad)[2] == (
        f"{bad}: invalid job: tasks.a.needs[0]: a task cannot need itself\n"
    )


# -- the real command line ------------------------------------------------------------------------


def stepline(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepline", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )


@pytest.mark.e2e
def test_check_and_graph_through_the_real_cli() -> None:
    done = stepline("check", str(EXAMPLE))
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
    bad = stepline("check", "-", stdin='{"tasks": {"a": {"steps": [], "if": "never"}}}')
    assert bad.returncode == 2
    assert (
        bad.stderr == "-: invalid job: tasks.a.if: expected one of 'success', 'failure', "
        "'always' or a boolean (${params.X}), got 'never'\n"
    )
    drawn = stepline("graph", str(EXAMPLE), "--format", "mermaid")
    assert drawn.returncode == 0
    assert drawn.stdout.startswith("flowchart LR\n")


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_accepts_the_dot_output() -> None:
    dot = stepline("graph", str(EXAMPLE)).stdout
    rendered = subprocess.run(
        ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True
    )
    assert "<svg" in rendered.stdout


@pytest.mark.e2e
def test_the_example_runs_end_to_end() -> None:
    job = json.loads(EXAMPLE.read_text())
    events, status, stderr = run_cli(
        [{"op": "submit", "id": 1, "job": job, "params": {"region": "us"}}], "--heartbeat", "0"
    )
    assert status == 0, stderr
    lifecycle_ok(events)
    finished = next(e for e in events if e["event"] == "finished")
    assert finished["state"] == "succeeded", finished
    output = finished["output"]
    assert output["transform_orders"]["stdout"] == "100"
    assert output["load"]["total"] == "100"
    assert output["load"]["region"] == "us"
    assert output["fetch_orders"]["stdout"].strip() == "3"
    report = output["load"]["report"]
    assert report.endswith("/report-us.csv")
    assert not Path(report).exists()  # the workspace went with the job
    assert output["load"]["orders"] == output["fetch_orders"]["stdout"]  # a whole string
    tasks = [e for e in events if e["event"] == "task"]
    final = {e["task"]: e["status"] for e in tasks if e["status"] != "started"}
    assert final == dict.fromkeys(
        [
            "fetch_orders",
            "fetch_customers",
            "transform_orders",
            "transform_customers",
            "load",
            "cleanup",
        ],
        "succeeded",
    )
    order = [e["task"] for e in tasks if e["status"] == "started"]
    assert order.index("load") > max(
        order.index("transform_orders"), order.index("transform_customers")
    )
    assert order[-1] == "cleanup"
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert logs == ["cleaned up the inputs of j1"]


@pytest.mark.e2e
async def test_cancel_runs_cleanup_through_the_real_cli() -> None:
    job = {
        "tasks": {
            "work": {"steps": [{"run": "sleep 30"}]},
            "cleanup": {"needs": "work", "if": "always", "steps": [{"log": "cleaned ${job.id}"}]},
        }
    }
    async with serve("--heartbeat", "0") as driver:
        await driver.send({"op": "submit", "job": job})
        await driver.wait_for("task", task="work", status="started")
        await driver.send({"op": "shutdown", "mode": "cancel"})
        events = [*driver.events, *await driver.rest()]
        assert await driver.proc.wait() == 0
    lifecycle_ok(events)
    finished = next(e for e in events if e["event"] == "finished")
    assert finished["state"] == "cancelled"
    assert [e["message"] for e in events if e["event"] == "log"] == ["cleaned j1"]
    statuses = [(e["task"], e["status"]) for e in events if e["event"] == "task"]
    assert statuses[1:] == [("work", "cancelled"), ("cleanup", "started"), ("cleanup", "succeeded")]
    assert events[-1]["event"] == "bye"
