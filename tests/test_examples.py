"""``examples/``: every job file is valid, covers its step kind, and does what it says; the shell
driver works."""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepline.cli._jobfiles import load_entries, load_templates
from stepline.cli._progress import PlainView
from stepline.cli._run import Options, Session
from stepline.cli._term import Output
from stepline.spec._keys import KINDS
from stepline.spec._validate import validate_job

from .driver import ENV

EXAMPLES = Path(__file__).parent.parent / "examples"
STEP_FILES = sorted((EXAMPLES / "steps").glob("*.json"))
TEMPLATE_ARGS = [f"{p.stem}={p}" for p in sorted((EXAMPLES / "templates").glob("*.json"))]


def keys(tree: Any) -> Iterator[str]:
    """Every object key anywhere in a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key
            yield from keys(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from keys(item)


# The step kinds of the wire protocol's contract (PROTOCOL.md, "Steps"); kinds added since
# (the validator knows them all) should get an example too, once their form settles.
PROTOCOL_KINDS = {"sleep", "value", "log", "fail", "run", "seq", "par", "race", "try", "use"}


def test_there_is_a_job_file_for_every_step_kind_of_the_protocol() -> None:
    assert set(KINDS) >= PROTOCOL_KINDS
    assert {p.stem for p in STEP_FILES} >= PROTOCOL_KINDS


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: p.name)
def test_each_job_file_is_valid_and_uses_its_kind(path: Path) -> None:
    job = json.loads(path.read_text())
    validate_job(job, templates=load_templates(TEMPLATE_ARGS))
    if path.stem in PROTOCOL_KINDS:
        assert path.stem in set(keys(job["steps"]))


def test_every_example_file_loads_as_stepline_run_would() -> None:
    files = [str(p) for p in sorted(EXAMPLES.rglob("*.json*")) if p.parent.name != "templates"]
    entries = load_entries(files, load_templates(TEMPLATE_ARGS))
    whole_jobs = [*EXAMPLES.glob("*.json"), EXAMPLES / "ci" / "pipeline.json"]  # beside steps/
    assert len(entries) == len(STEP_FILES) + len(whole_jobs) + 3  # jobs.jsonl holds three


async def test_the_examples_do_what_they_say() -> None:
    entries = load_entries([str(p) for p in STEP_FILES], load_templates(TEMPLATE_ARGS))
    out = io.StringIO()
    session = Session(entries, load_templates(TEMPLATE_ARGS), PlainView(Output(out)), Options())
    assert await session.run(handle_signals=False) == 1
    results = {
        line.split()[1]: line
        for line in out.getvalue().splitlines()
        if not line.startswith((" ", "started", f"{len(STEP_FILES)} jobs"))
    }
    failed = [name for name, line in results.items() if not line.startswith("succeeded")]
    assert failed == [str(EXAMPLES / "steps" / "fail.json")]  # the one failing on purpose
    assert '"fast mirror"' in results[str(EXAMPLES / "steps" / "race.json")]
    assert "hello, world" in results[str(EXAMPLES / "steps" / "use.json")]
    assert results[str(EXAMPLES / "steps" / "try.json")].endswith(" null")  # a catch-less try


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("jq") is None, reason="the shell driver needs jq")
def test_the_shell_driver() -> None:
    env = {**ENV, "STEPLINE": shlex.join([sys.executable, "-m", "stepline"])}
    proc = subprocess.run(
        ["sh", str(EXAMPLES / "driver.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # Answers come in command order; a job may finish before later commands are answered (the
    # jq processes feeding stdin are slow on a loaded machine), so the two kinds are compared
    # apart.
    answers = [line for line in lines if not line.startswith("j")]
    assert answers[:6] == [
        "par: accepted as j1",
        "define: defined template greet",
        "greet-shell: accepted as j2",
        "greet-jq: accepted as j3",
        "oops: accepted as j4",
        "nonsense: refused: bad_command: unknown op 'frobnicate'; expected one of submit, "
        "cancel, status, logs, define, schedule, unschedule, ack, stats, ping, shutdown",
    ]
    finished = sorted(line for line in lines if line.startswith("j"))
    assert finished[0].startswith("j1: succeeded: [")
    assert finished[1:] == [
        'j2: succeeded: {"exit":0,"stdout":"hello, shell\\n","stderr":""}',
        'j3: succeeded: {"exit":0,"stdout":"hello, jq\\n","stderr":""}',
        "j4: failed: failing on purpose",
    ]
    assert len(answers) == 7
    assert lines[-1] == "bye"


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("node") is None, reason="the Node.js driver needs node")
def test_the_node_driver_ties_every_event_to_its_submit() -> None:
    env = {**ENV, "STEPLINE": f"{sys.executable} -m stepline"}
    proc = subprocess.run(
        ["node", str(EXAMPLES / "driver.mjs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    finished = {line.split(":", 1)[0]: line for line in lines if " succeeded: " in line}
    assert {f"value-{i}" for i in range(1, 51)} <= finished.keys()
    assert all(finished[f"value-{i}"].endswith(f" succeeded: {i}") for i in range(1, 51))
    assert finished["echo"].endswith('"stdout":"hello from node\\n","stderr":""}')
    assert 'oops: j52 failed: "failing on purpose"' in lines
    assert any(line.startswith("nonsense: refused: bad_command: unknown op") for line in lines)
    assert "never finished" not in proc.stdout
    assert lines[-1] == "bye"
