"""What a driver sees across a crash, run exactly as docs/state.md shows it ("The event log: what a
driver sees across crashes"): each ``text`` example there is a session against the real CLI.

In an example, ``> LINE`` is sent to stdin, ``< LINE`` is read from stdout (``…`` matches
anything, as in tests/test_docs.py), and a ``#`` line containing ``killed`` SIGKILLs the server
and starts it again on the same ``--state`` file. The driver deduplicates by ``seq`` as the doc
tells it to: a ``<`` line whose ``seq`` the example already showed is a *copy*, which must come
again (the same event as the first time); copies the example does not show are allowed.

The copy example needs the crash inside the window between writing an event and recording its
delivery, a few milliseconds on its own: the server used here waits an hour before recording a
delivery alone, so that the kill always lands in the window.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from ..driver import ENV, Driver
from ..test_docs import ROOT, Block, blocks, matches

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "state.md"
SECTION = "The event log: what a driver sees across crashes"

_SERVE_SLOW_CURSOR = """
import sys
from stepline.store import _store
_store.CURSOR_DELAY = 3600.0  # a delivery is recorded only with the next commit
sys.argv = ["stepline", "serve", *sys.argv[1:]]
from stepline.cli._main import main
main()
"""


def examples() -> list[Block]:
    found = [b for b in blocks(DOC) if b.heading.startswith(SECTION) and b.lang == "text"]
    assert len(found) >= 2, "the examples of docs/state.md are gone"
    return found


@pytest.mark.parametrize("block", examples(), ids=lambda b: b.where)
async def test_the_documented_session_is_what_the_cli_does(block: Block, tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    seen: dict[int, dict[str, Any]] = {}  # seq -> the event as first read
    expected_seen: set[int] = set()
    runs = 0
    driver = await _start(state)
    try:
        with trio.fail_after(60):
            for line in block.body.splitlines():
                if line.startswith("> "):
                    await driver.send(json.loads(line[2:]))
                elif line.startswith("< "):
                    await _expect(driver, line[2:], seen, expected_seen)
                elif line.startswith("#") and "killed" in line:
                    driver.proc.kill()
                    await driver.proc.wait()
                    runs += 1
                    driver = await _start(state, ready=False)
            await driver.close_stdin()
            await driver.proc.wait()
    finally:
        if driver.proc.returncode is None:
            driver.proc.kill()
        await driver.proc.wait()
    assert runs >= 1, f"{block.where}: the example has no crash"


async def _start(state: Path, *, ready: bool = True) -> Driver:
    """The server on ``state`` (its ``ready`` read here unless the example shows it)."""
    command = [sys.executable, "-c", _SERVE_SLOW_CURSOR, "--state", str(state), "--heartbeat", "0"]
    proc = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV
    )
    driver = Driver(proc)
    if ready:
        assert (await driver.next_event())["event"] == "ready"
    return driver


async def _expect(
    driver: Driver, expected: str, seen: dict[int, dict[str, Any]], shown: set[int]
) -> None:
    """Read up to the line ``expected``: copies of events already read are skipped (checked to
    be the same event, ``ts`` included), unless ``expected`` is itself a copy the example shows."""
    seq = _seq(expected)
    copy = seq is not None and seq in shown
    while True:
        event = await driver.next_event()
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        got = event.get("seq")
        if got is not None and got in seen:
            assert event == seen[got], f"a copy differs from the first: {event} vs {seen[got]}"
            if copy and got == seq:
                return
            continue
        assert not copy, f"expected the copy {expected}, got the new line {line}"
        assert matches(expected, line), f"expected {expected}\n     got {line}"
        if got is not None:
            seen[got] = event
            shown.add(got)
        return


def _seq(line: str) -> int | None:
    found = _SEQ.search(line)
    return int(found.group(1)) if found else None


_SEQ = re.compile(r'"seq":(\d+)[,}]')
