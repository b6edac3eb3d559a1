"""``examples/ci/`` and README.md's "A CI pipeline, beside its Makefile": the pipeline run
through the real ``stepline run --artifacts`` on a copy of its small project (passing, then
broken), the equivalent Makefile run by ``make`` on the same copies with the same results, and
the size comparison the README quotes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from .driver import ENV

CI = Path(__file__).parent.parent / "examples" / "ci"
README = Path(__file__).parent.parent / "README.md"
TESTS = {
    "tests.test_numbers.test_numbers_in_text",
    "tests.test_numbers.test_no_numbers",
    "tests.test_numbers.test_mean",
    "tests.test_numbers.test_mean_of_nothing",
    "tests.test_words.test_words_are_lower_cased",
    "tests.test_words.test_punctuation_is_not_a_word",
    "tests.test_words.test_apostrophes_stay_in_words",
    "tests.test_words.test_top_words_counts",
}
BROKEN = "import os\n\n\ndef test_sum() -> None:\n    assert 1 + 1 == 3\n"  # lint and test fail


def project(tmp_path: Path, *, broken: bool) -> Path:
    """A copy of the example project; broken: with a test file that fails lint and its test."""
    dest = tmp_path / "project"
    shutil.copytree(CI / "project", dest)
    if broken:
        (dest / "tests" / "test_broken.py").write_text(BROKEN)
    return dest


def run_pipeline(src: Path, kept: Path) -> tuple[int, list[dict[str, Any]]]:
    """``stepline run --json --artifacts KEPT pipeline.json`` in the project: status, events."""
    params = json.dumps({"python": sys.executable})
    argv = [
        "run",
        "--json",
        "--artifacts",
        str(kept),
        "--params",
        params,
        str(CI / "pipeline.json"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "stepline", *argv],
        cwd=src,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert done.stderr == ""
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def run_make(src: Path, out: Path) -> int:
    """``make -C PROJECT -f Makefile -j4 PY=... OUT=...``, as the Makefile's first line says."""
    argv = ["make", "-s", "-C", str(src), "-f", str(CI / "Makefile"), "-j4"]
    argv += [f"PY={sys.executable}", f"OUT={out}"]
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=300, check=False)
    return done.returncode


def finished_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in events if e["event"] == "finished")


def task_ends(events: list[dict[str, Any]]) -> dict[str, str]:
    return {
        e["task"]: e["status"] for e in events if e["event"] == "task" and e["status"] != "started"
    }


def kept_files(kept: Path, finished: dict[str, Any]) -> dict[str, bytes]:
    """The artifacts on disk, each checked against its ``finished`` listing."""
    files = {}
    for item in finished["artifacts"]:
        data = (kept / finished["job"] / item["path"]).read_bytes()
        assert (item["bytes"], item["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        files[item["path"]] = data
    return files


def cases(junit: bytes) -> Counter[str]:
    root = ElementTree.fromstring(junit)
    return Counter(f"{c.get('classname')}.{c.get('name')}" for c in root.iter("testcase"))


@pytest.mark.e2e
@pytest.mark.usefixtures("no_leftovers")
def test_the_pipeline_passes_a_good_project_and_keeps_its_junit(tmp_path: Path) -> None:
    src, kept = project(tmp_path, broken=False), tmp_path / "kept"
    status, events = run_pipeline(src, kept)
    finished = finished_of(events)
    assert (status, finished["state"]) == (0, "succeeded"), finished.get("error")
    output = finished["output"]
    assert output["merge"] == {"shards": 3, "tests": 8, "failed": []}  # parsed JSON, not text
    assert output["report"] is None  # skipped: nothing failed
    assert len(output["test"]) == 3  # the three shards' outputs, in matrix order
    assert task_ends(events) == {
        "setup": "succeeded",
        "lint": "succeeded",
        "test[1]": "succeeded",
        "test[2]": "succeeded",
        "test[3]": "succeeded",
        "merge": "succeeded",
        "report": "skipped",
    }
    starts = [e for e in events if e["event"] == "task" and e["status"] == "started"]
    assert sorted((e["task"], e.get("matrix")) for e in starts if e["task"].startswith("test")) == [
        (f"test[{k}]", {"shard": k}) for k in (1, 2, 3)
    ]
    files = kept_files(kept, finished)
    assert sorted(files) == ["junit-1.xml", "junit-2.xml", "junit-3.xml", "junit.xml"]
    assert cases(files["junit.xml"]) == Counter(TESTS)  # every test ran once across the shards
    shards = [cases(files[f"junit-{k}.xml"]) for k in (1, 2, 3)]
    assert all(shard for shard in shards)
    assert sum(shards, Counter()) == Counter(TESTS)
    # the job-level env reached every step: no bytecode, and the flags left no caches behind
    assert sorted(p.name for p in src.rglob("*") if "cache" in p.name) == []


@pytest.mark.e2e
@pytest.mark.usefixtures("no_leftovers")
def test_the_pipeline_reports_a_broken_project_and_keeps_the_report(tmp_path: Path) -> None:
    src, kept = project(tmp_path, broken=True), tmp_path / "kept"
    status, events = run_pipeline(src, kept)
    finished = finished_of(events)
    assert (status, finished["state"]) == (1, "failed")
    ends = task_ends(events)
    assert ends["lint"] == "failed"
    assert sorted(ends[f"test[{k}]"] for k in (1, 2, 3)) == ["failed", "succeeded", "succeeded"]
    assert (ends["merge"], ends["report"]) == ("succeeded", "succeeded")  # always, failure
    partial = finished["partial"]
    failed = "tests.test_broken.test_sum"
    assert partial["merge"] == {"shards": 3, "tests": 9, "failed": [failed]}
    assert partial["report"] == ["# Failed tests", f"- {failed}: assert (1 + 1) == 3"]
    files = kept_files(kept, finished)  # kept although the job failed
    assert files["failures.md"].decode().splitlines() == partial["report"]
    assert cases(files["junit.xml"]) == Counter({*TESTS, failed})


@pytest.mark.e2e
@pytest.mark.parametrize("broken", [False, True], ids=["good", "broken"])
def test_the_makefile_does_the_same(tmp_path: Path, broken: bool) -> None:
    src, out = project(tmp_path, broken=broken), tmp_path / "out"
    status = run_make(src, out)
    assert (status == 0) is not broken
    summary = json.loads((out / "summary.json").read_text())
    failed = ["tests.test_broken.test_sum"] if broken else []
    assert summary == {"shards": 3, "tests": 8 + broken, "failed": failed}
    assert cases((out / "junit.xml").read_bytes()) == Counter(TESTS | set(failed))
    assert (out / "failures.md").exists() is broken


def size(path: Path) -> tuple[int, int]:
    """Lines and characters, leaving out blank lines and comment lines (JSON has none)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("#")]
    return len(lines), sum(len(line) + 1 for line in lines)


def test_the_pipeline_is_shorter_than_the_makefile_and_the_readme_says_by_how_much() -> None:
    pipeline, makefile = size(CI / "pipeline.json"), size(CI / "Makefile")
    assert pipeline[0] < makefile[0]
    readme = README.read_text()
    assert f"| `examples/ci/pipeline.json` | {pipeline[0]} | {pipeline[1]} |" in readme
    assert f"| `examples/ci/Makefile` | {makefile[0]} | {makefile[1]} |" in readme
    fewer, more = (
        round(100 * (1 - pipeline[0] / makefile[0])),
        round(100 * (pipeline[1] / makefile[1] - 1)),
    )
    assert f"The pipeline takes {fewer} % fewer lines, and {more} % more\ncharacters" in readme


def test_the_readme_shows_both_files_as_they_are() -> None:
    readme = README.read_text()
    assert f"```json\n{(CI / 'pipeline.json').read_text()}```\n" in readme
    makefile = (CI / "Makefile").read_text()
    assert f"```text norun=covered:tests/test_ci_example.py\n{makefile}```\n" in readme
