"""Soak test: push a million small jobs through ``stepline serve`` and watch its memory.

    python bench/soak.py                       # 1,000,000 jobs, RSS every 100,000
    python bench/soak.py --jobs 20000 --json   # the quick variant tests/test_soak_quick.py runs

Memory must stay flat once ``--keep`` finished records are held: every later job adds a record
and evicts one. Sampling RSS while jobs stream through would measure the burst in flight as much
as what is retained, so at each checkpoint the driver *pauses*: it stops writing, waits until
every job submitted so far has finished, and only then reads the server's RSS (three times, a
few milliseconds apart, keeping the median). Every checkpoint therefore looks at the same state —
idle, queue empty, ``--keep`` records retained — and any growth between them is retention.

The driver stays cheap so that it measures stepline, not itself: one pre-encoded block of submit
lines written again and again by a thread, and stdout only scanned for the ``finished`` and
``succeeded`` markers, never parsed (except the last line, which must be ``bye``).

Not part of the default test run; exit status 1 when ``--max-growth-mib`` is exceeded or any job
did not succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
JOB_LINE = b'{"op":"submit","job":{"value":1}}\n'
BLOCK = 500  # submit lines per write


def child_env() -> dict[str, str]:
    """This checkout's ``src`` first on ``PYTHONPATH``: soak the code here, not an install."""
    env = dict(os.environ)
    paths = [str(REPO / "src"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise LookupError(pid)


def settled_rss(pid: int) -> int:
    """The median of three readings: one reading can catch a transient allocation."""
    samples = []
    for _ in range(3):
        samples.append(rss(pid))
        time.sleep(0.02)
    return int(statistics.median(samples))


class Writer(threading.Thread):
    """Writes submit lines up to a target count; the target is raised at each checkpoint."""

    def __init__(self, stdin: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stdin = stdin
        self.sent = 0
        self.target = 0
        self.wake = threading.Condition()
        self.error: BaseException | None = None

    def allow(self, target: int) -> None:
        with self.wake:
            self.target = target
            self.wake.notify()

    def run(self) -> None:
        block = JOB_LINE * BLOCK
        try:
            while True:
                with self.wake:
                    while self.sent >= self.target:
                        self.wake.wait()
                n = min(BLOCK, self.target - self.sent)
                self.stdin.write(block if n == BLOCK else JOB_LINE * n)
                self.stdin.flush()
                self.sent += n
        except BaseException as exc:  # a broken pipe: reported by the main thread
            self.error = exc


class Reader:
    """Counts finished and succeeded jobs in stdout, line-aligned across chunk boundaries."""

    def __init__(self, stdout: IO[bytes]) -> None:
        self.stdout = stdout
        self.finished = 0
        self.succeeded = 0
        self.last_line = b""
        self._carry = b""

    def until(self, finished: int) -> None:
        while self.finished < finished:
            if not self._read():
                raise RuntimeError(f"stdout closed after {self.finished} finished jobs")

    def to_eof(self) -> None:
        while self._read():
            pass

    def _read(self) -> bool:
        # A Popen pipe is a BufferedReader, which has read1; its IO[bytes] type does not.
        chunk = self.stdout.read1(1 << 20)  # type: ignore[attr-defined]
        if not chunk:
            return False
        data = self._carry + chunk
        cut = data.rfind(b"\n") + 1
        complete, self._carry = data[:cut], data[cut:]
        self.finished += complete.count(b'"event":"finished"')
        self.succeeded += complete.count(b'"state":"succeeded"')
        if complete:
            self.last_line = complete[complete.rfind(b"\n", 0, -1) + 1 :]
        return True


def soak(jobs: int, checkpoints: int, flags: list[str], out: IO[str]) -> dict[str, Any]:
    """Run the soak; print one line per checkpoint to ``out``; return the summary."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepline", "serve", *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    writer, reader = Writer(proc.stdin), Reader(proc.stdout)
    writer.start()
    marks = [round(jobs * (i + 1) / checkpoints) for i in range(checkpoints)]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    print(f"{'jobs':>10} {'seconds':>8} {'jobs/s':>8} {'RSS MiB':>8}", file=out, flush=True)
    try:
        for mark in marks:
            writer.allow(mark)
            reader.until(mark)
            elapsed = time.perf_counter() - start
            row = {"jobs": mark, "seconds": round(elapsed, 2), "rss": settled_rss(proc.pid)}
            rows.append(row)
            print(
                f"{mark:>10} {elapsed:>8.1f} {mark / elapsed:>8.0f} {row['rss'] / MiB:>8.1f}",
                file=out,
                flush=True,
            )
        proc.stdin.close()
        reader.to_eof()
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return summarize(rows, jobs, reader, status, writer.error)


def summarize(
    rows: list[dict[str, Any]], jobs: int, reader: Reader, status: int, error: BaseException | None
) -> dict[str, Any]:
    """Growth is measured from the first checkpoint at or past half the jobs to the last."""
    middle = next(r for r in rows if r["jobs"] >= jobs / 2)
    last = rows[-1]
    return {
        "jobs": jobs,
        "finished": reader.finished,
        "succeeded": reader.succeeded,
        "exit_status": status,
        "bye": json.loads(reader.last_line or b"{}").get("event") == "bye",
        "writer_error": repr(error) if error else None,
        "seconds": last["seconds"],
        "jobs_per_second": round(jobs / last["seconds"]) if last["seconds"] else None,
        "checkpoints": rows,
        "rss_middle": middle["rss"],
        "rss_last": last["rss"],
        "growth_second_half": last["rss"] - middle["rss"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--keep", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--queue", type=int, default=256)
    parser.add_argument(
        "--max-growth-mib",
        type=float,
        default=10.0,
        help="fail if RSS grows more than this over the second half",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON last")
    args = parser.parse_args()
    flags = [
        "--keep",
        str(args.keep),
        "--workers",
        str(args.workers),
        "--queue",
        str(args.queue),
        "--heartbeat",
        "0",
    ]
    summary = soak(args.jobs, args.checkpoints, flags, sys.stdout if not args.json else sys.stderr)
    ok = (
        summary["succeeded"] == summary["finished"] == args.jobs
        and summary["bye"]
        and summary["exit_status"] == 0
        and summary["growth_second_half"] <= args.max_growth_mib * MiB
    )
    growth = summary["growth_second_half"] / MiB
    print(
        f"RSS growth over the second half: {growth:+.1f} MiB "
        f"(limit {args.max_growth_mib} MiB); {'OK' if ok else 'FAILED'}",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
