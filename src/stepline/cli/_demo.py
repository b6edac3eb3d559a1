"""``stepline demo``: a short narrated tour, driving a real ``stepline serve`` over its pipes.

Nothing here is simulated: the demo spawns ``stepline serve --workers 2`` through
:class:`stepline.Client`, and a tap on the client prints every line that crosses the pipes —
``>`` the commands written to the child's stdin, ``<`` the events read from its stdout — between
the narration, all on stderr (colour only on a terminal), each line after the seconds since the
demo began. Six scenes, about five seconds: bounded workers, a parallel fan-out, a race, a retry
that recovers, a timeout and a cancel; ``--scene NAME`` plays one. After each scene a timeline
(:mod:`stepline.cli._timeline`) draws its jobs, a row per worker.

Each scene also checks what it shows (states, outputs, timings with generous margins) and the
demo exits 1 if any check fails, so the first command of the README doubles as a smoke test of
an installation.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .. import steps as s
from ..client._outcome import JobFailed
from ..client._session import SERVE
from ..client._sync import Client, ClientJob
from ..wire._events import Event
from ._demo_http import ALERTING, PIPELINE, Front, wait_for_enter
from ._term import is_tty, paint, use_color
from ._timeline import Timeline

__all__ = ["SCENES", "Mismatch", "Narrator", "main", "scene_names"]

WORKERS = 2


class Mismatch(Exception):
    """A scene did not turn out as the narration says it should."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Mismatch(what)


class Narrator:
    """Writes narration and wire lines to one stream, whole lines at a time: the client's
    reader thread and the main thread both write here."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._color = use_color(out)
        self._width = shutil.get_terminal_size().columns if is_tty(out) else 0
        self._lock = threading.Lock()
        self._origin = time.monotonic()
        self.timeline = Timeline(self._origin)
        self._names: dict[object, str] = {}  # request id -> the name of the job it submitted

    def new_timeline(self) -> None:
        """Start drawing afresh: each scene gets its own timeline."""
        with self._lock:
            self.timeline = Timeline(self._origin)

    def draw_timeline(self) -> None:
        with self._lock:
            rows = self.timeline.render(min(max(self._width - 16, 30), 64) if self._width else 60)
        self._write(*(paint(row, "yellow", self._color) for row in rows))

    def heading(self, text: str) -> None:
        self._write("", paint(f"== {text}", "bold", self._color))

    def say(self, text: str) -> None:
        self._write(f"   {text}")

    def text(self, block: str) -> None:
        self._write(*block.splitlines())

    def result(self, text: str) -> None:
        self._write(paint(f"   ✓ {text}", "green", self._color))

    def problem(self, text: str) -> None:
        self._write(paint(f"   ✗ {text}", "red", self._color))

    def verdict(self, outro: str, failed: list[str]) -> int:
        """End a demo: ``outro``, then which scenes went wrong; the exit status (0, or 1)."""
        self.text("\n" + outro)
        if not failed:
            return 0
        self.problem(f"{len(failed)} scene(s) did not go as expected: {', '.join(failed)}")
        return 1

    def wire(self, direction: str, message: Event) -> None:
        """The client's tap: one protocol line, as it crossed the pipe, after the seconds since
        the demo began; job events also go on the scene's timeline."""
        now = time.monotonic()
        self._follow(direction, message, now)
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        line = f"{now - self._origin:6.2f}s {direction} {text}"
        if self._width and len(line) > self._width:
            line = line[: self._width - 1] + "…"
        style = "cyan" if direction == ">" else "red" if message.get("event") == "error" else "dim"
        self._write(paint(line, style, self._color))

    def _follow(self, direction: str, message: Event, now: float) -> None:
        with self._lock:
            if direction == ">":
                job = message.get("job")
                if isinstance(job, dict) and isinstance(job.get("name"), str):
                    self._names[message.get("id")] = job["name"]
            elif message.get("event") == "accepted" and message.get("id") in self._names:
                self.timeline.name(str(message.get("job")), self._names.pop(message.get("id")))
            else:
                self.timeline.take(message, now)

    def _write(self, *lines: str) -> None:
        with self._lock:
            self._out.write("".join(line + "\n" for line in lines))
            self._out.flush()


class Tour:
    """The scenes, sharing one client, one narrator and a scratch directory."""

    def __init__(
        self, client: Client, narrator: Narrator, workdir: Path, front: Front | None = None
    ) -> None:
        self.client = client
        self.front = front
        self.say = narrator.say
        self.result = narrator.result
        self.workdir = workdir

    def bounded_workers(self) -> None:
        self.say(f"Four half-second jobs, {WORKERS} workers: two run while two wait in the queue.")
        start = time.monotonic()
        jobs = [self.client.submit(s.job(s.sleep(0.5), name=f"nap{i}")) for i in range(1, 5)]
        for job in jobs:
            job.wait(timeout=10)
        took = time.monotonic() - start
        expect(0.9 <= took < 5, f"four jobs on two workers took {took:.2f}s, expected ~1s")
        self.result(f"all four done in {took:.1f}s: two waves of two, never more at once")

    def fan_out(self) -> None:
        self.say("A `par` step: three processes at once, outputs collected in order.")
        parts = [s.run(["sh", "-c", f"sleep 0.3; echo part {i}"]) for i in (1, 2, 3)]
        job = self.client.submit(s.job(s.par(*parts), name="fan-out"))
        got = [out["stdout"].strip() for out in job.wait(timeout=10)]
        expect(got == ["part 1", "part 2", "part 3"], f"unexpected outputs {got}")
        expect(job.elapsed < 0.9, f"three 0.3 s processes took {job.elapsed:.2f}s: not parallel")
        self.result(f"{got} in {job.elapsed:.1f}s, where one after another takes 0.9s")

    def race(self) -> None:
        self.say("A `race`: the first success wins and the others are cancelled.")
        slow = s.seq(s.sleep(10), s.value("slow mirror"))
        fast = s.seq(s.sleep(0.2), s.value("fast mirror"))
        start = time.monotonic()
        winner = self.client.submit(s.job(s.race(slow, fast), name="mirrors")).wait(timeout=10)
        took = time.monotonic() - start
        expect(winner == "fast mirror", f"the race returned {winner!r}")
        self.result(f"{winner!r} after {took:.1f}s; the 10 s branch was cancelled")

    def retry(self) -> None:
        self.say("A flaky command: it fails until a counter file reaches 3. `retry` recovers.")
        script = (
            "n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count; "
            'echo "attempt $n"; [ "$n" -ge 3 ]'
        )
        step = s.retry(s.run(script, cwd=str(self.workdir)), attempts=5, backoff=0.1, factor=2)
        output = self.client.submit(s.job(step, name="flaky")).wait(timeout=10)
        expect(output["stdout"] == "attempt 3\n", f"unexpected output {output}")
        self.result("failed twice, succeeded on attempt 3 (waiting 0.1s, then 0.2s)")

    def timeout(self) -> None:
        self.say("A job-level `timeout`: a 30 s command, stopped after half a second.")
        job = self.client.submit(s.job(s.run("sleep 30"), timeout=0.5, name="too-slow"))
        state = _failure(job).state.value
        expect(state == "timed_out", f"the job ended {state}")
        self.result("state timed_out; its process group was sent SIGTERM")

    def cancel(self) -> None:
        self.say("A `cancel` command, sent once the job has started.")
        job = self.client.submit(s.job(s.run("sleep 30"), name="cancel-me"))
        for ev in job.events(timeout=10):
            if ev["event"] == "started":
                break
        time.sleep(0.3)
        expect(job.cancel(timeout=10), "the job had finished before the cancel")
        expect(job.state.value == "cancelled", f"the job ended {job.state.value}")
        self.result(f"cancelled after {job.elapsed:.1f}s: `cancelling`, then `finished`")

    def http_front(self) -> None:
        assert self.front is not None
        self.say("A pipeline submitted over HTTP (POST /jobs): its graph fills in on the page.")
        record = self.front.wait(self.front.submit(PIPELINE))
        expect(record["state"] == "succeeded", f"the pipeline ended {record['state']}")
        self.result(f"{record['job']}: build, then unit and lint at once, then publish")
        self.say("A failing job with an `alert`: the alert waits on the page for its Ack.")
        record = self.front.wait(self.front.submit(ALERTING))
        expect(record["state"] == "failed", f"the failing job ended {record['state']}")
        opened = [a["alert"] for a in self.front.open_alerts() if a["job"] == record["job"]]
        expect(bool(opened), f"no alert opened for {record['job']}")
        self.result(f"{record['job']} failed; alert {opened[0]} is open on the page")


def _failure(job: ClientJob) -> JobFailed:
    try:
        output = job.wait(timeout=10)
    except JobFailed as failed:
        return failed
    raise Mismatch(f"the job succeeded with {output!r}")


def scene_names() -> list[str]:
    """What ``--scene`` takes: each title in lower case, words joined by ``-``."""
    return [_slug(title) for title, _ in SCENES]


def _slug(title: str) -> str:
    return "-".join(title.lower().replace("a ", "", 1).split())


SCENES: list[tuple[str, Callable[[Tour], None]]] = [
    ("Bounded workers", Tour.bounded_workers),
    ("Parallel fan-out", Tour.fan_out),
    ("A race", Tour.race),
    ("A retry that recovers", Tour.retry),
    ("A timeout", Tour.timeout),
    ("A cancel", Tour.cancel),
]

_INTRO = """\
stepline: a job executor that speaks JSON lines over pipes.
   What follows is a real `stepline serve --workers 2` child, driven by stepline.Client:
   `>` lines are commands written to its stdin, `<` lines are the events on its stdout."""

_OUTRO = """\
Next: `stepline run examples/steps/par.json`, `sh examples/driver.sh`, or drive
   `stepline serve` from any language: one JSON object per line each way."""


def _play(tour: Tour, narrator: Narrator, pause: float, only: str | None) -> list[str]:
    """Every scene (or the one named ``only``), in order; returns the ones that went wrong."""
    failed = []
    scenes = [*SCENES, ("The HTTP front", Tour.http_front)] if tour.front else SCENES
    for number, (title, scene) in enumerate(scenes, 1):
        if only is not None and _slug(title) != only:
            continue
        narrator.heading(f"{number}. {title}")
        narrator.new_timeline()
        try:
            scene(tour)
        except Mismatch as exc:
            narrator.problem(f"unexpected: {exc}")
            failed.append(title)
        narrator.draw_timeline()
        time.sleep(pause)
    return failed


def main(
    pause: float | None = None,
    out: TextIO | None = None,
    scene: str | None = None,
    http: str | None = None,
) -> int:
    """Run the demo (every scene, or the one named ``scene``); 0 when each went as narrated,
    2 for a scene name that does not exist. With ``http`` (``[HOST:]PORT``) the server serves
    the dashboard there, and stays up after the scenes until Enter."""
    stream = out if out is not None else sys.stderr
    if scene is not None and scene not in scene_names():
        print(f"stepline demo: no scene {scene!r}; scenes: {', '.join(scene_names())}", file=stream)
        return 2
    narrator = Narrator(stream)
    pause = pause if pause is not None else (0.4 if is_tty(stream) else 0.0)
    narrator.text(_INTRO)
    args = ("--workers", str(WORKERS), "--heartbeat", "0", *(("--http", http) if http else ()))
    with (
        tempfile.TemporaryDirectory(prefix="stepline-demo-") as workdir,
        Client(args, command=SERVE, tap=narrator.wire) as client,
    ):
        front = Front(str(client.ready["http"])) if http else None
        if front is not None:
            narrator.heading(f"The dashboard: {front.url}/ (open it now)")
        failed = _play(Tour(client, narrator, Path(workdir), front), narrator, pause, scene)
        if front is not None:
            wait_for_enter(front.url, stream)
            front.close()
        narrator.heading("Shutdown")
        narrator.say("Closing stdin drains: accepted jobs finish, then `bye`, then exit 0.")
    return narrator.verdict(_OUTRO, failed)
