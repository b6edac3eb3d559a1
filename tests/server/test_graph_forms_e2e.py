"""The pipeline graph forms through a real ``stepline serve``: a matrix of real processes whose
typed outputs flow into a spliced argv, inherited env and cwd, and artifacts on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..driver import run_cli


def test_a_pipeline_through_the_real_cli(tmp_path: Path) -> None:
    job = {
        "env": {"GREETING": "hi"},
        "cwd": str(tmp_path),
        "artifacts": ["out-*.txt"],
        "params": {"shards": [1, 2]},
        "tasks": {
            "files": {"steps": [{"run": "printf 'a\\nb\\n'", "parse": "lines"}]},
            "test": {
                "needs": "files",
                "matrix": {"shard": "${params.shards}"},
                "cwd": "${job.workspace}",
                "steps": [
                    {"run": 'echo "$GREETING ${matrix.shard}" > out-${matrix.shard}.txt'},
                    {"run": ["echo", "${tasks.files.output}", "${matrix.shard}"], "parse": "text"},
                ],
            },
            "where": {"steps": [{"run": "pwd", "parse": "text"}]},
        },
    }
    dest = tmp_path / "artifacts"
    events, status, stderr = run_cli(
        [{"op": "submit", "job": job}], "--artifacts", str(dest), timeout=60
    )
    assert status == 0, stderr
    finished = next(e for e in events if e["event"] == "finished")
    assert finished["state"] == "succeeded", finished.get("error")
    assert finished["output"]["test"] == ["a b 1", "a b 2"]
    assert finished["output"]["where"] == str(tmp_path)
    names = {e["task"] for e in events if e["event"] == "task"}
    assert {"test[1]", "test[2]"} <= names
    content = b"hi 1\n"
    assert finished["artifacts"][0] == {
        "path": "out-1.txt",
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    assert (dest / finished["job"] / "out-2.txt").read_text() == "hi 2\n"


def test_switches_sections_and_typed_outputs_through_the_real_cli() -> None:
    """``if: ${params.X}`` turns a task (and what needs it) off or on per submit; a template used
    as a section sees only its ``with``; ``parse: json`` gives data, and stdout that is not JSON
    fails its step with ``invalid_output``."""
    section = {
        "params": {"n": 1},
        "steps": [{"run": ["echo", '{"n": ${params.n}}'], "parse": "json"}],
    }
    job = {
        "params": {"docs": False},
        "tasks": {
            "build": {"steps": [{"use": "section", "with": {"n": 2}}]},
            "docs": {"needs": "build", "if": "${params.docs}", "steps": [{"value": "docs"}]},
            "publish": {"needs": "docs", "steps": [{"value": "${tasks.build.output.n}"}]},
        },
    }
    not_json = {"tasks": {"t": {"steps": [{"run": "echo nope", "parse": "json"}]}}}
    events, status, stderr = run_cli(
        [
            {"op": "define", "name": "section", "job": section},
            {"op": "submit", "id": 1, "job": job},
            {"op": "submit", "id": 2, "job": job, "params": {"docs": True}},
            {"op": "submit", "id": 3, "job": not_json},
        ]
    )
    assert status == 0, stderr
    ends: dict[str, dict[str, str]] = {}
    for e in events:
        if e["event"] == "task" and e["status"] != "started" and "graph" not in e:
            ends.setdefault(e["job"], {})[e["task"]] = e["status"]
    off, on = ends["j1"], ends["j2"]
    assert off == {"build": "succeeded", "docs": "skipped", "publish": "skipped"}
    assert on == {"build": "succeeded", "docs": "succeeded", "publish": "succeeded"}
    finished = {e["job"]: e for e in events if e["event"] == "finished"}
    assert finished["j2"]["output"] == {"build": {"n": 2}, "docs": "docs", "publish": 2}
    error = finished["j3"]["error"]
    assert (error["type"], error["task"]) == ("invalid_output", "t")


# Each misuse named in docs/graphs.md, with the exact message the page quotes.
MISUSES = [
    (
        {"tasks": {"test": {"matrix": {"shard": "3"}, "steps": []}}},
        "tasks.test.matrix.shard: expected a list of values (or a ${params.X} holding one), "
        "got a string",
    ),
    (
        {"tasks": {"t": {"matrix": {"py": ["3.11"]}, "steps": [{"log": "${matrix.pyy}"}]}}},
        "tasks.t.steps[0].log: unknown matrix name 'pyy' (this task's matrix has 'py') "
        "(in matrix instance t[3.11])",
    ),
    (
        {"artifacts": ["../x"], "steps": [{"value": 1}]},
        "artifacts[0]: '../x' reaches outside the workspace ('..')",
    ),
    (
        {"artifacts": ["/etc/passwd"], "steps": [{"value": 1}]},
        "artifacts[0]: '/etc/passwd' is outside the workspace: patterns are relative to it",
    ),
    (
        {"steps": [{"use": "test", "with": {"pyhton": "3.12"}}]},
        "steps[0].with.pyhton: template 'test' has no parameter 'pyhton' (did you mean 'python'?)",
    ),
    (
        {"params": {"on": "yes"}, "tasks": {"t": {"if": "${params.on}", "steps": []}}},
        "tasks.t.if: expected one of 'success', 'failure', 'always' or a boolean "
        "(${params.X}), got 'yes'",
    ),
]


def test_every_misuse_is_refused_with_its_path_through_the_real_cli() -> None:
    template = {"params": {"python": "3.11"}, "steps": [{"value": "${params.python}"}]}
    commands: list[dict[str, Any]] = [{"op": "define", "name": "test", "job": template}]
    commands += [{"op": "submit", "id": i, "job": job} for i, (job, _) in enumerate(MISUSES)]
    events, status, stderr = run_cli(commands)
    assert status == 0, stderr
    errors = {e["id"]: e for e in events if e["event"] == "error"}
    for i, (_, message) in enumerate(MISUSES):
        assert (errors[i]["code"], errors[i]["message"]) == ("invalid_job", message)
    graphs_page = (Path(__file__).parents[2] / "docs" / "graphs.md").read_text()
    for _, message in MISUSES[:3] + MISUSES[4:5]:
        assert message in " ".join(graphs_page.split())  # the page quotes them exactly
