"""``stepline demo``: runs to the end against a real child, narrates, and checks itself."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from stepline.cli import _demo

from ..driver import ENV

SCENE_TITLES = [f"== {n}. {title}" for n, (title, _) in enumerate(_demo.SCENES, 1)]


@pytest.mark.e2e
def test_the_demo_runs_to_the_end_quickly_and_narrates_on_stderr() -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stepline", "demo"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert took < 15
    assert proc.stdout == ""
    err = proc.stderr
    assert [line for line in err.splitlines() if line.startswith("== ")] == [
        *SCENE_TITLES,
        "== Shutdown",
    ]
    assert err.count("   ✓ ") == len(_demo.SCENES)
    assert "✗" not in err
    for shown in [
        '< {"event":"ready"',
        '> {"op":"submit","id":1,',
        '> {"op":"cancel"',
        '"state":"timed_out"',
        '"state":"cancelled"',
        "attempt 3",
        '"fast mirror"',
    ]:
        assert shown in err, shown
    assert err.splitlines()[-4].startswith('< {"event":"bye"')
    assert "\x1b[" not in err  # not a terminal: no colour


def test_a_scene_that_does_not_go_as_narrated_fails_the_demo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def wrong(tour: _demo.Tour) -> None:
        tour.client.submit({"value": "x"}).wait(timeout=10)
        _demo.expect(False, "the value was not what the narration promised")

    monkeypatch.setattr(_demo, "SCENES", [("Wrong", wrong), ("Race", _demo.Tour.race)])
    out = io.StringIO()
    assert _demo.main(pause=0, out=out) == 1
    text = out.getvalue()
    assert "✗ unexpected: the value was not what the narration promised" in text
    assert "✓ 'fast mirror'" in text  # the scene after a failed one still runs
    assert "1 scene(s) did not go as expected: Wrong" in text


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_lines_are_coloured_and_cut_to_its_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "40")
    out = FakeTerminal()
    narrator = _demo.Narrator(out)
    narrator.wire(">", {"op": "submit", "id": 1, "job": {"value": "x" * 100}})
    narrator.wire("<", {"event": "error", "code": "bad"})
    sent, error = out.getvalue().splitlines()
    assert sent.startswith("\x1b[36m> {")
    assert sent.endswith("…\x1b[0m")
    assert len(sent) == len("\x1b[36m") + 40 + len("\x1b[0m")  # 40 columns, "…" included
    assert error.startswith("\x1b[31m<")
