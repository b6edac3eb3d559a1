"""The inotify watch that spares a pooled workspace its full check (engine/_dir_watch.py):
a directory is unchanged only while nothing at all happened to it since it passed."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from stepline.engine._dir_watch import DirWatch


@pytest.fixture
def watch() -> DirWatch:
    w = DirWatch()
    if not w.arm("/"):
        pytest.skip("no inotify here")
    return w


def passed(watch: DirWatch, path: Path) -> str:
    assert watch.arm(str(path))
    watch.passed(str(path))
    assert watch.unchanged(str(path))
    return str(path)


def test_a_directory_never_checked_is_not_unchanged(watch: DirWatch, tmp_path: Path) -> None:
    assert not watch.unchanged(str(tmp_path))
    assert watch.arm(str(tmp_path))
    assert not watch.unchanged(str(tmp_path))  # armed, but not passed


@pytest.mark.parametrize(
    "change",
    [
        lambda d: (d / "f").touch(),
        lambda d: (d / "sub").mkdir(),
        lambda d: (d / "link").symlink_to("/etc"),
        lambda d: ((d / "f").touch(), (d / "f").unlink()),  # made and removed: still seen
        lambda d: d.chmod(0o755),
        lambda d: os.utime(d, (0, 0)),
        lambda d: d.rename(d.with_name("moved")),
    ],
    ids=["file", "dir", "symlink", "made-and-removed", "chmod", "utime", "moved"],
)
def test_any_change_makes_it_checked_again(watch: DirWatch, tmp_path: Path, change: object) -> None:
    d, untouched = tmp_path / "w", tmp_path / "other"
    d.mkdir(mode=0o700)
    untouched.mkdir(mode=0o700)
    other = passed(watch, untouched)
    path = passed(watch, d)
    change(d)  # type: ignore[operator]  # (a lambda of the parameters above)
    assert not watch.unchanged(path)
    assert watch.unchanged(other)  # the other directory's mark is its own


def test_a_removed_directory_drops_its_watch(watch: DirWatch, tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    path = passed(watch, d)
    d.rmdir()
    d.mkdir()  # a new directory under the same name is not the one that passed
    assert not watch.unchanged(path)
    assert passed(watch, d) == path


def test_lost_events_make_every_directory_checked_again(watch: DirWatch, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    path = passed(watch, quiet)
    busy = tmp_path / "busy"
    busy.mkdir()
    passed(watch, busy)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 40_000:
        pytest.skip("the queue is too long to overflow quickly")
    for i in range(limit // 2 + 1):  # two events each (made, removed): the queue overflows
        (busy / str(i)).touch()
        (busy / str(i)).unlink()
    assert not watch.unchanged(path)  # nothing happened to it, but an event might have been lost


def test_after_close_nothing_is_unchanged(watch: DirWatch, tmp_path: Path) -> None:
    path = passed(watch, tmp_path)
    watch.close()
    assert not watch.unchanged(path)
    assert not watch.arm(path)


def test_a_watch_never_closed_gives_its_descriptor_back_when_collected(tmp_path: Path) -> None:
    # (inotify instances are few per user: an executor that never ran to its end must not keep one)
    before = len(os.listdir("/proc/self/fd"))
    w = DirWatch()
    if not w.arm(str(tmp_path)):
        pytest.skip("no inotify here")
    assert len(os.listdir("/proc/self/fd")) == before + 1
    del w
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_removed_directories_are_let_go_of_without_a_clean_one(
    watch: DirWatch, tmp_path: Path
) -> None:
    # Every job leaves something behind: its directory is removed and a new one made. The
    # watches of the removed ones must not pile up though no directory ever passes.
    for i in range(200):
        d = tmp_path / str(i)
        d.mkdir()
        assert watch.arm(str(d))
        (d / "left").touch()
        (d / "left").unlink()
        d.rmdir()
    assert watch.watched <= 2  # "/" of the fixture, and the last one
