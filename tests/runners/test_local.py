"""Tests of the local runner: the subprocess lifecycle, with real processes and therefore real time.

No ``autojump_clock`` here: the mock clock jumps while a real child runs, so timeouts would fire
at once. Each test stays well under a second unless it waits out a (short) grace on purpose.
Process groups are inspected through ``/proc``, which makes the stop tests Linux-only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from stepline.runners import _base, _early, _forkexec
from stepline.runners import _capture as _process
from stepline.runners._base import OUTPUT_CAP, Launch, ProcessResult, ProcessStartError
from stepline.runners._local import LocalRunner, ProcessGroups

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture(autouse=True, params=["one task", "two tasks", "Popen"])
def drain_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test three times: output drained by the calling task through a private epoll
    (Linux), and by a second task for stderr, the way without epoll (``_process._EPOLL`` is
    None); children started by CPython's ``fork_exec`` directly, and (``Popen``) by ``Popen``,
    the way where that is not available. In the second way no step ends on its spawner thread
    (``_early.WAIT`` 0), so silent steps are drained too."""
    if request.param == "two tasks":
        monkeypatch.setattr(_process, "_EPOLL", None)
        monkeypatch.setattr(_early, "WAIT", 0.0)
    elif _process._EPOLL is None:  # noqa: SLF001 (the private fast path this test switches)
        pytest.skip("no epoll on this platform")
    if request.param == "Popen":
        monkeypatch.setattr(_forkexec, "AVAILABLE", False)


async def run_process(
    argv: list[str], *, groups: ProcessGroups | None = None, **launch: Any
) -> ProcessResult:
    """Run ``argv`` to its end on a :class:`LocalRunner` (with ``groups``, if given)."""
    return await _base.run_process(LocalRunner(groups), Launch(argv, **launch))


class RecordingGroups(ProcessGroups):
    """A registry that also remembers every group it ever saw, for the test to inspect."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def add(self, pgid: int, tree: Any = None) -> None:
        self.seen.append(pgid)
        super().add(pgid, tree)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in group ``pgid``; orphaned zombies may linger unreaped."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry))
    return members


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``predicate`` in real time; fail the test if it stays false for ``timeout`` s."""
    with trio.fail_after(timeout):
        while not predicate():  # /proc offers no event to wait on, so poll
            await trio.sleep(0.01)


async def assert_group_gone(pgid: int) -> None:
    """A SIGKILLed orphan takes a moment to die, so allow a short while."""
    await until(lambda: not group_members(pgid))


async def sh(script: str, **kwargs: Any) -> ProcessResult:
    return await run_process(["sh", "-c", script], **kwargs)


# --- normal runs ------------------------------------------------------------------------------


async def test_exit_zero_captures_stdout_and_stderr() -> None:
    result = await sh("echo out; echo err >&2")
    assert result == ProcessResult(returncode=0, stdout="out\n", stderr="err\n", truncated=False)


async def test_nonzero_exit_code() -> None:
    result = await sh("echo partial; exit 3")
    assert result.returncode == 3
    assert result.stdout == "partial\n"


async def test_invalid_utf8_is_replaced() -> None:
    result = await sh(r"printf 'a\377b'; printf '\300x' >&2")
    assert result.stdout == "a\ufffdb"
    assert result.stderr == "\ufffdx"


@pytest.mark.parametrize(("sig", "returncode"), [("TERM", -15), ("KILL", -9), ("INT", -2)])
async def test_exit_by_signal_is_negative(sig: str, returncode: int) -> None:
    result = await sh(f"kill -{sig} $$")
    assert result.returncode == returncode


async def test_stdin_text_is_delivered() -> None:
    result = await run_process(["cat"], stdin="hello\nwörld")
    assert result.stdout == "hello\nwörld"


async def test_large_stdin_is_fed_while_output_is_drained() -> None:
    # Far more than a pipe buffer each way: writing and reading must run concurrently.
    text = "x" * 300_000 + "\n"
    result = await run_process(["cat"], stdin=text)
    assert result.stdout == text


async def test_child_ignoring_stdin_neither_deadlocks_nor_raises() -> None:
    with trio.fail_after(5):
        result = await sh("exec 0<&-; echo done", stdin="y" * 2_000_000)
    assert result.returncode == 0
    assert result.stdout == "done\n"


@contextlib.contextmanager
def our_stdin_is_an_open_pipe() -> Iterator[None]:
    """Make our fd 0 a pipe whose writer stays open: a child inheriting it would block reading."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)


async def test_without_stdin_the_child_reads_dev_null() -> None:
    with our_stdin_is_an_open_pipe(), trio.fail_after(2):
        result = await run_process(["cat"])
    assert result.stdout == ""


@linux_only
async def test_child_never_inherits_our_fds_0_and_1() -> None:
    result = await sh("readlink /proc/self/fd/0 /proc/self/fd/1")
    stdin_target, stdout_target = result.stdout.split()
    assert stdin_target == "/dev/null"
    assert stdout_target.startswith("pipe:")
    assert stdout_target != os.readlink("/proc/self/fd/1")


async def test_env_is_merged_over_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_T_KEPT", "kept")
    monkeypatch.setenv("STEPLINE_T_OVER", "old")
    env = {"STEPLINE_T_OVER": "new", "STEPLINE_T_ADDED": "added"}
    result = await sh('echo "$STEPLINE_T_KEPT $STEPLINE_T_OVER $STEPLINE_T_ADDED"', env=env)
    assert result.stdout == "kept new added\n"


async def test_a_change_to_our_environment_reaches_the_next_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the encoded environment is built once and reused while ours stays the same
    show = 'echo "[$STEPLINE_T_CHANGING]"'
    monkeypatch.delenv("STEPLINE_T_CHANGING", raising=False)
    assert (await sh(show)).stdout == "[]\n"
    for value in ("one", "two"):
        monkeypatch.setenv("STEPLINE_T_CHANGING", value)
        assert (await sh(show)).stdout == f"[{value}]\n"
        assert (await sh(show, env={"STEPLINE_T_OTHER": "x"})).stdout == f"[{value}]\n"
    monkeypatch.delenv("STEPLINE_T_CHANGING")
    assert (await sh(show)).stdout == "[]\n"


async def test_a_variable_reaches_the_child_as_os_fsencode_encodes_it() -> None:
    """The step's variables are encoded as one ``NAME=value`` string (NOTES.md, Performance,
    "Session 9: process jobs, the spawners"): an undecodable byte kept as a surrogate escape
    reaches the child as that byte, as ``os.fsencode`` would give it."""
    value = "a\udcffé"
    result = await sh('printf %s "$STEPLINE_T_RAW" | od -An -tx1', env={"STEPLINE_T_RAW": value})
    assert bytes.fromhex(result.stdout) == os.fsencode(value)


async def test_a_steps_variable_replaces_ours_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_T_TWICE", "ours")
    for value in ("a", "b"):  # the second start reuses what the first built
        result = await run_process(["env"], env={"STEPLINE_T_TWICE": value})
        assert [line for line in result.stdout.splitlines() if "STEPLINE_T_TWICE" in line] == [
            f"STEPLINE_T_TWICE={value}"
        ]


async def test_cwd(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("")
    result = await run_process(["ls"], cwd=str(tmp_path))
    assert result.stdout == "marker\n"


async def test_grandchild_holding_the_pipe_is_waited_for() -> None:
    # Like subprocess.run: capture lasts until every writer closed the pipe.
    start = trio.current_time()
    result = await sh("sleep 0.3 & echo hi")
    assert result.stdout == "hi\n"
    assert trio.current_time() - start >= 0.25


# --- start failures ---------------------------------------------------------------------------


async def test_missing_program() -> None:
    with pytest.raises(ProcessStartError, match=r"no such program: 'stepline-no-such-prog'"):
        await run_process(["stepline-no-such-prog", "arg"])


async def test_non_executable_file(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(ProcessStartError, match=r"not executable: '.*script\.sh'"):
        await run_process([str(script)])


async def test_missing_cwd(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ProcessStartError, match=r"cwd does not exist: '.*missing'"):
        await run_process(["true"], cwd=missing)


async def test_cwd_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ProcessStartError, match=r"cwd is not a directory: '.*file'"):
        await run_process(["true"], cwd=str(file))


@pytest.mark.parametrize("argv", [[], ["echo", "nul\0byte"]])
async def test_unusable_argv(argv: list[str]) -> None:
    with pytest.raises(ProcessStartError):
        await run_process(argv)


async def test_an_environment_name_with_equals_is_refused() -> None:
    with pytest.raises(ProcessStartError, match="illegal environment variable name"):
        await run_process(["true"], env={"A=B": "1"})


async def test_start_failure_leaves_registry_empty() -> None:
    groups = ProcessGroups()
    with pytest.raises(ProcessStartError):
        await run_process(["stepline-no-such-prog"], groups=groups)
    assert len(groups) == 0


# --- output cap -------------------------------------------------------------------------------


async def test_output_cap_truncates_and_still_completes() -> None:
    script = "head -c 5000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2"
    with trio.fail_after(5):
        result = await sh(script)
    assert result.returncode == 0
    assert result.truncated
    assert len(result.stdout) == OUTPUT_CAP == 1 << 20
    assert len(result.stderr) == OUTPUT_CAP
    assert set(result.stdout) == {"a"}


async def test_a_full_stderr_pipe_is_drained_while_stdout_stays_open() -> None:
    # 300 kB to stderr, more than a pipe holds, before a byte of stdout: read one at a time,
    # the child would block on stderr while we waited for stdout to close.
    with trio.fail_after(5):
        result = await sh("head -c 300000 /dev/zero | tr '\\0' e >&2; echo done")
    assert (result.stdout, len(result.stderr), result.truncated) == ("done\n", 300_000, False)


async def test_no_descriptor_for_the_private_epoll_falls_back_to_a_second_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def out_of_descriptors(sizehint: int) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_process, "_EPOLL", out_of_descriptors)
    result = await sh("echo out; echo err >&2")
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


async def test_small_cap_keeps_the_head() -> None:
    result = await sh("echo hello", output_cap=4)
    assert (result.stdout, result.truncated) == ("hell", True)


async def test_output_exactly_at_cap_is_not_truncated() -> None:
    result = await sh("printf abcd; printf efgh >&2", output_cap=4)
    assert (result.stdout, result.stderr, result.truncated) == ("abcd", "efgh", False)


async def test_only_stderr_over_cap_sets_truncated() -> None:
    result = await sh("printf ab; printf abcdef >&2", output_cap=4)
    assert (result.stdout, result.stderr, result.truncated) == ("ab", "abcd", True)


# --- cancellation and stopping ----------------------------------------------------------------


@linux_only
async def test_cancel_stops_promptly_and_the_group_is_gone() -> None:
    groups = RecordingGroups()
    raised: list[BaseException] = []
    start = trio.current_time()
    with trio.move_on_after(0.2) as scope:
        try:
            await run_process(["sleep", "30"], groups=groups)
        except BaseException as exc:
            raised.append(exc)
            raise
    assert scope.cancelled_caught
    # Cancelled propagated out of run_process, bare, not wrapped in the capture nursery's group
    assert [type(exc) for exc in raised] == [trio.Cancelled]
    assert trio.current_time() - start < 1.0
    (pgid,) = groups.seen
    assert group_members(pgid) == []  # the leader was reaped before we returned
    assert len(groups) == 0


@linux_only
async def test_child_ignoring_sigterm_is_killed_after_grace() -> None:
    groups = RecordingGroups()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: sh("trap '' TERM; sleep 30", grace=0.3, groups=groups))
        await until(lambda: bool(groups.seen) and len(group_members(groups.seen[0])) >= 2)
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - cancelled_at
    assert 0.3 <= elapsed < 1.0
    assert trio.current_time() - start < 2.0
    await assert_group_gone(groups.seen[0])
    assert len(groups) == 0


@linux_only
@pytest.mark.parametrize(
    "script",
    [
        "sleep 30 & sleep 30",
        # the leader dies at SIGTERM at once; the grandchild ignores it and needs the SIGKILL
        "(trap '' TERM; sleep 30) & sleep 30",
    ],
)
async def test_grandchildren_are_killed_on_cancel(script: str) -> None:
    groups = RecordingGroups()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: sh(script, grace=5.0, groups=groups))
        await until(lambda: bool(groups.seen) and len(group_members(groups.seen[0])) >= 3)
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - cancelled_at < 1.0  # the leader obeyed SIGTERM: no grace wait
    await assert_group_gone(groups.seen[0])
    assert len(groups) == 0


@linux_only
async def test_kill_all_ends_a_long_grace_promptly() -> None:
    groups = RecordingGroups()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: sh("trap '' TERM; sleep 30", grace=30.0, groups=groups))
        await until(lambda: bool(groups.seen) and len(group_members(groups.seen[0])) >= 2)
        assert len(groups) == 1
        nursery.cancel_scope.cancel()  # the nursery now waits for run_process's shielded stop
        with trio.CancelScope(shield=True):
            await trio.sleep(0.2)
            assert len(groups) == 1  # still waiting out its 30 s grace
            killed_at = trio.current_time()
            groups.kill_all()
    assert trio.current_time() - killed_at < 1.0
    await assert_group_gone(groups.seen[0])
    assert len(groups) == 0


async def test_process_started_after_kill_all_is_killed_at_once() -> None:
    groups = ProcessGroups()
    groups.kill_all()
    with trio.fail_after(2):
        result = await run_process(["sleep", "30"], groups=groups)
    assert result.returncode == -9
    assert len(groups) == 0


async def test_registry_tracks_the_live_process_only() -> None:
    groups = ProcessGroups()
    seen_during: list[int] = []

    async def watch() -> None:
        await until(lambda: len(groups) == 1)
        seen_during.append(len(groups))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        result = await sh("sleep 0.2; echo ok", groups=groups)
    assert result.stdout == "ok\n"
    assert seen_during == [1]
    assert len(groups) == 0


# -- finding programs on PATH (remembered per PATH, like a shell's command hash) ----------------


def _script(directory: Path, name: str, says: str) -> None:
    path = directory / name
    path.write_text(f'#!/bin/sh\necho {says} "$0"\n')
    path.chmod(0o755)


async def test_a_program_is_found_on_the_steps_path(tmp_path: Path) -> None:
    _script(tmp_path, "stepline-hello", "hello")
    env = {"PATH": str(tmp_path)}
    for _ in range(2):  # the second start uses the remembered path
        result = await run_process(["stepline-hello"], env=env)
        assert result.stdout == f"hello {tmp_path / 'stepline-hello'}\n"


async def test_a_change_to_our_path_is_seen_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stepline's own ``PATH`` is kept with its encoded environment and read again when the
    environment changed, as ``os.environ.get`` would read it at each start."""
    _script(tmp_path, "stepline-later", "later")
    with pytest.raises(ProcessStartError, match=r"no such program: 'stepline-later'"):
        await run_process(["stepline-later"])
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert (await run_process(["stepline-later"])).stdout.startswith("later")


async def test_a_remembered_program_that_is_gone_is_searched_for_again(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _script(first, "stepline-moving", "first")
    env = {"PATH": f"{first}{os.pathsep}{second}"}
    assert (await run_process(["stepline-moving"], env=env)).stdout.startswith("first")
    (first / "stepline-moving").rename(second / "stepline-moving")
    result = await run_process(["stepline-moving"], env=env)
    assert result.stdout.startswith("first")  # the same script, found again where it went
    (second / "stepline-moving").unlink()
    with pytest.raises(ProcessStartError, match=r"no such program: 'stepline-moving'"):
        await run_process(["stepline-moving"], env=env)


async def test_a_relative_path_entry_is_searched_in_the_childs_cwd(tmp_path: Path) -> None:
    _script(tmp_path, "stepline-here", "here")
    result = await run_process(["stepline-here"], env={"PATH": "."}, cwd=str(tmp_path))
    assert result.stdout == "here ./stepline-here\n"  # as Popen's own search runs it


@linux_only
async def test_no_descriptor_is_left_open_by_runs_cancels_or_failed_starts() -> None:
    # Each run opens pipes, maybe a pidfd, and (Linux) an epoll for its output: all must close,
    # whether the child exits, is cancelled while writing, or never starts.
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    await sh("true")  # opens the one /dev/null every child's stdin shares, for good
    before = open_fds()
    for _ in range(5):
        await sh("echo out; echo err >&2")
        with trio.move_on_after(0.05):
            await run_process(["cat", "/dev/zero"], grace=0.5)
        with pytest.raises(ProcessStartError):
            await run_process(["/nonexistent/program"])
    assert open_fds() == before


async def test_a_child_that_never_stops_writing_can_be_cancelled() -> None:
    # Its pipe is seldom empty, so the capture seldom waits: it must still see the cancel.
    with trio.move_on_after(0.5) as scope:
        await run_process(["cat", "/dev/zero"], grace=0.5)
    assert scope.cancelled_caught


@linux_only
async def test_a_step_that_left_its_group_running_returns_with_the_group_gone() -> None:
    """``group_gone`` lets the workspace skip its own look at the group: it must be true only
    because the step's end ended what the step left behind, not because nobody looked."""
    result = await sh("sleep 30 >/dev/null 2>&1 & exit 0", grace=0.0)
    assert result.returncode == 0
    assert result.group_gone
    with pytest.raises(ProcessLookupError):  # no member, not even a zombie
        os.killpg(result.pid, 0)
