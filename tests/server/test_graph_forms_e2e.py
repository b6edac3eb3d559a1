"""The pipeline graph forms through a real ``stepline serve``: a matrix of real processes whose
typed outputs flow into a spliced argv, inherited env and cwd, and artifacts on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
