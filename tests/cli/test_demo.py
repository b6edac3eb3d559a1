"""``stepline demo``: runs to the end against a real child, narrates, and checks itself."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from stepline.cli import _demo
from stepline.cli._timeline import Timeline

from ..driver import ENV

SCENE_TITLES = [f"== {n}. {title}" for n, (title, _) in enumerate(_demo.SCENES, 1)]


@pytest.mark.e2e
def test_the_demo_runs_to_the_end_and_narrates_on_stderr() -> None:
    # How long the demo takes is measured by bench/, not asserted here: a loaded machine would
    # make a wall-clock bound flaky.
    proc = subprocess.run(
        [sys.executable, "-m", "stepline", "demo"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
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
    assert re.fullmatch(r" *\d+\.\d\ds < \{\"event\":\"bye\".*", err.splitlines()[-4])
    assert "\x1b[" not in err  # not a terminal: no colour
    rows = [line.split("│")[0].strip() for line in err.splitlines() if "│" in line]
    assert rows[:3] == ["w1", "w2", "w1"]  # two workers, two rows; the next scene: one job


@pytest.mark.e2e
def test_one_scene_by_name_with_times_from_the_start_and_its_timeline() -> None:
    proc = stepline_demo("--scene", "bounded-workers")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("== ")] == [SCENE_TITLES[0], "== Shutdown"]
    wire = [line for line in lines if re.match(r" *\d+\.\d\ds [<>] ", line)]
    times = [float(line.split("s ", 1)[0]) for line in wire]
    assert times == sorted(times)
    assert times[0] < 5  # seconds since the start, not Unix time
    w1, w2 = (line for line in lines if line.lstrip().startswith(("w1 │", "w2 │")))
    # Which worker's nap ends first is the scheduler's choice: the rows are only known to hold
    # two bars each, the four naps between them.
    assert [row.count("nap") for row in (w1, w2)] == [2, 2], (w1, w2)
    assert all(f"nap{n}" in w1 + w2 for n in range(1, 5)), (w1, w2)
    assert not any(line.lstrip().startswith("w3") for line in lines)  # never more than 2


@pytest.mark.e2e
def test_an_unknown_scene_lists_the_scenes() -> None:
    proc = stepline_demo("--scene", "nope")
    assert proc.returncode == 2
    assert "no scene 'nope'; scenes: bounded-workers, parallel-fan-out, race" in proc.stderr


def stepline_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepline", "demo", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )


def test_the_timeline_puts_a_job_on_the_lowest_free_row_and_marks_how_it_ended() -> None:
    line = Timeline(origin=100.0)
    line.name("j1", "build")
    for now, ev in [
        (100.0, {"event": "started", "job": "j1"}),
        (100.0, {"event": "started", "job": "j2"}),
        (101.0, {"event": "finished", "job": "j1", "state": "succeeded"}),
        (101.0, {"event": "started", "job": "j3"}),
        (101.5, {"event": "finished", "job": "j2", "state": "cancelled"}),
        (102.0, {"event": "finished", "job": "j3", "state": "failed"}),
    ]:
        line.take(ev, now)
    w1, w2, axis = line.render(width=20)
    assert w1 == "   w1 │━build━━━✓━j3━━━━━━✗│"
    assert w2 == "   w2 │━j2━━━━━━━━━━━⊘     │"  # cut short at 1.5 s of 2
    assert axis.split() == ["0.00s", "2.00s"]


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
    assert sent.startswith("\x1b[36m  0.00s > {")
    assert sent.endswith("…\x1b[0m")
    assert len(sent) == len("\x1b[36m") + 40 + len("\x1b[0m")  # 40 columns, "…" included
    assert error.startswith("\x1b[31m  0.00s <")
