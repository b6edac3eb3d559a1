"""The sweep of stale workspace parents judges only what is ours and unlocked
(``engine/_workspace_parent.py``); the end-to-end case is tests/server/test_workspace_parents.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from stepline.engine._workspace import WorkspacePool, remove_tree
from stepline.engine._workspace_parent import PREFIX, ParentDirectory, remove_stale_parents


def test_only_unlocked_parents_of_ours_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read $TMPDIR again
    live = ParentDirectory(remove_tree)
    held = Path(live.path())
    (held / "stepline-x").mkdir()
    stale = tmp_path / f"{PREFIX}stale"
    (stale / "deep" / "er").mkdir(parents=True)
    (tmp_path / f"{PREFIX}file").write_text("a file by that name is not a parent")
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / f"{PREFIX}link").symlink_to(target)
    (tmp_path / "stepline-loose").mkdir()  # a kept workspace: not in a parent, never swept
    try:
        assert remove_stale_parents(remove_tree, str(tmp_path)) == [str(stale)]
        assert (held / "stepline-x").is_dir()  # locked by `live`: its owner is alive
        assert sorted(os.listdir(tmp_path)) == sorted(
            [held.name, f"{PREFIX}file", f"{PREFIX}link", "target", "stepline-loose"]
        )
    finally:
        live.remove()
    assert not held.exists()
    assert remove_stale_parents(remove_tree, str(tmp_path)) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_another_users_parent_is_left_alone(tmp_path: Path) -> None:
    theirs = tmp_path / f"{PREFIX}theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    assert remove_stale_parents(remove_tree, str(tmp_path)) == []
    assert theirs.is_dir()


def test_a_parent_removed_at_the_end_is_made_anew_on_a_later_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    parent = ParentDirectory(remove_tree)
    first = parent.path()
    assert parent.path() == first  # made once
    assert os.path.basename(first).startswith(PREFIX)
    assert oct(os.stat(first).st_mode & 0o777) == oct(0o700)
    parent.remove()
    second = parent.path()
    try:
        assert second != first
        assert not os.path.exists(first)
    finally:
        parent.remove()
    assert os.listdir(tmp_path) == []  # no staging directory left either


def test_the_sweep_thread_is_given_tmpdir_resolved_on_the_calling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's first ``gettempdir`` writes and removes a probe file in ``$TMPDIR``: done on the
    sweep's thread, a process ending meanwhile (a server given no work) left the file behind.
    The start resolves it itself and hands the thread the directory."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # as at a process's start
    started: list[Any] = []
    monkeypatch.setattr(
        "trio.lowlevel.start_thread_soon", lambda fn, deliver, name=None: started.append(fn)
    )
    WorkspacePool.remove_stale_soon()
    assert tempfile.tempdir == str(tmp_path)  # resolved here, before any thread ran
    (stale := tmp_path / f"{PREFIX}stale").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)  # the thread must not need it
    monkeypatch.setattr("tempfile.gettempdir", _no_probe)
    [sweep] = started
    sweep()
    assert not stale.exists()


def _no_probe() -> str:
    raise AssertionError("the sweep's thread looked for $TMPDIR itself")
