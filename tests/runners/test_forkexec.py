"""``_forkexec``: a start reports a failed exec the same way with its own error pipe and with
the thread's kept one, and the kept one is used only where the ``vfork`` probe says it may be."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from stepline.runners import _forkexec

pytestmark = pytest.mark.skipif(not _forkexec.AVAILABLE, reason="no fork_exec here")

TRUE = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"


@pytest.fixture(params=["kept pipe", "own pipe"])
def pipe_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test with the thread's kept error pipe and with a pipe of the start's own."""
    kept = request.param == "kept pipe"
    if kept and not _forkexec.vfork_holds():
        pytest.skip("starts here do not wait for the exec (no vfork): no kept pipe")
    monkeypatch.setattr(_forkexec, "_VFORK", kept)
    monkeypatch.setattr(_forkexec, "_THREAD", type(_forkexec._THREAD)())  # noqa: SLF001
    return str(request.param)


def start(argv: list[str], cwd: str | None = None) -> int:
    program = argv[0]
    found = _forkexec.candidates(program, os.environ.get("PATH", os.defpath))
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        return _forkexec.fork_exec(argv, program, found, cwd, None, (devnull, devnull, devnull))
    finally:
        os.close(devnull)


def exit_status(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_good_start_returns_the_childs_pid(pipe_mode: str) -> None:
    assert exit_status(start([TRUE])) == 0


def test_a_missing_program_raises_what_popen_raises(pipe_mode: str) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        start(["stepline-no-such-prog"])
    assert raised.value.filename == "stepline-no-such-prog"


def test_a_file_that_is_not_executable(pipe_mode: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError):
        start([str(script)])


def test_a_missing_cwd_is_blamed(pipe_mode: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as raised:
        start([TRUE], cwd=missing)
    assert raised.value.filename == missing


def test_a_failed_start_leaves_nothing_for_the_next(pipe_mode: str, tmp_path: Path) -> None:
    """The kept pipe is read to its end: the next start on the thread sees no old report."""
    for _ in range(20):
        with pytest.raises(FileNotFoundError):
            start([TRUE], cwd=str(tmp_path / "missing"))
        with pytest.raises(FileNotFoundError):
            start(["stepline-no-such-prog"])
        assert exit_status(start([TRUE])) == 0


def test_the_probe_sees_vfork_here() -> None:
    """On Linux CPython ``fork_exec`` waits for the exec (``vfork``), and the probe says so."""
    if not sys.platform.startswith("linux") or _forkexec._under_valgrind():  # noqa: SLF001
        pytest.skip("vfork is Linux's (and valgrind makes it a fork)")
    assert _forkexec._probe_vfork()  # noqa: SLF001


def test_the_probe_sees_a_plain_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the start is a plain ``fork`` (``allow_vfork`` off), the parent is back before
    the child reports, and the probe says the kept pipe may not be used."""
    real = _forkexec._FORK_EXEC  # noqa: SLF001

    def fork_only(*args: Any) -> int:
        return int(real(*args[:-1], False))  # allow_vfork, the last argument, off

    monkeypatch.setattr(_forkexec, "_FORK_EXEC", fork_only)
    assert not _forkexec._probe_vfork()  # noqa: SLF001


def test_a_forked_child_does_not_share_the_kept_pipes(pipe_mode: str) -> None:
    """The kept pipes are the parent's; after ``os.fork`` the child makes its own."""
    start([TRUE])  # so this thread keeps a pipe in the kept mode
    kept = list(_forkexec._KEPT)  # noqa: SLF001
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        ok = not _forkexec._KEPT and getattr(_forkexec._THREAD, "pipe", None) is None  # noqa: SLF001
        closed = all(_closed(fd) for pipe in kept for fd in pipe)
        os._exit(0 if ok and closed and exit_status(start([TRUE])) == 0 else 1)
    assert exit_status(pid) == 0


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_probe_that_cannot_start_says_no_for_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start when the probe itself fails (no process to spare, say) makes its own pipe and
    succeeds; the probe is tried again at the next start."""

    def no_process() -> bool:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(_forkexec, "_VFORK", None)
    monkeypatch.setattr(_forkexec, "_THREAD", type(_forkexec._THREAD)())  # noqa: SLF001
    monkeypatch.setattr(_forkexec, "_probe_vfork", no_process)
    assert exit_status(start([TRUE])) == 0
    assert _forkexec._VFORK is None  # noqa: SLF001
    assert getattr(_forkexec._THREAD, "pipe", None) is None  # noqa: SLF001
