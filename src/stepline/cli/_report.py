"""What ``stepline run`` says about one job: its result line and, when it failed, why.

A failure gets what a user needs to fix it, below its result line: how often the failing step
was tried, the job's ``log`` lines, the last lines of the failing step's stderr and stdout, the
outputs of the tasks that handle failures (``if: failure`` / ``always``), and, for a graph job,
which tasks had succeeded. A success gets one line with its output cut short (``-v`` shows it
whole). Any job that kept artifacts gets a line saying where they are::

    succeeded build.json 1.20s {"exit":0,"stdout":"ok\\n","stderr":""}
    failed    ci.json (shards) 2.31s failure at tasks.shard3.steps[0]: /bin/sh exited with status 1
        artifacts: stepline-artifacts/j2/ (3 files, 5120 bytes): junit-1.xml, junit-2.xml, …
        tried 3 times (retry)
        log: running shard 3
        stderr, last 2 lines:
        │ FAILED test_x.py::test_y - assert 1 == 2
        │ 1 failed, 41 passed
        task report (if: failure) succeeded: {"exit":0,"stdout":"mailed\\n","stderr":""}
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..client._api import JobHandle
from ..wire._events import Event
from ._term import paint

__all__ = ["Track", "compact", "counts_line", "describe_error", "details", "result_line"]

STATE_STYLE = {"succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow"}
TAIL_LINES = 10  # lines of stderr/stdout shown for a failure (``-v``: the whole tail kept)
LOG_LINES = 10  # ``log`` lines kept per job for its failure report
ARTIFACT_NAMES = 5  # artifacts named on a job's artifacts line
SHORT_OUTPUT = 72  # characters of a success's output on its result line (``-v``: all)
_INDENT = "    "


class Track:
    """One job as ``run`` follows it: its label, its handle, and what its events said so far."""

    def __init__(
        self, label: str, handle: JobHandle, job: Any = None, artifacts: str | None = None
    ) -> None:
        self.label = label
        self.handle = handle
        self.job = job  # the job as written (to tell handler tasks apart)
        self.artifacts = artifacts  # the --artifacts directory its files are copied under
        self.logs: deque[Event] = deque(maxlen=LOG_LINES)
        self.retries: list[Event] = []
        self.tasks: dict[str, float] = {}  # running task -> when it started (trio time)
        self.task_ends: dict[str, Event] = {}  # task -> its final `task` event
        self.finished: Event | None = None

    def take(self, ev: Event, now: float) -> None:
        """Note what an event says about the job."""
        kind = ev.get("event")
        if kind == "log":
            self.logs.append(ev)
        elif kind == "retry":
            self.retries.append(ev)
        elif kind == "task" and "graph" not in ev:  # a template's inner tasks are not listed
            name = str(ev.get("task"))
            if ev.get("status") == "started":
                self.tasks[name] = now
            else:
                self.tasks.pop(name, None)
                self.task_ends[name] = ev
        elif kind == "finished":
            self.finished = ev
            self.tasks.clear()


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def result_line(track: Track, *, color: bool = False, verbose: bool = False) -> str:
    """A finished job's permanent line: state, label, elapsed, output or error."""
    finished = track.finished or {}
    state = str(finished.get("state"))
    if state == "succeeded":
        output = compact(finished.get("output"))
        detail = output if verbose else shorten(output, SHORT_OUTPUT)
    else:
        detail = describe_error(finished.get("error") or {})
    mark = paint(f"{state:<10}", STATE_STYLE.get(state, "bold"), color)
    earlier = " (earlier run)" if finished.get("earlier") else ""
    return f"{mark}{track.label}{earlier} {finished.get('elapsed', 0.0):.2f}s {detail}"


def describe_error(error: dict[str, Any]) -> str:
    where = f" at {error['step']}" if error.get("step") else ""
    return f"{error.get('type', 'error')}{where}: {error.get('message', '')}"


def details(track: Track, *, color: bool = False, verbose: bool = False) -> list[str]:
    """The lines below a job's result line: where its artifacts went, and why it failed."""
    finished = track.finished or {}
    lines = _artifacts(track, finished)
    if finished.get("state") != "succeeded":
        lines += _failure(track, finished, verbose, color)
    return [_INDENT + line for line in lines]


def _artifacts(track: Track, finished: Event) -> list[str]:
    """``artifacts: DIR/j1/ (2 files, 3120 bytes): junit.xml, report.md``, when there are some."""
    listed = finished.get("artifacts")
    if not isinstance(listed, list) or not listed:
        return []
    where = os.path.join(track.artifacts or "", str(finished.get("job", "")), "")
    size = sum(int(item.get("bytes", 0)) for item in listed)
    names = ", ".join(str(item.get("path")) for item in listed[:ARTIFACT_NAMES])
    more = f" and {len(listed) - ARTIFACT_NAMES} more" if len(listed) > ARTIFACT_NAMES else ""
    noun = "file" if len(listed) == 1 else "files"
    return [f"artifacts: {where} ({len(listed)} {noun}, {size} bytes): {names}{more}"]


def _failure(track: Track, finished: Event, verbose: bool, color: bool) -> list[str]:
    error = finished.get("error") or {}
    lines = _tries(track, error)
    lines += [f"log: {ev.get('message', '')}" for ev in track.logs]
    for stream in ("stderr", "stdout"):
        lines += _tail(stream, error.get(stream), verbose, color)
    lines += _handlers(track, finished, verbose)
    return lines


def _tries(track: Track, error: dict[str, Any]) -> list[str]:
    attempts = error.get("attempts")
    if isinstance(attempts, int) and attempts > 1:
        return [f"tried {attempts} times (retry); the last error is above"]
    if track.retries:
        last = track.retries[-1]
        return [f"retried {len(track.retries)} time(s) (last: attempt {last.get('attempt')})"]
    return []


def _tail(stream: str, text: Any, verbose: bool, color: bool) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        return []
    lines = text.rstrip("\n").split("\n")
    shown = lines if verbose else lines[-TAIL_LINES:]
    head = f"{stream}:" if len(shown) == len(lines) else f"{stream}, last {len(shown)} lines:"
    bar = paint("│", "dim", color)
    return [head, *(f"{bar} {line}" for line in shown)]


def _handlers(track: Track, finished: Event, verbose: bool) -> list[str]:
    """Tasks that ran because something failed (``if: failure``/``always``), and what they
    gave; other tasks that succeeded, as a list of names."""
    rules = _task_rules(track.job)
    partial = finished.get("partial")
    outputs: dict[str, Any] = partial if isinstance(partial, dict) else {}
    lines, succeeded = [], []
    for name, ev in track.task_ends.items():
        status = ev.get("status")
        rule = rules.get(name.partition("[")[0], "success")  # `report[1]`: report's rule
        if rule in ("failure", "always") and status in ("succeeded", "failed"):
            text = f"task {name} (if: {rule}) {status}"
            if name in outputs:
                output = compact(outputs[name])
                text += f": {output if verbose else shorten(output, SHORT_OUTPUT)}"
            elif status == "failed":
                text += f": {describe_error(ev.get('error') or {})}"
            lines.append(text)
        elif status == "succeeded":
            succeeded.append(name)
    if succeeded:
        lines.append(f"tasks that succeeded: {', '.join(succeeded)}")
    return lines


def _task_rules(job: Any) -> dict[str, str]:
    """Each top-level task's ``if`` (as written), for a job with ``tasks``."""
    tasks = job.get("tasks") if isinstance(job, dict) else None
    if not isinstance(tasks, dict):
        return {}
    return {
        name: str(task.get("if", "success"))
        for name, task in tasks.items()
        if isinstance(task, dict)
    }


def counts_line(tracks: Sequence[Track]) -> str:
    """``3 jobs: 2 succeeded, 1 failed`` (states in alphabetical order)."""
    counts: dict[str, int] = {}
    for track in tracks:
        state = track.handle.state.value
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{n} {state}" for state, n in sorted(counts.items())]
    noun = "job" if len(tracks) == 1 else "jobs"
    return f"{len(tracks)} {noun}: {', '.join(parts)}"
