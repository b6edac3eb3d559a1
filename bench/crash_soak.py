"""Crash campaigns: random SIGKILLs of ``stepline serve --state`` while jobs are submitted,
cancelled and finished, and a check of everything a driver saw, across every restart.

    python bench/crash_soak.py                          # 300 cycles under each --on-restart
    python bench/crash_soak.py --cycles 3000 --policy fail --seed 7

Each cycle starts ``stepline serve`` on the same state file, waits for ``ready``, writes a random
mix of submits (instant values and short sleeps, each with a request ``id``), cancels (of jobs
not yet seen finished, and of ids about to be handed out) and ``status`` commands, and SIGKILLs
the process after a random delay: while it accepts, runs, cancels and finishes. A last run
drains what is left. Then the whole history (every run's stdout, in order) is checked by
:func:`check`, which counts these violations (all must be 0):

* ``unfinished``: an accepted job without a ``finished``, after the last run;
* ``repeated``: a job with more than one ``finished`` (different ``seq``);
* ``contradictions``: two copies of one logged event (same ``seq``) that differ;
* ``resurrected``: a job whose ``cancelling`` was written but that started again, or finished
  other than ``cancelled``;
* ``restarted``: under ``--on-restart fail``, a job with more than one ``started``;
* ``untied``: a job some event names whose ``accepted`` was never written, or a ``recovered``
  whose request ``id`` is not its submit's;
* ``early_status``: a ``status`` reply showing a job final before its ``finished`` was written;
* ``tracebacks``: a traceback on stderr.

A copy of an event already written (same ``seq``, same line) is allowed: that is the one
repeat docs/state.md promises, for an event written just before a crash.
The CI test (``tests/store/test_crash_campaign.py``) runs a short campaign under each policy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any

SRC = Path(__file__).resolve().parent.parent / "src"
FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
LIFECYCLE = {"accepted", "started", "cancelling", "recovered", "finished"}
Event = dict[str, Any]


def _piped(stream: IO[bytes] | None) -> IO[bytes]:
    """A pipe of a process started with ``PIPE`` for it: typeshed types every ``Popen`` pipe as
    optional, and a missing one here is a bug of this script."""
    assert stream is not None
    return stream


class Campaign:
    """One state file, many killed runs, and everything they wrote."""

    def __init__(self, state: Path, policy: str, seed: int, max_delay: float = 0.3) -> None:
        self.state = state
        self.policy = policy
        self.rng = random.Random(seed)
        self.max_delay = max_delay
        self.runs: list[list[Event]] = []
        self.stderr: list[str] = []
        self.highest_id = 0  # the highest job number seen: cancels aim just above it too
        self.open_jobs: set[str] = set()  # accepted, no finished seen yet
        self._rid = 0

    def cycle(self) -> None:
        """One run, killed at a random moment."""
        proc = self._start()
        out = Reader(proc)
        with contextlib.suppress(BrokenPipeError):  # died on its own: stderr tells why
            stdin = _piped(proc.stdin)
            stdin.write(self._commands())
            stdin.flush()
        time.sleep(self.rng.uniform(0, self.max_delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self._collect(proc, out)

    def finish(self) -> int:
        """A last run with no input: it drains everything left. Returns its exit status."""
        proc = self._start()
        out = Reader(proc)
        _piped(proc.stdin).close()
        rc = proc.wait(timeout=120)
        self._collect(proc, out)
        return rc

    def _start(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "stepline", "serve", "--state", str(self.state)]
        argv += ["--on-restart", self.policy, "--heartbeat", "0", "--workers", "2"]
        paths = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )

    def _commands(self) -> bytes:
        rng, lines = self.rng, []
        for _ in range(rng.randint(5, 40)):
            roll = rng.random()
            if roll < 0.25:
                lines.append({"op": "cancel", "job": self._cancel_target()})
            elif roll < 0.32:
                lines.append({"op": "status"})
            else:
                self._rid += 1
                job: Any = {"value": self._rid}
                if rng.random() < 0.6:
                    job = {"steps": [{"sleep": rng.choice([0.01, 0.05, 0.2])}, {"value": 1}]}
                lines.append({"op": "submit", "job": job, "id": f"r{self._rid}"})
        return b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    def _cancel_target(self) -> str:
        if self.open_jobs and self.rng.random() < 0.6:
            return self.rng.choice(sorted(self.open_jobs))
        return f"j{self.highest_id + self.rng.randint(1, 20)}"

    def _collect(self, proc: subprocess.Popen[bytes], out: Reader) -> None:
        out.join()
        events = parse(out.data)
        self.runs.append(events)
        self.stderr.append(_piped(proc.stderr).read().decode(errors="replace"))
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):  # input it never read
                    stream.close()
        for ev in events:
            job = ev.get("job")
            if isinstance(job, str) and job[1:].isdigit():
                self.highest_id = max(self.highest_id, int(job[1:]))
            if ev["event"] == "accepted":
                self.open_jobs.add(ev["job"])
            elif ev["event"] == "finished":
                self.open_jobs.discard(ev["job"])


class Reader:
    """Reads a process's stdout to the end on a thread (a full pipe must never block it)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # `ready`: the kill comes while it works, not starts
        self._chunks = [first]
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        while chunk := stream.read1(1 << 16):
            self._chunks.append(chunk)

    def join(self) -> None:
        self._thread.join()

    @property
    def data(self) -> bytes:
        return b"".join(self._chunks)


def parse(data: bytes) -> list[Event]:
    """Every complete line is one event; a line cut by the kill was not written."""
    lines = data.split(b"\n")
    return [json.loads(line) for line in lines[:-1]]


def check(runs: list[list[Event]], policy: str, stderr: list[str] | None = None) -> Counter[str]:
    """Count the violations of the guarantees in a campaign's history (see the module doc)."""
    bad: Counter[str] = Counter()
    copies: dict[int, Event] = {}
    history: list[Event] = []  # every logged event once, plain events as they came
    for run in runs:
        for ev in run:
            seq = ev.get("seq")
            if seq is None:
                history.append(ev)
            elif seq in copies:
                bad["contradictions"] += copies[seq] != ev
            else:
                copies[seq] = ev
                history.append(ev)
    per_job: dict[str, list[Event]] = defaultdict(list)
    finished_at: dict[str, int] = {}
    # A server from before the event log writes no `seq`: its lifecycle events are judged as
    # they came (nothing can be told apart as a copy), so the campaign can be run against it.
    legacy = not copies
    for pos, ev in enumerate(history):
        if ev["event"] == "status":
            for rec in ev["jobs"]:
                bad["early_status"] += rec["state"] in FINAL and rec["job"] not in finished_at
        elif "job" in ev and ("seq" in ev or (legacy and ev["event"] in LIFECYCLE)):
            per_job[ev["job"]].append(ev)
            if ev["event"] == "finished":
                finished_at.setdefault(ev["job"], pos)
    for events in per_job.values():
        _check_job(events, policy, bad)
    bad["tracebacks"] = sum("Traceback" in text for text in stderr or [])
    return bad


def _check_job(events: list[Event], policy: str, bad: Counter[str]) -> None:
    kinds = [ev["event"] for ev in events]
    if kinds[0] != "accepted":
        bad["untied"] += 1
        return
    request_id = events[0].get("id")
    bad["untied"] += sum(ev.get("id") != request_id for ev in events if ev["event"] == "recovered")
    finished = [ev for ev in events if ev["event"] == "finished"]
    bad["unfinished"] += not finished
    bad["repeated"] += max(len(finished) - 1, 0)
    if policy == "fail":
        bad["restarted"] += max(kinds.count("started") - 1, 0)
    if "cancelling" in kinds:
        after = kinds[kinds.index("cancelling") :]
        cancelled = finished and finished[-1]["state"] == "cancelled"
        bad["resurrected"] += "started" in after or not cancelled


def campaign(
    state: Path, policy: str, cycles: int, seed: int
) -> tuple[Counter[str], dict[str, int]]:
    """Run ``cycles`` killed runs and a final drain; the violations and some counts."""
    run = Campaign(state, policy, seed)
    for _ in range(cycles):
        run.cycle()
    rc = run.finish()
    bad = check(run.runs, policy, run.stderr)
    bad["final_exit"] = rc != 0
    everything = [ev for events in run.runs for ev in events]
    counts = Counter(ev["event"] for ev in everything if "seq" in ev)
    stats = {
        "cycles": cycles,
        "accepted": len({ev["job"] for ev in everything if ev["event"] == "accepted"}),
        "cancelling": counts["cancelling"],
        "recovered": counts["recovered"],
        "copies": len([ev for ev in everything if "seq" in ev])
        - len({ev["seq"] for ev in everything if "seq" in ev}),
    }
    return bad, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--policy", choices=["rerun", "fail", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    failed = False
    for policy in ["rerun", "fail"] if args.policy == "both" else [args.policy]:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            bad, stats = campaign(Path(tmp) / "state.db", policy, args.cycles, args.seed)
            took = time.perf_counter() - start
        violations = {name: count for name, count in bad.items() if count}
        failed |= bool(violations)
        print(json.dumps({"policy": policy, **stats, "seconds": round(took, 1),
                          "violations": violations}))  # fmt: skip
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
