"""``stepline check`` and ``stepline graph``, in-process and through the real command line; and
the example graph job run end to end by a real ``stepline serve``."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stepline import InvalidJob
from stepline.cli._main import main
from stepline.spec._validate import validate_job

from ..driver import lifecycle_ok, run_cli, serve, stepline

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
    table = '<table border="0" cellborder="0" cellspacing="2">'
    br = '<br align="left"/>'

    def node(name: str, *steps: str) -> str:
        rows = "".join(f'<tr><td align="left">{step}{br}</td></tr>' for step in steps)
        return f'  "{name}" [label=<{table}<tr><td><b>{name}</b></td></tr>{rows}</table>>];'

    assert out == "\n".join(
        [
            'digraph "small" {',
            "  rankdir=LR;",
            '  node [shape=box, style=rounded, fontname="Helvetica"];',
            '  edge [fontname="Helvetica", fontsize=10];',
            node("a", "run: make &quot;all&quot;", "pause (sleep)"),
            node("b", "value"),
            node("c", "log: x &lt;y&gt;"),
            node("fix", "fail: no"),
            node("end"),
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
        ("load", "summary"),
        ("summary", "cleanup"),
    }
    nodes = re.findall(r'^  "(\w+)" \[label=<', out, re.MULTILINE)
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
    assert (model["name"], model["kind"]) == ("small", "tasks")
    assert [t["name"] for t in model["tasks"]] == ["a", "b", "c", "fix", "end"]
    assert model["tasks"][0]["steps"] == [
        {"kind": "run", "label": 'run: make "all"'},
        {"kind": "sleep", "label": "pause (sleep)"},
    ]
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
    assert model["tasks"][0]["steps"][0]["label"] == "sleep ${params.unset}"  # left as written


# A job with every form the drawing shows: a matrix, a `use` with arguments, a switch turned
# off, an argv with long absolute paths under the job's cwd.
PIPELINE = {
    "name": "pipe",
    "params": {"docs": False, "shards": [1, 2]},
    "cwd": "/srv/checkout/project",
    "tasks": {
        "greet": {"steps": [{"use": "greet", "with": {"who": 'a "<b>" & c', "n": [1, 2]}}]},
        "test": {
            "matrix": {"py": ["3.11", "3.12"], "shard": "${params.shards}"},
            "steps": [
                {
                    "run": [
                        "/opt/venvs/ci-python-${matrix.py}/bin/python",
                        "-m",
                        "pytest",
                        "/srv/checkout/project/tests/unit",
                        "--shard=${matrix.shard}/2",
                    ]
                }
            ],
        },
        "docs": {"needs": "test", "if": "${params.docs}", "steps": [{"run": "make html"}]},
        "report": {"needs": ["greet", "test"], "if": "failure", "steps": [{"log": "failed"}]},
    },
}
GREET = {"params": {"who": "world", "n": []}, "steps": [{"value": "${params.who} ${params.n}"}]}


def draw(capsys: pytest.CaptureFixture[str], tmp_path: Path, job: Any, fmt: str) -> str:
    template = f"greet={write(tmp_path, 'greet.json', GREET)}"
    status, out, err = cli(
        capsys, "graph", write(tmp_path, "p.json", job), "--template", template, "--format", fmt
    )
    assert status == 0, err
    return out


def test_graph_draws_matrix_instances_use_boxes_switches_and_readable_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = json.loads(draw(capsys, tmp_path, PIPELINE, "json"))
    names = [t["name"] for t in model["tasks"]]
    instances = ["test[3.11,1]", "test[3.11,2]", "test[3.12,1]", "test[3.12,2]"]
    assert names == ["greet", *instances, "docs", "report"]
    test = model["tasks"][1]
    assert (test["group"], test["matrix"]) == ("test", {"py": "3.11", "shard": 1})
    # the program's base name, paths relative to the cwd, each instance's own values
    assert test["steps"][0]["label"] == "run: python -m pytest tests/unit --shard=1/2"
    assert model["tasks"][0]["steps"] == [
        {
            "kind": "use",
            "label": "use: greet",
            "template": "greet",
            "with": {"who": 'a "<b>" & c', "n": [1, 2]},
        }
    ]
    assert model["tasks"][-2]["if"] == "never"
    assert {(e["from"], e["to"]) for e in model["edges"] if e["to"] == "report"} == {
        (name, "report") for name in ["greet", *instances]
    }
    dot = draw(capsys, tmp_path, PIPELINE, "dot")
    assert '  subgraph "cluster_test" {' in dot
    assert "    label=<test <i>(matrix: py, shard)</i>>;" in dot
    assert '    "test[3.12,2]" [label=<' in dot  # inside the cluster
    use_box = (
        '<td border="1" bgcolor="#eef2fa" align="left">use <b>greet</b><br align="left"/>'
        'who: a &quot;&lt;b&gt;&quot; &amp; c<br align="left"/>n: [1, 2]<br align="left"/></td>'
    )
    assert use_box in dot
    assert "switched off (if: false)" in dot
    assert "/srv/checkout" not in dot
    # one arrow per pair of tasks: a matrix's instances leave from (or reach) its frame
    assert [line for line in dot.splitlines() if "->" in line] == [
        '  "test[3.11,1]" -> "docs" [ltail="cluster_test"];',
        '  "greet" -> "report" [style=dashed, color=red, label="failure"];',
        '  "test[3.11,1]" -> "report" [style=dashed, color=red, label="failure", '
        'ltail="cluster_test"];',
    ]
    assert "  compound=true;" in dot
    mermaid = draw(capsys, tmp_path, PIPELINE, "mermaid")
    assert '  subgraph g1 ["test (matrix: py, shard)"]' in mermaid
    assert "greet<br/>use: greet<br/>  who: a #quot;#lt;b#gt;#quot; & c<br/>  n: [1, 2]" in mermaid
    assert "  class t5 off" in mermaid
    assert mermaid.splitlines()[-5:-2] == [
        "  g1 --> t5",
        "  t0 -. failure .-> t6",
        "  g1 -. failure .-> t6",
    ]


def test_a_long_run_is_wrapped_and_says_what_it_left_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["pytest", *(f"tests/test_module_number_{i}.py" for i in range(12))]
    job = {"tasks": {"t": {"steps": [{"run": argv}]}}}
    label = json.loads(draw(capsys, tmp_path, job, "json"))["tasks"][0]["steps"][0]["label"]
    lines = label.split("\n")
    assert len(lines) == 3
    assert all(len(line) <= 48 + len(" … +9") for line in lines)
    assert lines[0] == "run: pytest tests/test_module_number_0.py"
    shown = label.count("tests/test_module_number_")
    assert lines[-1].endswith(f" … +{12 - shown}")


def test_graph_draws_a_steps_job_as_its_sequence(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    job = {"steps": [{"run": "make"}, {"par": [{"value": 1}, {"value": 2}]}, {"use": "greet"}]}
    model = json.loads(draw(capsys, tmp_path, job, "json"))
    assert model["kind"] == "steps"
    assert [(t["name"], t["needs"]) for t in model["tasks"]] == [
        ("steps[0]", []),
        ("steps[1]", ["steps[0]"]),
        ("steps[2]", ["steps[1]"]),
    ]
    assert [t["steps"][0]["label"] for t in model["tasks"]] == [
        "run: make",
        "par (2 steps)",
        "use: greet",
    ]
    dot = draw(capsys, tmp_path, job, "dot")
    assert '  "steps[0]" -> "steps[1]";' in dot
    assert "<b>steps[0]</b>" not in dot  # a step's label says what it is


def test_graph_refuses_an_invalid_job(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = write(tmp_path, "b.json", {"tasks": {"a": {"needs": "a", "steps": []}}})
    assert cli(capsys, "graph", bad)[2] == (
        f"{bad}: invalid job: tasks.a.needs[0]: a task cannot need itself\n"
    )


# -- the real command line ------------------------------------------------------------------------


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
def test_graphviz_accepts_the_dot_output(tmp_path: Path) -> None:
    """Graphviz itself (installed by .ci/run) renders every drawing: the example, a pipeline
    with a matrix, a `use` box and a switch, and a steps job; its warnings fail the test."""
    greet = write(tmp_path, "greet.json", GREET)
    drawings = [
        (str(EXAMPLE),),
        (write(tmp_path, "p.json", PIPELINE), "--template", f"greet={greet}"),
        (str(EXAMPLE.parent / "steps" / "par.json"),),
        (str(EXAMPLE.parent / "ci" / "pipeline.json"),),
    ]
    svgs = []
    for args in drawings:
        dot = stepline("graph", *args)
        assert dot.returncode == 0, dot.stderr
        rendered = subprocess.run(
            ["dot", "-Tsvg"], input=dot.stdout, capture_output=True, text=True, check=True
        )
        assert rendered.stderr == ""
        assert rendered.stdout.rstrip().endswith("</svg>")
        svgs.append(rendered.stdout)
    assert ">summary</text>" in svgs[0]
    texts = re.findall(r">([^<>]+)</text>", svgs[1])
    assert {"test[3.12,2]", "greet", "switched off (if: false)"} <= set(texts)
    assert "who: a &quot;&lt;b&gt;&quot; &amp; c" in texts
    texts = re.findall(r">([^<>]+)</text>", svgs[3])
    assert {"test[1]", "test[2]", "test[3]", "test ", "(matrix: shard)", "report"} <= set(texts)


@pytest.mark.e2e
def test_the_example_runs_end_to_end(tmp_path: Path) -> None:
    """Typed outputs flow between the tasks, and the report outlives the workspace as an
    artifact (the output names it; ``finished`` lists it with its size and digest)."""
    job = json.loads(EXAMPLE.read_text())
    kept = tmp_path / "artifacts"
    submit = {"op": "submit", "id": 1, "job": job, "params": {"region": "us"}}
    events, status, stderr = run_cli([submit], "--heartbeat", "0", "--artifacts", str(kept))
    assert status == 0, stderr
    lifecycle_ok(events)
    finished = next(e for e in events if e["event"] == "finished")
    assert finished["state"] == "succeeded", finished
    output = finished["output"]
    rows = ["1,ada,30", "2,linus,12", "3,grace,58"]
    assert output["summary"] == {
        "region": "us",
        "orders": 3,
        "customers": 3,
        "total": 100,
        "rows": rows,
        "report": "report-us.csv",
    }
    report = (kept / finished["job"] / "report-us.csv").read_bytes()
    assert report.decode().splitlines() == rows
    assert finished["artifacts"] == [
        {
            "path": "report-us.csv",
            "bytes": len(report),
            "sha256": hashlib.sha256(report).hexdigest(),
        }
    ]
    tasks = [e for e in events if e["event"] == "task"]
    final = {e["task"]: e["status"] for e in tasks if e["status"] != "started"}
    assert final == dict.fromkeys(job["tasks"], "succeeded")
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


@pytest.mark.e2e
def test_stepline_run_keeps_the_examples_report_and_says_where(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    done = stepline("run", "--artifacts", str(kept), str(EXAMPLE))
    assert done.returncode == 0, done.stdout + done.stderr
    report = kept / "j1" / "report-eu.csv"
    assert report.read_text().splitlines() == ["1,ada,30", "2,linus,12", "3,grace,58"]
    line = f"    artifacts: {kept}/j1/ (1 file, {report.stat().st_size} bytes): report-eu.csv"
    assert line in done.stdout.splitlines()
