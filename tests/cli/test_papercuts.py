"""What a new user runs into first, through the real command line: a ``.json`` file holding
several jobs, misspelt keys, and ``check`` agreeing with ``run`` on what a file is."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..driver import stepline

pytestmark = pytest.mark.e2e


def test_a_json_file_with_several_jobs_says_what_to_do(tmp_path: Path) -> None:
    """Regression: both commands said only ``Extra data: line 2 column 1 (char 22)``."""
    path = tmp_path / "two.json"
    path.write_text('{"run": ["echo", "a"]}\n{"run": ["echo", "b"]}\n')
    for command in ("run", "check"):
        proc = stepline(command, str(path))
        assert proc.returncode == 2, command
        assert "more than one JSON value (the next starts at line 2)" in proc.stderr
        assert "put one job per line in a .jsonl file" in proc.stderr
        assert "Extra data" not in proc.stderr


def test_check_accepts_what_run_accepts_and_exits_like_it(tmp_path: Path) -> None:
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"value": 1}\n{"steps": [{"value": 2}]}\n')
    assert stepline("check", str(lines)).returncode == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"value": 1}\n{"steps": [{"sleeep": 1}]}\n')
    assert stepline("check", str(bad)).returncode == stepline("run", str(bad)).returncode == 2


@pytest.mark.parametrize(
    ("job", "said"),
    [
        ('{"steps": [{"run": "true"}], "paralel": 2}', "unknown key 'paralel' (did you mean a "),
        ('{"steps": [{"cmd": "true"}]}', "unknown key 'cmd' (did you mean 'run'?)"),
        ('{"steps": [{"run": "true"}], "stdin": "x"}', "unknown key 'stdin': it belongs on a run"),
    ],
)
def test_misspelt_keys_get_a_sensible_hint(tmp_path: Path, job: str, said: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(job)
    proc = stepline("check", str(path))
    assert proc.returncode == 2
    assert said in proc.stderr
    assert "'params'" not in proc.stderr
    assert "'cwd'?" not in proc.stderr
