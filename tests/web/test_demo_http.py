"""``stepline demo --http``, watched in a real browser (README.md, "HTTP and the dashboard").

The demo runs as a user runs it; the test reads the dashboard's URL from its narration, opens
the page while the scenes play, and checks that the page shows every job the demo ran, the
pipeline's graph with each task succeeded, and the open alert with its Ack button; then Enter
stops the demo, which must exit 0 (every scene went as narrated).

With ``STEPLINE_SCREENSHOTS=DIR`` the test also saves ``dashboard.png`` (the jobs) and
``dashboard-job.png`` (the pipeline's page) into DIR: that is how docs/ gets its pictures.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from ..driver import ENV
from .browser import chromium

pytestmark = pytest.mark.e2e

WAIT = 30_000  # ms: a bound on how long the page may take, not a pause
DASHBOARD = re.compile(r"The dashboard: (http://\S+)/ ")


def narration(stream: Iterable[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def wait_for_line(lines: queue.Queue[str], pattern: str, seen: list[str]) -> re.Match[str]:
    while True:
        line = lines.get(timeout=60)
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match


def test_the_demo_plays_with_the_dashboard_live() -> None:
    from playwright.sync_api import expect

    command = [sys.executable, "-m", "stepline", "demo", "--http", "0", "--pause", "0"]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdin is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=narration, args=(proc.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        url = wait_for_line(lines, DASHBOARD.pattern, seen).group(1)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}/")
            wait_for_line(lines, r"stays live at", seen)
            rows = page.locator("#jobs tbody tr")
            expect(rows).to_have_count(11, timeout=WAIT)
            for state in ("succeeded", "timed_out", "cancelled", "failed"):
                expect(page.locator(f"#jobs .badge.{state}").first).to_be_visible()
            alert = page.locator("#alerts li.alert")
            expect(alert).to_contain_text("nightly backup failed", timeout=WAIT)
            expect(alert.locator("button.ack")).to_be_visible()
            shots = os.environ.get("STEPLINE_SCREENSHOTS")
            if shots:
                page.screenshot(path=str(Path(shots) / "dashboard.png"))
            page.click("#row-j10 a")
            nodes = page.locator("#job-graph .node[data-state=succeeded]")
            expect(nodes).to_have_count(4, timeout=WAIT)
            expect(page.locator("#job-lines .line")).not_to_have_count(0, timeout=WAIT)
            if shots:
                page.screenshot(path=str(Path(shots) / "dashboard-job.png"), full_page=True)
            assert errors == []
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        for pipe in (proc.stdin, proc.stderr):
            if pipe is not None:
                pipe.close()
