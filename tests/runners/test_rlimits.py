"""A step's rlimits hold from its program's first instruction (``runners/_rlimits.py``).

Each test stops the loop from setting the limits after the start (``apply_rlimits`` made a
no-op: a loop too busy to get there yet), so only what was set before the program ran counts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stepline.runners import _base, _forkexec, _tree
from stepline.runners._base import Launch, ProcessStartError
from stepline.runners._local import LocalRunner
from stepline.spec._limits import Limits

pytestmark = pytest.mark.skipif(
    shutil.which("prlimit") is None,
    reason="no prlimit(1) here: rlimits are set right after the start (docs/containment.md)",
)


@pytest.fixture(autouse=True, params=["fork_exec", "Popen"])
def late_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop never sets the limits itself; children started both ways stepline has."""
    monkeypatch.setattr(_tree, "apply_rlimits", lambda *args: None)
    if request.param == "Popen":
        monkeypatch.setattr(_forkexec, "AVAILABLE", False)


async def run(argv: list[str], limits: Limits, cwd: str | None = None) -> _base.ProcessResult:
    return await _base.run_process(LocalRunner(), Launch(argv, limits=limits, cwd=cwd))


async def test_files_and_cpu_are_set_before_the_program_runs() -> None:
    result = await run(["sh", "-c", "ulimit -n; ulimit -t"], Limits(files=20, cpu=3))
    assert (result.returncode, result.stdout) == (0, "20\n3\n"), result


async def test_a_program_opening_files_at_once_is_held_to_its_limit() -> None:
    opener = "fs = [open('/dev/null') for _ in range(100)]"
    result = await run(["python3", "-c", opener], Limits(files=20))
    assert result.returncode != 0
    assert "Too many open files" in result.stderr


async def test_a_program_by_relative_path_runs_from_the_steps_cwd(tmp_path: Path) -> None:
    script = tmp_path / "show.sh"
    script.write_text("#!/bin/sh\nulimit -n\n")
    script.chmod(0o755)
    result = await run(["./show.sh"], Limits(files=30), cwd=str(tmp_path))
    assert (result.returncode, result.stdout) == (0, "30\n"), result


async def test_a_missing_program_is_still_a_start_error() -> None:
    with pytest.raises(ProcessStartError, match="no-such-program"):
        await run(["no-such-program-here"], Limits(files=20))


async def test_a_step_without_rlimits_starts_its_program_as_written() -> None:
    """No launcher: the program's own argv[0] (a launcher passes the full path)."""
    result = await run(["sh", "-c", 'echo "$0"'], Limits(output=1000))
    assert (result.returncode, result.stdout) == (0, "sh\n"), result
