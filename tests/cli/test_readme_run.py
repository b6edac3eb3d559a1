"""The README's `sh` examples that need files or a project around them (quick mode, CI shards,
running job files), run exactly as written."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..driver import ENV

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]


def example(heading: str) -> str:
    """The first ``sh`` block (whatever its markers) after the README heading that starts with
    ``heading``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n### {heading}", 1)[1]
    match = re.search(r"```sh[^\n]*\n(.*?)```", section, re.S)
    assert match is not None, heading
    return match.group(1)


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}"
    return subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env={**ENV, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quick_mode_example(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.log").write_text(f"log {name}\n")
    proc = sh(example("One command over many inputs"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("a", "b", "c"):
        assert (
            gzip.decompress((tmp_path / f"{name}.log.gz").read_bytes()) == f"log {name}\n".encode()
        )


def test_ci_shards_example() -> None:
    proc = sh(example("In CI"), ROOT)
    assert proc.returncode == 0, proc.stderr
    tags = {line.split("\t", 1)[0] for line in proc.stdout.splitlines()}
    assert tags == {"tests/spec", "tests/wire"}
    assert re.search(r"^tests/spec\t\d+ passed", proc.stdout, re.M)


def test_run_job_files_example(tmp_path: Path) -> None:
    """README.md's "Run job files: `stepline run`" block, every line as written, with the files
    and the program it names made from the repository's examples."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "nightly.jsonl").write_text((ROOT / "examples" / "jobs.jsonl").read_text())
    (tmp_path / "deploy.json").write_text((ROOT / "examples" / "steps" / "use.json").read_text())
    (tmp_path / "greet.json").write_text(
        (ROOT / "examples" / "templates" / "greet.json").read_text()
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    generate = bin_dir / "generate-jobs"
    generate.write_text("#!/bin/sh\nprintf '%s\\n' '{\"value\": 1}' '{\"log\": \"hi\"}'\n")
    generate.chmod(0o755)
    block = example("Run job files")
    proc = sh(f"PATH={bin_dir}:$PATH\nset -e\n{block}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    summaries = re.findall(r"^\d+ jobs?: .*$", proc.stdout, re.M)
    assert summaries == [
        "1 job: 1 succeeded",
        "3 jobs: 3 succeeded",
        "2 jobs: 2 succeeded",
        "1 job: 1 succeeded",
    ], proc.stdout
    assert "hello, world" in proc.stdout
