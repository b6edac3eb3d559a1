"""OOM kills through the real CLI, on a real memory cgroup (root, cgroup v1 memory, as on these
machines): a step whose process the OOM killer took for memory that ran out *elsewhere* is
``killed`` with ``"oom": true``; one at its own ``memory`` limit stays a ``resource_failure``.

"Elsewhere" is made real without starving the machine: ``stepline serve`` runs in a memory
cgroup of the test's (192 MiB), and each hog first offers itself to the OOM killer
(``oom_score_adj`` 1000), so that it, not the server, is the one taken.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from stepline.runners._cgroup import detect

from ..driver import ENV, SERVE, Driver

HOG = (
    "open('/proc/self/oom_score_adj', 'w').write('1000'); "
    "x = bytearray(400 << 20); x[::4096] = b'x' * len(x[::4096])"
)
_boxes = itertools.count(1)


def _memory_base() -> str | None:
    """Our own cgroup in a v1 memory hierarchy, if we may make groups in it (root)."""
    if os.geteuid() != 0:
        return None
    base = next((h.base for h in detect() if h.version == 1 and "memory" in h.controllers), None)
    return base if base is not None and os.access(base, os.W_OK) else None


pytestmark = pytest.mark.skipif(
    _memory_base() is None, reason="needs root and a cgroup v1 memory hierarchy"
)


@contextlib.contextmanager
def memory_box(limit: int) -> Iterator[str]:
    """A memory cgroup of ``limit`` bytes (swap included) under our own, removed at the end."""
    base = _memory_base()
    assert base is not None
    box = os.path.join(base, f"stepline-test-oom-{os.getpid()}-{next(_boxes)}")
    os.mkdir(box)
    try:
        with open(os.path.join(box, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        with (
            contextlib.suppress(OSError),
            open(os.path.join(box, "memory.memsw.limit_in_bytes"), "w") as f,
        ):
            f.write(str(limit))
        yield box
    finally:
        os.rmdir(box)  # the server and its guardian have exited: the box is empty


@asynccontextmanager
async def served_in(box: str) -> AsyncIterator[Driver]:
    """``stepline serve`` inside ``box``, every step in a cgroup of its own."""
    enter = 'echo $$ > "$0" && exec "$@"'
    argv = ["sh", "-c", enter, os.path.join(box, "cgroup.procs"), *SERVE]
    env = {**ENV, "STEPLINE_CGROUPS": "1"}
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    driver = Driver(proc)
    try:
        with trio.fail_after(120):
            assert (await driver.next_event())["event"] == "ready"
            yield driver
            await driver.close_stdin()
            await driver.rest()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    procs = Path(box, "cgroup.procs")
    while procs.read_text():  # its guardian leaves after it
        await trio.sleep(0.02)


async def run_in_turn(driver: Driver, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errors = []
    for n, job in enumerate(jobs, 1):
        await driver.send({"op": "submit", "job": job})
        finished = await driver.wait_for("finished", job=f"j{n}")
        assert finished["state"] == "failed", finished
        errors.append(finished["error"])
    return errors


async def test_an_oom_kill_elsewhere_is_killed_with_oom_and_one_at_the_limit_is_a_limit() -> None:
    hog = ["python3", "-c", HOG]
    jobs: list[dict[str, Any]] = [
        {"run": hog},  # no limit of its own: the box (192M) runs out
        {"run": "kill -9 $$"},  # killed, not for memory (in the group the first one left)
        {"run": hog, "limits": {"memory": "64M"}},  # its own limit
        {"run": ["sh", "-c", f'python3 -c "{HOG}"; exit 9']},  # a child killed elsewhere
    ]
    with memory_box(192 << 20) as box:
        async with served_in(box) as driver:
            elsewhere, plain, limited, child = await run_in_turn(driver, jobs)
    assert (elsewhere["type"], elsewhere["exit"], elsewhere.get("oom")) == ("killed", -9, True)
    assert (plain["type"], plain.get("oom")) == ("killed", None), plain
    assert (limited["type"], limited["limit"], limited.get("oom")) == (
        "resource_failure",
        "memory",
        None,
    ), limited
    assert (child["type"], child["exit"], child.get("oom")) == ("failure", 9, True), child
