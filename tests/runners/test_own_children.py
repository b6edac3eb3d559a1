"""``own_children`` reads a ``/proc`` file kept open: each read must be the children of now, in
this process, also after a fork (where the inherited descriptor names the parent's thread)."""

from __future__ import annotations

import os
import signal
import subprocess

from stepline.runners._tree import own_children

HANG = 10  # seconds before a forked child that should have reported counts as a hang


def test_each_read_shows_the_children_of_now() -> None:
    own_children()  # the file is open from here on
    first = subprocess.Popen(["sleep", "30"])
    second = subprocess.Popen(["sleep", "30"])
    try:
        assert {first.pid, second.pid} <= set(own_children())
        first.kill()
        first.wait()
        children = own_children()
        assert first.pid not in children
        assert second.pid in children
    finally:
        for child in (first, second):
            child.kill()
            child.wait()
    assert not {first.pid, second.pid} & set(own_children())


def test_a_forked_child_reads_its_own_children() -> None:
    parents_child = subprocess.Popen(["sleep", "30"])
    try:
        assert parents_child.pid in own_children()  # opened here, before the fork
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports by its exit status only
            status = 1
            try:
                signal.alarm(HANG)
                mine = subprocess.Popen(["sleep", "30"])
                children = own_children()
                status = 0 if children == [mine.pid] else 3
                mine.kill()
                mine.wait()
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        parents_child.kill()
        parents_child.wait()
